#!/usr/bin/env bash
# Installs FerretDB v1.24 (SQLite backend) with `go install` into $GOBIN
# (default ~/go/bin), reusing a binary that is already there.
#
# `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds, but the
# binary panics at start because the module does not ship
# build/version/version.txt (FerretDB issue #2982). So this script fetches the
# same module with `go mod download`, adds that one file, and runs `go install`
# on it: the same source and the same build, with the version file present.
set -euo pipefail
VERSION=v1.24.2
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
BIN="$GOBIN/ferretdb"
# Its output is read whole, not piped into `grep -q` or `head`: those exit at
# the first line, the writer then dies of SIGPIPE, and under pipefail the
# check failed (or the script exited 141) depending on timing.
version() { "$BIN" --version 2>/dev/null || true; }
if [ -x "$BIN" ] && [[ "$(version)" == *"version: $VERSION"* ]]; then
  echo "ferretdb $VERSION already installed at $BIN"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to install FerretDB" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
echo "$VERSION" > "$work/src/build/version/version.txt"
(cd "$work/src" && GOBIN="$GOBIN" go install ./cmd/ferretdb)
out=$(version)
echo "${out%%$'\n'*}"
