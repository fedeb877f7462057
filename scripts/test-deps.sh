#!/usr/bin/env bash
# Installs what the integration tests need when it is missing: Dovecot's IMAP
# server (tests run a private instance on 127.0.0.1) and the openssl CLI (for a
# throwaway CA and leaf certificate). Idempotent and quiet when all is there;
# runs `apt-get update` only when it has to install something.
set -euo pipefail

missing=()
command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd)
command -v doveadm >/dev/null 2>&1 || missing+=(dovecot-imapd)
# dovecot-core alone brings `dovecot` but not the IMAP server it runs.
[ -x /usr/lib/dovecot/imap ] || missing+=(dovecot-imapd)
# The push test delivers over LMTP, as an MTA does.
[ -x /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The unit-file test runs `systemd-analyze verify` and `security --offline`.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The test Dovecot runs mail as Debian's `mail` user; it ships with base-passwd,
# but say so plainly if some image lacks it.
if ! getent passwd mail >/dev/null 2>&1; then
    echo "test-deps: the 'mail' user is missing; the test Dovecot needs it" >&2
    exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

# Deduplicate (dovecot and doveadm come from the same package).
readarray -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

echo "test-deps: installing ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
# The package's postinst may try to start the system Dovecot; tests never use
# it and pick their own free ports, so a running system service is harmless.
# debconf's "delaying package configuration" notes are noise; real errors stay.
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null \
    2> >(grep -v '^debconf: ' >&2)
command -v dovecot >/dev/null && command -v openssl >/dev/null
