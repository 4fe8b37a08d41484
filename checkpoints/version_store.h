#pragma once
// Model versions: one HDF5 file per finished task, runs/NAME/versions/vNNN.h5 (NNN = task index,
// zero-padded to 3). A version is a complete, resumable snapshot; the file is written atomically
// (core::AtomicFile: "<path>.tmp-<pid>", fsync, rename), so a killed process never leaves a corrupt
// file where a good one was.
//
// This folder knows nothing of models, methods or tasks (continual/ depends on it, not the other
// way): everything is passed as plain data — named tensors, a JSON object, strings.
//
// File layout (format "strata-version", format_version 1; every dataset in C order, see core/h5.h
// for the dtype mapping). Readable by h5dump and h5py:
//
//   /                       attrs: format = "strata-version", format_version (int64),
//                                  version (int64, = task index), method (str), config_ini (str,
//                                  the run's resolved config.ini), torch_version (str),
//                                  created (str, UTC ISO-8601), checksum_crc32 (int64),
//                                  checksum_scope (str, how the checksum is computed)
//   /model/<name>           one dataset per model parameter and buffer, named by its module path
//                           exactly as named_parameters()/named_buffers() (= a PyTorch state_dict
//                           key), e.g. /model/fc1.weight [100, 784] float32.
//                           attrs: kind = "parameter" | "buffer", requires_grad (int64 0/1)
//   /method                 attrs: name (str), meta_json (str, the method's JSON state)
//   /method/tensors/<key>   the method's named tensors; keys are slash paths ("basis/fc1"), so they
//                           become nested groups
//   /optimizer              empty group; attr note (str). The Trainer builds a fresh optimizer per
//                           task, so at a task boundary there is no optimizer state to carry.
//   /rng/torch_cpu          uint8 [K] the global torch CPU generator state (get_state())
//   /position               attrs: next_task (int64), num_tasks (int64)
//   /position/accuracy_matrix   float64 [T, T] R[i][j] (rows >= next_task are zero)
//   /position/initial_accuracy  float64 [T] b
//   /position/timings           float64 [next_task, 5] columns: task, train_seconds,
//                               eval_seconds, examples_per_s, train_steps (attr columns)
//
// Checksum: zlib CRC-32 chained over the raw bytes (C order, the file's dtype) of every dataset
// in the file, datasets taken in byte-wise sorted order of their full path ("/method/tensors/...",
// "/model/fc1.weight", ...; Python: sorted(paths)), starting from 0. Stored as checksum_crc32,
// verified by read_version().
//
// User block (whole-file checksum, checked before HDF5 opens the file): the file's first 512 bytes
// are an HDF5 user block (the HDF5 superblock is at byte 512; h5py and h5dump skip the block) with
// the text header of core/h5.h, magic "strata-version-userblock":
//     strata-version-userblock\n size=<file bytes>\n crc32=<CRC-32 of bytes [512, size)>\n
//     header_crc32=<CRC-32 of the lines above>\n, then NUL bytes.
// read_version() checks it with plain reads first, so a truncated or damaged file is refused
// ("file is truncated: N bytes, header says M", "checksum mismatch ...") without HDF5 parsing any
// of it. Files written before the user block (HDF5 superblock at byte 0) still load, through the
// in-HDF5 checksum alone.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace strata::checkpoints {

constexpr int64_t kFormatVersion = 1;
constexpr const char* kFormatName = "strata-version";
/// First line of a version file's user block (core::check_user_block).
constexpr const char* kUserBlockMagic = "strata-version-userblock";

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// One finished task's timing, as in report.json.
struct TaskTiming {
  int64_t task = 0;
  double train_seconds = 0, eval_seconds = 0, examples_per_s = 0;
  int64_t train_steps = 0;
};

/// Where the run stands after this version: enough to continue exactly.
struct RunPosition {
  int64_t next_task = 0;           ///< the first task still to train (= version + 1)
  int64_t num_tasks = 0;           ///< T
  torch::Tensor accuracy_matrix;   ///< [T, T] float64
  torch::Tensor initial_accuracy;  ///< [T] float64
  std::vector<TaskTiming> timings; ///< one per finished task
};

/// Everything a vNNN.h5 holds.
struct Version {
  int64_t version = 0;       ///< = index of the task just finished
  std::string method;        ///< the method's registered name
  std::string config_ini;    ///< the run's resolved config.ini text
  NamedTensors parameters;   ///< model named_parameters(), module paths as names
  NamedTensors buffers;      ///< model named_buffers()
  std::vector<bool> requires_grad;  ///< per parameter (informational; the method re-creates it)
  std::map<std::string, torch::Tensor> method_tensors;  ///< MethodState::tensors
  nlohmann::json method_meta = nlohmann::json::object(); ///< MethodState::meta
  torch::Tensor rng_cpu;     ///< uint8 [K] torch CPU generator state
  RunPosition position;
  // Filled by read_version():
  std::string torch_version, created;
  uint32_t checksum = 0;
};

/// "<run_dir>/versions/v<NNN>.h5".
std::string version_path(const std::string& run_dir, int64_t version);

/// Writes `v` atomically to `path` (creating the parent folder). Throws c10::Error naming the
/// file; on error nothing at `path` changes.
void write_version(const std::string& path, const Version& v);

/// Reads and verifies a version file. Throws c10::Error naming the file and the field for:
/// missing file, a truncated or damaged file (user block: before HDF5 opens it), non-HDF5 file,
/// wrong format name, unknown format_version, missing datasets/attributes, inconsistent shapes in
/// /position, and checksum mismatch.
Version read_version(const std::string& path);

/// True when `path` starts with a version file's user block (its first bytes only; no HDF5): how
/// `strata eval` and --init tell a version file from a weight file without HDF5 parsing it.
bool has_version_user_block(const std::string& path);

/// What a run's versions/ folder holds.
struct VersionScan {
  std::vector<int64_t> versions;      ///< complete files vNNN.h5, ascending
  std::vector<std::string> partial;   ///< stray temporaries ("*.tmp-*"): ignored, to be reported
  std::vector<std::string> other;     ///< anything else (ignored, reported)
};
/// Lists "<run_dir>/versions" (an absent folder is an empty scan).
VersionScan scan_versions(const std::string& run_dir);

/// Copies `stored` into `targets` by name, all-or-nothing: every check runs before any copy, so a
/// refused load leaves `targets` untouched. Errors name `file`, the dataset ("/model/<name>"),
/// and the expected vs stored shape: missing names, unexpected names, shape or dtype mismatch.
/// `what` labels the group in messages ("model").
void copy_named_tensors(const NamedTensors& stored, const NamedTensors& targets, const std::string& file,
                        const std::string& what = "model");

/// The global torch CPU generator's state, and restoring it.
torch::Tensor cpu_rng_state();
void set_cpu_rng_state(const torch::Tensor& state);

}  // namespace strata::checkpoints
