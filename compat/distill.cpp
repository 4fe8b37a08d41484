#include "compat/distill.h"

namespace strata::compat {
namespace {

void check_logits(const torch::Tensor& z, const torch::Tensor& labels, const char* func, const char* name) {
  TORCH_CHECK(z.defined() && z.dim() == 2, "strata::compat::", func, "(): ", name, " must be [N, K], got ",
              z.defined() ? z.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(z.size(0) == labels.size(0), "strata::compat::", func, "(): ", name, " has ", z.size(0),
              " rows but labels has ", labels.size(0));
}

void check_student(const torch::Tensor& z, const torch::Tensor& labels, const char* func) {
  TORCH_CHECK(labels.defined() && labels.dim() == 1, "strata::compat::", func, "(): labels must be [N]");
  check_logits(z, labels, func, "student_logits");
  TORCH_CHECK(z.size(1) > 0, "strata::compat::", func, "(): student_logits has no classes");
}

}  // namespace

std::string to_string(CompatMode m) {
  switch (m) {
    case CompatMode::kNone: return "none";
    case CompatMode::kFocal: return "focal";
    case CompatMode::kMuscle: return "muscle";
  }
  TORCH_CHECK(false, "strata::compat::to_string(): bad CompatMode ", static_cast<int>(m));
}

CompatMode compat_mode_from_string(const std::string& s) {
  if (s == "none") return CompatMode::kNone;
  if (s == "focal" || s == "fd") return CompatMode::kFocal;
  if (s == "muscle") return CompatMode::kMuscle;
  TORCH_CHECK(false, "strata::compat::compat_mode_from_string(): unknown mode '", s,
              "' (expected none, focal or muscle)");
}

double CompatTrainOptions::resolved_temperature() const {
  if (temperature() > 0.0) return temperature();
  return mode() == CompatMode::kMuscle ? 2.0 : 100.0;
}

torch::Tensor kl_per_example(const torch::Tensor& student, const torch::Tensor& teacher, double temperature,
                             bool scale_by_t2) {
  TORCH_CHECK(temperature > 0.0, "strata::compat::kl_per_example(): temperature must be > 0, got ", temperature);
  TORCH_CHECK(student.dim() == 2 && teacher.dim() == 2 && student.size(0) == teacher.size(0),
              "strata::compat::kl_per_example(): need [N, K] logits with equal N, got ", student.sizes(), " and ",
              teacher.sizes());
  TORCH_CHECK(teacher.size(1) <= student.size(1), "strata::compat::kl_per_example(): teacher has ",
              teacher.size(1), " classes, more than the student's ", student.size(1));
  const int64_t k = teacher.size(1);
  // Softmax over the shared columns only: the teacher never saw the student's extra classes.
  // Teachers may be cached in half precision: compute in the student's dtype.
  const torch::Tensor log_q = torch::log_softmax(student.slice(1, 0, k) / temperature, 1);
  const torch::Tensor log_p = torch::log_softmax(teacher.detach().to(student.scalar_type()) / temperature, 1);
  // p·(log p − log q); terms with p underflowing to 0 contribute exactly 0 (log p stays finite).
  torch::Tensor kl = (log_p.exp() * (log_p - log_q)).sum(1);
  if (scale_by_t2) kl = kl * (temperature * temperature);
  return kl;
}

namespace {

// Everything of the focal loss but its cross-entropy: weights, mask, per_example and compat. The
// mean over the kept samples divides by their count as a tensor, so a training step never waits
// for a value on the host; with no kept sample every weight is 0 and the sum is 0 (as before).
void focal_parts(const torch::Tensor& student_logits, const torch::Tensor& old_logits, const torch::Tensor& y,
                 const CompatTrainOptions& options, CompatLoss& out) {
  const char* fn = "focal_distillation_loss";
  check_student(student_logits, y, fn);
  check_logits(old_logits, y, fn, "old_logits");
  const int64_t k_old = old_logits.size(1);
  TORCH_CHECK(k_old >= 1 && k_old <= student_logits.size(1), "strata::compat::focal_distillation_loss(): old_logits has ",
              k_old, " classes; need 1..", student_logits.size(1), " (the student's)");
  TORCH_CHECK(options.alpha() >= 0.0 && options.beta() >= 0.0,
              "strata::compat::focal_distillation_loss(): alpha and beta must be >= 0, got ", options.alpha(), ", ",
              options.beta());
  torch::Tensor keep, old_correct;
  {
    torch::NoGradGuard no_grad;
    old_correct = old_logits.argmax(1).eq(y);  // a label ≥ K_old can never be predicted: old wrong
    keep = options.drop_new_class_samples() ? y.lt(k_old) : torch::ones_like(y, torch::kBool);
    out.weights = (options.alpha() + options.beta() * old_correct.to(torch::kFloat)) * keep.to(torch::kFloat);
    out.mask = old_correct;
  }
  if (options.distance() == DistillDistance::kKL) {
    out.per_example = kl_per_example(student_logits, old_logits, options.resolved_temperature(), /*scale_by_t2=*/true);
  } else {
    out.per_example =
        (student_logits.slice(1, 0, k_old) - old_logits.detach().to(student_logits.scalar_type())).pow(2).mean(1);
  }
  // Weighted per-sample losses averaged over the kept samples (PCT's code: multiply, then average).
  const torch::Tensor n_keep = keep.sum().clamp_min(1).to(out.per_example.scalar_type());
  out.compat = (out.weights.to(out.per_example.options()) * out.per_example).sum() / n_keep;
}

}  // namespace

CompatLoss focal_distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& old_logits,
                                   const torch::Tensor& labels, const CompatTrainOptions& options) {
  check_student(student_logits, labels, "focal_distillation_loss");
  const torch::Tensor y = labels.to(torch::kLong);
  CompatLoss out;
  out.ce = torch::nn::functional::cross_entropy(student_logits, y);
  focal_parts(student_logits, old_logits, y, options, out);
  out.total = out.ce + options.weight() * out.compat;
  return out;
}

torch::Tensor focal_compat_term(const torch::Tensor& student_logits, const torch::Tensor& old_logits,
                                const torch::Tensor& labels, const CompatTrainOptions& options) {
  check_student(student_logits, labels, "focal_compat_term");
  CompatLoss out;
  focal_parts(student_logits, old_logits, labels.to(torch::kLong), options, out);
  return out.compat;
}

namespace {

// MUSCLE's mask, per_example and compat (everything but its cross-entropy); y is int64.
void muscle_parts(const torch::Tensor& student_logits, const torch::Tensor& old_logits, const torch::Tensor& new_logits,
                  const torch::Tensor& y, const CompatTrainOptions& options, const torch::Tensor& student_old_view,
                  CompatLoss& out) {
  const char* fn = "muscle_loss";
  check_student(student_logits, y, fn);
  check_logits(old_logits, y, fn, "old_logits");
  check_logits(new_logits, y, fn, "new_logits");
  TORCH_CHECK(new_logits.size(1) == student_logits.size(1), "strata::compat::muscle_loss(): new_logits has ",
              new_logits.size(1), " classes but the student has ", student_logits.size(1));
  TORCH_CHECK(options.weight() >= 0.0 && options.weight() <= 1.0,
              "strata::compat::muscle_loss(): weight (lambda) must be in [0, 1], got ", options.weight());
  const double t = options.resolved_temperature();
  {
    torch::NoGradGuard no_grad;
    out.mask = student_logits.argmax(1).ne(y);  // the student's correctness, not the old model's
  }
  if (student_old_view.defined())
    TORCH_CHECK(student_old_view.dim() == 2 && student_old_view.size(0) == student_logits.size(0) &&
                    student_old_view.size(1) == old_logits.size(1),
                "strata::compat::muscle_loss(): student_old_view must be [", student_logits.size(0), ", ",
                old_logits.size(1), "], got ", student_old_view.sizes());
  const torch::Tensor a_old = kl_per_example(student_old_view.defined() ? student_old_view : student_logits, old_logits,
                                             t, /*scale_by_t2=*/false);
  const torch::Tensor a_new = kl_per_example(student_logits, new_logits, t, /*scale_by_t2=*/false);
  out.per_example = torch::where(out.mask, a_old, a_new);
  out.compat = out.per_example.mean();
}

}  // namespace

CompatLoss muscle_loss(const torch::Tensor& student_logits, const torch::Tensor& old_logits,
                       const torch::Tensor& new_logits, const torch::Tensor& labels,
                       const CompatTrainOptions& options, const torch::Tensor& student_old_view) {
  check_student(student_logits, labels, "muscle_loss");
  const torch::Tensor y = labels.to(torch::kLong);
  CompatLoss out;
  out.ce = torch::nn::functional::cross_entropy(student_logits, y);
  muscle_parts(student_logits, old_logits, new_logits, y, options, student_old_view, out);
  out.total = options.weight() * out.compat + (1.0 - options.weight()) * out.ce;
  return out;
}

torch::Tensor muscle_compat_term(const torch::Tensor& student_logits, const torch::Tensor& old_logits,
                                 const torch::Tensor& new_logits, const torch::Tensor& labels,
                                 const CompatTrainOptions& options, const torch::Tensor& student_old_view) {
  check_student(student_logits, labels, "muscle_compat_term");
  CompatLoss out;
  muscle_parts(student_logits, old_logits, new_logits, labels.to(torch::kLong), options, student_old_view, out);
  return out.compat;
}

CompatLoss compat_loss(const torch::Tensor& student_logits, const torch::Tensor& labels,
                       const torch::Tensor& old_logits, const torch::Tensor& new_logits,
                       const CompatTrainOptions& options) {
  switch (options.mode()) {
    case CompatMode::kNone: {
      check_student(student_logits, labels, "compat_loss");
      CompatLoss out;
      out.ce = torch::nn::functional::cross_entropy(student_logits, labels.to(torch::kLong));
      out.compat = torch::zeros({}, out.ce.options());
      out.total = out.ce;
      return out;
    }
    case CompatMode::kFocal:
      TORCH_CHECK(old_logits.defined(), "strata::compat::compat_loss(): mode focal needs old_logits");
      return focal_distillation_loss(student_logits, old_logits, labels, options);
    case CompatMode::kMuscle:
      TORCH_CHECK(old_logits.defined() && new_logits.defined(),
                  "strata::compat::compat_loss(): mode muscle needs old_logits and new_logits");
      return muscle_loss(student_logits, old_logits, new_logits, labels, options);
  }
  TORCH_CHECK(false, "strata::compat::compat_loss(): bad mode ", static_cast<int>(options.mode()));
}

}  // namespace strata::compat
