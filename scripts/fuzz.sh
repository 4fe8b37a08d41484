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

if [[ "${STRATA_FUZZ_NO_BUILD:-0}" != 1 ]] && ! command -v clang++ >/dev/null; then
  [[ $(id -u) -eq 0 ]] || { echo "fuzz.sh: clang++ is missing (apt-get install clang)" >&2; exit 1; }
  apt-get install -y clang >/dev/null
fi
source scripts/sanitizers/env.sh
# STRATA_FUZZ_NO_BUILD=1: run the targets already in build-fuzz (e.g. while another build runs there).
[[ "${STRATA_FUZZ_NO_BUILD:-0}" == 1 ]] || {
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE=-O1 \
  -DCMAKE_CXX_FLAGS_RELEASE=-O1 -DSTRATA_FUZZ=ON -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_BENCH=OFF >/dev/null
ninja -C build-fuzz -j"$(nproc)" "${targets[@]/#/fuzz_}"
}

# A finding whose stack, below the first Strata frame, passes through a function listed in
# tests/fuzz/known/upstream.txt (a third-party bug, documented there) is counted and fuzzing resumes;
# anything else — every finding in Strata's own code — fails the run.
known_upstream() {
  local frames
  frames="$(awk '/ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)/{on=1; next} on && /^ +#[0-9]+ /{ if ($0 ~ / in (strata::|LLVMFuzzerTestOneInput)/) exit; print; next} on && NF==0 {exit}' "$1")"
  [[ -n "$frames" ]] || return 1
  while read -r fn lib; do
    [[ -z "$fn" || "$fn" == \#* ]] && continue
    grep -q " in $fn .*$lib" <<<"$frames" && return 0
  done <tests/fuzz/known/upstream.txt
  return 1
}

executions() {
  local n
  n="$(sed -n 's/^stat::number_of_executed_units: *//p' "$1" | tail -1)"
  [[ -n "$n" ]] || n="$(grep -oE '^#[0-9]+' "$1" | tail -1 | tr -d '#')"
  echo "${n:-0}"
}

status=0
for t in "${targets[@]}"; do
  work="build-fuzz/corpus/$t" findings="build-fuzz/findings/$t"
  mkdir -p "$work" "$findings"
  echo "== fuzz_$t: ${seconds}s"
  end=$((SECONDS + seconds)) runs=0 execs=0 known=0
  while ((SECONDS < end)); do
    runs=$((runs + 1))
    log="build-fuzz/findings/$t.$runs.log"
    # One thread per reader: LibTorch's intra-op pool only adds noise to a parser's coverage.
    if OMP_NUM_THREADS=1 "build-fuzz/tests/fuzz/fuzz_$t" -max_total_time=$((end - SECONDS)) -timeout=10 \
        -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 -artifact_prefix="$findings/" "$work" \
        "tests/fuzz/corpus/$t" >"$log" 2>&1; then
      execs=$((execs + $(executions "$log")))
      break
    fi
    execs=$((execs + $(executions "$log")))
    if known_upstream "$log"; then
      known=$((known + 1))
      echo "   known third-party crash ($(grep -m1 -oE 'SUMMARY: .*' "$log" | cut -c1-100)), resuming"
      continue
    fi
    status=1
    echo "fuzz_$t: FINDING (log: $log; input: $findings/$(ls -t "$findings" | head -1))"
    grep -E 'ERROR: |SUMMARY: |runtime error|terminate called' "$log" | head -5
    break
  done
  echo "   fuzz_$t: about $execs executions, $known known third-party crashes"
done
exit $status
