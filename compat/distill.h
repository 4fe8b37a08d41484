#pragma once
// Compatibility-aware training losses, as pure functions on logits.
// The caller supplies the teachers' logits (computed once and cached, or on the fly); they are detached
// here, so gradients reach only the student.
//
// Shapes: student [N, K] logits, labels [N] int64 in [0, K). For sequence models flatten the token
// positions into N first (MUSCLE's mask is per token).
#include <torch/torch.h>

#include <string>

namespace strata::compat {

enum class CompatMode {
  kNone,    ///< plain cross-entropy; compatibility is only measured
  kFocal,   ///< PCT focal distillation from the previous version
  kMuscle,  ///< MUSCLE: two teachers, switched by the student's own correctness
};
std::string to_string(CompatMode m);
/// "none" | "focal" (alias "fd") | "muscle"; throws naming the bad value otherwise.
CompatMode compat_mode_from_string(const std::string& s);

enum class DistillDistance {
  kKL,  ///< T²·KL(σ(z_old/T) ‖ σ(z/T))
  kL2,  ///< logit matching: mean over the compared columns of (z − z_old)²
};

struct CompatTrainOptions {
  TORCH_ARG(CompatMode, mode) = CompatMode::kNone;
  /// Focal: background weight for every sample (PCT default 1).
  TORCH_ARG(double, alpha) = 1.0;
  /// Focal: extra weight where the old model is correct (PCT default 5; 0 gives plain KD).
  TORCH_ARG(double, beta) = 5.0;
  /// Softmax temperature; ≤ 0 selects the mode's default: 100 for focal (PCT), 2 for MUSCLE.
  TORCH_ARG(double, temperature) = 0.0;
  /// λ. Focal: L = CE + λ·FD (default 1). MUSCLE: L = λ·L_mcomp + (1 − λ)·CE (default 1 = no CE term,
  /// the paper's default; < 1 adds the App. A.4 cross-entropy for a much weaker old model).
  TORCH_ARG(double, weight) = 1.0;
  /// Focal: distance between student and old logits.
  TORCH_ARG(DistillDistance, distance) = DistillDistance::kKL;
  /// Focal, class-incremental (old model has fewer classes than the student): drop samples whose label
  /// the old model does not know (true, as PCT's official code), or keep them with weight α (false).
  TORCH_ARG(bool, drop_new_class_samples) = true;

 public:
  /// temperature() if > 0, else the mode's default.
  double resolved_temperature() const;
};

/// Loss and its parts. Scalars are differentiable w.r.t. the student logits.
struct CompatLoss {
  torch::Tensor total;        ///< scalar: what to backpropagate
  torch::Tensor ce;           ///< scalar: cross-entropy of the student on labels
  torch::Tensor compat;       ///< scalar: the compatibility term (FD mean or L_mcomp); 0 for kNone
  torch::Tensor per_example;  ///< [N]: focal: D_i (unweighted); muscle: m_i·a_i^old + (1−m_i)·a_i^new
  torch::Tensor weights;      ///< [N] float: focal w_i = α + β·1[old correct] (0 for dropped samples); undefined otherwise
  torch::Tensor mask;         ///< [N] bool: focal: old model correct; muscle: m_i = student argmax ≠ label
};

/// Per-example T²·KL(σ(teacher/T) ‖ σ(student/T)) over the columns both have: [N].
torch::Tensor kl_per_example(const torch::Tensor& student, const torch::Tensor& teacher, double temperature,
                             bool scale_by_t2);

/// PCT focal distillation (Yan et al. 2021): L = CE(z, y) + λ·(1/|S|)·Σ_{i∈S} w_i·D(z_i, z_i^old),
/// w_i = α + β·1[argmax z_i^old = y_i]. old_logits may have K_old ≤ K columns (class-incremental): D then
/// compares only the first K_old columns, and S excludes samples with y ≥ K_old when
/// drop_new_class_samples (else S is all samples; those get weight α). With no sample in S the FD term is 0.
CompatLoss focal_distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& old_logits,
                                   const torch::Tensor& labels, const CompatTrainOptions& options);

/// focal_distillation_loss(...).compat alone (no cross-entropy, which a training loop already has):
/// what a training step adds. Its mean over the kept samples divides by their count on the device,
/// never reading it on the host.
torch::Tensor focal_compat_term(const torch::Tensor& student_logits, const torch::Tensor& old_logits,
                                const torch::Tensor& labels, const CompatTrainOptions& options);

/// MUSCLE (Echterhoff et al. 2024, Eq. 1): m_i = 1[argmax z_i ≠ y_i] (the *student's* correctness),
/// a_i^old = KL(σ(z_i^old/T) ‖ σ(z_i/T)), a_i^new = KL(σ(z_i^new/T) ‖ σ(z_i/T)),
/// L_mcomp = (1/N)·Σ_i [m_i·a_i^old + (1 − m_i)·a_i^new]; L = λ·L_mcomp + (1 − λ)·CE. T = 2 by default.
/// The KL is not multiplied by T² (Eq. 1 has no such factor). new_logits must have K columns;
/// old_logits K_old ≤ K (extra student classes are ignored in a^old, as for focal; an extension).
/// student_old_view [N, K_old] (optional): the student logits a^old compares with the old teacher,
/// when they differ from the first K_old columns of student_logits — in continual learning, the
/// *unmasked* logits of the classes the old model knows: a task-IL loss masks them out for a new
/// task's examples, and a^old between two masked rows would be 0 (focal distils the same view).
CompatLoss muscle_loss(const torch::Tensor& student_logits, const torch::Tensor& old_logits,
                       const torch::Tensor& new_logits, const torch::Tensor& labels,
                       const CompatTrainOptions& options, const torch::Tensor& student_old_view = {});

/// muscle_loss(...).compat alone (no cross-entropy): L_mcomp.
torch::Tensor muscle_compat_term(const torch::Tensor& student_logits, const torch::Tensor& old_logits,
                                 const torch::Tensor& new_logits, const torch::Tensor& labels,
                                 const CompatTrainOptions& options, const torch::Tensor& student_old_view = {});

/// Dispatches on options.mode(). kNone: total = ce (teachers may be undefined); kFocal needs old_logits;
/// kMuscle needs both.
CompatLoss compat_loss(const torch::Tensor& student_logits, const torch::Tensor& labels,
                       const torch::Tensor& old_logits, const torch::Tensor& new_logits,
                       const CompatTrainOptions& options);

}  // namespace strata::compat
