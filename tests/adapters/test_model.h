#pragma once
// A tiny model tree for the adapter tests: blocks.{0,1}.attn.{q,k,v}, blocks.{0,1}.mlp, fc1, head.
#include <torch/torch.h>

#include "adapters/adaptable_linear.h"

namespace strata::adapters::testing {

struct AttnImpl : torch::nn::Module {
  explicit AttnImpl(int64_t d)
      : q(register_module("q", AdaptableLinear(d, d))),
        k(register_module("k", AdaptableLinear(d, d))),
        v(register_module("v", AdaptableLinear(d, d))) {}
  torch::Tensor forward(const torch::Tensor& x) { return q(x) + k(x) * 0.5 + v(x) * 0.25; }
  AdaptableLinear q, k, v;
};
TORCH_MODULE(Attn);

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(int64_t d)
      : attn(register_module("attn", Attn(d))), mlp(register_module("mlp", AdaptableLinear(d, d))),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))) {}
  torch::Tensor forward(const torch::Tensor& x) { return x + mlp(torch::tanh(attn(norm(x)))); }
  Attn attn;
  AdaptableLinear mlp;
  torch::nn::LayerNorm norm;
};
TORCH_MODULE(Block);

struct NetImpl : torch::nn::Module {
  NetImpl(int64_t in, int64_t d, int64_t classes)
      : fc1(register_module("fc1", AdaptableLinear(in, d))),
        blocks(register_module("blocks", torch::nn::ModuleList(Block(d), Block(d)))),
        head(register_module("head", AdaptableLinear(d, classes))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::relu(fc1(x));
    for (auto& b : *blocks) h = b->as<BlockImpl>()->forward(h);
    return head(h);
  }
  AdaptableLinear fc1;
  torch::nn::ModuleList blocks;
  AdaptableLinear head;
};
TORCH_MODULE(Net);

/// Max absolute difference, for readable EXPECT_LT messages.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

}  // namespace strata::adapters::testing
