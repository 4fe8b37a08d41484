#include "continual/method.h"

#include "continual/trainer.h"

#include <sstream>

namespace strata::continual {

namespace {
std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}
}  // namespace

const std::string& MethodConfig::raw(const std::string& key) const {
  auto it = values_.find(key);
  TORCH_CHECK(it != values_.end(), "strata::continual::MethodConfig: method '", method_, "' has no option '", key, "'");
  return it->second;
}

std::string MethodConfig::get_string(const std::string& key) const { return raw(key); }

double MethodConfig::get_double(const std::string& key) const {
  const auto& v = raw(key);
  try {
    size_t pos = 0;
    double d = std::stod(v, &pos);
    if (pos == v.size()) return d;
  } catch (const std::exception&) {
  }
  TORCH_CHECK(false, "strata: option ", method_, ".", key, ": '", v, "' is not a number");
}

int64_t MethodConfig::get_int(const std::string& key) const {
  const auto& v = raw(key);
  try {
    size_t pos = 0;
    long long d = std::stoll(v, &pos);
    if (pos == v.size()) return d;
  } catch (const std::exception&) {
  }
  TORCH_CHECK(false, "strata: option ", method_, ".", key, ": '", v, "' is not an integer");
}

bool MethodConfig::get_bool(const std::string& key) const {
  const auto& v = raw(key);
  if (v == "1" || v == "true" || v == "on" || v == "yes") return true;
  if (v == "0" || v == "false" || v == "off" || v == "no") return false;
  TORCH_CHECK(false, "strata: option ", method_, ".", key, ": '", v, "' is not a boolean (true/false)");
}

std::vector<double> MethodConfig::get_doubles(const std::string& key) const {
  std::vector<double> out;
  std::stringstream ss(raw(key));
  std::string item;
  while (std::getline(ss, item, ',')) {
    MethodConfig one(method_, {{key, item}});
    out.push_back(one.get_double(key));
  }
  TORCH_CHECK(!out.empty(), "strata: option ", method_, ".", key, " is empty");
  return out;
}

std::optional<TrainOptions> Method::next_stage(TaskContext& ctx, int64_t stage) { return std::nullopt; }

std::vector<torch::Tensor> Method::parameters(TaskContext& ctx) {
  std::vector<torch::Tensor> out;
  for (auto& p : ctx.model->parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

tasks::Split Method::training_data(TaskContext& ctx) { return ctx.task().train; }

torch::Tensor Method::training_logit_mask(TaskContext& ctx) {
  if (ctx.stream->scenario == tasks::Scenario::kDomainIncremental) return {};
  if (ctx.stream->scenario == tasks::Scenario::kClassIncremental && mask_seen_classes())
    return ctx.stream->own_task_mask();
  return ctx.stream->logit_mask(ctx.task_index);
}

void MethodRegistry::add(MethodInfo info) {
  TORCH_CHECK(!has(info.name), "strata::continual::MethodRegistry::add(): '", info.name, "' registered twice");
  infos_.push_back(std::move(info));
}

bool MethodRegistry::has(const std::string& name) const {
  for (const auto& i : infos_)
    if (i.name == name) return true;
  return false;
}

const MethodInfo& MethodRegistry::get(const std::string& name) const {
  for (const auto& i : infos_)
    if (i.name == name) return i;
  TORCH_CHECK(false, "unknown method '", name, "' (valid: ", join(names()), ")");
}

std::vector<std::string> MethodRegistry::names() const {
  std::vector<std::string> v;
  for (const auto& i : infos_) v.push_back(i.name);
  return v;
}

std::unique_ptr<Method> MethodRegistry::make(const MethodConfig& config) const {
  const auto& info = get(config.method());
  std::map<std::string, std::string> values;
  for (const auto& o : info.options) values[o.key] = o.default_value;
  for (const auto& [k, v] : config.values()) {
    if (!values.count(k)) {
      std::vector<std::string> keys;
      for (const auto& o : info.options) keys.push_back(o.key);
      TORCH_CHECK(false, "method '", info.name, "' has no option '", k, "' (valid: ", keys.empty() ? "none" : join(keys),
                  ")");
    }
    values[k] = v;
  }
  return info.make(MethodConfig(info.name, values));
}

}  // namespace strata::continual
