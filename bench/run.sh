#!/usr/bin/env bash
# Benchmarks of BENCHMARKS.md, side by side in one run: ordo on SQLite and on PostgreSQL (order
# creation and order reads), pgbench with ordo's own statements, and a bare axum "hello".
# Usage: bash bench/run.sh [duration, default 20s]. Needs wrk and pgbench (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20s}
CONNECTIONS=64
THREADS=2
PG=${ORDO_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --locked -p ordo-http-api --example hello >/dev/null 2>&1 \
  || cargo build --release --locked -p ordo-http-api --example hello
cargo build --release --locked -p ordo --bin ordo --example otlp_sink >/dev/null 2>&1 \
  || cargo build --release --locked -p ordo --bin ordo --example otlp_sink
ORDO=target/release/ordo

wait_ready() { for _ in $(seq 100); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
json_put() { curl -sf -X PUT "http://$1$2" -H 'content-type: application/json' -d "$3" >/dev/null; }

seed() { # $1 = api address: 100 SKUs, one warehouse, stock that never runs out
  json_put "$1" /v1/warehouses/bench-wh '{"country":"TH"}'
  for i in $(seq 0 99); do
    json_put "$1" "/v1/products/BENCH-$i" '{"name":"Bench product","price":{"amount_minor":1999,"currency":"USD"}}'
    json_put "$1" "/v1/stock/BENCH-$i/bench-wh" '{"on_hand":1000000000}'
  done
}

run_wrk() { # $1 = label, rest = wrk args
  local label=$1; shift
  echo "### $label"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" | grep -E "Requests/sec|Latency |50%|99%|Non-2xx|Socket errors"
}

bench_ordo() { # $1 = label, $2 = database url, then extra VAR=value settings
  local label=$1 url=$2 api=127.0.0.1:18080 admin=127.0.0.1:19090
  shift 2
  env RUST_LOG=warn ORDO_HTTP_ADDR=$api ORDO_ADMIN_ADDR=$admin ORDO_GRPC_ADDR=127.0.0.1:0 ORDO_DATABASE_URL=$url \
    ORDO_DATABASE_MAX_CONNECTIONS=32 "$@" "$ORDO" serve >"$WORK/$label.log" 2>&1 &
  local pid=$!
  wait_ready "$admin"
  seed "$api"
  run_wrk "ordo $label: POST /v1/orders" -s bench/create_order.lua "http://$api"
  local id
  id=$(curl -sf "http://$api/v1/orders?limit=1" | sed -E 's/.*"id":"(ord_[0-9a-f]+)".*/\1/')
  run_wrk "ordo $label: GET /v1/orders/{id}" "http://$api/v1/orders/$id"
  kill -TERM "$pid"; wait "$pid" || true
}

echo "## machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; wrk -t$THREADS -c$CONNECTIONS -d$DURATION on the same machine"

target/release/examples/hello 127.0.0.1:18081 & HELLO=$!
sleep 0.5
run_wrk "bare axum hello" "http://127.0.0.1:18081/hello"
kill "$HELLO"

bench_ordo sqlite "sqlite://$WORK/bench.db"

# Telemetry cost, side by side on SQLite: spans sampled and exported over OTLP/gRPC to a local
# sink at 100%, against no export and nothing sampled.
target/release/examples/otlp_sink 127.0.0.1:14317 2>"$WORK/sink.log" & SINK=$!
bench_ordo "sqlite-telemetry-off" "sqlite://$WORK/off.db" OTEL_TRACES_SAMPLER=always_off
bench_ordo "sqlite-telemetry-on" "sqlite://$WORK/on.db" OTEL_TRACES_SAMPLER=always_on \
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc
kill "$SINK"; tail -n 1 "$WORK/sink.log"

DB=ordo_bench_$$
psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
bench_ordo postgres "$PG/$DB"
for batch in 1 32; do
  echo "### pgbench: ordo's create statements, batches of $batch order(s), $CONNECTIONS clients (orders/s = tps x $batch)"
  pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T "${DURATION%s}" -D batch=$batch \
    -f bench/pg_place_orders.sql "$PG/$DB" | grep -E "^tps|latency average|number of failed"
done
psql "$PG/postgres" -qc "DROP DATABASE $DB" >/dev/null
