# Run-time options for the sanitizer builds (sourced by scripts/test.sh --sanitize and scripts/fuzz.sh).
# LibTorch, OpenBLAS, HDF5 and libgomp are not instrumented: the suppression files name only their
# libraries, never Strata code — a report in our own code is a bug to fix, not to suppress.
_strata_san_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0:strict_string_checks=0:allocator_may_return_null=0${STRATA_ASAN_EXTRA:+:$STRATA_ASAN_EXTRA}"
export LSAN_OPTIONS="suppressions=${_strata_san_dir}/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=${_strata_san_dir}/ubsan.supp"
unset _strata_san_dir
