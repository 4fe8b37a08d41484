#pragma once
// The run configuration: every option of `strata train`, settable on the command line or in an
// INI file (Boost.Program_options). General options are top-level INI keys ("lr = 0.01");
// a method's options live in a section named after it ("[gpm]" / "--gpm.threshold").
#include "continual/compat_training.h"
#include "continual/method.h"
#include "models/models.h"
#include "continual/trainer.h"
#include "tasks/streams.h"

#include <boost/program_options.hpp>

#include <string>
#include <vector>

namespace strata::run {

struct RunConfig {
  std::string name;          ///< run folder name under `out`; "" = "<method>-<stream>"
  std::string out = "runs";  ///< parent folder of run folders
  int64_t threads = 1;       ///< torch intra-op threads (measured: 2 threads are not faster on 2 shared cores)
  bool quiet = false;
  tasks::StreamOptions stream;
  models::ModelOptions model;
  /// Start from a stored version's weights (--init runs/X/versions/vNNN.h5); "" = fresh init.
  std::string init;
  /// Names the --init file uses: "auto" (detected) | "strata" | "torchvision" | "timm" (models/weights.h).
  std::string weights_names = "auto";
  /// "strict" | "reset": keep the fresh classifier when the --init file's head has another shape.
  std::string init_head = "strict";
  /// Train the whole model first on "task:N" or "split:K" (pretrain.h); "" = no pre-training.
  std::string pretrain;
  int64_t pretrain_epochs = 1;
  continual::TrainOptions train;
  /// The method whose optimizer recipe (Method::recipe) set `train`'s optimizer settings because the
  /// user gave none; "" = the user's or the trainer's defaults.
  std::string train_recipe;
  /// --compat none|focal|muscle and its --compat-* options (compat_training.h).
  continual::CompatTrainingOptions compat;
  continual::MethodConfig method{"gpm", {}};

  std::string run_dir() const;
  /// The resolved configuration as INI text (re-runnable with --config).
  std::string to_ini() const;
  /// Checks every field (the method name against `registry`); throws naming the option and value.
  void validate(const continual::MethodRegistry& registry = continual::builtin_methods()) const;
};

/// Every option of `strata train`, with defaults (for --help and parsing); method options come from
/// every method in `registry` (--METHOD.KEY).
boost::program_options::options_description run_options(
    const continual::MethodRegistry& registry = continual::builtin_methods());
/// boost::program_options builds its error messages by replacing placeholders such as "%value%" until
/// none is left, so an option name or value that contains one makes what() loop forever. Every
/// parser of user options calls this on each argument / INI line first; throws naming `where`.
void reject_option_placeholders(const std::string& text, const std::string& where);
/// Parses argv (after the sub-command) and an optional --config INI file; command line wins.
/// Throws c10::Error / boost::program_options::error with a one-line message.
RunConfig parse_run_config(int argc, const char* const* argv,
                           const continual::MethodRegistry& registry = continual::builtin_methods(),
                           boost::program_options::variables_map* vm_out = nullptr);
/// Reads a config.ini written by to_ini().
RunConfig read_run_config(const std::string& ini_path,
                          const continual::MethodRegistry& registry = continual::builtin_methods());
/// Parses INI text (a config.ini's content, e.g. the copy stored in every version); `origin` names it
/// in error messages.
/// Options in `args` ("--stream", "split-fmnist", ...) win over the text's.
RunConfig parse_run_config_text(const std::string& ini_text, const std::string& origin,
                                const continual::MethodRegistry& registry = continual::builtin_methods(),
                                const std::vector<std::string>& args = {});

}  // namespace strata::run
