#!/usr/bin/env bash
# Installs the peers that bench/ compares this project with, reusing what is
# already there:
#   - Centrifugo v6.9.1:  go install (module proxy), into $GOBIN (~/go/bin)
#   - Socket.IO 4 + @socket.io/redis-adapter + redis: npm ci into bench/peers/socketio
#   - python-socketio:    a `uv run --with` dependency of the bench (see bench/README.md)
# Usage: bench/install_peers.sh [centrifugo|socketio|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-all}

CENTRIFUGO_VERSION=6.9.1
GOBIN=${GOBIN:-$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin}

install_centrifugo() {
  local bin="$GOBIN/centrifugo"
  # Read whole, not piped into `grep -q` (SIGPIPE under pipefail, see install-tools.sh).
  if [ -x "$bin" ] && [[ "$("$bin" version 2>/dev/null || true)" == *"v$CENTRIFUGO_VERSION"* ]]; then
    echo "centrifugo v$CENTRIFUGO_VERSION already installed at $bin"
    return
  fi
  command -v go >/dev/null || { echo "go is required to install Centrifugo" >&2; exit 1; }
  # Release builds stamp the version with -X; `go install` alone reports v0.0.0.
  local stamp="-X github.com/centrifugal/centrifugo/v6/internal/build.Version=$CENTRIFUGO_VERSION"
  # GOFLAGS is cleared so a project-level -mod setting cannot get in the way
  # of `go install pkg@version` (which needs module mode).
  if ! GOFLAGS= GOBIN="$GOBIN" go install -ldflags="$stamp" \
      "github.com/centrifugal/centrifugo/v6@v$CENTRIFUGO_VERSION"; then
    echo "plain go install failed; retrying with -checklinkname=0" >&2
    GOFLAGS= GOBIN="$GOBIN" go install -ldflags="$stamp -checklinkname=0" \
      "github.com/centrifugal/centrifugo/v6@v$CENTRIFUGO_VERSION"
  fi
  "$bin" version
}

install_socketio() {
  command -v npm >/dev/null || { echo "node and npm are required for the Socket.IO peer" >&2; exit 1; }
  if [ -d peers/socketio/node_modules/socket.io ] && [ -d peers/socketio/node_modules/@socket.io/redis-adapter ]; then
    echo "socket.io peer already installed in bench/peers/socketio/node_modules"
    return
  fi
  (cd peers/socketio && npm ci --no-audit --no-fund)
}

case "$what" in
  centrifugo) install_centrifugo ;;
  socketio) install_socketio ;;
  all) install_centrifugo; install_socketio ;;
  *) echo "usage: $0 [centrifugo|socketio|all]" >&2; exit 2 ;;
esac
