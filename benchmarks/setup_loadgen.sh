#!/bin/sh
# The native load generator of `python -m benchmarks --only openloop` (issue 24): wrk from Debian.
# wrk2, vegeta, oha and ghz are not in Debian (bookworm); hey is, but its rate limit fires all its
# workers in step (bursts), so the open-loop rows use wrk with Poisson gaps (benchmarks/wrk.py).
set -eu
if command -v wrk >/dev/null 2>&1; then
    echo "wrk already installed: $(command -v wrk)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get here: install wrk (https://github.com/wg/wrk) by hand; the openloop scenario skips without it" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq wrk
echo "installed: $(command -v wrk)"
