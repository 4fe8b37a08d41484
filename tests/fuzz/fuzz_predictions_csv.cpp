// libFuzzer target: strata::compat::read_predictions_csv (prediction ledgers from other tools).
#include "compat/predictions.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = strata::fuzz::write_scratch(data, size, ".csv");
  strata::fuzz::expect_clean([&] {
    const strata::compat::PredictionTable t = strata::compat::read_predictions_csv(path);
    strata::compat::check_table(t, "fuzz");
  });
  return 0;
}
