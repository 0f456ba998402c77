#!/usr/bin/env bash
# The supply-chain record of a release: a CycloneDX SBOM (JSON, spec 1.5) of the `ordo` binary
# as `cargo build --release --locked --bin ordo` builds it (default features, this machine's
# target), made by cargo-cyclonedx and checked against Cargo.lock and the build's own
# dependency graph.
#
# Usage: scripts/sbom.sh [--check]
#   Writes target/sbom/ordo.cdx.json, then checks it:
#   - it is CycloneDX JSON whose root component is `ordo` at the workspace's version;
#   - every package the release build compiles (`cargo tree -e normal,build`, the features the
#     release uses) is a component with its name, version and purl, and every registry one
#     carries the SHA-256 that Cargo.lock pins;
#   - every component is a package of Cargo.lock (nothing else).
#   `--check` (CI) is the same, quieter. cargo-cyclonedx is installed at a pinned version when
#   missing (a one-time compile of a few minutes, then kept in ~/.cargo/bin).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CYCLONEDX_VERSION=0.5.9
OUT_DIR=target/sbom
OUT=$OUT_DIR/ordo.cdx.json

quiet=false

log() { printf '==> %s\n' "$*" >&2; }

ensure_cyclonedx() {
  local installed
  installed=$(cargo cyclonedx --version 2>/dev/null | awk '{print $NF}' || true)
  if [[ $installed == "$CYCLONEDX_VERSION" ]]; then
    return 0
  fi
  log "installing cargo-cyclonedx $CYCLONEDX_VERSION (found: ${installed:-none})"
  cargo install --locked cargo-cyclonedx --version "$CYCLONEDX_VERSION"
}

generate() {
  local target=$1
  # The SBOM's timestamp is the commit's, so the same commit gives the same record.
  if [[ -z ${SOURCE_DATE_EPOCH:-} ]] && git rev-parse --git-dir >/dev/null 2>&1; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
    export SOURCE_DATE_EPOCH
  fi
  # cargo-cyclonedx writes beside the crate's manifest; the file is moved to target/ at once.
  local written=crates/ordo/ordo_bin.cdx.json
  trap 'rm -f "$written"' EXIT
  cargo cyclonedx --manifest-path crates/ordo/Cargo.toml --format json --spec-version 1.5 \
    --describe binaries --target "$target" -q
  mkdir -p "$OUT_DIR"
  mv "$written" "$OUT"
  trap - EXIT
}

check() {
  local target=$1 version build_packages
  version=$(cargo metadata --locked --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "ordo"))')
  # What the release build compiles: ordo's normal and build dependencies, on this target,
  # with the features `cargo build --release --bin ordo` resolves.
  build_packages=$(cargo tree --locked -p ordo -e normal,build --target "$target" \
    --prefix none --format '{p}' | awk '{print $1 "@" substr($2, 2)}' | sort -u)
  SBOM=$OUT VERSION=$version QUIET=$quiet BUILD_PACKAGES=$build_packages python3 - <<'EOF'
import json, os, sys, tomllib

quiet = os.environ["QUIET"] == "true"
problems = []

with open(os.environ["SBOM"]) as f:
    try:
        bom = json.load(f)
    except json.JSONDecodeError as e:
        sys.exit(f"the SBOM is not JSON: {e}")
if bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.5":
    problems.append(f"not a CycloneDX 1.5 document: {bom.get('bomFormat')} {bom.get('specVersion')}")

root = bom.get("metadata", {}).get("component", {})
version = os.environ["VERSION"]
if root.get("name") != "ordo" or root.get("version") != version:
    problems.append(f"the root component is {root.get('name')} {root.get('version')}, not ordo {version}")
if not root.get("purl", "").startswith(f"pkg:cargo/ordo@{version}"):
    problems.append(f"the root component's purl is {root.get('purl')!r}")

with open("Cargo.lock", "rb") as f:
    lock = {(p["name"], p["version"]): p for p in tomllib.load(f)["package"]}

components = {}
for c in bom.get("components", []):
    key = (c.get("name"), c.get("version"))
    components[key] = c
    if key not in lock:
        problems.append(f"component {key[0]} {key[1]} is not in Cargo.lock")

build = set()
for line in os.environ["BUILD_PACKAGES"].split():
    name, _, ver = line.partition("@")
    if name != "ordo":
        build.add((name, ver))
for name, ver in sorted(build):
    c = components.get((name, ver))
    if c is None:
        problems.append(f"{name} {ver} is built into the release but missing from the SBOM")
        continue
    if not c.get("purl", "").startswith(f"pkg:cargo/{name}@{ver}"):
        problems.append(f"{name} {ver} has the purl {c.get('purl')!r}")
    pinned = lock[(name, ver)].get("checksum")
    if pinned:
        hashes = {h.get("alg"): h.get("content") for h in c.get("hashes", [])}
        if hashes.get("SHA-256") != pinned:
            problems.append(f"{name} {ver}: SHA-256 {hashes.get('SHA-256')} is not Cargo.lock's {pinned}")

if problems:
    print("the SBOM is not a complete record of the release build:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(1)
extra = sorted(f"{n} {v}" for (n, v) in components if (n, v) not in build)
if not quiet:
    print(f"SBOM ok: ordo {version}, {len(components)} components; all {len(build)} packages "
          f"of the release build with purl (and registry SHA-256 = Cargo.lock).")
    if extra:
        # cargo-cyclonedx reads `cargo metadata`, whose graph keeps optional dependencies of
        # features nobody enables: listed, though never compiled. Over- not under-reporting.
        print(f"  {len(extra)} more components are Cargo.lock packages the release does not "
              f"compile (optional dependencies): {', '.join(extra)}")
EOF
}

main() {
  local target
  target=$(rustc -vV | sed -n 's/^host: //p')
  quiet=false
  case "${1:-}" in
    --check) quiet=true ;;
    "") ;;
    *)
      echo "usage: $0 [--check]" >&2
      exit 2
      ;;
  esac
  ensure_cyclonedx
  generate "$target"
  check "$target"
  if [[ $quiet == false ]]; then
    log "wrote $OUT"
  fi
}

# Sourcing the file (e.g. to check an SBOM by hand) defines the functions without running.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
