#!/usr/bin/env bash
# The "Pipeline" benchmark of BENCHMARKS.md: paid orders per second through to `shipped`, and
# the paid→shipped latency read from each order's timeline, with `ordo loadgen --pay --follow`
# against a release build on SQLite, once with the in-process dispatcher and once on RabbitMQ.
#
# Usage: bash bench/pipeline.sh [orders, default 2000]
# Environment: CONCURRENCY (default 64), PAYMENT_DELAY_MS (the sandbox provider's approval
# delay, default 50), ORDO_BENCH_AMQP (default amqp://guest:guest@127.0.0.1:5672/%2f; set it
# to `none` to skip RabbitMQ).
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS=${1:-2000}
CONCURRENCY=${CONCURRENCY:-64}
PAYMENT_DELAY_MS=${PAYMENT_DELAY_MS:-50}
AMQP=${ORDO_BENCH_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
WORK=$(mktemp -d)
NAMESPACES=()
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  # Best effort: drop the queues and the exchange a RabbitMQ run left behind (local server).
  for ns in "${NAMESPACES[@]}"; do
    command -v rabbitmqctl >/dev/null || continue
    for queue in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$ns\." || true); do
      rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
    done
    # rabbitmqctl has no delete_exchange (rabbitmqadmin needs the management plugin).
    rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$ns.events\">>), false, <<\"bench\">>)." \
      >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --locked -p ordo --bin ordo >/dev/null 2>&1 \
  || cargo build --release --locked -p ordo --bin ordo
ORDO=target/release/ordo

wait_ready() { for _ in $(seq 100); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

bench_pipeline() { # $1 = label, then extra VAR=value settings of the server
  local label=$1 api=127.0.0.1:18080 admin=127.0.0.1:19090
  shift
  env RUST_LOG=warn ORDO_HTTP_ADDR=$api ORDO_ADMIN_ADDR=$admin ORDO_GRPC_ADDR=127.0.0.1:0 \
    ORDO_DATABASE_URL="sqlite://$WORK/$label.db" ORDO_DATABASE_MAX_CONNECTIONS=32 \
    ORDO_SANDBOX_PAYMENT_DELAY_MS="$PAYMENT_DELAY_MS" "$@" "$ORDO" serve >"$WORK/$label.log" 2>&1 &
  local pid=$!
  wait_ready "$admin"
  echo "### $label"
  # The summary on stdout; the exit status says whether any request failed.
  "$ORDO" loadgen --target "http://$api" --orders "$ORDERS" --concurrency "$CONCURRENCY" \
    --pay --follow --follow-timeout 120s || echo "(loadgen exited with $?)"
  kill -TERM "$pid"; wait "$pid" || true
}

echo "## machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; ordo loadgen --orders $ORDERS --concurrency $CONCURRENCY --pay --follow on the same machine; sandbox payment delay $PAYMENT_DELAY_MS ms"

bench_pipeline sqlite-inprocess

if [ "$AMQP" != none ]; then
  NS="bench_$(date +%s)_$$"
  NAMESPACES+=("$NS")
  bench_pipeline sqlite-rabbitmq ORDO_BROKER_URL="$AMQP" ORDO_BROKER_NAMESPACE="$NS"
fi
