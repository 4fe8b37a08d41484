// A continual-learning method of your own, in one file: "anchor", an L2 pull towards the weights the
// model had at the end of the previous task,
//     loss = CE + (lambda / 2) * sum_p ||p - p*||^2   (p* = parameters after the previous task),
// registered next to the built-in methods and run over a small synthetic stream by the same Runner
// `strata train` uses, next to plain fine-tuning (naive). Prints both accuracy matrices; exits 0 when
// the anchor forgot less than naive.
//
//   custom_method [--out DIR] [--lambda X]
#include "continual/method.h"
#include "run/runner.h"

#include <cstring>
#include <iostream>

using namespace strata;

namespace {

class AnchorMethod : public continual::Method {
 public:
  explicit AnchorMethod(double lambda) : lambda_(lambda) {}
  std::string name() const override { return "anchor"; }

  void on_task_start(continual::TaskContext& ctx) override { model_ = ctx.model; }

  torch::Tensor extra_loss(continual::StepContext& step) override {
    if (anchors_.empty()) return {};
    torch::Tensor penalty = torch::zeros({});
    auto params = model_->named_parameters();
    for (const auto& p : params) {
      auto it = anchors_.find(p.key());
      if (it != anchors_.end()) penalty = penalty + (p.value() - it->second).pow(2).sum();
    }
    return 0.5 * lambda_ * penalty;
  }

  void on_task_end(continual::TaskContext& ctx) override {
    torch::NoGradGuard no_grad;
    for (const auto& p : ctx.model->named_parameters()) anchors_[p.key()] = p.value().detach().clone();
  }

  // Everything needed to resume exactly: the anchors.
  continual::MethodState save() const override {
    continual::MethodState s;
    for (const auto& [k, v] : anchors_) s.tensors["anchor/" + k] = v;
    return s;
  }
  void load(const continual::MethodState& state, models::Model& model) override {
    anchors_.clear();
    for (const auto& [k, v] : state.tensors)
      if (k.rfind("anchor/", 0) == 0) anchors_[k.substr(7)] = v.clone();
    model_ = model;
  }

 private:
  double lambda_;
  models::Model model_;
  std::map<std::string, torch::Tensor> anchors_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string out = "runs";
  std::string lambda = "1.0";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--out")) out = argv[i + 1];
    if (!std::strcmp(argv[i], "--lambda")) lambda = argv[i + 1];
  }
  try {
    // The built-in methods plus ours; the registry must outlive the Runner.
    continual::MethodRegistry registry = continual::builtin_methods();
    registry.add({"anchor",
                  "L2 pull towards the previous task's weights",
                  {{"lambda", "1.0", "weight of the L2 penalty"}},
                  [](const continual::MethodConfig& c) { return std::make_unique<AnchorMethod>(c.get_double("lambda")); }});

    // The same stream and model, trained once with plain fine-tuning and once with the anchor.
    auto run_method = [&](const continual::MethodConfig& method) {
      run::RunConfig config;
      config.out = out;
      config.name = method.method() + "-synthetic";
      config.quiet = true;
      config.stream.name("synthetic").num_tasks(3);
      config.model.arch("mlp").hidden({32});
      config.train.epochs(2).lr(0.05);
      config.method = method;
      std::filesystem::remove_all(config.run_dir());
      run::Runner runner(config, registry);
      const auto metrics = runner.run();
      std::cout << method.method() << ":\n" << runner.summary();
      return metrics;
    };
    const auto naive = run_method(continual::MethodConfig("naive", {}));
    const auto anchor = run_method(continual::MethodConfig("anchor", {{"lambda", lambda}}));
    // What the method is for: it forgets less than plain fine-tuning.
    if (!(anchor.forgetting < naive.forgetting)) {
      std::cerr << "custom_method: anchor forgot " << anchor.forgetting << ", naive " << naive.forgetting << "\n";
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "custom_method: " << e.what() << "\n";
    return 2;
  }
}
