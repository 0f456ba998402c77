#!/usr/bin/env bash
# Fuzzes the parsers at ordo's edges with cargo-fuzz (libFuzzer): each target of fuzz/ runs for
# a set time on its corpus, fuzz/corpus/<target>/ (kept in the repository: valid examples to
# start from, and what earlier runs found that reaches new code). Crashes and the inputs that
# caused them land in fuzz/artifacts/<target>/ (not kept); a crash fails the run.
#
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]
#   seconds-per-target  how long each target runs (default 60)
#   target...           only these (default: every target, `cargo fuzz list`)
# Environment:
#   FUZZ_MINIMIZE=1     afterwards, shrink each corpus to the inputs that keep its coverage
#                       (`cargo fuzz cmin`, seeds kept); do it before committing a grown corpus.
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer=address, coverage instrumentation);
# the machine has a stable toolchain only, which accepts them with RUSTC_BOOTSTRAP=1. The first
# build compiles every dependency with that instrumentation: about 45 minutes of CPU.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1
# The bundled SQLite (rusqlite, through ordo-storage) trips AddressSanitizer's one-definition
# check at start-up (`aiOff`), before any input: not a finding about ordo.
export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

log() { printf '==> %s\n' "$*" >&2; }

ensure_cargo_fuzz() {
  local installed
  installed=$(cargo fuzz --version 2>/dev/null | awk '{print $NF}' || true)
  if [[ $installed != "$CARGO_FUZZ_VERSION" ]]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION (found: ${installed:-none})"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
  fi
}

# libFuzzer prints "stat::number_of_executed_units: N" at the end of a run.
execs_of() {
  sed -n 's/^stat::number_of_executed_units: *//p' "$1" | tail -n 1
}

# Shrinks a corpus to a smallest set of inputs covering the same edges (hit counts aside: they
# would keep ten times the files), keeping the hand-written seeds (seed-*) under their names.
minimize() {
  local target=$1 log=$2 corpus=fuzz/corpus/$1 seeds seed
  log "minimizing the corpus of $target"
  seeds=$(mktemp -d)
  find "$corpus" -maxdepth 1 -name 'seed-*' -exec mv {} "$seeds/" \;
  cp "$seeds"/* "$corpus/" 2>/dev/null || true
  cargo fuzz cmin --fuzz-dir fuzz "$target" "$corpus" -- -set_cover_merge=1 -use_counters=0 \
    >"$log" 2>&1
  for seed in "$seeds"/*; do
    [[ -e $seed ]] || continue
    # libFuzzer names a kept input by its SHA-1: drop that copy, keep the named one.
    rm -f "$corpus/$(sha1sum "$seed" | cut -d' ' -f1)"
    mv "$seed" "$corpus/"
  done
  rmdir "$seeds"
}

main() {
  local seconds=${1:-60}
  if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "usage: $0 [seconds-per-target] [target...]" >&2
    exit 2
  fi
  shift || true
  ensure_cargo_fuzz

  local targets=("$@")
  if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
  fi

  # fuzz/Cargo.lock is kept like the workspace's: a build must not change it (cargo fuzz has
  # no --locked; this fails instead when the lock file is out of date).
  cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

  # One build of every target: they share all their dependencies.
  log "building the fuzz targets"
  cargo fuzz build --fuzz-dir fuzz

  local logs=fuzz/target/logs failed=() summary=() target log status execs files bytes
  mkdir -p "$logs"
  for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    log="$logs/$target.log"
    log "fuzzing $target for ${seconds}s (log: $log)"
    status=0
    # One process; -timeout: an input taking 10 s is a hang; -rss_limit_mb: a blow-up of
    # memory is a finding; -print_final_stats for the count of runs.
    cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1 || status=$?
    execs=$(execs_of "$log")
    files=$(find "fuzz/corpus/$target" -type f | wc -l)
    bytes=$(du -sb "fuzz/corpus/$target" | cut -f1)
    summary+=("$(printf '%-24s %6ss %12s runs %5s inputs %8s bytes' "$target" "$seconds" "${execs:-?}" "$files" "$bytes")")
    if ((status != 0)); then
      failed+=("$target")
      log "$target FAILED (exit $status): see $log and fuzz/artifacts/$target/"
      grep -m 5 -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" >&2 || true
    fi
  done

  if [[ ${FUZZ_MINIMIZE:-0} == 1 ]]; then
    for target in "${targets[@]}"; do
      minimize "$target" "$logs/$target.cmin.log"
    done
  fi

  printf '\n%s\n' "${summary[@]}"
  printf 'corpus: %s bytes in all\n' "$(du -sb fuzz/corpus | cut -f1)"
  if ((${#failed[@]} > 0)); then
    printf 'FAILED: %s\n' "${failed[*]}" >&2
    exit 1
  fi
}

main "$@"
