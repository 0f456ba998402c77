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

cargo build --release --locked -p ordo -p ordo-http-api --example hello --bin ordo >/dev/null 2>&1 \
  || cargo build --release --locked -p ordo -p ordo-http-api --bin ordo --example hello
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

bench_ordo() { # $1 = label, $2 = database url
  local api=127.0.0.1:18080 admin=127.0.0.1:19090
  RUST_LOG=warn ORDO_HTTP_ADDR=$api ORDO_ADMIN_ADDR=$admin ORDO_DATABASE_URL=$2 \
    ORDO_DATABASE_MAX_CONNECTIONS=32 "$ORDO" serve >"$WORK/$1.log" 2>&1 &
  local pid=$!
  wait_ready "$admin"
  seed "$api"
  run_wrk "ordo $1: POST /v1/orders" -s bench/create_order.lua "http://$api"
  local id
  id=$(curl -sf "http://$api/v1/orders?limit=1" | sed -E 's/.*"id":"(ord_[0-9a-f]+)".*/\1/')
  run_wrk "ordo $1: GET /v1/orders/{id}" "http://$api/v1/orders/$id"
  kill -TERM "$pid"; wait "$pid" || true
}

echo "## machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; wrk -t$THREADS -c$CONNECTIONS -d$DURATION on the same machine"

target/release/examples/hello 127.0.0.1:18081 & HELLO=$!
sleep 0.5
run_wrk "bare axum hello" "http://127.0.0.1:18081/hello"
kill "$HELLO"

bench_ordo sqlite "sqlite://$WORK/bench.db"

DB=ordo_bench_$$
psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
bench_ordo postgres "$PG/$DB"
echo "### pgbench: ordo's create-order statements, $CONNECTIONS clients"
pgbench -n -M prepared -c "$CONNECTIONS" -j "$THREADS" -T "${DURATION%s}" -f bench/pg_create_order.sql "$PG/$DB" \
  | grep -E "^tps|latency average|number of failed"
psql "$PG/postgres" -qc "DROP DATABASE $DB" >/dev/null
