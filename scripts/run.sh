#!/usr/bin/env bash
# `make run`: start redis-server and FerretDB (unless CHAT_REDIS_URL /
# CHAT_MONGODB_URI point elsewhere) and the four services, each its own
# process, under honcho. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mkdir -p var/redis var/ferretdb/data
procfile=var/Procfile
: > "$procfile"
if [ -z "${CHAT_REDIS_URL:-}" ]; then
  export CHAT_REDIS_URL="redis://127.0.0.1:${CHAT_LOCAL_REDIS_PORT}/0"
  echo "redis: redis-server --port ${CHAT_LOCAL_REDIS_PORT} --bind 127.0.0.1 --dir var/redis --appendonly yes" >> "$procfile"
fi
if [ -z "${CHAT_MONGODB_URI:-}" ]; then
  export CHAT_MONGODB_URI="mongodb://127.0.0.1:${CHAT_LOCAL_MONGO_PORT}/"
  ferretdb=$(command -v ferretdb || echo "$(go env GOPATH)/bin/ferretdb")
  echo "ferretdb: $ferretdb --handler=sqlite --sqlite-url=file:var/ferretdb/data/ --listen-addr=127.0.0.1:${CHAT_LOCAL_MONGO_PORT} --debug-addr=- --telemetry=disable --state-dir=var/ferretdb --log-level=warn" >> "$procfile"
fi
for service in gateway delivery presence metrics; do
  echo "$service: .venv/bin/python -m services.$service" >> "$procfile"
done
cat <<MSG
Starting the chat stack:
  web client   http://127.0.0.1:${CHAT_GATEWAY_PORT}/
  WebSocket    ws://127.0.0.1:${CHAT_GATEWAY_PORT}/ws   (token: make token USER=alice)
  metrics      http://127.0.0.1:{${CHAT_GATEWAY_PORT},${CHAT_PRESENCE_PORT},${CHAT_DELIVERY_PORT},${CHAT_METRICS_PORT}}/metrics
  redis        ${CHAT_REDIS_URL}
  mongodb      ${CHAT_MONGODB_URI}
MSG
exec .venv/bin/honcho start -f "$procfile" -d .
