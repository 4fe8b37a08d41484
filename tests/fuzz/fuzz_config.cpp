// libFuzzer target: strata::run::parse_run_config_text (the INI config parser, plus validation and
// the INI writer on whatever parses).
#include "run/config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  strata::fuzz::expect_clean([&] {
    const strata::run::RunConfig c = strata::run::parse_run_config_text(text, "fuzz.ini");
    c.validate();
    // What was accepted must write back out and parse again.
    (void)strata::run::parse_run_config_text(c.to_ini(), "fuzz.ini (round trip)");
  });
  return 0;
}
