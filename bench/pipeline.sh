#!/usr/bin/env bash
# The "Pipeline" benchmark of BENCHMARKS.md: paid orders per second through to `shipped`, and
# the paid→shipped latency read from each order's timeline, with `ordo loadgen --pay --follow`
# against a release build: SQLite with the in-process dispatcher, on RabbitMQ and on NATS
# JetStream, and PostgreSQL with the in-process dispatcher.
#
# Usage: bash bench/pipeline.sh [orders, default 2000]
# Environment: CONCURRENCY (default 64), PAYMENT_DELAY_MS (the sandbox provider's approval
# delay, default 50; the service's own default is 0), POLL_INTERVAL (the longest wait between
# two polls of a followed order, default 20ms: with longer waits a shopper notices its order
# shipped up to that much late, and the closed loop measures the polling, not the pipeline), ORDO_BENCH_AMQP (default amqp://guest:guest@127.0.0.1:5672/%2f),
# ORDO_BENCH_NATS (default nats://127.0.0.1:4222), ORDO_BENCH_POSTGRES (default
# postgres://postgres@127.0.0.1:5432); set any of them to `none` to skip that run.
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS=${1:-2000}
CONCURRENCY=${CONCURRENCY:-64}
PAYMENT_DELAY_MS=${PAYMENT_DELAY_MS:-50}
POLL_INTERVAL=${POLL_INTERVAL:-20ms}
AMQP=${ORDO_BENCH_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
NATS=${ORDO_BENCH_NATS:-nats://127.0.0.1:4222}
PG=${ORDO_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
PG_DB=ordo_pipeline_bench
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
  if [ "$PG" != none ]; then
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
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
    --pay --follow --follow-timeout 120s --poll-interval "$POLL_INTERVAL" || echo "(loadgen exited with $?)"
  kill -TERM "$pid"; wait "$pid" || true
}

echo "## machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; ordo loadgen --orders $ORDERS --concurrency $CONCURRENCY --pay --follow on the same machine; sandbox payment delay $PAYMENT_DELAY_MS ms; polls at most $POLL_INTERVAL apart"

bench_pipeline sqlite-inprocess

if [ "$AMQP" != none ]; then
  NS="bench_$(date +%s)_$$"
  NAMESPACES+=("$NS")
  bench_pipeline sqlite-rabbitmq ORDO_BROKER_URL="$AMQP" ORDO_BROKER_NAMESPACE="$NS"
fi

if [ "$NATS" != none ]; then
  # The stream <NS>_EVENTS stays on the NATS server (file storage); the namespace is unique.
  bench_pipeline sqlite-nats ORDO_BROKER_URL="$NATS" ORDO_BROKER_NAMESPACE="bench_$(date +%s)_$$"
fi

if [ "$PG" != none ]; then
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" >/dev/null
  bench_pipeline postgres-inprocess ORDO_DATABASE_URL="$PG/$PG_DB"
fi
