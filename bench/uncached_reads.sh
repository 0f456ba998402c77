#!/usr/bin/env bash
# Uncached order reads on PostgreSQL, as compare.sh runs a server: ordo pinned to CPU 1, wrk
# (64 connections) on CPU 0, 100% of traces exported to the local sink. First fills a database
# with orders (wrk POSTs for FILL seconds), then reads random ones of them: with over 100,000
# orders, a 1 s cache TTL and about 10k reads/s, nearly every read is a cache miss (the run
# prints the cache's hit and miss counters to show it).
# Usage: bash bench/uncached_reads.sh [fill seconds, default 40] [read seconds, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
FILL=${1:-40}; READ=${2:-10}
PG=${ORDO_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
DB=ordo_uncached_$$
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
cargo build --release --locked -p ordo --bin ordo --example otlp_sink >/dev/null
psql "$PG/postgres" -qX -c "CREATE DATABASE $DB" >/dev/null
API=127.0.0.1:18090 ADMIN=127.0.0.1:19091
target/release/examples/otlp_sink 127.0.0.1:14318 2>"$WORK/sink.log" &
env RUST_LOG=warn ORDO_HTTP_ADDR=$API ORDO_ADMIN_ADDR=$ADMIN ORDO_GRPC_ADDR=127.0.0.1:0 \
  ORDO_DATABASE_URL="$PG/$DB" ORDO_DATABASE_MAX_CONNECTIONS=32 OTEL_TRACES_SAMPLER=always_on \
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14318 OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
  taskset -c 1 target/release/ordo serve >"$WORK/ordo.log" 2>&1 &
ORDO_PID=$!
for _ in $(seq 100); do curl -sf "http://$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
H='content-type: application/json'
curl -sf -XPUT "http://$API/v1/warehouses/bench-wh" -H "$H" -d '{"country":"TH"}' >/dev/null
for i in $(seq 0 99); do
  curl -sf -XPUT "http://$API/v1/products/BENCH-$i" -H "$H" \
    -d '{"name":"Bench product","price":{"amount_minor":1999,"currency":"USD"}}' >/dev/null
  curl -sf -XPUT "http://$API/v1/stock/BENCH-$i/bench-wh" -H "$H" -d '{"on_hand":1000000000}' >/dev/null
done
echo "### filling: POST /v1/orders for ${FILL}s"
taskset -c 0 wrk -t1 -c64 -d"${FILL}s" -s bench/create_order.lua "http://$API" | grep -E "Requests/sec"
psql "$PG/$DB" -AtX -c "SELECT id FROM orders" >"$WORK/ids.txt"
echo "$(wc -l <"$WORK/ids.txt") orders"
{
  echo "ids = {"; sed 's/.*/"&",/' "$WORK/ids.txt"; echo "}"
  cat <<'LUA'
n = #ids
init = function(args) math.randomseed(os.time()) end
request = function() return wrk.format("GET", "/v1/orders/" .. ids[math.random(n)]) end
LUA
} >"$WORK/reads.lua"
echo "### uncached GET /v1/orders/{id} for ${READ}s"
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
ordo0=$(ticks $ORDO_PID) machine0=$(busy)
taskset -c 0 wrk -t1 -c64 -d"${READ}s" --latency -s "$WORK/reads.lua" "http://$API" >"$WORK/reads.txt"
ordo1=$(ticks $ORDO_PID) machine1=$(busy)
grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" "$WORK/reads.txt"
HZ=$(getconf CLK_TCK)
python3 - "$(awk '/Requests\/sec/{print $2}' "$WORK/reads.txt")" $((ordo1 - ordo0)) $((machine1 - machine0)) "$HZ" "$READ" <<'PY'
import sys
rps, ordo, machine, hz, secs = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
print(f"ordo CPU {ordo / hz / secs:.0%} of its core, {ordo / hz / (rps * secs) * 1e6:.1f} us per read; "
      f"machine {machine / hz / secs / 2:.0%} busy, {machine / hz / (rps * secs) * 1e6:.1f} us per read")
PY
curl -sf "http://$ADMIN/metrics" | grep -E '^cache_requests_total' || true
