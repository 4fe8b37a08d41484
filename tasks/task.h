#pragma once
// Tasks and task streams: the data every continual-learning run consumes.
//
// A split does not hold its task's images. It holds row indices into ONE shared, immutable
// source array (e.g. the uint8 Fashion-MNIST training images) plus the task's transform (pixel
// permutation, rotation angle, scaling and normalisation); a batch is made from the source rows
// when it is asked for. Ten permuted tasks therefore cost one copy of the data, not ten float
// copies. Splits built from an explicit float tensor (synthetic data, tests) keep that tensor.
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace strata::tasks {

/// Immutable example data shared by every split drawn from it.
struct InputSource {
  /// [N, P] contiguous: uint8 (value v becomes v / 255, then normalised) or float32 (used as is).
  torch::Tensor data;
  /// Shape of one example as batches return it, {C, H, W}; C * H * W == P.
  std::vector<int64_t> shape;
  /// uint8 only, one value per channel (or both empty = no normalisation): x = (v / 255 - mean[c]) / std[c].
  std::vector<double> mean, std;

  int64_t size() const { return data.defined() ? data.size(0) : 0; }
  /// Throws (c10::Error) naming `what` when the fields do not fit together.
  void validate(const std::string& what) const;
};

/// A task's input transform, applied when a batch is made.
struct InputTransform {
  /// int64 [P] or undefined: output element j (flattened C*H*W) = input element perm[j].
  torch::Tensor perm;
  /// != 0: rotate each image about its centre by this many degrees (counter-clockwise as
  /// displayed), bilinear, zero padding, in the scaled [0, 1] domain before normalisation.
  double degrees = 0.0;
};

/// The inputs of a split, [N, C, H, W] float32, made on demand.
///
/// Either an explicit tensor, or rows of shared InputSources with a transform each (several
/// parts after concat). gather()/slice() make only the requested batch; the implicit conversion
/// to torch::Tensor (and view/sum) materialise the WHOLE split: for tests and small tools, never
/// for training loops.
class Inputs {
 public:
  Inputs() = default;
  /// Explicit inputs: `x` is returned (sliced / gathered) as it is.
  Inputs(torch::Tensor x);  // NOLINT(google-explicit-constructor): a split's x may be assigned a tensor
  /// Lazy inputs: example i is source row rows[i] under `transform`.
  Inputs(std::shared_ptr<const InputSource> source, torch::Tensor rows, InputTransform transform);

  /// Parts one after another (example shapes must agree). Lazy parts stay lazy.
  static Inputs concat(const std::vector<const Inputs*>& parts);

  bool defined() const { return !parts_.empty(); }
  int64_t dim() const { return static_cast<int64_t>(sizes_.size()); }
  c10::IntArrayRef sizes() const { return sizes_; }
  int64_t size(int64_t d) const;
  torch::ScalarType scalar_type() const;
  /// Batches are made contiguous; explicit inputs report their tensor's layout.
  bool is_contiguous() const;
  /// True when some part is made from a shared source at batch time.
  bool is_lazy() const;

  /// Examples `rows` (int64 [B], each in [0, N)), transformed: [B, C, H, W] float32.
  torch::Tensor gather(const torch::Tensor& rows) const;
  /// As gather(), but writes into `buffer` (grown when too small) and returns a view of it: for
  /// loops that drop each batch before asking for the next (evaluation). Explicit inputs ignore
  /// the buffer and return their own slices.
  torch::Tensor gather(const torch::Tensor& rows, torch::Tensor& buffer) const;
  /// Examples [begin, end) (clamped like Tensor::slice).
  torch::Tensor slice(int64_t begin, int64_t end) const;
  torch::Tensor slice(int64_t begin, int64_t end, torch::Tensor& buffer) const;
  /// Tensor-style spellings of gather/slice; `dim` must be 0.
  torch::Tensor index_select(int64_t dim, const torch::Tensor& rows) const;
  torch::Tensor slice(int64_t dim, int64_t begin, int64_t end) const;

  /// The whole split as one tensor (a copy for lazy inputs).
  torch::Tensor materialise() const;
  operator torch::Tensor() const { return materialise(); }  // NOLINT(google-explicit-constructor)
  torch::Tensor view(c10::IntArrayRef shape) const { return materialise().view(shape); }
  torch::Tensor sum() const { return materialise().sum(); }

 private:
  struct Part {
    torch::Tensor tensor;                        // explicit part, or
    std::shared_ptr<const InputSource> source;   // lazy part: source rows under transform
    torch::Tensor rows;                          // int64 [n], contiguous
    InputTransform transform;
    std::shared_ptr<const std::vector<float>> lut;  // uint8 sources: value -> float, per channel
    int64_t size() const { return tensor.defined() ? tensor.size(0) : rows.size(0); }
    torch::Tensor gather(const torch::Tensor& rows, float* out) const;
  };
  std::vector<Part> parts_;
  std::vector<int64_t> offsets_;  // parts_[p] holds examples [offsets_[p], offsets_[p + 1])
  std::vector<int64_t> sizes_;    // [N, C, H, W]
  void add(Part p);
  torch::Tensor gather_impl(const torch::Tensor& rows, torch::Tensor* buffer) const;
};

/// Makes `source` rows under `transform` into a float batch [B, C, H, W] (out: if non-null, B*P
/// floats to write into). The one kernel behind every lazy split.
torch::Tensor gather_source(const InputSource& source, const torch::Tensor& rows, const InputTransform& transform,
                            float* out = nullptr);

/// van de Ven's three scenarios: what is known at test time.
enum class Scenario {
  kTaskIncremental,    ///< task id given: logits masked to the task's classes (train and test)
  kClassIncremental,   ///< one head over all classes seen so far (future logits masked)
  kDomainIncremental,  ///< same label space in every task, all logits used
};
std::string to_string(Scenario s);
/// "task" | "class" | "domain"; throws naming the bad value otherwise.
Scenario scenario_from_string(const std::string& s);

/// One split (train, val or test) of one task.
struct Split {
  Inputs x;            ///< [N, C, H, W] float32, normalised; read batches with gather()/slice()
  torch::Tensor y;     ///< [N] int64, global class ids (permuted/rotated: 0..9 in every task)
  torch::Tensor ids;   ///< [N] int64, stable example id (index into the source data file)
  torch::Tensor task;  ///< [N] int64, index of the task each example belongs to (joint training mixes tasks)
  int64_t size() const { return y.defined() ? y.size(0) : 0; }
  /// Inputs of examples `rows` (int64 [B] in [0, size())): [B, C, H, W] float32.
  torch::Tensor gather(const torch::Tensor& rows) const { return x.gather(rows); }
  /// Inputs of examples [begin, end).
  torch::Tensor slice(int64_t begin, int64_t end) const { return x.slice(begin, end); }
  /// As slice(), written into `buffer` (see Inputs::gather with a buffer): for evaluation loops.
  torch::Tensor slice(int64_t begin, int64_t end, torch::Tensor& buffer) const { return x.slice(begin, end, buffer); }
};

/// Concatenate splits (e.g. joint training on the union of tasks seen so far).
Split concat(const std::vector<const Split*>& splits);

struct Task {
  int64_t index = 0;             ///< position in the stream, 0-based
  std::string name;              ///< e.g. "perm3", "split1-classes-2-3", "rot45"
  Split train, val, test;
  std::vector<int64_t> classes;  ///< global class ids this task contains
};

struct TaskStream {
  std::string name;                  ///< e.g. "permuted-fmnist"
  Scenario scenario = Scenario::kDomainIncremental;
  int64_t num_classes = 10;          ///< size of the (single) output head
  std::vector<int64_t> input_shape;  ///< {C, H, W}
  std::vector<Task> tasks;

  int64_t size() const { return static_cast<int64_t>(tasks.size()); }
  /// [num_tasks, num_classes] bool: row t marks the logits allowed when an example of task t
  /// is trained or evaluated after training task `stage` (Task-IL: t's classes; Class-IL: every
  /// class of tasks 0..max(t, stage); Domain-IL: all). Index rows by Split::task for a batch mask.
  torch::Tensor logit_mask(int64_t stage) const;
  /// [num_tasks, num_classes] bool: row t marks task t's own classes (a class-IL loss that ignores
  /// the classes of earlier tasks).
  torch::Tensor own_task_mask() const;
};

}  // namespace strata::tasks
