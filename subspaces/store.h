// SubspaceStore: the append-only HDF5 history of protected subspaces (subspaces.h5).
//
// Schema (format_version 1). Every dataset is float32 unless noted, chunked, shuffle+deflate(4),
// Fletcher32 (0-d and empty extras are stored contiguous, HDF5 cannot chunk them):
//
//   /                              attrs: format = "strata.subspaces" (string)
//                                         format_version = 1 (int64)
//   /tasks/                        group
//   /tasks/<task>/                 group, attrs: index (int64, 0-based order of insertion)
//   /tasks/<task>/<layer>/         group, attrs: rank (int64)            = basis columns
//                                                side (string)           = "input" | "output"
//                                                method (string)         e.g. "gpm", "coso"
//                                                threshold (float64)     energy threshold ε used
//                                                captured_energy (float64) fraction of energy kept
//                                                dim (int64)             = basis rows
//       basis                      [dim, rank]   orthonormal columns (input side: dim = in features,
//                                                output side: dim = out features)
//       singular_values            [s]           spectrum the rank was chosen from (may be empty)
//       extra/<name>               any dtype/shape supported by strata::core::write_tensor
//                                  (adapters: LoRA factors, atom banks, ...)
//
// Names: task and layer names are any non-empty strings without '/' and not "." (e.g.
// "task03", "fc1", "blocks.0.attn.proj"). Every write goes through a copy-and-rename
// (strata::core::AtomicFile), so a crash leaves the previous file intact.
// The file starts with a 512-byte HDF5 user block, magic "strata-subspaces-userblock" (a whole-file
// CRC-32, core/h5.h), rewritten on every append; open() and every append check it before HDF5 opens
// the file (the per-record reads of an opened store do not). Stores without one still open, and stay
// without one when appended to.
// History is never overwritten: a (task, layer) record, once written, cannot be replaced, and
// put_task() refuses a task that already exists.
// Readable with h5dump / h5py, e.g. h5py.File(p)["tasks/task00/fc1/basis"][()].
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace strata::subspaces {

struct SubspaceRecord {
  torch::Tensor basis;            // [dim, rank], orthonormal columns
  torch::Tensor singular_values;  // [s] (undefined = empty)
  double captured_energy = 0.0;
  double threshold = 0.0;
  std::string side = "input";  // "input" | "output"
  std::string method;          // who made it ("gpm", "coso", ...)
  std::map<std::string, torch::Tensor> extra;

  int64_t rank() const { return basis.defined() ? basis.size(1) : 0; }
};

class SubspaceStore {
 public:
  static constexpr const char* kFormat = "strata.subspaces";
  static constexpr int64_t kFormatVersion = 1;
  static constexpr const char* kUserBlockMagic = "strata-subspaces-userblock";

  // Creates a new empty store; error if `path` exists.
  static SubspaceStore create(const std::string& path);
  // Opens an existing store; clear errors for a missing file, a non-HDF5/corrupt file, or a
  // foreign HDF5 file (no `format` = "strata.subspaces" attribute) / unknown version.
  static SubspaceStore open(const std::string& path);
  // open() when the file exists, create() otherwise.
  static SubspaceStore open_or_create(const std::string& path);

  const std::string& path() const { return path_; }

  // Appends one layer record to `task` (the task is created on first use). Error when this
  // (task, layer) already exists.
  void put(const std::string& task, const std::string& layer, const SubspaceRecord& record);
  // Appends a whole task in one atomic write. Error when the task already exists.
  void put_task(const std::string& task, const std::map<std::string, SubspaceRecord>& layers);

  // Tasks in insertion order.
  std::vector<std::string> tasks() const;
  bool has_task(const std::string& task) const;
  // Layers of a task, sorted by name. Error for an unknown task.
  std::vector<std::string> layers(const std::string& task) const;
  bool has(const std::string& task, const std::string& layer) const;
  // Loads one record (with its extra tensors). Error naming the file, task and layer if missing.
  SubspaceRecord get(const std::string& task, const std::string& layer) const;

 private:
  explicit SubspaceStore(std::string path) : path_(std::move(path)) {}
  void append(const std::string& task, const std::map<std::string, SubspaceRecord>& layers, bool new_task_only);

  std::string path_;
};

/// The store's name of task `index`: "task00", "task01", ... (the same spelling predictions.h5 uses).
std::string task_key(int64_t index);

/// What a method hands its task-end subspaces to. Methods do no file I/O: the run owns the store
/// and gives methods a recorder (TaskContext::recorder; null = recording is off).
class SubspaceRecorder {
 public:
  virtual ~SubspaceRecorder() = default;
  /// Appends task `task`'s records (layer -> record). A task that is already recorded keeps its
  /// first record: a resumed run re-trains a task from the same weights and recomputes the same one.
  virtual void record(int64_t task, const std::map<std::string, SubspaceRecord>& layers) = 0;
};

/// The recorder that appends to a SubspaceStore file (created by the first record).
class StoreRecorder : public SubspaceRecorder {
 public:
  explicit StoreRecorder(std::string path) : path_(std::move(path)) {}
  void record(int64_t task, const std::map<std::string, SubspaceRecord>& layers) override;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace strata::subspaces
