#!/usr/bin/env bash
# Runs every test of um. The tests talk to real servers and clients that we
# did not write (Dovecot, Cyrus, PostgreSQL, Python's imaplib, curl, mbsync,
# Chromium, Thunderbird, neomutt, offlineimap, SIPp, baresip); this
# script installs the missing ones from Debian's packages first, without
# letting their packages start system services. Each test starts its own
# instance on 127.0.0.1 and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# Dovecot lives in /usr/sbin, which a non-login shell's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

need=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
command -v mbsync >/dev/null 2>&1 || need+=(isync)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
# Cyrus IMAP, the sync engine's second real server: its master and tools
# (cyrus-common) are installed; imapd (cyrus-imapd) conflicts with
# dovecot-imapd, so it is unpacked into /var/tmp/um-cyrus instead, where
# internal/cyrus looks for it.
[ -x /usr/lib/cyrus/bin/master ] || need+=(cyrus-common)
# The web console test drives Debian's Chromium headless.
[ -x /usr/bin/chromium ] || need+=(chromium)
# Desktop and terminal mail clients the interop tests drive on a private X
# display (Xvfb, with openbox as window manager) or in tmux.
command -v thunderbird >/dev/null 2>&1 || need+=(thunderbird)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v xdotool >/dev/null 2>&1 || need+=(xdotool)
command -v openbox >/dev/null 2>&1 || need+=(openbox)
command -v neomutt >/dev/null 2>&1 || need+=(neomutt)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v offlineimap >/dev/null 2>&1 || need+=(offlineimap)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  # Keep the packages from starting system-wide daemons: tests run their own.
  had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ "$had_policy" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  [ "$had_policy" = 1 ] || $sudo rm -f /usr/sbin/policy-rc.d
fi
if [ ! -x /usr/lib/cyrus/bin/imapd ] && [ ! -x /var/tmp/um-cyrus/usr/lib/cyrus/bin/imapd ]; then
  echo "unpacking cyrus-imapd into /var/tmp/um-cyrus"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  tmp=$(mktemp -d)
  chmod 777 "$tmp"
  (cd "$tmp" && { $sudo apt-get download -qq cyrus-imapd || { $sudo apt-get update -qq && $sudo apt-get download -qq cyrus-imapd; }; })
  $sudo dpkg-deb -x "$tmp"/cyrus-imapd_*.deb /var/tmp/um-cyrus
  rm -rf "$tmp"
fi

# Dovecot's imaptest (scripted compliance groups and a short stress run,
# imapserver's TestImaptest*): built from the source kept beside the
# project; its build script installs the C toolchain it needs.
imaptest_build=../shared/tools/imaptest/build.sh
if [ ! -x "$imaptest_build" ]; then
  echo "missing $imaptest_build (Dovecot's imaptest): the IMAP compliance tests cannot run" >&2
  exit 1
fi
IMAPTEST=$("$imaptest_build" | tail -n 1)
export IMAPTEST

unformatted=$(gofmt -l . | grep -v '^vendor/' || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
# The repository is a Go workspace (go.work): the root module and nested
# modules of their own (the demo, sipmwi) so that um's main module keeps
# their dependencies out. "./..." stops at a nested module's go.mod, so name
# every workspace module's packages.
pkgs=()
while IFS= read -r dir; do pkgs+=("$dir/..."); done < <(go list -m -f '{{.Dir}}')
go vet "${pkgs[@]}"
# The packages that drive desktop and SIP clients (Thunderbird under Xvfb,
# neomutt, baresip) wait on those clients' own pace: they run after the
# others, one package at a time, so that the parallel load of the rest
# (Dovecot, PostgreSQL, the race detector) does not starve them.
clients=(github.com/embeddedum/um/interop github.com/embeddedum/um/examples/pbx)
mapfile -t others < <(go list "${pkgs[@]}" | grep -vxF -f <(printf '%s\n' "${clients[@]}"))
go test -race -count=1 -timeout 12m "${others[@]}" "$@"
go test -race -count=1 -timeout 12m -p 1 "${clients[@]}" "$@"
