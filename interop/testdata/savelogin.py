"""Saves an IMAP login in a Thunderbird profile, as its password manager would.

usage: savelogin.py NSS_LIBDIR PROFILE ORIGIN USER PASSWORD

Thunderbird keeps saved logins in logins.json, each field encrypted with the
profile's key database (key4.db). This creates that database without a
primary password and encrypts with NSS's own SDR routine, from the NSS that
Thunderbird ships, so the profile opens without a password prompt.
"""
import base64
import ctypes
import json
import os
import sys
import time
import uuid

libdir, profile, origin, user, password = sys.argv[1:6]
nss = ctypes.CDLL(os.path.join(libdir, "libnss3.so"))


class SECItem(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint), ("data", ctypes.c_void_p), ("len", ctypes.c_uint)]


nss.NSS_InitReadWrite.argtypes = [ctypes.c_char_p]
nss.PK11_GetInternalKeySlot.restype = ctypes.c_void_p
nss.PK11_NeedUserInit.argtypes = [ctypes.c_void_p]
nss.PK11_InitPin.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
nss.PK11_Authenticate.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
nss.PK11SDR_Encrypt.argtypes = [ctypes.POINTER(SECItem)] * 3 + [ctypes.c_void_p]

if nss.NSS_InitReadWrite(b"sql:" + profile.encode()) != 0:
    sys.exit("savelogin: NSS_InitReadWrite failed")
slot = nss.PK11_GetInternalKeySlot()
if nss.PK11_NeedUserInit(slot) and nss.PK11_InitPin(slot, None, b"") != 0:
    sys.exit("savelogin: PK11_InitPin failed")
if nss.PK11_Authenticate(slot, 1, None) != 0:
    sys.exit("savelogin: PK11_Authenticate failed")


def encrypt(text):
    raw = text.encode()
    buf = ctypes.create_string_buffer(raw, len(raw))
    data = SECItem(0, ctypes.cast(buf, ctypes.c_void_p), len(raw))
    keyid, out = SECItem(0, None, 0), SECItem(0, None, 0)
    if nss.PK11SDR_Encrypt(ctypes.byref(keyid), ctypes.byref(data), ctypes.byref(out), None) != 0:
        sys.exit("savelogin: PK11SDR_Encrypt failed")
    return base64.b64encode(ctypes.string_at(out.data, out.len)).decode()


now = int(time.time() * 1000)
login = {
    "id": 1, "hostname": origin, "httpRealm": origin, "formSubmitURL": None,
    "usernameField": "", "passwordField": "",
    "encryptedUsername": encrypt(user), "encryptedPassword": encrypt(password),
    "guid": "{%s}" % uuid.uuid4(), "encType": 1,
    "timeCreated": now, "timeLastUsed": now, "timePasswordChanged": now, "timesUsed": 1,
}
with open(os.path.join(profile, "logins.json"), "w") as f:
    json.dump({"nextId": 2, "logins": [login], "potentiallyVulnerablePasswords": [],
               "dismissedBreachAlertsByLoginGUID": {}, "version": 3}, f)
nss.NSS_Shutdown()
