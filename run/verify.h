#pragma once
// Checking a run folder: every version file (checksum, format, number, position, model shapes), and
// the files that must agree with the versions (predictions.h5, subspaces.h5, report.json,
// metrics.csv, config.ini). `strata train --resume` uses check_version() on every version it relies
// on; `strata verify runs/NAME` prints verify_run().
#include "models/models.h"
#include "run/config.h"

#include <string>
#include <vector>

namespace strata::run {

/// Checks the version file at `path`: it reads and its checksum matches (checkpoints::read_version),
/// it is version `expected` of a `num_tasks`-task run written by `method`, and every tensor it shares
/// a name with `model` (when given: a freshly built model of the run's configuration) has the model's
/// shape. Returns "" when sound, else one line saying what is wrong.
std::string check_version(const std::string& path, int64_t expected, int64_t num_tasks, const std::string& method,
                          const models::Model* model);

struct FileCheck {
  std::string file;     ///< path relative to the run folder ("versions/v001.h5")
  std::string problem;  ///< "" = sound
  std::string note;     ///< what was checked, or why something was not
  bool ok() const { return problem.empty(); }
};

struct RunCheck {
  std::vector<FileCheck> files;
  bool sound() const;
};

/// Checks every file of the run folder `dir`. Throws c10::Error (bad input) when `dir` is not a
/// folder or holds neither config.ini nor versions/; damage is reported in the result, never thrown.
RunCheck verify_run(const std::string& dir,
                    const continual::MethodRegistry& registry = continual::builtin_methods());

}  // namespace strata::run
