#!/usr/bin/env bash
# The reliability suites alone, with their figures collected.
#
#   tests/reliability.sh                 # CI defaults (about 3 minutes)
#   SDU_SOAK_CYCLES=50000 tests/reliability.sh soak    # the full soak
#   PROPTEST_CASES=1000000 tests/reliability.sh prop   # a long property run
#
# Arguments name test files (prop soak disk tls hostile log_injection
# signals_stress proxy); none means all. Tuning variables: SDU_SOAK_CYCLES,
# SDU_SOAK_HTTP_TIMEOUT, SDU_SIGNAL_ROUNDS, SDU_SIGNAL_STORMS,
# SDU_SIGNAL_SENSORS, SDU_DISK_ROUNDS, SDU_BOMB_MAX_BYTES, PROPTEST_CASES,
# SDU_SEED (replays a run). Figures go to $SDU_REPORT_DIR (default
# target/reliability). The tmpfs, read-only mount and journal tests need
# root: they are ignored otherwise and included when run as root.
# `openssl` is needed for the TLS tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export SDU_REPORT_DIR="${SDU_REPORT_DIR:-$PWD/target/reliability}"
rm -rf "$SDU_REPORT_DIR"
mkdir -p "$SDU_REPORT_DIR"
command -v openssl >/dev/null || { echo "openssl is needed (apt-get install openssl)" >&2; exit 1; }
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(prop disk tls proxy hostile log_injection signals_stress soak)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
run_args=(--nocapture)
[ "$(id -u)" -ne 0 ] || run_args+=(--include-ignored)
cargo test --locked "${args[@]}" -- "${run_args[@]}"
echo "== figures ($SDU_REPORT_DIR)"
cat "$SDU_REPORT_DIR"/*.txt 2>/dev/null || true
