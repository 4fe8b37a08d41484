// Inference time of the tiny ViT: base model, with unmerged LoRA adapters on every attention
// q/v, and after merging them into the base weights. A merged model has no adapter modules left,
// so it should run as fast as the base. Rounds alternate and each variant keeps its best time.
#include "adapters/inject.h"
#include "core/threads.h"
#include "adapters/lora.h"
#include "models/models.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>

using namespace strata;

namespace {
double best_forward_ms(strata::models::ModelImpl& model, const torch::Tensor& x, int reps) {
  torch::NoGradGuard no_grad;
  model.eval();
  model.forward(x);  // warm-up
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    model.forward(x);
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}
}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 256;
  core::set_num_threads(threads);
  torch::manual_seed(0);
  const auto opts = strata::models::ModelOptions().arch("vit");
  auto base = strata::models::make_model(opts);
  auto adapted = strata::models::make_model(opts);
  auto merged = strata::models::make_model(opts);
  for (auto* m : {&adapted, &merged}) {
    adapters::inject(**m, "blocks.*.attn.q|blocks.*.attn.v", [](const std::string&, const adapters::AdaptableLinearImpl& l) {
      auto a = adapters::LoRA(l.in_features(), l.out_features(), adapters::LoRAOptions(8));
      torch::NoGradGuard ng;
      for (auto& p : a->parameters()) p.normal_(0, 0.02);  // non-zero B, so the merge changes weights
      return a.ptr();
    });
  }
  {  // the same adapter weights in both, so merged and unmerged outputs must agree
    torch::NoGradGuard ng;
    auto src = adapted->named_parameters();
    for (auto& item : merged->named_parameters()) item.value().copy_(src[item.key()]);
  }
  adapters::merge_all(*merged);
  auto x = torch::randn({batch, 1, 28, 28});
  {
    torch::NoGradGuard ng;
    std::cout << "max |merged - unmerged| output: " << (merged->forward(x) - adapted->forward(x)).abs().max().item<double>()
              << "\n";
  }
  double tb = 1e30, ta = 1e30, tm = 1e30;
  for (int round = 0; round < 5; ++round) {
    tb = std::min(tb, best_forward_ms(*base, x, 5));
    ta = std::min(ta, best_forward_ms(*adapted, x, 5));
    tm = std::min(tm, best_forward_ms(*merged, x, 5));
  }
  std::cout << std::fixed << std::setprecision(3) << "vit forward, batch " << batch << ", " << threads
            << " thread(s), best of 25: base " << tb << " ms, unmerged lora " << ta << " ms (" << ta / tb
            << "x), merged " << tm << " ms (" << tm / tb << "x)\n";
  return 0;
}
