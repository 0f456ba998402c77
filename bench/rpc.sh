#!/usr/bin/env bash
# gRPC against REST, and roles apart against all in one process (BENCHMARKS.md "gRPC and
# roles"), side by side in one run, with one client program (examples/rpc_bench.rs) for both
# protocols. PostgreSQL: several processes share the database.
# Usage: bash bench/rpc.sh [seconds per run, default 15] [concurrency, default 32]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_SECS=${1:-15}
CONCURRENCY=${2:-32}
PG=${ORDO_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
DB=ordo_rpc_bench
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --locked -p ordo --bin ordo --example rpc_bench >/dev/null 2>&1 \
  || cargo build --release --locked -p ordo --bin ordo --example rpc_bench
ORDO=target/release/ordo
BENCH=target/release/examples/rpc_bench

wait_ready() { for _ in $(seq 200); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
json_put() { curl -sf -X PUT "http://$1$2" -H 'content-type: application/json' -d "$3" >/dev/null; }
fresh_db() {
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
}
seed() { # $1 = REST address
  json_put "$1" /v1/warehouses/bench-wh '{"country":"TH"}'
  for i in $(seq 0 99); do
    json_put "$1" "/v1/products/BENCH-$i" '{"name":"Bench product","price":{"amount_minor":1999,"currency":"USD"}}'
    json_put "$1" "/v1/stock/BENCH-$i/bench-wh" '{"on_hand":1000000000}'
  done
}
start() { # $1 = label, then VAR=value settings
  local label=$1
  shift
  env RUST_LOG=warn ORDO_DATABASE_URL="$PG/$DB" ORDO_DATABASE_MAX_CONNECTIONS=16 "$@" \
    "$ORDO" serve >"$WORK/$label.log" 2>&1 &
}
measure() { # $1 = label; the edge is on 18080 (REST) and 18051 (gRPC)
  echo "### $1"
  for op in create get; do
    for proto in rest grpc; do
      "$BENCH" "$proto" "$op" http://127.0.0.1:18080 http://127.0.0.1:18051 "$RUN_SECS" "$CONCURRENCY"
    done
  done
}
edge_env=(ORDO_HTTP_ADDR=127.0.0.1:18080 ORDO_GRPC_ADDR=127.0.0.1:18051 ORDO_ADMIN_ADDR=127.0.0.1:19090)

echo "## machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; client on the same machine, ${RUN_SECS}s per run, concurrency $CONCURRENCY"

fresh_db
start all-in-one "${edge_env[@]}"
wait_ready 127.0.0.1:19090
seed 127.0.0.1:18080
measure "all roles in one process"
kill -TERM %1; wait || true

fresh_db
start inventory ORDO_ROLES=inventory ORDO_GRPC_ADDR=127.0.0.1:18061 ORDO_ADMIN_ADDR=127.0.0.1:19061
wait_ready 127.0.0.1:19061
start orders ORDO_ROLES=orders,payments,workers ORDO_GRPC_ADDR=127.0.0.1:18062 ORDO_ADMIN_ADDR=127.0.0.1:19062 \
  ORDO_PEERS_INVENTORY=http://127.0.0.1:18061
start edge ORDO_ROLES=edge "${edge_env[@]}" ORDO_PEERS_INVENTORY=http://127.0.0.1:18061 \
  ORDO_PEERS_ORDERS=http://127.0.0.1:18062 ORDO_PEERS_PAYMENTS=http://127.0.0.1:18062
wait_ready 127.0.0.1:19062
wait_ready 127.0.0.1:19090
seed 127.0.0.1:18080
measure "roles apart: edge → orders → inventory (3 processes)"
