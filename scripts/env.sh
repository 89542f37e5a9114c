# Defaults for the local stack; anything already set in the environment wins.
# Sourced by scripts/run.sh and by `make token`.
: "${CHAT_ENV:=development}"
: "${CHAT_JWT_SECRET:=dev-only-secret-change-me-0123456789}"
: "${CHAT_GATEWAY_PORT:=8080}"
: "${CHAT_PRESENCE_PORT:=8081}"
: "${CHAT_DELIVERY_PORT:=8082}"
: "${CHAT_METRICS_PORT:=8083}"
: "${CHAT_LOCAL_REDIS_PORT:=6379}"
: "${CHAT_LOCAL_MONGO_PORT:=27017}"
: "${CHAT_DEV_MODE:=1}"
: "${CHAT_LOG_FORMAT:=console}"
export CHAT_ENV CHAT_JWT_SECRET CHAT_GATEWAY_PORT CHAT_PRESENCE_PORT CHAT_DELIVERY_PORT \
  CHAT_METRICS_PORT CHAT_DEV_MODE CHAT_LOG_FORMAT
