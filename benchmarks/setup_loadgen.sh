#!/bin/sh
# The native load generators of `python -m benchmarks --only openloop` (issue 24): wrk from Debian
# for HTTP; for gRPC a short Go program on the official grpc-go client, built here from Debian's Go
# and grpc-go sources (GOPATH mode: nothing is downloaded), and the Node script on @grpc/grpc-js (npm,
# pinned by benchmarks/loadgen/package-lock.json) that the earlier rounds used. wrk2, vegeta, oha and
# ghz are not in Debian (bookworm); hey is, but its rate limit fires all its workers in step
# (bursts), so the HTTP rows use wrk with Poisson gaps (benchmarks/wrk.py). Each part is skipped by
# the scenario when it is missing.
set -eu
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
UPDATED=""
apt_install() {  # apt_install COMMAND_OR_FILE PACKAGE...: installs the packages unless the first is there
    wanted="$1"; shift
    if command -v "$wanted" >/dev/null 2>&1 || [ -e "$wanted" ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "no apt-get here: install $* by hand; the rows that need them skip" >&2
        return 1
    fi
    [ -n "$UPDATED" ] || { $SUDO apt-get update -qq; UPDATED=1; }
    $SUDO apt-get install -y -qq "$@"
}
apt_install wrk wrk && echo "wrk: $(command -v wrk)"
GRPC_GO=/usr/share/gocode/src/google.golang.org/grpc
if apt_install "$GRPC_GO" golang-go golang-google-grpc-dev && apt_install go golang-go; then
    GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOCACHE="${GOCACHE:-${TMPDIR:-/tmp}/agent-embeddings-gocache}" \
        go build -o loadgen/grpc_openloop loadgen/grpc_openloop.go
    echo "gRPC load generator ready: benchmarks/loadgen/grpc_openloop ($(go version | cut -d' ' -f3))"
fi
if command -v npm >/dev/null 2>&1; then
    (cd loadgen && npm ci --no-audit --no-fund --silent)
    echo "gRPC load generator ready: benchmarks/loadgen/grpc_openloop.js (node $(node --version))"
else
    echo "no npm here: the gRPC rows of the Node generator skip (install Node.js 18+ and rerun)" >&2
fi
