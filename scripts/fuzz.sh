#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, STRATA_FUZZ=ON, clang) in ./build-fuzz and runs each for
# SECONDS (default 30) from its seed corpus tests/fuzz/corpus/<target>. Fails on any finding: a crash,
# a sanitizer report, a leak, a hang (> 10 s on one input) or a run over 2 GB.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600 idx version
# New inputs go to build-fuzz/corpus/<target> (kept between runs); a finding is saved as
# build-fuzz/findings/<target>/crash-*|leak-*|timeout-*|oom-* and the script stops with its name.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
[[ $# -gt 0 ]] && shift
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(idx config safetensors predictions_csv predictions_jsonl version)

if ! command -v clang++ >/dev/null; then
  [[ $(id -u) -eq 0 ]] || { echo "fuzz.sh: clang++ is missing (apt-get install clang)" >&2; exit 1; }
  apt-get install -y clang >/dev/null
fi
source scripts/sanitizers/env.sh
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE=-O1 \
  -DCMAKE_CXX_FLAGS_RELEASE=-O1 -DSTRATA_FUZZ=ON -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_BENCH=OFF >/dev/null
ninja -C build-fuzz -j"$(nproc)" "${targets[@]/#/fuzz_}"

status=0
for t in "${targets[@]}"; do
  work="build-fuzz/corpus/$t" findings="build-fuzz/findings/$t"
  mkdir -p "$work" "$findings"
  log="build-fuzz/findings/$t.log"
  echo "== fuzz_$t: ${seconds}s"
  # One thread per reader: LibTorch's intra-op pool only adds noise to a parser's coverage.
  if OMP_NUM_THREADS=1 "build-fuzz/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -max_len=16384 -print_final_stats=1 -artifact_prefix="$findings/" "$work" "tests/fuzz/corpus/$t" \
      >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$log" | tr '\n' ' '
    echo
  else
    status=1
    echo "fuzz_$t: FINDING (log: $log; input: $(ls -t "$findings" | head -1))"
    grep -E 'ERROR: |SUMMARY: |runtime error|terminate called' "$log" | head -5
  fi
done
exit $status
