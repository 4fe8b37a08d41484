#pragma once
// Paired flip analysis of two model versions on the same labelled items.
//
// Every metric is a ratio of five counts over the N items (A = old/deployed, B = new/candidate):
//   n11 both correct, n10 = NF (A right, B wrong), n01 = PF (A wrong, B right),
//   n00s both wrong with the same answer, n00d both wrong with different answers.
// Ratios are always pooled over all items of a slice (never averaged over batches), and a ratio whose
// denominator is 0 is undefined: NaN in C++, null in JSON (never silently 0).
//
// Single-label classification: "correct" means pred == label, so both-correct items always agree and
// the spec's CC_changed flip type cannot occur; it is not counted.
#include "compat/predictions.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace strata::compat {

/// Per-item outcome of an update; the integer values are the codes returned by flip_types().
enum class FlipType : int64_t {
  kCorrect = 0,       ///< both correct (CC)
  kNegative = 1,      ///< NF: old correct, new wrong
  kPositive = 2,      ///< PF: old wrong, new correct
  kWrongSame = 3,     ///< both wrong, same answer (WW_same)
  kWrongChanged = 4,  ///< both wrong, different answers (WW_changed)
};
constexpr int64_t kNumFlipTypes = 5;
/// "CC" | "NF" | "PF" | "WW_same" | "WW_changed".
std::string to_string(FlipType t);

/// Aligned per-item inputs: row i of every tensor is the same item. Only the first three are required.
struct FlipInputs {
  torch::Tensor labels;    ///< [N] int64 gold labels
  torch::Tensor old_pred;  ///< [N] int64 predictions of A
  torch::Tensor new_pred;  ///< [N] int64 predictions of B
  torch::Tensor old_conf;  ///< optional [N] floating: A's probability of its predicted class
  torch::Tensor new_conf;  ///< optional [N] floating: B's probability of its predicted class
  torch::Tensor groups;    ///< optional [N] int64 slice id (the CL task), reported per group
  torch::Tensor ids;       ///< optional [N] int64 stable item ids (only used in flip lists)
};
/// Throws (naming the field and both lengths / the dtype) unless the tensors are 1-D, of equal length,
/// and integral where they must be.
void check_inputs(const FlipInputs& in);

/// [N] int64 FlipType codes.
torch::Tensor flip_types(const torch::Tensor& labels, const torch::Tensor& old_pred, const torch::Tensor& new_pred);

/// The five counts and every flip metric reported for a pair.
struct FlipCounts {
  int64_t n11 = 0, n10 = 0, n01 = 0, n00s = 0, n00d = 0;

  int64_t n() const { return n11 + n10 + n01 + n00s + n00d; }
  int64_t n00() const { return n00s + n00d; }
  int64_t nf() const { return n10; }
  int64_t pf() const { return n01; }

  double acc_old() const;          ///< (n11 + n10)/N
  double acc_new() const;          ///< (n11 + n01)/N
  double delta_acc() const;        ///< acc_new − acc_old = PFR − NFR
  double nfr() const;              ///< n10/N (Yan et al.)
  double pfr() const;              ///< n01/N
  double nfi() const;              ///< n10/(n10 + n00): share of B's errors that are regressions (Cai et al.) = 1 − BEC_new
  double pfi() const;              ///< n01/(n11 + n01): share of B's successes that are new
  double btc() const;              ///< n11/(n11 + n10): P(B right | A right) (Srivastava et al.)
  double conditional_nfr() const;  ///< n10/(n11 + n10) = 1 − BTC
  /// BEC in the paper's wording: n00/(n00 + n10) = P(A wrong | B wrong), "a mistake of the new model is not new".
  double bec_new() const;
  /// BEC as Microsoft's BackwardCompatibilityML code computes it: n00/(n00 + n01) = P(B wrong | A wrong),
  /// the share of the old model's errors that persist ("error persistence").
  double bec_old() const;
  double relative_nfr() const;  ///< NFR/(acc_old·ER_new); 1 = errors independent of old successes
  double nfr_mc() const;        ///< (n10 + n00d)/N: MUSCLE's inconsistency flips
  double churn() const;         ///< (n10 + n01 + n00d)/N: any change of prediction
  double pf_nf_ratio() const;   ///< n01/n10 (Träuble et al.)

  FlipCounts& operator+=(const FlipCounts& o);

  /// {"n", "counts": {n11, n10, n01, n00, n00s, n00d}, "metrics": {name: {value, ci_low, ci_high, n, method}},
  ///  "mcnemar": {b, c, p_one_sided, p_two_sided, chi2_cc, method}}. Proportions get two-sided (1 − alpha)
  /// Wilson intervals over their own denominator; delta_acc a paired Wald interval; undefined values are null.
  nlohmann::json to_json(double alpha = 0.05) const;
};

/// Counts from aligned predictions (all [N] int64).
FlipCounts count_flips(const torch::Tensor& labels, const torch::Tensor& old_pred, const torch::Tensor& new_pred);

/// Counts of one slice (one task or one class).
struct SliceCounts {
  int64_t key = 0;  ///< group id or class label
  FlipCounts counts;
};

/// Overall and per-slice counts of one comparison.
struct FlipReport {
  FlipCounts overall;
  std::vector<SliceCounts> per_group;  ///< sorted by group id; empty when no groups were given
  std::vector<SliceCounts> per_class;  ///< sorted by gold label; restricted to items with y = class

  /// {"overall": FlipCounts json, "per_task": [{task, ...}], "per_class": [{class, ...}], "multiplicity",
  ///  "warnings"}. Each slice also gets "holm_p_one_sided" (Holm–Bonferroni over that family of one-sided
  /// McNemar p-values) and "regression_alarm" (holm_p_one_sided ≤ alpha).
  nlohmann::json to_json(double alpha = 0.05) const;
  /// Low-power warnings: b + c < 25 overall, classes with < 30 old-correct items.
  std::vector<std::string> warnings() const;
};

/// Counts overall, per group (if in.groups is defined) and per class. Vectorised: one bincount per slicing.
FlipReport compare_predictions(const FlipInputs& in);

/// Joins two tables on their items (output sorted by item): the item is (task, id) when both tables
/// have a task column, else id. Throws, naming the first offending item and how many are affected, on
/// duplicate items, items present in only one table, a gold label that differs between the tables, or a
/// task column in only one table. `old_name` / `new_name` name the tables in the messages (file paths).
/// Output: ids = example ids, groups = tasks (undefined without a task column).
FlipInputs align_by_id(const PredictionTable& old_table, const PredictionTable& new_table,
                       const std::string& old_name = "OLD", const std::string& new_name = "NEW");

/// Regression alarm of one slice: one-sided exact McNemar p (new worse), Holm-adjusted over its family.
struct SliceAlarm {
  int64_t key = 0;
  double p_one_sided = 1.0;
  double holm_p = 1.0;
  bool alarm = false;  ///< holm_p ≤ alpha
};
/// Holm–Bonferroni over the one-sided McNemar p-values of one family of slices (per task or per class).
std::vector<SliceAlarm> regression_alarms(const std::vector<SliceCounts>& slices, double alpha);

/// Version×version NFR matrix: preds[v] is [N] int64 predictions of version v on the same items (same
/// order as labels). Returns [V, V] float64 M with M[a][b] = NFR(a → b) = #{a right, b wrong}/N
/// (row = old, column = new; M[b][a] = PFR(a → b); diagonal 0). One matmul of the [V, N] correctness matrix.
torch::Tensor nfr_matrix(const std::vector<torch::Tensor>& preds, const torch::Tensor& labels);

/// Version×version NFR matrix of a stream of versions, each cell scored on the items a comparison of
/// those two versions scores by default (default_compare_tasks: the tasks the older one was trained on):
/// nfr[a][b] = NF(a → b)/N over those items (row = old, column = new; nfr[b][a] is PFR(a → b) on the
/// same items; diagonal 0), n[a][b] = that N (diagonal: the tasks version a was trained on).
struct StreamMatrix {
  std::vector<int64_t> versions;  ///< ascending, the versions present
  torch::Tensor nfr;              ///< [V, V] float64
  torch::Tensor n;                ///< [V, V] int64
};
/// (Computed by StreamCompat, compat/stream_report.h, which a run feeds one version at a time.)
StreamMatrix stream_nfr_matrix(const PredictionVersions& versions);

}  // namespace strata::compat
