#!/usr/bin/env bash
# Install what is missing, build, and run the whole test suite with ctest.
#   scripts/test.sh              ./build (Release), every test
#   scripts/test.sh --sanitize [CTEST ARGS]   ./build-asan (STRATA_SANITIZE=ON: AddressSanitizer +
#                                UBSan), every test but the install check (see below), or the tests
#                                that CTEST ARGS select (-L unit also builds only the library tests)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--sanitize" ]]; then
  scripts/install-deps.sh
  scripts/build.sh
  cd build
  ctest --output-on-failure -j"$(nproc)" --timeout 900
  exit 0
fi

shift
scripts/install-deps.sh
# The run-time options apply to the build too: gtest_discover_tests runs every test program once to
# list its tests, and that run must not fail on a third-party leak.
source scripts/sanitizers/env.sh
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_SANITIZE=ON -DSTRATA_BUILD_BENCH=OFF >/dev/null
# With `-L unit` only the library test programs are built (the rest would not run).
if [[ " $* " == *" -L unit "* ]]; then ninja -C build-asan -j"$(nproc)" unit_tests; else ninja -C build-asan -j"$(nproc)"; fi
cd build-asan
# installed_package_example builds examples/ against the installed package with the consumer's own
# (uninstrumented) flags, which cannot link the instrumented libraries: it is a packaging check that
# the normal run covers.
ctest --output-on-failure -j"$(nproc)" --timeout 1800 -E '^installed_package_example$' "$@"
