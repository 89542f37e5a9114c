#!/usr/bin/env bash
# Installs what the project needs and is missing: uv, the locked Python
# dependencies, redis-server (Debian package) and FerretDB (go install).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v redis-server >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The Debian package starts a system redis on 6379; the project runs its own.
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi
command -v uv >/dev/null || python3 -m pip install -q uv
uv sync --frozen -q
if [ -z "${CHAT_MONGODB_URI:-}" ] || [ "${1:-}" = "--all" ]; then
  scripts/install-ferretdb.sh
fi
