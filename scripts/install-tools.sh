#!/usr/bin/env bash
# Test tools installed with `go install`, reused when already present:
# helm (chart lint/template tests) and promtool (rules and exposition checks).
set -euo pipefail
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
install() {  # name version-probe package@version
  local name=$1 probe=$2 pkg=$3
  if [ -x "$GOBIN/$name" ] && "$GOBIN/$name" $probe 2>&1 | grep -q "${pkg##*@v}"; then
    return
  fi
  GOBIN="$GOBIN" go install "$pkg" 2>/dev/null \
    || GOBIN="$GOBIN" go install -ldflags=-checklinkname=0 "$pkg"
}
install helm version helm.sh/helm/v3/cmd/helm@v3.22.0
