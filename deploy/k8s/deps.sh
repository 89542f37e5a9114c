#!/usr/bin/env bash
# Vendor the file:// dependencies of every chart into its charts/ folder, in
# dependency order: the service charts first (they vendor chat-lib), then the
# umbrella (it packs each service chart together with that charts/ folder).
# Works offline. HELM=/path/to/helm to use another binary.
set -euo pipefail
cd "$(dirname "$0")"
HELM=${HELM:-helm}
for chart in chat-gateway chat-delivery chat-presence chat-metrics chat; do
  "$HELM" dependency update --skip-refresh "$chart"
done
