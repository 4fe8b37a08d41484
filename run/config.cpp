#include "run/config.h"

#include "run/limits.h"
#include "run/pretrain.h"

#include <algorithm>
#include <filesystem>

#include <fstream>
#include <iomanip>
#include <sstream>

namespace po = boost::program_options;

namespace strata::run {

void reject_option_placeholders(const std::string& text, const std::string& where) {
  static const char* const kTokens[] = {"%canonical_option%", "%prefix%", "%option%", "%original_token%", "%value%"};
  for (const char* token : kTokens)
    TORCH_CHECK(text.find(token) == std::string::npos, where, ": '", token,
                "' cannot appear in an option name or value (it is a placeholder of the option parser's messages)");
}

using namespace strata::continual;

namespace {

// A file a run reads later (dataset, --init weights, --data-dir): config.ini records it absolute,
// so `--resume`, `strata eval` and `strata compare` find it from any working directory.
std::string absolute_path(const std::string& path) {
  if (path.empty()) return path;
  return std::filesystem::absolute(path).lexically_normal().string();
}

std::vector<int64_t> parse_ints(const std::string& key, const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t pos = 0;
      long long v = std::stoll(item, &pos);
      TORCH_CHECK(pos == item.size(), "");
      out.push_back(v);
    } catch (const std::exception&) {  // std::stoll's errors and the TORCH_CHECK above (c10::Error)
      TORCH_CHECK(false, "option --", key, ": '", s, "' is not a comma-separated list of integers");
    }
  }
  return out;
}

// --help shows a default as a user would type it ("0.1", not "0.10000000000000001").
po::typed_value<double>* real_value(double v) {
  std::ostringstream text;
  text << std::setprecision(15) << v;
  return po::value<double>()->default_value(v, text.str());
}

std::string join_ints(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

}  // namespace

std::string RunConfig::run_dir() const {
  return out + "/" + (name.empty() ? method.method() + "-" + stream.name() : name);
}

void RunConfig::validate(const MethodRegistry& registry) const {
  check_bounds(*this, registry);
  TORCH_CHECK(threads >= 1, "option --threads: must be >= 1, got ", threads);
  TORCH_CHECK(!out.empty(), "option --out: must not be empty");
  TORCH_CHECK(name.find('/') == std::string::npos, "option --name: '", name, "' must not contain '/'");
  stream.validate();
  train.validate();
  compat.validate();
  if (!pretrain.empty()) PretrainSpec::parse(pretrain);
  TORCH_CHECK(pretrain_epochs >= 1, "option --pretrain-epochs: must be >= 1, got ", pretrain_epochs);
  TORCH_CHECK(init.empty() || std::filesystem::is_regular_file(init), "option --init: no file '", init, "'");
  TORCH_CHECK(weights_names == "auto" || weights_names == "strata" || weights_names == "torchvision" ||
                  weights_names == "timm",
              "option --weights-names: '", weights_names, "' (valid: auto, strata, torchvision, timm)");
  TORCH_CHECK(init_head == "strict" || init_head == "reset", "option --init-head: '", init_head,
              "' (valid: strict, reset)");
  TORCH_CHECK(registry.has(method.method()), "option --method: unknown method '", method.method(), "' (valid: ", [&] {
    std::string s;
    for (const auto& n : registry.names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }(), ")");
}

po::options_description run_options(const MethodRegistry& registry) {
  const RunConfig d;
  po::options_description run("Run");
  run.add_options()
      ("config", po::value<std::string>(), "INI file with any of these options (command line wins)")
      ("name", po::value<std::string>()->default_value(""), "run folder name under --out (default: METHOD-STREAM)")
      ("out", po::value<std::string>()->default_value(d.out), "parent folder of run folders")
      ("threads", po::value<int64_t>()->default_value(d.threads), "torch intra-op threads")
      ("seed", po::value<int64_t>()->default_value(d.train.seed()), "seed of model init, shuffles and streams")
      ("stream-seed", po::value<int64_t>()->default_value(-1), "seed of the stream alone (task subsets, permutations, class order); -1 = --seed")
      ("quiet,q", po::bool_switch(), "no progress display")
      ("resume", po::value<std::string>(), "continue the run in this folder after its last complete version (its config.ini is used)");
  po::options_description data("Stream");
  data.add_options()
      ("stream", po::value<std::string>()->default_value(d.stream.name()), "permuted-fmnist | split-fmnist | rotated-fmnist | synthetic, or a recipe over --dataset: split | permuted | rotated | tasks")
      ("dataset", po::value<std::string>()->default_value(d.stream.dataset()), "fmnist (built-in Fashion-MNIST) or PATH.h5 (groups train/test with x, y)")
      ("classes-per-task", po::value<int64_t>()->default_value(d.stream.classes_per_task()), "split: classes per task after the first")
      ("first-task-classes", po::value<int64_t>()->default_value(d.stream.first_task_classes()), "split: classes in the first task (0 = --classes-per-task)")
      ("class-order", po::value<std::string>()->default_value(""), "split: class order, comma-separated (default: natural, or --class-order-seed)")
      ("class-order-seed", po::value<int64_t>()->default_value(d.stream.class_order_seed()), "split without --class-order: -1 = natural order, >= 0 = seeded shuffle")
      ("tasks", po::value<int64_t>()->default_value(d.stream.num_tasks()), "number of tasks")
      ("scenario", po::value<std::string>()->default_value(""), "task | class | domain (default: the stream's own)")
      ("val-fraction", real_value(d.stream.val_fraction()), "held-out fraction of each task's training set")
      ("train-limit", po::value<int64_t>()->default_value(0), "max training examples per task (0 = all)")
      ("test-limit", po::value<int64_t>()->default_value(0), "max test examples per task (0 = all)")
      ("rotation-step", real_value(0.0), "rotated-fmnist: degrees between tasks (0 = spread over 180)")
      ("data-dir", po::value<std::string>()->default_value(d.stream.data_dir()), "folder of the Fashion-MNIST IDX files");
  po::options_description model("Model");
  model.add_options()
      ("model", po::value<std::string>()->default_value(d.model.arch()), "mlp | cnn | vit | vit-ti16 | vit-s16 | vit-b16 (a ViT preset)")
      ("vit-preset", po::value<std::string>()->default_value(""), "vit-ti16 | vit-s16 | vit-b16: patch 16, depth 12, dim/heads/MLP 192/3/768, 384/6/1536, 768/12/3072 (overrides --patch --dim --depth --heads --mlp-dim)")
      ("hidden", po::value<std::string>()->default_value(join_ints(d.model.hidden())), "MLP hidden widths, comma-separated")
      ("bias", po::value<bool>()->default_value(d.model.bias()), "bias in Linear layers (MLP and CNN)")
      ("channels", po::value<std::string>()->default_value(join_ints(d.model.channels())), "CNN conv channels")
      ("patch", po::value<int64_t>()->default_value(d.model.patch()), "ViT patch size")
      ("dim", po::value<int64_t>()->default_value(d.model.dim()), "ViT width")
      ("depth", po::value<int64_t>()->default_value(d.model.depth()), "ViT blocks")
      ("heads", po::value<int64_t>()->default_value(d.model.heads()), "ViT attention heads")
      ("mlp-ratio", po::value<int64_t>()->default_value(d.model.mlp_ratio()), "ViT MLP width / dim")
      ("mlp-dim", po::value<int64_t>()->default_value(d.model.mlp_dim()), "ViT MLP width (0 = dim * mlp-ratio)")
      ("init", po::value<std::string>()->default_value(""), "start from these weights: a version file (runs/X/versions/vNNN.h5), safetensors or an HDF5 state_dict")
      ("weights-names", po::value<std::string>()->default_value(d.weights_names), "names in the --init file: auto | strata | torchvision | timm")
      ("init-head", po::value<std::string>()->default_value(d.init_head), "strict | reset (keep the fresh classifier when the file's head has another shape)")
      ("pretrain", po::value<std::string>()->default_value(""), "first train the whole model on task:N (a task of the stream) or split:K (classes 0..2K-1 of the dataset, 2 per task)")
      ("pretrain-epochs", po::value<int64_t>()->default_value(d.pretrain_epochs), "epochs of the pre-training stage");
  po::options_description train("Training");
  train.add_options()
      ("method", po::value<std::string>()->default_value(d.method.method()), "continual-learning method (see `strata methods`)")
      ("optimizer", po::value<std::string>()->default_value(d.train.optimizer()), "sgd | adam | adamw")
      ("lr", real_value(d.train.lr()), "learning rate")
      ("momentum", real_value(d.train.momentum()), "SGD momentum")
      ("weight-decay", real_value(d.train.weight_decay()), "weight decay")
      ("adam-beta1", real_value(d.train.beta1()), "Adam/AdamW beta1")
      ("adam-beta2", real_value(d.train.beta2()), "Adam/AdamW beta2")
      ("lr-schedule", po::value<std::string>()->default_value(d.train.schedule()), "constant | cosine (within each task)")
      ("batch-size", po::value<int64_t>()->default_value(d.train.batch_size()), "training batch size")
      ("epochs", po::value<int64_t>()->default_value(d.train.epochs()), "epochs per task")
      ("eval-batch-size", po::value<int64_t>()->default_value(d.train.eval_batch_size()), "evaluation batch size");
  po::options_description compat_opts("Compatibility-aware training against the previous version");
  compat_opts.add_options()
      ("compat", po::value<std::string>()->default_value("none"), "none | focal | muscle (works with any --method)")
      ("compat-alpha", real_value(d.compat.loss().alpha()), "focal: weight of every sample")
      ("compat-beta", real_value(d.compat.loss().beta()), "focal: extra weight where the old version is right (0 = plain KD)")
      ("compat-temperature", real_value(d.compat.loss().temperature()), "softmax temperature (0 = mode default: focal 100, muscle 2)")
      ("compat-weight", real_value(d.compat.loss().weight()), "lambda: focal CE + lambda*FD; muscle lambda*L_mcomp + (1-lambda)*CE")
      ("compat-distance", po::value<std::string>()->default_value("kl"), "focal distance: kl | l2")
      ("compat-drop-new-classes", po::value<bool>()->default_value(d.compat.loss().drop_new_class_samples()), "focal: drop samples whose class the old version never saw (else weight alpha on the old columns)")
      ("compat-epochs", po::value<int64_t>()->default_value(d.compat.stage2_epochs()), "muscle: stage-2 epochs (0 = --epochs)");
  po::options_description methods("Method options (--METHOD.KEY, or KEY in an INI section [METHOD])");
  for (const auto& name : registry.names())
    for (const auto& o : registry.get(name).options)
      methods.add_options()((name + "." + o.key).c_str(), po::value<std::string>()->default_value(o.default_value),
                            o.help.c_str());
  po::options_description all;
  all.add(run).add(data).add(model).add(train).add(compat_opts).add(methods);
  return all;
}

namespace {

RunConfig from_variables(const po::variables_map& vm, const MethodRegistry& registry) {
  RunConfig c;
  c.name = vm["name"].as<std::string>();
  c.out = vm["out"].as<std::string>();
  c.threads = vm["threads"].as<int64_t>();
  c.quiet = vm.count("quiet") && vm["quiet"].as<bool>();
  const int64_t seed = vm["seed"].as<int64_t>();
  c.stream.name(vm["stream"].as<std::string>())
      .dataset(vm["dataset"].as<std::string>() == "fmnist" ? "fmnist" : absolute_path(vm["dataset"].as<std::string>()))
      .classes_per_task(vm["classes-per-task"].as<int64_t>())
      .first_task_classes(vm["first-task-classes"].as<int64_t>())
      .class_order(parse_ints("class-order", vm["class-order"].as<std::string>()))
      .class_order_seed(vm["class-order-seed"].as<int64_t>())
      .num_tasks(vm["tasks"].as<int64_t>())
      .seed(vm["stream-seed"].as<int64_t>() >= 0 ? vm["stream-seed"].as<int64_t>() : seed)
      .scenario(vm["scenario"].as<std::string>())
      .val_fraction(vm["val-fraction"].as<double>())
      .train_limit(vm["train-limit"].as<int64_t>())
      .test_limit(vm["test-limit"].as<int64_t>())
      .rotation_step(vm["rotation-step"].as<double>())
      .data_dir(absolute_path(vm["data-dir"].as<std::string>()));
  c.model.arch(vm["model"].as<std::string>())
      .hidden(parse_ints("hidden", vm["hidden"].as<std::string>()))
      .bias(vm["bias"].as<bool>())
      .channels(parse_ints("channels", vm["channels"].as<std::string>()))
      .patch(vm["patch"].as<int64_t>())
      .dim(vm["dim"].as<int64_t>())
      .depth(vm["depth"].as<int64_t>())
      .heads(vm["heads"].as<int64_t>())
      .mlp_ratio(vm["mlp-ratio"].as<int64_t>())
      .mlp_dim(vm["mlp-dim"].as<int64_t>());
  {
    // A preset as --model or --vit-preset; the resolved sizes are what config.ini records.
    const std::string arch = vm["model"].as<std::string>(), preset = vm["vit-preset"].as<std::string>();
    const auto& names = models::vit_preset_names();
    if (std::find(names.begin(), names.end(), arch) != names.end()) models::apply_vit_preset(c.model, arch);
    if (!preset.empty()) {
      TORCH_CHECK(c.model.arch() == "vit", "option --vit-preset: applies to --model vit, not '", arch, "'");
      models::apply_vit_preset(c.model, preset);
    }
  }
  c.init = absolute_path(vm["init"].as<std::string>());
  c.weights_names = vm["weights-names"].as<std::string>();
  c.init_head = vm["init-head"].as<std::string>();
  c.pretrain = vm["pretrain"].as<std::string>();
  c.pretrain_epochs = vm["pretrain-epochs"].as<int64_t>();
  c.train.optimizer(vm["optimizer"].as<std::string>())
      .lr(vm["lr"].as<double>())
      .momentum(vm["momentum"].as<double>())
      .weight_decay(vm["weight-decay"].as<double>())
      .beta1(vm["adam-beta1"].as<double>())
      .beta2(vm["adam-beta2"].as<double>())
      .schedule(vm["lr-schedule"].as<std::string>())
      .batch_size(vm["batch-size"].as<int64_t>())
      .epochs(vm["epochs"].as<int64_t>())
      .seed(seed)
      .eval_batch_size(vm["eval-batch-size"].as<int64_t>());
  {
    const std::string dist = vm["compat-distance"].as<std::string>();
    TORCH_CHECK(dist == "kl" || dist == "l2", "option --compat-distance: '", dist, "' (valid: kl, l2)");
    c.compat.loss(compat::CompatTrainOptions()
                      .mode(compat::compat_mode_from_string(vm["compat"].as<std::string>()))
                      .alpha(vm["compat-alpha"].as<double>())
                      .beta(vm["compat-beta"].as<double>())
                      .temperature(vm["compat-temperature"].as<double>())
                      .weight(vm["compat-weight"].as<double>())
                      .distance(dist == "kl" ? compat::DistillDistance::kKL : compat::DistillDistance::kL2)
                      .drop_new_class_samples(vm["compat-drop-new-classes"].as<bool>()));
    c.compat.stage2_epochs(vm["compat-epochs"].as<int64_t>());
  }
  const std::string method = vm["method"].as<std::string>();
  std::map<std::string, std::string> values;
  if (registry.has(method))
    for (const auto& o : registry.get(method).options)
      values[o.key] = vm[method + "." + o.key].as<std::string>();
  c.method = MethodConfig(method, values);
  // The method's recipe where the user chose no optimizer setting (on the command line or in an INI
  // file). config.ini then records the values used, so a re-run or resume reads them as explicit.
  if (registry.has(method)) {
    bool user_set = false;
    for (const char* k : {"optimizer", "lr", "momentum", "weight-decay", "adam-beta1", "adam-beta2", "lr-schedule"})
      user_set = user_set || (vm.count(k) && !vm[k].defaulted());
    if (!user_set)
      if (auto recipe = registry.make(c.method)->recipe()) {
        c.train = continual::with_recipe(c.train, *recipe);
        c.train_recipe = method;
      }
  }
  c.validate(registry);
  return c;
}

// Levenshtein distance, for "did you mean" hints on mistyped option names.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The closest of `candidates` to `key` when it is close enough to be a typo ("" = none).
std::string closest(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, key.size() / 4) + 1;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(key, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

std::vector<std::string> option_names(const po::options_description& desc) {
  std::vector<std::string> out;
  for (const auto& o : desc.options()) out.push_back(o->long_name());
  return out;
}

// One parsed source (the command line or an INI text) and how messages name it.
struct Source {
  po::parsed_options parsed;
  bool ini;            ///< INI keys are "KEY" / "[METHOD] KEY"; command-line keys are "--KEY"
  std::string origin;  ///< "config file 'x.ini'" for INI sources
};

std::string hint_for(const std::string& name, const po::options_description& desc, const std::string& method,
                     const MethodRegistry& registry, bool any_option = true) {
  // First the selected method's own options (a key under the wrong method, or mistyped), then any.
  const auto dot = name.find('.');
  if (dot != std::string::npos && registry.has(method)) {
    const std::string key = name.substr(dot + 1);
    std::vector<std::string> keys;
    for (const auto& o : registry.get(method).options) keys.push_back(o.key);
    const std::string k = closest(key, keys);
    if (!k.empty()) return method + "." + k;
  }
  return any_option ? closest(name, option_names(desc)) : std::string();
}

std::string spelled(const Source& s, const std::string& name) {
  if (!s.ini) return "--" + name;
  const auto dot = name.find('.');
  return dot == std::string::npos ? "'" + name + "'" : "'" + name.substr(dot + 1) + "' in section [" + name.substr(0, dot) + "]";
}

// Options of a method other than the selected one are an error: a user who mistyped --method
// would otherwise get a run with none of their settings.
void check_method_options(const std::vector<Source>& sources, const po::variables_map& vm,
                          const po::options_description& desc, const MethodRegistry& registry) {
  const std::string method = vm["method"].as<std::string>();
  for (const auto& s : sources)
    for (const auto& o : s.parsed.options) {
      const auto dot = o.string_key.find('.');
      if (dot == std::string::npos) continue;
      const std::string owner = o.string_key.substr(0, dot);
      if (owner == method || !registry.has(owner)) continue;
      const std::string hint = hint_for(o.string_key, desc, method, registry, /*any_option=*/false);
      TORCH_CHECK(false, s.ini ? s.origin + ": option " : "option ", spelled(s, o.string_key), " belongs to method ",
                  owner, ", but ", s.ini ? "method" : "--method", " is ", method,
                  hint.empty() ? std::string() : " (did you mean " + spelled(s, hint) + "?)");
    }
}

// Parses, turning an unknown option into one line with the closest known name.
template <class Parse>
po::parsed_options parse_with_hint(Parse parse, bool ini, const std::string& origin, const po::options_description& desc,
                                   const MethodRegistry& registry, const std::string& method_guess) {
  try {
    return parse();
  } catch (const po::unknown_option& e) {
    std::string name = e.get_option_name();
    while (!name.empty() && name[0] == '-') name.erase(0, 1);
    const std::string hint = hint_for(name, desc, method_guess, registry);
    const Source s{po::parsed_options(&desc), ini, origin};
    TORCH_CHECK(false, ini ? origin + ": " : "", "unrecognised option ", spelled(s, name),
                hint.empty() ? std::string() : " (did you mean " + spelled(s, hint) + "?)");
  } catch (const po::error& e) {
    if (!ini) throw;
    TORCH_CHECK(false, origin, ": ", e.what());
  }
}

// The method named on the command line or in an INI text, for hints before the variables exist.
std::string method_in(const std::vector<std::string>& args, const std::string& ini_text) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--method" && i + 1 < args.size()) return args[i + 1];
    if (args[i].rfind("--method=", 0) == 0) return args[i].substr(9);
  }
  std::istringstream in(ini_text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '[') break;
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto trim = [](std::string x) {
      x.erase(0, x.find_first_not_of(" \t"));
      x.erase(x.find_last_not_of(" \t\r") + 1);
      return x;
    };
    if (trim(line.substr(0, eq)) == "method") return trim(line.substr(eq + 1));
  }
  return RunConfig().method.method();
}

Source parse_ini_text(const std::string& text, const std::string& origin, const po::options_description& desc,
                      const MethodRegistry& registry, const std::string& method_guess) {
  {
    std::istringstream lines(text);
    std::string line;
    for (int64_t n = 1; std::getline(lines, line); ++n) reject_option_placeholders(line, origin + " line " + std::to_string(n));
  }
  std::istringstream in(text);
  return {parse_with_hint([&] { return po::parse_config_file(in, desc, /*allow_unregistered=*/false); }, true,
                          origin, desc, registry, method_guess),
          true, origin};
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "cannot read config file '", path, "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Stores the sources in order (the first value stored wins), checks them and builds the config.
RunConfig from_sources(std::vector<Source>& sources, const po::options_description& desc,
                       const MethodRegistry& registry, po::variables_map* vm_out) {
  po::variables_map vm;
  for (const auto& s : sources) {
    try {
      po::store(s.parsed, vm);
    } catch (const po::error& e) {
      if (!s.ini) throw;
      TORCH_CHECK(false, s.origin, ": ", e.what());
    }
  }
  po::notify(vm);
  check_method_options(sources, vm, desc, registry);
  if (vm_out) *vm_out = vm;
  return from_variables(vm, registry);
}

}  // namespace

RunConfig parse_run_config(int argc, const char* const* argv, const MethodRegistry& registry,
                           po::variables_map* vm_out) {
  auto desc = run_options(registry);
  const std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  for (const auto& a : args) reject_option_placeholders(a, "command line");
  std::vector<Source> sources;
  sources.push_back({parse_with_hint([&] { return po::command_line_parser(argc, argv).options(desc).run(); }, false,
                                     "", desc, registry, method_in(args, "")),
                     false, ""});
  po::variables_map first;
  po::store(sources[0].parsed, first);
  if (first.count("config")) {
    const std::string path = first["config"].as<std::string>();
    const std::string text = read_text(path);
    sources.push_back(parse_ini_text(text, "config file '" + path + "'", desc, registry, method_in(args, text)));
  }
  return from_sources(sources, desc, registry, vm_out);
}

RunConfig read_run_config(const std::string& ini_path, const MethodRegistry& registry) {
  auto desc = run_options(registry);
  const std::string text = read_text(ini_path);
  std::vector<Source> sources;
  sources.push_back(parse_ini_text(text, "config file '" + ini_path + "'", desc, registry, method_in({}, text)));
  return from_sources(sources, desc, registry, nullptr);
}

RunConfig parse_run_config_text(const std::string& ini_text, const std::string& origin,
                                const MethodRegistry& registry, const std::vector<std::string>& args) {
  auto desc = run_options(registry);
  std::vector<Source> sources;
  // The first value stored wins: the arguments, then the text.
  for (const auto& a : args) reject_option_placeholders(a, "arguments");
  sources.push_back({parse_with_hint([&] { return po::command_line_parser(args).options(desc).run(); }, false, "",
                                     desc, registry, method_in(args, ini_text)),
                     false, ""});
  sources.push_back(parse_ini_text(ini_text, "config file '" + origin + "'", desc, registry, method_in(args, ini_text)));
  return from_sources(sources, desc, registry, nullptr);
}

std::string RunConfig::to_ini() const {
  std::ostringstream o;
  o.precision(15);
  o << "# strata train: resolved configuration (re-run with: strata train --config THIS_FILE)\n"
    << "name = " << name << "\nout = " << out << "\nthreads = " << threads << "\nseed = " << train.seed() << "\n"
    << "\n# stream\nstream = " << stream.name() << "\nstream-seed = " << stream.seed() << "\ndataset = " << stream.dataset()
    << "\nclasses-per-task = " << stream.classes_per_task() << "\nfirst-task-classes = " << stream.first_task_classes()
    << "\nclass-order = " << join_ints(stream.class_order()) << "\nclass-order-seed = " << stream.class_order_seed()
    << "\ntasks = " << stream.num_tasks()
    << "\nscenario = " << stream.scenario() << "\nval-fraction = " << stream.val_fraction()
    << "\ntrain-limit = " << stream.train_limit() << "\ntest-limit = " << stream.test_limit()
    << "\nrotation-step = " << stream.rotation_step() << "\ndata-dir = " << stream.data_dir() << "\n"
    << "\n# model\nmodel = " << model.arch() << "\nhidden = " << join_ints(model.hidden())
    << "\nbias = " << (model.bias() ? 1 : 0) << "\nchannels = " << join_ints(model.channels())
    << "\npatch = " << model.patch() << "\ndim = " << model.dim() << "\ndepth = " << model.depth()
    << "\nheads = " << model.heads() << "\nmlp-ratio = " << model.mlp_ratio() << "\nmlp-dim = " << model.mlp_dim()
    << "\ninit = " << init << "\nweights-names = " << weights_names << "\ninit-head = " << init_head
    << "\npretrain = " << pretrain << "\npretrain-epochs = " << pretrain_epochs << "\n"
    << "\n# training\nmethod = " << method.method() << "\n"
    << (train_recipe.empty() ? "" : "# optimizer settings: the " + train_recipe + " recipe (no optimizer option was given)\n")
    << "optimizer = " << train.optimizer() << "\nlr = " << train.lr()
    << "\nmomentum = " << train.momentum() << "\nweight-decay = " << train.weight_decay()
    << "\nadam-beta1 = " << train.beta1() << "\nadam-beta2 = " << train.beta2() << "\nlr-schedule = " << train.schedule()
    << "\nbatch-size = " << train.batch_size() << "\nepochs = " << train.epochs()
    << "\neval-batch-size = " << train.eval_batch_size() << "\n";
  {
    const auto& l = compat.loss();
    o << "\n# compatibility-aware training\ncompat = " << compat::to_string(l.mode()) << "\ncompat-alpha = " << l.alpha()
      << "\ncompat-beta = " << l.beta() << "\ncompat-temperature = " << l.temperature()
      << "\ncompat-weight = " << l.weight()
      << "\ncompat-distance = " << (l.distance() == compat::DistillDistance::kKL ? "kl" : "l2")
      << "\ncompat-drop-new-classes = " << (l.drop_new_class_samples() ? 1 : 0)
      << "\ncompat-epochs = " << compat.stage2_epochs() << "\n";
  }
  if (!method.values().empty()) {
    o << "\n[" << method.method() << "]\n";
    for (const auto& [k, v] : method.values()) o << k << " = " << v << "\n";
  }
  return o.str();
}

}  // namespace strata::run
