#!/usr/bin/env bash
# Debian packages the test suite's real peers need (idempotent; run as root).
#   dovecot-imapd: the IMAP server the MSSanté receipt tests start on loopback, unprivileged,
#                  with a configuration generated in a temporary folder (tests/peers/mail.py).
#   chromium:      the headless browser the console tests drive through Playwright
#                  (tests/gateway/console/test_console_browser.py): Debian's build, so no
#                  Playwright browser download is needed; fonts-dejavu-core for legible screenshots.
# The dovecot services are never enabled or started system-wide by this script.
set -euo pipefail
packages=(dovecot-imapd chromium fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing ${missing[*]} and not root: install them or the mail and browser tests are skipped" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d: keep the package from starting a system dovecot (the tests run their own)
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
