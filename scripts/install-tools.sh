#!/usr/bin/env bash
# Test tools installed with `go install`, reused when the same version is
# already there: helm (chart lint/template tests) and promtool (rules,
# config and exposition checks).
set -euo pipefail
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
install() {  # binary package@version
  local name=$1 pkg=$2
  local version=${pkg##*@}
  # Read whole, not piped into `grep -q`: under pipefail a writer killed by
  # SIGPIPE when grep exits early would fail the check at random.
  if [ -x "$GOBIN/$name" ] && [[ "$(go version -m "$GOBIN/$name" 2>/dev/null || true)" == *"$version"* ]]; then
    return
  fi
  # Go's documented escape hatch for tools that fail to link with `linkname`.
  GOBIN="$GOBIN" go install "$pkg" || GOBIN="$GOBIN" go install -ldflags=-checklinkname=0 "$pkg"
}
install helm helm.sh/helm/v3/cmd/helm@v3.22.0
install promtool github.com/prometheus/prometheus/cmd/promtool@v0.316.0
