#!/usr/bin/env bash
# Provisions the services the test suite talks to (PostgreSQL, Redis, RabbitMQ, NATS) and the
# tools it needs, then runs the whole workspace's tests. Safe to run again and again: every step
# first checks whether its work is already done.
#
# Usage: scripts/test.sh [extra arguments for the test runner]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# "command:package" pairs: a Debian package is installed when its command is missing (a command
# given as an absolute path is a file that must exist).
REQUIRED_PACKAGES=(
  "wrk:wrk"
  "promtool:prometheus"       # the metrics exposition and deploy/prometheus (rules and their unit tests)
  "python3:python3"           # deploy/*/generate.py --check: generated rules and dashboards up to date
  "docker-compose:docker-compose" # `docker-compose config` validates deploy/compose.yaml (nothing is pulled)
  "protoc:protobuf-compiler" # etcd-client's build (the `etcd` feature)...
  "/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev" # ...and protoc's includes
  "etcd:etcd-server"         # the split-deployment and discovery tests start their own etcd
  "psql:postgresql-client"   # the database-outage tests hold locks from a session of their own
  "ss:iproute2"              # the flood test reads the listen backlog
)

log() { printf '==> %s\n' "$*" >&2; }

# Runs "$@" until it succeeds, at most $1 seconds; returns non-zero on time-out.
wait_until() {
  local timeout=$1
  shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.5
  done
}

tcp_open() {
  local host=$1 port=$2
  (exec 3<>"/dev/tcp/${host}/${port}") 2>/dev/null
}

ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "${REQUIRED_PACKAGES[@]}"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if [[ $cmd == /* ]]; then
      [[ -e $cmd ]] || missing+=("$pkg")
    elif ! command -v "$cmd" >/dev/null 2>&1; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  log "installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_service NAME TIMEOUT_SECONDS CHECK_COMMAND... -- START_COMMAND...
ensure_service() {
  local name=$1 timeout=$2
  shift 2
  local check=()
  while (($# > 0)) && [[ $1 != -- ]]; do
    check+=("$1")
    shift
  done
  shift # the "--"
  if "${check[@]}" >/dev/null 2>&1; then
    log "$name is up"
    return 0
  fi
  log "starting $name"
  # A start command can fail because the service came up meanwhile; the check below decides.
  "$@" || log "$name start command exited with $?"
  if ! wait_until "$timeout" "${check[@]}"; then
    log "$name did not become ready within ${timeout}s"
    return 1
  fi
  log "$name is up"
}

start_postgres() {
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

start_redis() {
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

start_rabbitmq() {
  rabbitmq-server -detached
}

start_nats() {
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
}

redis_ping() {
  [[ $(redis-cli -h 127.0.0.1 ping 2>/dev/null) == PONG ]]
}

# schemathesis, for the OpenAPI contract test (crates/ordo/tests/openapi_contract.rs): pinned,
# with everything it pulls in, by a requirements file, in a virtualenv of its own under
# ~/.cache/ordo (or $ORDO_SCHEMATHESIS_VENV), where the test looks for it. Reinstalled when the
# requirements change.
SCHEMATHESIS_REQUIREMENTS=crates/ordo/tests/schemathesis/requirements.txt

ensure_schemathesis() {
  local version venv
  version=$(sed -n 's/^schemathesis==//p' "$SCHEMATHESIS_REQUIREMENTS")
  venv=${ORDO_SCHEMATHESIS_VENV:-$HOME/.cache/ordo/schemathesis-$version}
  if cmp -s "$SCHEMATHESIS_REQUIREMENTS" "$venv/requirements.txt" &&
    "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$version"; then
    log "schemathesis $version is installed"
    return 0
  fi
  log "installing schemathesis $version into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv"; then
    # Debian's python3 keeps venv (and its pip) in a package of its own.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$SCHEMATHESIS_REQUIREMENTS"
  cp "$SCHEMATHESIS_REQUIREMENTS" "$venv/requirements.txt"
}

provision() {
  ensure_packages
  ensure_schemathesis
  ensure_service PostgreSQL 30 pg_isready -h 127.0.0.1 -p 5432 -- start_postgres
  ensure_service Redis 30 redis_ping -- start_redis
  ensure_service RabbitMQ 60 tcp_open 127.0.0.1 5672 -- start_rabbitmq
  ensure_service NATS 30 tcp_open 127.0.0.1 4222 -- start_nats
}

run_tests() {
  export ORDO_TEST_POSTGRES_URL=${ORDO_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
  # The brokers of tests/brokers.rs (each test uses a namespace of its own).
  export ORDO_TEST_AMQP_URL=${ORDO_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
  export ORDO_TEST_NATS_URL=${ORDO_TEST_NATS_URL:-nats://127.0.0.1:4222}
  if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run --locked --workspace --all-features --no-fail-fast $*"
    cargo nextest run --locked --workspace --all-features --no-fail-fast "$@"
  else
    log "cargo-nextest not found; cargo test --locked --workspace --all-features $*"
    cargo test --locked --workspace --all-features "$@"
  fi
}

main() {
  provision
  run_tests "$@"
}

# Sourcing the file (e.g. to try one function) defines the functions without running anything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
