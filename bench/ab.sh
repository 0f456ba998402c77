#!/bin/bash
# Interleaved A/B of ordo builds or settings (BENCHMARKS.md, session 13): each variant is an
# `ordo serve` of its own on a fresh PostgreSQL database, pinned to CPU 1, traces exported to the
# local `otlp_sink`; wrk (64 connections) on CPU 0 reads one cached order (KIND=get) or creates
# orders (KIND=post); rounds rotate the order of the variants so drift hits all alike. Prints
# req/s, p99 and ordo's CPU per request for each round, then the medians.
#
# usage (from the project root, after `cargo build --release -p ordo --bin ordo --example otlp_sink`):
#   ROUNDS=4 SECS=8 KIND=get bash bench/ab.sh NAME=BINARY:SAMPLER [NAME=BINARY:SAMPLER ...]
#   SAMPLER is an OTEL_TRACES_SAMPLER value; append `+noexp` to export nothing. EXTRA_ENV is
#   passed to every variant (e.g. EXTRA_ENV="OTEL_TRACES_SAMPLER_ARG=0.1").
#   example: bash bench/ab.sh on=target/release/ordo:always_on off=target/release/ordo:always_off
set -uo pipefail
ROUNDS=${ROUNDS:-4}; SECS=${SECS:-8}; KIND=${KIND:-get}
PG=postgres://postgres@127.0.0.1:5432
HERE=${PEER_BENCH_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/shared/bench}
OUT=$(mktemp -d -t ab.XXXX); echo "out $OUT"
pids=(); cleanup(){ for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }; trap cleanup EXIT
SINK=${SINK:-$(cd "$(dirname "$0")/.." && pwd)/target/release/examples/otlp_sink}
"$SINK" 127.0.0.1:24399 >"$OUT/sink.log" 2>&1 & pids+=($!)
declare -A PID BASE ID; names=(); port=28190
for spec in "$@"; do
  name=${spec%%=*}; rest=${spec#*=}; bin=${rest%%:*}; sampler=${rest#*:}; ep=http://127.0.0.1:24399; case $sampler in *+noexp) sampler=${sampler%+noexp}; ep=;; esac
  names+=($name); port=$((port+1)); db=ab_$name
  psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
  env RUST_LOG=warn ORDO_GRPC_ADDR=127.0.0.1:0 ORDO_DATABASE_MAX_CONNECTIONS=32 ORDO_HTTP_ADDR=127.0.0.1:$port ORDO_ADMIN_ADDR=127.0.0.1:$((port+1000)) ORDO_DATABASE_URL=$PG/$db \
    OTEL_TRACES_SAMPLER=$sampler OTEL_EXPORTER_OTLP_ENDPOINT=$ep OTEL_EXPORTER_OTLP_PROTOCOL=grpc ${EXTRA_ENV:-} \
    taskset -c 1 "$bin" serve >"$OUT/$name.log" 2>&1 & PID[$name]=$!; pids+=($!)
  BASE[$name]=http://127.0.0.1:$port
done
sleep 1
for n in "${names[@]}"; do for _ in $(seq 100); do curl -fs ${BASE[$n]}/healthz >/dev/null && break; sleep 0.2; done; done
seed(){ local B=$1 H='content-type: application/json'
  curl -fs -XPUT "$B/v1/warehouses/us-1" -H "$H" -d '{"country":"US"}' >/dev/null
  for i in $(seq -f %03g 0 99); do
    curl -fs -XPUT "$B/v1/products/bench-sku-$i" -H "$H" -d '{"name":"Bench '$i'","price":{"amount_minor":1999,"currency":"USD"}}' >/dev/null
    curl -fs -XPUT "$B/v1/stock/bench-sku-$i/us-1" -H "$H" -d '{"on_hand":1000000000}' >/dev/null
  done
  curl -fs -XPOST "$B/v1/orders" -H "$H" -d '{"customer_id":"bench","currency":"USD","items":[{"sku":"bench-sku-001","quantity":2}],"shipping_address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"contact":{"email":"ada@example.com","phone":"+15550100"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
for n in "${names[@]}"; do ID[$n]=$(seed ${BASE[$n]}); curl -fs ${BASE[$n]}/v1/orders/${ID[$n]} >/dev/null; done
HZ=$(getconf CLK_TCK); ptick(){ awk '{print $14+$15}' /proc/$1/stat; }
args_of(){ if [ $KIND = get ]; then echo "${BASE[$1]}/v1/orders/${ID[$1]}"; else echo "-s $HERE/peer-go/post_order.lua ${BASE[$1]}/v1/orders"; fi; }
for n in "${names[@]}"; do taskset -c 0 wrk -t1 -c64 -d2s $(args_of $n) >/dev/null; done
for r in $(seq $ROUNDS); do
  rot=("${names[@]:$((r % ${#names[@]}))}" "${names[@]:0:$((r % ${#names[@]}))}")
  for n in "${rot[@]}"; do
    f=$OUT/${n}_$r.txt; s0=$(ptick ${PID[$n]})
    taskset -c 0 wrk -t1 -c64 -d${SECS}s --latency $(args_of $n) >$f 2>&1
    s1=$(ptick ${PID[$n]}); rps=$(awk '/Requests\/sec/{print $2}' $f)
    printf "%-8s r%s rps=%-10s p99=%-8s us/req=%.2f %s\n" $n $r $rps "$(awk '/ 99%/{print $2}' $f)" "$(echo "($s1-$s0)/$HZ*1000000/($rps*$SECS)" | bc -l)" "$(grep -E 'Non-2xx|Socket' $f|tr '\n' ' ')" | tee -a $OUT/summary
  done
done
echo "sink ticks: $(awk '{print $14+$15}' /proc/${pids[0]}/stat)"
for n in "${names[@]}"; do echo "$n ticks: $(awk '{print $14+$15}' /proc/${PID[$n]}/stat)"; done
python3 - $OUT/summary <<'PY'
import re,sys,statistics as st,collections
d=collections.defaultdict(list)
for l in open(sys.argv[1]):
    m=re.match(r'(\S+)\s+r\d+ rps=(\S+)\s+p99=\S+\s+us/req=(\S+)',l)
    if m: d[m[1]].append((float(m[2]),float(m[3])))
for k,v in d.items(): print(f"{k:8} median rps={st.median(x[0] for x in v):.0f} us/req={st.median(x[1] for x in v):.2f}")
PY
