#!/bin/sh
# The native load generators of `python -m benchmarks --only openloop` (issue 24): wrk from Debian
# for HTTP, and a Node script on the official @grpc/grpc-js client for gRPC (npm, pinned by
# benchmarks/loadgen/package-lock.json). wrk2, vegeta, oha and ghz are not in Debian (bookworm);
# hey is, but its rate limit fires all its workers in step (bursts), so the HTTP rows use wrk with
# Poisson gaps (benchmarks/wrk.py). Each part is skipped by the scenario when it is missing.
set -eu
cd "$(dirname "$0")"
if command -v wrk >/dev/null 2>&1; then
    echo "wrk already installed: $(command -v wrk)"
elif command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk
    echo "installed: $(command -v wrk)"
else
    echo "no apt-get here: install wrk (https://github.com/wg/wrk) by hand; the HTTP open-loop rows skip without it" >&2
fi
if command -v npm >/dev/null 2>&1; then
    (cd loadgen && npm ci --no-audit --no-fund --silent)
    echo "gRPC load generator ready: benchmarks/loadgen/grpc_openloop.js (node $(node --version))"
else
    echo "no npm here: the gRPC open-loop rows skip (install Node.js 18+ and rerun)" >&2
fi
