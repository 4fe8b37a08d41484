// strata train: runs a method over a task stream and writes a run folder.
#include "core/threads.h"
#include "dist/group.h"
#include "dist/launch.h"
#include "run/runner.h"
#include "tools/commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>

namespace po = boost::program_options;
using namespace strata::run;
using strata::continual::builtin_methods;

namespace {

// `--resume DIR`: the configuration is DIR/config.ini (same seed, threads, everything); only
// --quiet may be added. The run folder is DIR wherever it now lives.
RunConfig resume_config(const po::variables_map& vm) {
  namespace fs = std::filesystem;
  std::string dir = vm["resume"].as<std::string>();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  for (const auto& [key, value] : vm)
    TORCH_CHECK(key == "resume" || key == "quiet" || value.defaulted(), "--resume takes every option from '", dir,
                "/config.ini'; --", key, " cannot be combined with it");
  TORCH_CHECK(fs::is_directory(dir), "--resume: no run folder '", dir, "'");
  TORCH_CHECK(fs::is_regular_file(dir + "/config.ini"), "--resume: '", dir, "' has no config.ini (not a run folder)");
  RunConfig c = read_run_config(dir + "/config.ini");
  const fs::path p(dir);
  c.name = p.filename().string();
  c.out = p.has_parent_path() ? p.parent_path().string() : ".";
  c.quiet = c.quiet || (vm.count("quiet") && vm["quiet"].as<bool>());
  return c;
}

// "rank R: " inside a distributed run, so each worker's error says whose it is.
std::string worker_prefix() {
  const char* ws = std::getenv("WORLD_SIZE");
  const char* r = std::getenv("RANK");
  if (!ws || !r || std::string(ws) == "1") return "";  // strata::dist's own errors name the rank
  return std::string("rank ") + r + ": ";
}

// The distributed options are the launch's, not the run's: they are not in config.ini, so a run can be
// resumed with another number of workers.
struct DistArgs {
  int64_t nproc = 0;  // 0 = not given
  double timeout = 60;
  std::string backend = "gloo";
  std::vector<std::string> rest;  // every other argument, in order
};

constexpr const char* kDistHelp =
    "Distributed training (one process per worker; see README):\n"
    "  --nproc N             start N local worker processes (global --batch-size split between them)\n"
    "  --dist-timeout S (=60) seconds a worker waits for the others before it stops with an error\n"
    "  --dist-backend B (=gloo)  gloo (CPU) | nccl (CUDA builds only)\n"
    "  Several machines: run one `strata train` per worker with RANK, WORLD_SIZE, LOCAL_RANK,\n"
    "  MASTER_ADDR, MASTER_PORT set (the torchrun conventions).\n";

DistArgs take_dist_args(int argc, char** argv) {
  DistArgs d;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], value;
    bool matched = false;
    for (const char* key : {"--nproc", "--dist-timeout", "--dist-backend"}) {
      const std::string k = key;
      if (a == k) {
        TORCH_CHECK(i + 1 < argc, "option ", k, " needs a value");
        value = argv[++i];
      } else if (a.rfind(k + "=", 0) == 0) {
        value = a.substr(k.size() + 1);
      } else {
        continue;
      }
      matched = true;
      try {
        size_t used = 0;
        if (k == "--nproc") d.nproc = std::stoll(value, &used);
        if (k == "--dist-timeout") d.timeout = std::stod(value, &used);
        if (k == "--dist-backend") d.backend = value, used = value.size();
        TORCH_CHECK(used == value.size(), "");
      } catch (const std::exception&) {  // c10::Error too
        TORCH_CHECK(false, "option ", k, ": '", value, "' is not a number");
      }
      break;
    }
    if (!matched) d.rest.push_back(argv[i]);
  }
  TORCH_CHECK(d.nproc >= 0, "option --nproc: must be >= 1, got ", d.nproc);
  strata::dist::GroupOptions().timeout(d.timeout).backend(d.backend).validate();
  return d;
}

}  // namespace

int strata_cmd_train(int argc, char** argv) {
  try {
    po::variables_map vm;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << "usage: strata train [options]\n\nTrains a model over a task stream with a continual-learning"
                     " method and writes runs/NAME/ (config.ini, report.json, metrics.csv,\n"
                     "versions/vNNN.h5, predictions.h5). --resume runs/NAME continues an interrupted run.\n"
                  << run_options() << "\n" << kDistHelp;
        return 0;
      }
    }
    const DistArgs dargs = take_dist_args(argc, argv);
    auto env = strata::dist::options_from_env();
    if (dargs.nproc > 1 && !env) {
      // The launcher: N workers running this command without --nproc; it trains nothing itself.
      std::vector<std::string> args{"train", "--dist-timeout", std::to_string(dargs.timeout), "--dist-backend",
                                    dargs.backend};
      args.insert(args.end(), dargs.rest.begin(), dargs.rest.end());
      // Parse once here, so a bad option is one error, not one per worker.
      {
        std::vector<const char*> cargv{"train"};
        for (const auto& a : dargs.rest) cargv.push_back(a.c_str());
        po::variables_map check;
        parse_run_config(static_cast<int>(cargv.size()), cargv.data(), builtin_methods(), &check);
      }
      const auto r = strata::dist::launch_local(strata::dist::self_executable(), args,
                                                strata::dist::LaunchOptions().nproc(dargs.nproc));
      if (r.exit_code != 0) std::cerr << "strata train: " << r.error << "\n";
      return r.exit_code;
    }
    TORCH_CHECK(!(env && dargs.nproc > 0 && dargs.nproc != env->world_size()), "option --nproc ", dargs.nproc,
                " starts local workers itself; it cannot be combined with WORLD_SIZE=", env->world_size(),
                " in the environment");
    std::unique_ptr<strata::dist::Group> group;
    if (env && env->world_size() > 1) {
      env->timeout(dargs.timeout).backend(dargs.backend);
      group = std::make_unique<strata::dist::Group>(*env);
    }
    const bool rank0 = !group || group->rank() == 0;
    std::vector<const char*> cargv{argv[0]};
    for (const auto& a : dargs.rest) cargv.push_back(a.c_str());
    RunConfig config = parse_run_config(static_cast<int>(cargv.size()), cargv.data(), builtin_methods(), &vm);
    const bool resume = vm.count("resume") > 0;
    if (resume) config = resume_config(vm);
    strata::core::set_num_threads(static_cast<int>(config.threads));
    Runner runner(config);
    runner.set_group(group.get());
    // Log lines on stderr (rank 0 only: the others would repeat them); on a terminal, a progress line redrawn at most five times a second.
    const bool tty = ::isatty(2) != 0;
    if (!config.quiet && rank0) {
      runner.on_log = [tty](const std::string& line) { std::cerr << (tty ? "\r\033[K" : "") << line << "\n"; };
      if (tty) {
        auto last = std::chrono::steady_clock::now();
        runner.on_progress = [last](const Progress& p) mutable {
          const auto now = std::chrono::steady_clock::now();
          if (std::chrono::duration<double>(now - last).count() < 0.2 && p.step != p.steps) return;
          last = now;
          std::cerr << "\r\033[Ktask " << p.task + 1 << "/" << p.num_tasks;
          if (p.stage > 0) std::cerr << " stage " << p.stage + 1;
          std::cerr << " epoch " << p.epoch + 1 << "/" << p.epochs << "  step " << p.step << "/" << p.steps
                    << "  loss " << std::fixed << std::setprecision(4) << p.loss << std::flush;
        };
      }
    }
    const auto metrics = resume ? runner.resume() : runner.run();
    if (rank0) {
      std::cout << runner.summary();
      std::cout << "run folder: " << runner.config().run_dir() << "\n";
    }
    (void)metrics;
    return 0;
  } catch (const c10::Error& e) {
    const std::string m = e.msg();
    std::cerr << "strata train: " << (m.rfind("strata::dist: rank", 0) == 0 ? "" : worker_prefix()) << m << "\n";
  } catch (const po::error& e) {
    std::cerr << "strata train: " << worker_prefix() << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "strata train: " << worker_prefix() << e.what() << "\n";
  }
  return 1;
}

int strata_cmd_methods(int argc, char** argv) {
  const auto& reg = builtin_methods();
  for (const auto& name : reg.names()) {
    const auto& info = reg.get(name);
    std::cout << name << "  " << info.summary << "\n";
    for (const auto& o : info.options)
      std::cout << "    --" << name << "." << o.key << " (default " << o.default_value << ")  " << o.help << "\n";
  }
  return 0;
}
