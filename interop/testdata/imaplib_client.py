"""Drives an IMAP server with Python's imaplib, as a mail client would.

Usage: imaplib_client.py HOST PORT starttls|tls CAFILE USER PASSWORD

Logs in, lists, selects INBOX, fetches every message's headers, the first
message whole (without setting \\Seen), marks the first message \\Seen, and
prints one JSON object with what it saw. Exits non-zero on any error.
"""

import base64
import hashlib
import imaplib
import json
import re
import ssl
import sys


def check(typ, data, what):
    if typ != "OK":
        raise SystemExit("%s: %s %r" % (what, typ, data))
    return data


def main():
    host, port, mode, cafile, user, password = sys.argv[1:7]
    ctx = ssl.create_default_context(cafile=cafile)
    if mode == "tls":
        conn = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
    else:
        conn = imaplib.IMAP4(host, int(port))
        if "STARTTLS" not in conn.capabilities:
            raise SystemExit("no STARTTLS in %r" % (conn.capabilities,))
        check(*conn.starttls(ssl_context=ctx), "STARTTLS")
    out = {"capabilities": sorted(conn.capabilities)}
    check(*conn.login(user, password), "LOGIN")

    folders = []
    for line in check(*conn.list(), "LIST"):
        m = re.match(rb'\((?P<attrs>[^)]*)\) "(?P<delim>[^"]*)" (?P<name>.+)$', line)
        if not m:
            raise SystemExit("bad LIST line %r" % line)
        folders.append(m.group("name").decode().strip('"'))
    out["folders"] = folders

    data = check(*conn.select("INBOX"), "SELECT")
    out["exists"] = int(data[0])

    headers = []
    data = check(*conn.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER])"), "FETCH headers")
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta, header = item
        uid = int(re.search(rb"UID (\d+)", meta).group(1))
        size = int(re.search(rb"RFC822.SIZE (\d+)", meta).group(1))
        flags = re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).decode().split()
        headers.append({"uid": uid, "size": size, "flags": flags, "header": header.decode("ascii")})
    out["headers"] = headers

    first = headers[0]["uid"]
    data = check(*conn.uid("FETCH", str(first), "(BODY.PEEK[])"), "FETCH body")
    body = data[0][1]
    out["body"] = {
        "uid": first,
        "len": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "b64": base64.b64encode(body).decode(),
    }

    data = check(*conn.uid("FETCH", str(first), "(FLAGS)"), "FETCH flags")
    out["flags_after_peek"] = re.search(rb"FLAGS \(([^)]*)\)", data[0]).group(1).decode().split()

    data = check(*conn.uid("STORE", str(first), "+FLAGS", "(\\Seen)"), "STORE")
    out["store"] = [d.decode() for d in data if d]

    data = check(*conn.uid("FETCH", str(first), "(FLAGS)"), "FETCH flags")
    out["flags_after_store"] = re.search(rb"FLAGS \(([^)]*)\)", data[0]).group(1).decode().split()

    check(*conn.close(), "CLOSE")
    conn.logout()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
