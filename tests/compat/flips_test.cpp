#include <gtest/gtest.h>

#include "compat/flips.h"
#include "compat/stats.h"

#include <cmath>
#include <limits>
#include <stdexcept>

using namespace strata::compat;

namespace {

torch::Tensor L(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }

// Hand-built table, 10 items, labels / old / new:
//   ids 0-3: both correct (n11 = 4)
//   ids 4-5: NF (n10 = 2)
//   ids 6-8: PF (n01 = 3)
//   id  9 : both wrong, same answer (n00s = 1)
// plus ids 10-11 both wrong, different answers (n00d = 2). N = 12.
FlipInputs hand_table() {
  FlipInputs in;
  in.labels = L({0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2});
  in.old_pred = L({0, 1, 2, 0, 1, 2, 1, 2, 0, 1, 0, 0});
  in.new_pred = L({0, 1, 2, 0, 0, 0, 0, 1, 2, 1, 2, 1});
  in.groups = L({7, 7, 7, 7, 7, 7, 3, 3, 3, 3, 3, 3});
  return in;
}

}  // namespace

TEST(CompatFlips, FlipTypesAndCounts) {
  const FlipInputs in = hand_table();
  const torch::Tensor t = flip_types(in.labels, in.old_pred, in.new_pred);
  EXPECT_TRUE(t.equal(L({0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4})));
  const FlipCounts c = count_flips(in.labels, in.old_pred, in.new_pred);
  EXPECT_EQ(c.n11, 4);
  EXPECT_EQ(c.n10, 2);
  EXPECT_EQ(c.n01, 3);
  EXPECT_EQ(c.n00s, 1);
  EXPECT_EQ(c.n00d, 2);
  EXPECT_EQ(c.n(), 12);
}

TEST(CompatFlips, EveryMetricOnHandTable) {
  const FlipCounts c = count_flips(hand_table().labels, hand_table().old_pred, hand_table().new_pred);
  // n11=4 n10=2 n01=3 n00s=1 n00d=2, N=12, n00=3.
  EXPECT_DOUBLE_EQ(c.acc_old(), 6.0 / 12);
  EXPECT_DOUBLE_EQ(c.acc_new(), 7.0 / 12);
  EXPECT_DOUBLE_EQ(c.delta_acc(), 1.0 / 12);
  EXPECT_DOUBLE_EQ(c.nfr(), 2.0 / 12);
  EXPECT_DOUBLE_EQ(c.pfr(), 3.0 / 12);
  EXPECT_DOUBLE_EQ(c.nfi(), 2.0 / 5);
  EXPECT_DOUBLE_EQ(c.pfi(), 3.0 / 7);
  EXPECT_DOUBLE_EQ(c.btc(), 4.0 / 6);
  EXPECT_DOUBLE_EQ(c.conditional_nfr(), 2.0 / 6);
  EXPECT_DOUBLE_EQ(c.bec_new(), 3.0 / 5);  // paper wording: P(old wrong | new wrong)
  EXPECT_DOUBLE_EQ(c.bec_old(), 3.0 / 6);  // MS code: P(new wrong | old wrong)
  EXPECT_DOUBLE_EQ(c.relative_nfr(), (2.0 / 12) / ((6.0 / 12) * (5.0 / 12)));
  EXPECT_DOUBLE_EQ(c.nfr_mc(), 4.0 / 12);
  EXPECT_DOUBLE_EQ(c.churn(), 7.0 / 12);
  EXPECT_DOUBLE_EQ(c.pf_nf_ratio(), 1.5);
}

TEST(CompatFlips, IdentitiesOnRandomTables) {
  torch::manual_seed(3);
  for (int rep = 0; rep < 20; ++rep) {
    const int64_t n = 500, k = 2 + rep % 5;
    const torch::Tensor y = torch::randint(k, {n}, torch::kLong);
    // Correlated predictions: each model copies the label with some probability.
    const torch::Tensor a = torch::where(torch::rand({n}) < 0.7, y, torch::randint(k, {n}, torch::kLong));
    const torch::Tensor b = torch::where(torch::rand({n}) < 0.6, a, torch::randint(k, {n}, torch::kLong));
    const FlipCounts c = count_flips(y, a, b);
    EXPECT_EQ(c.n(), n);
    EXPECT_NEAR(c.delta_acc(), c.pfr() - c.nfr(), 1e-12);
    EXPECT_NEAR(c.nfi(), 1.0 - c.bec_new(), 1e-12);
    EXPECT_NEAR(c.btc(), 1.0 - c.nfr() / c.acc_old(), 1e-12);
    EXPECT_LE(c.nfr(), std::min(c.acc_old(), 1.0 - c.acc_new()) + 1e-15);
    EXPECT_GE(c.nfr_mc(), c.nfr());
    // Cross-check against the Amazon metric definitions computed directly from the arrays.
    const torch::Tensor ca = a.eq(y), cb = b.eq(y);
    EXPECT_NEAR(c.nfr(), (ca & ~cb).to(torch::kDouble).mean().item<double>(), 1e-12);
    EXPECT_NEAR(c.pfr(), (~ca & cb).to(torch::kDouble).mean().item<double>(), 1e-12);
    EXPECT_NEAR(c.nfi(), (ca & ~cb).sum().item<double>() / (~cb).sum().item<double>(), 1e-12);
    EXPECT_NEAR(c.pfi(), (~ca & cb).sum().item<double>() / cb.sum().item<double>(), 1e-12);
    EXPECT_NEAR(c.churn(), a.ne(b).to(torch::kDouble).mean().item<double>(), 1e-12);
  }
}

TEST(CompatFlips, PooledNotBatchAveraged) {
  // Two "batches" of unequal size: pooled BTC = 3/6 = 0.5, while averaging per-batch BTC (the MS library
  // training-helper bug) would give (1/1 + 2/5)/2 = 0.7.
  const torch::Tensor y = L({0, 0, 0, 0, 0, 0});
  const torch::Tensor a = L({0, 0, 0, 0, 0, 0});
  const torch::Tensor b = L({0, 0, 0, 1, 1, 1});
  const FlipCounts whole = count_flips(y, a, b);
  EXPECT_DOUBLE_EQ(whole.btc(), 0.5);
  FlipCounts sum = count_flips(y.slice(0, 0, 1), a.slice(0, 0, 1), b.slice(0, 0, 1));
  sum += count_flips(y.slice(0, 1), a.slice(0, 1), b.slice(0, 1));
  EXPECT_DOUBLE_EQ(sum.btc(), 0.5);
}

TEST(CompatFlips, EdgeCases) {
  // All correct: no flips, NFI and BEC undefined (no new errors), relative NFR undefined (ER_new = 0).
  const FlipCounts all = count_flips(L({0, 1, 2}), L({0, 1, 2}), L({0, 1, 2}));
  EXPECT_EQ(all.n11, 3);
  EXPECT_EQ(all.nfr(), 0.0);
  EXPECT_TRUE(std::isnan(all.nfi()));
  EXPECT_TRUE(std::isnan(all.bec_new()));
  EXPECT_TRUE(std::isnan(all.relative_nfr()));
  EXPECT_TRUE(std::isnan(all.pf_nf_ratio()));
  const nlohmann::json j = all.to_json();
  EXPECT_TRUE(j["metrics"]["nfi"]["value"].is_null());
  EXPECT_TRUE(j["metrics"]["nfi"]["ci_low"].is_null());
  EXPECT_EQ(j["mcnemar"]["p_two_sided"].get<double>(), 1.0);
  // Empty inputs: everything undefined, nothing thrown.
  const FlipReport empty = compare_predictions({L({}), L({}), L({})});
  EXPECT_EQ(empty.overall.n(), 0);
  EXPECT_TRUE(std::isnan(empty.overall.nfr()));
  EXPECT_NO_THROW(empty.to_json());
}

TEST(CompatFlips, PerGroupAndPerClass) {
  const FlipReport r = compare_predictions(hand_table());
  ASSERT_EQ(r.per_group.size(), 2u);
  EXPECT_EQ(r.per_group[0].key, 3);  // sorted by group id
  EXPECT_EQ(r.per_group[0].counts.n01, 3);
  EXPECT_EQ(r.per_group[0].counts.n00s, 1);
  EXPECT_EQ(r.per_group[0].counts.n00d, 2);
  EXPECT_EQ(r.per_group[1].key, 7);
  EXPECT_EQ(r.per_group[1].counts.n11, 4);
  EXPECT_EQ(r.per_group[1].counts.n10, 2);
  ASSERT_EQ(r.per_class.size(), 3u);
  // Class 1 items: ids 1 (CC), 4 (NF), 7 (PF), 10 (WW_changed).
  EXPECT_EQ(r.per_class[1].key, 1);
  EXPECT_EQ(r.per_class[1].counts.n11, 1);
  EXPECT_EQ(r.per_class[1].counts.n10, 1);
  EXPECT_EQ(r.per_class[1].counts.n01, 1);
  EXPECT_EQ(r.per_class[1].counts.n00d, 1);
  FlipCounts sum;
  for (const auto& c : r.per_class) sum += c.counts;
  EXPECT_EQ(sum.n10, r.overall.n10);
  EXPECT_EQ(sum.n(), r.overall.n());

  const nlohmann::json j = r.to_json(0.05);
  EXPECT_EQ(j["per_task"].size(), 2u);
  EXPECT_EQ(j["per_task"][1]["task"].get<int64_t>(), 7);
  EXPECT_EQ(j["per_class"].size(), 3u);
  EXPECT_EQ(j["multiplicity"]["method"], "holm");
  EXPECT_EQ(j["overall"]["counts"]["n10"].get<int64_t>(), 2);
  EXPECT_EQ(j["overall"]["metrics"]["nfr"]["method"], "wilson");
  EXPECT_NEAR(j["overall"]["metrics"]["nfr"]["ci_high"].get<double>(), wilson_interval_alpha(2, 12, 0.05).high,
              1e-15);
  EXPECT_NEAR(j["overall"]["mcnemar"]["p_one_sided"].get<double>(), mcnemar_exact(2, 3).p_one_sided, 1e-15);
  EXPECT_FALSE(j["warnings"].empty());  // 5 discordant items: low-power warning
}

TEST(CompatFlips, HolmAlarmOnRegressedClass) {
  // Class 0: 40 items, old right on all, new wrong on 30 -> strong regression; class 1 stable.
  const int64_t n = 80;
  torch::Tensor y = torch::cat({torch::zeros({40}, torch::kLong), torch::ones({40}, torch::kLong)});
  torch::Tensor a = y.clone();
  torch::Tensor b = y.clone();
  b.slice(0, 0, 30).fill_(1);
  const FlipReport r = compare_predictions({y, a, b});
  const nlohmann::json j = r.to_json(0.05);
  ASSERT_EQ(j["per_class"].size(), 2u);
  EXPECT_TRUE(j["per_class"][0]["regression_alarm"].get<bool>());
  EXPECT_FALSE(j["per_class"][1]["regression_alarm"].get<bool>());
  EXPECT_NEAR(j["per_class"][0]["holm_p_one_sided"].get<double>(), std::min(1.0, 2.0 * std::pow(0.5, 30)), 1e-20);
  EXPECT_EQ(r.overall.n(), n);
}

TEST(CompatFlips, InputErrorsNameTheMismatch) {
  try {
    compare_predictions({L({0, 1, 2}), L({0, 1}), L({0, 1, 2})});
    FAIL() << "expected a length error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("old_pred has 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(compare_predictions({L({0}), torch::zeros({1}), L({0})}), c10::Error);
  FlipInputs bad = hand_table();
  bad.groups = L({1, 2});
  EXPECT_THROW(compare_predictions(bad), c10::Error);
}

TEST(CompatFlips, AlignById) {
  PredictionTable o{L({30, 10, 20}), L({1, 0, 2}), L({1, 1, 2}), torch::tensor({0.9f, 0.8f, 0.7f}), L({0, 0, 1})};
  PredictionTable n{L({20, 30, 10}), L({2, 1, 0}), L({0, 1, 0}), torch::tensor({0.6f, 0.5f, 0.4f}), L({1, 0, 0})};
  const FlipInputs in = align_by_id(o, n);
  // Sorted by item = (task, id): (0, 10), (0, 30), (1, 20).
  EXPECT_TRUE(in.ids.equal(L({10, 30, 20})));
  EXPECT_TRUE(in.labels.equal(L({0, 1, 2})));
  EXPECT_TRUE(in.old_pred.equal(L({1, 1, 2})));
  EXPECT_TRUE(in.new_pred.equal(L({0, 1, 0})));
  EXPECT_TRUE(in.old_conf.allclose(torch::tensor({0.8f, 0.9f, 0.7f})));
  EXPECT_TRUE(in.new_conf.allclose(torch::tensor({0.4f, 0.5f, 0.6f})));
  EXPECT_TRUE(in.groups.equal(L({0, 0, 1})));

  auto message = [](const PredictionTable& a, const PredictionTable& b) {
    try {
      align_by_id(a, b);
    } catch (const c10::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  PredictionTable missing = n;
  missing.ids = L({20, 30, 11});
  EXPECT_NE(message(o, missing).find("1 only in OLD (first (task 0, id 10)), 1 only in NEW (first (task 0, id 11))"),
            std::string::npos)
      << message(o, missing);
  PredictionTable relabel = n;
  relabel.labels = L({2, 1, 5});
  EXPECT_NE(message(o, relabel).find("(task 0, id 10) has label 0 in OLD and 5 in NEW"), std::string::npos)
      << message(o, relabel);
  PredictionTable dup = n;
  dup.ids = L({20, 20, 10});
  dup.tasks = L({1, 1, 0});
  EXPECT_NE(message(o, dup).find("NEW has 1 duplicate items, first duplicate (task 1, id 20)"), std::string::npos)
      << message(o, dup);
  PredictionTable regroup = n;  // the same ids in other tasks are other items
  regroup.tasks = L({1, 0, 1});
  EXPECT_NE(message(o, regroup).find("the items differ"), std::string::npos) << message(o, regroup);
  PredictionTable plain_o = o, plain_n = n;  // without task columns items are plain ids
  plain_o.tasks = plain_n.tasks = torch::Tensor();
  plain_n.ids = L({20, 30, 11});
  EXPECT_NE(message(plain_o, plain_n).find("1 only in OLD (first id 10)"), std::string::npos)
      << message(plain_o, plain_n);
}

TEST(CompatFlips, NfrMatrix) {
  const torch::Tensor y = L({0, 1, 2, 3});
  const std::vector<torch::Tensor> preds = {L({0, 1, 2, 0}), L({0, 0, 2, 3}), L({1, 1, 2, 3})};
  const torch::Tensor m = nfr_matrix(preds, y);
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{3, 3}));
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b)
      EXPECT_NEAR(m[a][b].item<double>(), count_flips(y, preds[a], preds[b]).nfr(), 1e-15) << a << "," << b;
  EXPECT_EQ(m[0][0].item<double>(), 0.0);
  EXPECT_THROW(nfr_matrix({L({0, 1})}, y), c10::Error);
}

// stream_nfr_matrix against its definition: align each pair of versions on tasks 0..min(a, b) and count.
// Each version's rows are shuffled differently, so a matrix that skipped the alignment would be wrong.
TEST(CompatFlips, StreamNfrMatrixMatchesPairwiseCounts) {
  torch::manual_seed(3);
  const int64_t T = 4, N = 50, K = 5;
  std::vector<torch::Tensor> ids(T), labels(T);
  for (int64_t t = 0; t < T; ++t) {
    ids[t] = torch::randperm(1000, torch::kLong).slice(0, 0, N);  // each task its own ids
    labels[t] = torch::randint(K, {N}, torch::kLong);
  }
  PredictionVersions versions;
  for (int64_t v = 0; v < T; ++v) {
    std::vector<PredictionTable> parts;
    for (int64_t t = 0; t < T; ++t) {
      const torch::Tensor perm = torch::randperm(N, torch::kLong);
      parts.push_back({ids[t].index_select(0, perm), labels[t].index_select(0, perm),
                       torch::randint(K, {N}, torch::kLong), torch::rand({N}), torch::full({N}, t, torch::kLong)});
    }
    versions[v] = concat_tables(parts);
  }
  const StreamMatrix m = stream_nfr_matrix(versions);
  ASSERT_EQ(m.versions, (std::vector<int64_t>{0, 1, 2, 3}));
  for (int64_t a = 0; a < T; ++a)
    for (int64_t b = 0; b < T; ++b) {
      const auto tasks = default_compare_tasks(a, b);
      EXPECT_EQ(m.n[a][b].item<int64_t>(), N * static_cast<int64_t>(tasks.size())) << a << "," << b;
      if (a == b) {
        EXPECT_EQ(m.nfr[a][b].item<double>(), 0.0);
        continue;
      }
      const FlipInputs in = align_by_id(select_tasks(versions[a], tasks), select_tasks(versions[b], tasks));
      EXPECT_NEAR(m.nfr[a][b].item<double>(), count_flips(in.labels, in.old_pred, in.new_pred).nfr(), 1e-15)
          << a << "," << b;
    }
  PredictionVersions gap = versions;  // version 2 lost its task-1 rows: named, not silently skipped
  gap[2] = select_tasks(versions[2], {0, 2, 3});
  try {
    stream_nfr_matrix(gap);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("version 2 has no predictions for task 1"), std::string::npos) << e.what();
  }
}

// Ids anywhere in int64 (negative, or spread too wide for one combined key) align like small ones.
TEST(CompatFlips, AlignByIdWideIdRanges) {
  const int64_t big = std::numeric_limits<int64_t>::max() - 1, small = std::numeric_limits<int64_t>::min() + 1;
  for (const bool with_tasks : {false, true}) {
    PredictionTable o{L({big, -5, small}), L({1, 0, 2}), L({1, 1, 2}), torch::Tensor(), torch::Tensor()};
    PredictionTable n{L({small, big, -5}), L({2, 1, 0}), L({0, 1, 0}), torch::Tensor(), torch::Tensor()};
    if (with_tasks) o.tasks = L({7, 7, 7}), n.tasks = L({7, 7, 7});
    const FlipInputs in = align_by_id(o, n);
    EXPECT_TRUE(in.ids.equal(L({small, -5, big}))) << with_tasks;
    EXPECT_TRUE(in.old_pred.equal(L({2, 1, 1}))) << with_tasks;
    EXPECT_TRUE(in.new_pred.equal(L({0, 0, 1}))) << with_tasks;
  }
}
