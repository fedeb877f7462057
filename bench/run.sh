#!/usr/bin/env bash
# mpnd's benchmark suite (issue 7): prints a table of figures; asserts nothing.
#
#   bench/run.sh                      # N = 1000 and 10000, every phase (~10 min)
#   N=1000 bench/run.sh               # one backlog size
#   REPEAT=5 N=1000 bench/run.sh      # runs per client (default 3 up to N=2000, else 1)
#   PHASES=latency,gate bench/run.sh  # some phases: backlog,latency,gate,idle,triage
#   BENCH_MAILBOX_EXTRA="batch_size = 200" bench/run.sh  # try [mailbox] settings
#   bench/run.sh --help               # every option of bench/run.py
#
# Installs what is missing (Dovecot via scripts/test-deps.sh, wrk, curl), builds the
# release binary, then runs bench/run.py as root. All traffic stays on 127.0.0.1;
# every process started is stopped at the end, also on ctrl-c.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=N,PHASES,REPEAT,BENCH_MAILBOX_EXTRA "$0" "$@"
fi

scripts/test-deps.sh
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "bench: cargo build --release" >&2
cargo build --release --quiet

# A hard bound on the whole run, whatever happens inside.
exec timeout --kill-after=30 "${BENCH_TIMEOUT:-3600}" python3 bench/run.py "$@"
