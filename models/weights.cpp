#include "models/weights.h"

#include "checkpoints/version_store.h"
#include "core/h5.h"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <regex>
#include <set>
#include <sstream>

namespace strata::models {

namespace {

std::string shape_str(c10::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

NamedTensors model_state(ModelImpl& model) {
  NamedTensors out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

// The name of Strata tensor `s` in scheme `n`; "" when it has none. `slot` receives 0/1/2 for q/k/v
// (parts of one fused tensor) and -1 otherwise.
std::string external_name(const std::string& s, WeightNames n, int* slot) {
  *slot = -1;
  if (n == WeightNames::kStrata) return s;
  const bool tv = n == WeightNames::kTorchvision;
  static const std::regex block(R"(blocks\.(\d+)\.(norm1|norm2|attn\.q|attn\.k|attn\.v|attn\.o|mlp\.fc1|mlp\.fc2)\.(weight|bias))");
  static const std::regex top(R"((patch_embed|norm|head)\.(weight|bias))");
  std::smatch m;
  if (s == "cls_token") return tv ? "class_token" : "cls_token";
  if (s == "pos_embed") return tv ? "encoder.pos_embedding" : "pos_embed";
  if (std::regex_match(s, m, top)) {
    const std::string mod = m[1], what = m[2];
    if (mod == "patch_embed") return (tv ? "conv_proj." : "patch_embed.proj.") + what;
    if (mod == "norm") return (tv ? "encoder.ln." : "norm.") + what;
    return (tv ? "heads.head." : "head.") + what;
  }
  if (std::regex_match(s, m, block)) {
    const std::string i = m[1], mod = m[2], what = m[3];
    if (mod == "attn.q" || mod == "attn.k" || mod == "attn.v") {
      *slot = mod == "attn.q" ? 0 : mod == "attn.k" ? 1 : 2;
      return tv ? "encoder.layers.encoder_layer_" + i + ".self_attention.in_proj_" + what
                : "blocks." + i + ".attn.qkv." + what;
    }
    if (!tv) return "blocks." + i + "." + (mod == "attn.o" ? std::string("attn.proj") : mod) + "." + what;
    static const std::map<std::string, std::string> tvmod = {
        {"norm1", "ln_1"}, {"norm2", "ln_2"}, {"attn.o", "self_attention.out_proj"}, {"mlp.fc1", "mlp.0"},
        {"mlp.fc2", "mlp.3"}};
    return "encoder.layers.encoder_layer_" + i + "." + tvmod.at(mod) + "." + what;
  }
  return "";
}

// One tensor of the external scheme: the concatenation along dim 0 of one or more Strata tensors,
// reshaped to `shape`.
struct MapEntry {
  std::string name;
  std::vector<std::string> parts;  // Strata names, in concatenation order
  std::vector<torch::Tensor> targets;
  std::vector<int64_t> shape;
  bool head = false;
};

std::vector<MapEntry> name_map(ModelImpl& model, WeightNames names) {
  const auto supported = supported_names(model);
  TORCH_CHECK(std::find(supported.begin(), supported.end(), names) != supported.end(), "strata::models: ",
              to_string(names), " names exist for the vit model only (this model is '", model.options().arch(),
              "'; use strata names)");
  std::vector<MapEntry> entries;
  std::map<std::string, size_t> index;
  std::map<std::string, std::vector<std::pair<int, std::pair<std::string, torch::Tensor>>>> fused;
  for (const auto& [s, t] : model_state(model)) {
    int slot = -1;
    const std::string e = external_name(s, names, &slot);
    TORCH_CHECK(!e.empty(), "strata::models: tensor '", s, "' has no ", to_string(names),
                " name (adapter factors must be merged into the weights first)");
    if (!index.count(e)) {
      index[e] = entries.size();
      MapEntry m;
      m.name = e;
      m.head = s.rfind("head.", 0) == 0;
      entries.push_back(m);
    }
    if (slot >= 0) fused[e].push_back({slot, {s, t}});
    else {
      auto& m = entries[index[e]];
      TORCH_INTERNAL_ASSERT(m.parts.empty(), "two Strata tensors map to '", e, "'");
      m.parts = {s};
      m.targets = {t};
      m.shape = t.sizes().vec();
    }
  }
  for (auto& [e, items] : fused) {
    std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    TORCH_INTERNAL_ASSERT(items.size() == 3 && items[0].first == 0 && items[2].first == 2, "q, k, v incomplete for '",
                          e, "'");
    auto& m = entries[index[e]];
    int64_t rows = 0;
    for (const auto& it : items) {
      m.parts.push_back(it.second.first);
      m.targets.push_back(it.second.second);
      rows += it.second.second.size(0);
    }
    m.shape = items[0].second.second.sizes().vec();
    m.shape[0] = rows;
  }
  if (names != WeightNames::kStrata)
    for (auto& m : entries)
      if (m.parts.size() == 1 && m.parts[0] == "patch_embed.weight") {
        const auto& o = model.options();
        m.shape = {m.shape[0], o.input_shape()[0], o.patch(), o.patch()};
      }
  return entries;
}

// Root datasets named by dotted keys, or nested groups joined by dots.
void read_h5_tree(const H5::Group& g, const std::string& prefix, const std::string& path, NamedTensors& out) {
  for (const auto& child : core::list_children(g, path)) {
    const std::string p = path.empty() ? child : path + "/" + child;
    const std::string key = prefix.empty() ? child : prefix + "." + child;
    if (core::is_group(g, p)) read_h5_tree(g, key, p, out);
    else out.emplace_back(key, core::read_tensor(g, p));
  }
}

}  // namespace

WeightNames weight_names_from_string(const std::string& s) {
  if (s == "strata") return WeightNames::kStrata;
  if (s == "torchvision") return WeightNames::kTorchvision;
  if (s == "timm") return WeightNames::kTimm;
  TORCH_CHECK(false, "strata::models: unknown weight names '", s, "' (valid: strata, torchvision, timm)");
}

std::string to_string(WeightNames names) {
  switch (names) {
    case WeightNames::kStrata: return "strata";
    case WeightNames::kTorchvision: return "torchvision";
    case WeightNames::kTimm: return "timm";
  }
  return "?";
}

std::vector<WeightNames> supported_names(const ModelImpl& model) {
  if (model.options().arch() == "vit") return {WeightNames::kStrata, WeightNames::kTorchvision, WeightNames::kTimm};
  return {WeightNames::kStrata};
}

namespace {
// The model tensors of a version file (checked by read_version).
WeightFile version_weights(const std::string& path) {
  const auto v = checkpoints::read_version(path);
  WeightFile f;
  f.format = "strata-version";
  f.tensors = v.parameters;
  f.tensors.insert(f.tensors.end(), v.buffers.begin(), v.buffers.end());
  f.metadata["method"] = v.method;
  return f;
}
}  // namespace

WeightFile read_weight_file(const std::string& path) {
  WeightFile f;
  if (core::looks_like_safetensors(path)) {
    auto st = core::read_safetensors(path);
    f.format = "safetensors";
    f.tensors = std::move(st.tensors);
    f.metadata = std::move(st.metadata);
    return f;
  }
  // A version file with a user block goes straight to read_version, which checks the whole file
  // before HDF5 opens it (reading the 'format' attribute here first would parse a damaged file).
  if (checkpoints::has_version_user_block(path)) return version_weights(path);
  core::quiet_hdf5();
  bool hdf5 = false;
  try {
    hdf5 = H5::H5File::isHdf5(path);
  } catch (const H5::Exception&) {
    hdf5 = false;
  }
  if (!hdf5) {
    // read_safetensors gives the precise reason for a file that starts like one but is broken
    // (or says the file does not exist).
    std::error_code ec;
    TORCH_CHECK(std::filesystem::is_regular_file(path, ec), "strata::models::read_weight_file(): '", path,
                "': no such file");
    const auto size = std::filesystem::file_size(path, ec);
    if (!ec && size >= 9) {
      try {
        core::read_safetensors(path);
      } catch (const c10::Error& e) {
        TORCH_CHECK(false, "strata::models::read_weight_file(): '", path,
                    "' is neither HDF5 nor valid safetensors: ", e.msg());
      }
    }
    TORCH_CHECK(false, "strata::models::read_weight_file(): '", path,
                "' is neither a safetensors nor an HDF5 file");
  }
  auto h5 = core::open_file(path, core::FileMode::kRead);
  if (core::has_attr(h5, "format") && core::get_attr_string(h5, "format") == checkpoints::kFormatName) {
    h5.close();
    return version_weights(path);
  }
  f.format = "h5-state-dict";
  read_h5_tree(h5, "", "", f.tensors);
  for (const auto& a : core::list_attrs(h5)) {
    try {
      f.metadata[a] = core::get_attr_string(h5, a);
    } catch (const c10::Error&) {
      // non-string attributes are not metadata
    }
  }
  return f;
}

NamedTensors export_state(ModelImpl& model, WeightNames names) {
  NamedTensors out;
  torch::NoGradGuard no_grad;
  for (const auto& m : name_map(model, names)) {
    std::vector<torch::Tensor> parts;
    for (const auto& t : m.targets) parts.push_back(t.detach().to(torch::kCPU));
    auto t = (parts.size() == 1 ? parts[0].clone() : torch::cat(parts, 0)).reshape(m.shape).contiguous();
    out.emplace_back(m.name, t);
  }
  return out;
}

WeightNames detect_names(ModelImpl& model, const NamedTensors& tensors, const std::string& file) {
  std::set<std::string> keys;
  for (const auto& [k, t] : tensors) keys.insert(k);
  std::vector<std::pair<int64_t, WeightNames>> scores;
  std::string candidates;
  for (auto n : supported_names(model)) {
    int64_t score = 0;
    for (const auto& m : name_map(model, n)) score += keys.count(m.name);
    scores.emplace_back(score, n);
    candidates += (candidates.empty() ? "" : "/") + to_string(n);
  }
  std::sort(scores.begin(), scores.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  const std::string example = tensors.empty() ? std::string("(no tensors)") : "e.g. '" + tensors[0].first + "'";
  TORCH_CHECK(scores[0].first > 0, "strata::models::load_weights(): '", file, "': none of its ", tensors.size(),
              " keys (", example, ") is a ", candidates, " name of the ", model.options().arch(),
              " model; pass --weights-names, or check the model options");
  TORCH_CHECK(scores.size() < 2 || scores[1].first < scores[0].first, "strata::models::load_weights(): '", file,
              "': its keys fit ", to_string(scores[0].second), " and ", to_string(scores[1].second),
              " names equally well; pass --weights-names");
  return scores[0].second;
}

LoadReport load_state(ModelImpl& model, const NamedTensors& tensors, const std::string& file,
                      const LoadOptions& options, const std::string& format) {
  TORCH_CHECK(options.init_head() == "strict" || options.init_head() == "reset", "option --init-head: '",
              options.init_head(), "' (valid: strict, reset)");
  for (const auto& item : model.named_modules("", false)) {
    auto lin = std::dynamic_pointer_cast<adapters::AdaptableLinearImpl>(item.value());
    TORCH_CHECK(!lin || !lin->adapter(), "strata::models::load_weights(): layer '", item.key(),
                "' has an adapter attached; load weights before the method attaches");
  }
  LoadReport report;
  report.format = format;
  report.names = options.names().empty() ? detect_names(model, tensors, file) : weight_names_from_string(options.names());
  const bool reset = options.init_head() == "reset";
  const auto entries = name_map(model, report.names);

  std::map<std::string, torch::Tensor> have;
  for (const auto& [k, t] : tensors) have[k] = t;
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> expected;
  std::vector<const MapEntry*> to_copy;
  for (const auto& m : entries) {
    expected.insert(m.name);
    auto it = have.find(m.name);
    if (it == have.end()) {
      if (reset && m.head) {
        report.head_kept = true;
        if (report.head_reason.empty()) report.head_reason = "the file has no " + m.name;
      } else {
        missing.push_back(m.name);
      }
      continue;
    }
    const auto& t = it->second;
    if (t.sizes().vec() != m.shape) {
      if (reset && m.head) {
        report.head_kept = true;
        if (report.head_reason.empty()) report.head_reason = "file " + m.name + " " + shape_str(t.sizes()) + ", model " + shape_str(m.shape);
      } else {
        mismatched.push_back(m.name + ": file " + shape_str(t.sizes()) + ", model " + shape_str(m.shape));
      }
      continue;
    }
    if (t.is_floating_point() != m.targets[0].is_floating_point() || t.is_complex()) {
      std::ostringstream o;
      o << m.name << ": file dtype " << t.scalar_type() << ", model " << m.targets[0].scalar_type();
      mismatched.push_back(o.str());
      continue;
    }
    to_copy.push_back(&m);
  }
  for (const auto& [k, t] : tensors)
    if (!expected.count(k)) unexpected.push_back(k);
  // The head is all or nothing: a reset weight with a loaded bias would be a half-old classifier.
  if (report.head_kept) to_copy.erase(std::remove_if(to_copy.begin(), to_copy.end(), [](const MapEntry* m) { return m->head; }),
                                      to_copy.end());

  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::ostringstream o;
    o << "strata::models::load_weights(): '" << file << "' (" << format << ", " << to_string(report.names)
      << " names) does not fit the " << model.options().arch() << " model:";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      o << "\n  " << what << " (" << v.size() << "): ";
      for (size_t i = 0; i < v.size(); ++i) o << (i ? ", " : "") << v[i];
    };
    list("missing keys", missing);
    list("unexpected keys", unexpected);
    list("size mismatch", mismatched);
    if (!reset && !mismatched.empty())
      for (const auto& m : entries)
        if (m.head && std::any_of(mismatched.begin(), mismatched.end(),
                                  [&](const std::string& s) { return s.rfind(m.name + ":", 0) == 0; })) {
          o << "\n  (the classifier differs: --init-head reset keeps the model's fresh head)";
          break;
        }
    TORCH_CHECK(false, o.str());
  }

  torch::NoGradGuard no_grad;
  for (const MapEntry* m : to_copy) {
    const auto& dst0 = m->targets[0];
    auto src = have.at(m->name).to(dst0.device(), dst0.scalar_type());
    std::vector<int64_t> cat_shape = dst0.sizes().vec();
    int64_t rows = 0;
    std::vector<int64_t> split;
    for (const auto& t : m->targets) {
      rows += t.size(0);
      split.push_back(t.size(0));
    }
    if (!cat_shape.empty()) cat_shape[0] = rows;
    src = src.reshape(cat_shape);
    if (m->targets.size() == 1) {
      m->targets[0].copy_(src);
    } else {
      auto parts = src.split_with_sizes(split, 0);
      for (size_t i = 0; i < parts.size(); ++i) m->targets[i].copy_(parts[i]);
    }
    report.tensors += static_cast<int64_t>(m->targets.size());
  }
  return report;
}

LoadReport load_weights(ModelImpl& model, const std::string& path, const LoadOptions& options) {
  auto f = read_weight_file(path);
  auto opts = options;
  if (f.format == "strata-version") {
    TORCH_CHECK(opts.names().empty() || opts.names() == "strata", "option --weights-names: '", path,
                "' is a Strata version file, whose names are strata, not ", opts.names());
    opts.names("strata");
  }
  return load_state(model, f.tensors, path, opts, f.format);
}

void save_weights(ModelImpl& model, const std::string& path, const std::string& format, WeightNames names,
                  std::map<std::string, std::string> metadata) {
  TORCH_CHECK(format == "safetensors" || format == "h5", "strata::models::save_weights(): format '", format,
              "' (valid: safetensors, h5)");
  const auto state = export_state(model, names);
  metadata["format"] = "pt";
  metadata["strata_names"] = to_string(names);
  metadata["strata_arch"] = model.options().arch();
  if (format == "safetensors") {
    core::write_safetensors(path, state, metadata);
    return;
  }
  core::atomic_write_h5(path, [&](H5::H5File& f) {
    for (const auto& [k, t] : state) core::write_tensor(f, k, t);
    for (const auto& [k, v] : metadata) core::set_attr(f, k, v);
  });
}

}  // namespace strata::models
