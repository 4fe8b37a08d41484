// added_directions: what a grown memory added, independent of how its columns are rotated.
#include "subspaces/basis.h"

#include <gtest/gtest.h>

namespace strata::subspaces {
namespace {

TEST(AddedDirections, NestedMemoryGivesExactlyTheNewSpan) {
  torch::manual_seed(0);
  const auto Q = std::get<0>(torch::linalg_qr(torch::randn({12, 5}, torch::kFloat64), "reduced"));
  const auto old_basis = Q.slice(1, 0, 3);
  // The grown memory as a rotated basis of span(Q[:, :5]): the added part is span(Q[:, 3:5]).
  const auto R = std::get<0>(torch::linalg_qr(torch::randn({5, 5}, torch::kFloat64), "reduced"));
  const auto grown = Q.mm(R);
  const auto added = added_directions(old_basis, grown);
  ASSERT_EQ(added.size(1), 2);
  EXPECT_LT(projector_distance(added, Q.slice(1, 3, 5)), 1e-10);
  // Cumulative memories: every principal angle 0; additions of disjoint directions: 90 degrees.
  EXPECT_LT(principal_angles(old_basis, grown).max().item<double>(), 1e-7);
  const auto first = added_directions({}, old_basis);
  EXPECT_EQ(first.size(1), 3);
  EXPECT_NEAR(principal_angles(first, added).min().item<double>(), M_PI / 2, 1e-7);
}

TEST(AddedDirections, NothingNewIsEmptyAndShapesAreChecked) {
  torch::manual_seed(1);
  const auto Q = std::get<0>(torch::linalg_qr(torch::randn({8, 4}, torch::kFloat64), "reduced"));
  EXPECT_EQ(added_directions(Q, Q.slice(1, 0, 2)).size(1), 0);
  EXPECT_THROW(added_directions(torch::zeros({7, 2}), Q), c10::Error);
}

}  // namespace
}  // namespace strata::subspaces
