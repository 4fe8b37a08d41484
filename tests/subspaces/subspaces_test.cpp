#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "subspaces/basis.h"
#include "subspaces/sketch.h"
#include "subspaces/svd.h"
#include "tests/support.h"

namespace ss = strata::subspaces;

namespace {
torch::Tensor orthonormal(int64_t n, int64_t k, uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  return std::get<0>(torch::linalg_qr(torch::randn({n, k}, g, torch::kFloat64)));
}
double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }
using strata::testing::error_of;
// Low rank (rank r, decaying spectrum) plus small noise.
torch::Tensor low_rank_plus_noise(int64_t m, int64_t n, int64_t r, double noise, uint64_t seed) {
  auto U = orthonormal(m, r, seed);
  auto V = orthonormal(n, r, seed + 1);
  auto s = torch::pow(0.8, torch::arange(r, torch::kFloat64)) * 10;
  auto g = at::detail::createCPUGenerator(seed + 2);
  return (U * s.unsqueeze(0)).mm(V.t()) + noise * torch::randn({m, n}, g, torch::kFloat64);
}
}  // namespace

TEST(Svd, ExactReconstructsAndTruncates) {
  auto A = torch::randn({30, 12});
  auto r = ss::svd(A, ss::SvdOptions().method("exact"));
  EXPECT_EQ(r.method, "exact");
  EXPECT_EQ(r.U.sizes(), (std::vector<int64_t>{30, 12}));
  EXPECT_LT(max_abs(r.U.mm(torch::diag(r.S)).mm(r.Vh) - A), 1e-4);
  auto t = ss::svd(A, ss::SvdOptions().method("exact").rank(4));
  EXPECT_EQ(t.U.size(1), 4);
  EXPECT_EQ(t.Vh.size(0), 4);
  EXPECT_TRUE(torch::allclose(t.S, r.S.narrow(0, 0, 4)));
  // Batched and half precision input computes in float32.
  auto b = ss::svd(torch::randn({3, 8, 5}).to(torch::kFloat16), ss::SvdOptions().method("exact"));
  EXPECT_EQ(b.S.scalar_type(), torch::kFloat32);
  EXPECT_EQ(b.U.sizes(), (std::vector<int64_t>{3, 8, 5}));
  EXPECT_EQ(ss::svd(A.to(torch::kFloat64)).S.scalar_type(), torch::kFloat64);
}

TEST(Svd, RandomizedMatchesExactOnLowRankPlusNoise) {
  for (auto shape : {std::pair<int64_t, int64_t>{200, 120}, {80, 300}}) {
    auto A = low_rank_plus_noise(shape.first, shape.second, 10, 1e-3, 7).to(torch::kFloat32);
    auto ex = ss::svd(A, ss::SvdOptions().method("exact").rank(10));
    auto rd = ss::svd(A, ss::SvdOptions().method("randomized").rank(10).seed(3));
    EXPECT_EQ(rd.method, "randomized");
    EXPECT_EQ(rd.U.sizes(), ex.U.sizes());
    EXPECT_LT(ss::projector_distance(ex.U, rd.U), 1e-3);
    EXPECT_LT(ss::projector_distance(ex.Vh.t(), rd.Vh.t()), 1e-3);
    EXPECT_LT(max_abs(rd.S - ex.S) / ex.S[0].item<double>(), 1e-4);
    // Deterministic for a seed.
    auto rd2 = ss::svd(A, ss::SvdOptions().method("randomized").rank(10).seed(3));
    EXPECT_TRUE(torch::equal(rd.S, rd2.S));
  }
}

TEST(Svd, AutoAndErrors) {
  auto A = torch::randn({400, 300});
  EXPECT_EQ(ss::resolve_svd_method(A, ss::SvdOptions().rank(10)), "randomized");
  EXPECT_EQ(ss::resolve_svd_method(A, ss::SvdOptions()), "exact");
  EXPECT_EQ(ss::resolve_svd_method(torch::randn({20, 20}), ss::SvdOptions().rank(10)), "exact");
  auto bad = torch::randn({5, 4});
  bad[2][1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { ss::svd(bad); }).find("NaN or Inf"), std::string::npos);
  bad[2][1] = std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] { ss::svd(bad); }).find("NaN or Inf"), std::string::npos);
  EXPECT_NE(error_of([&] { ss::svd(A, ss::SvdOptions().method("magic")); }).find("unknown method 'magic'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ss::svd(A, ss::SvdOptions().rank(301)); }).find("exceeds"), std::string::npos);
  EXPECT_NE(error_of([&] { ss::svd(A, ss::SvdOptions().method("randomized")); }).find("rank > 0"), std::string::npos);
  if (ss::cusolver_compiled()) {
    EXPECT_NE(error_of([&] { ss::svd(A, ss::SvdOptions().method("cusolver")); }).find("CUDA tensor"),
              std::string::npos);
  } else {
    EXPECT_NE(error_of([&] { ss::svd(A, ss::SvdOptions().method("cusolver")); }).find("not compiled"),
              std::string::npos);
  }
}

TEST(Svd, Cusolver_CUDA) {
  ASSERT_TRUE(ss::cusolver_compiled());
  auto A = low_rank_plus_noise(300, 120, 10, 1e-3, 11).to(torch::kFloat32);
  auto ex = ss::svd(A, ss::SvdOptions().method("exact").rank(10));
  for (auto M : {A, A.t().contiguous()}) {
    auto r = ss::svd(M.cuda(), ss::SvdOptions().method("cusolver").rank(10));
    EXPECT_TRUE(r.U.is_cuda());
    auto U = (M.size(0) == 300 ? r.U : r.Vh.t()).cpu();
    EXPECT_LT(ss::projector_distance(ex.U, U), 1e-3);
    EXPECT_LT(max_abs(r.S.cpu() - ex.S) / ex.S[0].item<double>(), 1e-4);
  }
  auto B = torch::randn({4, 40, 30}).cuda();
  auto rb = ss::svd(B, ss::SvdOptions().method("cusolver"));
  EXPECT_LT(max_abs((rb.U.matmul(torch::diag_embed(rb.S)).matmul(rb.Vh) - B).cpu()), 1e-3);
}

TEST(Basis, ProjectionsOrthogonalAndIdempotent) {
  auto G = torch::randn({40, 60});
  auto U = orthonormal(60, 7, 1).to(torch::kFloat32);
  auto M = orthonormal(40, 5, 2).to(torch::kFloat32);
  auto Pi = ss::project_out_input(G, U);
  EXPECT_LT(max_abs(Pi.mm(U)), 1e-5);
  EXPECT_LT(max_abs(ss::project_out_input(Pi, U) - Pi), 1e-5);
  auto Po = ss::project_out_output(G, M);
  EXPECT_LT(max_abs(M.t().mm(Po)), 1e-5);
  EXPECT_LT(max_abs(ss::project_out_output(Po, M) - Po), 1e-5);
  auto Pb = ss::project_out_both(G, M, U);
  EXPECT_LT(max_abs(M.t().mm(Pb)), 1e-5);
  EXPECT_LT(max_abs(Pb.mm(U)), 1e-5);
  // Matches the dense formula.
  auto dense = (torch::eye(40) - M.mm(M.t())).mm(G).mm(torch::eye(60) - U.mm(U.t()));
  EXPECT_LT(max_abs(Pb - dense), 1e-4);
  // In-place versions agree; empty basis is a no-op.
  auto Gi = G.clone();
  ss::project_out_input_(Gi, U);
  EXPECT_LT(max_abs(Gi - Pi), 1e-5);
  auto Go = G.clone();
  ss::project_out_output_(Go, M);
  EXPECT_LT(max_abs(Go - Po), 1e-5);
  EXPECT_TRUE(torch::equal(ss::project_out_input(G, torch::Tensor()), G));
  EXPECT_TRUE(torch::equal(ss::project_out_output(G, torch::empty({40, 0})), G));
  EXPECT_NE(error_of([&] { ss::project_out_input(G, M); }).find("rows"), std::string::npos);
}

TEST(Basis, EnergyRuleOnHandMadeSpectra) {
  // energies 16, 9, 4, 1 (total 30): cumulative 0.533, 0.833, 0.967, 1.0
  auto s = torch::tensor({4.0, 3.0, 2.0, 1.0});
  EXPECT_EQ(ss::energy_rank(s, 0.5), 0);
  EXPECT_EQ(ss::energy_rank(s, 0.6), 1);
  EXPECT_EQ(ss::energy_rank(s, 0.9), 2);
  EXPECT_EQ(ss::energy_rank(s, 0.97), 3);
  EXPECT_EQ(ss::energy_rank(s, 1.0), 3);  // strict "<": never counts the last direction at eps = 1
  EXPECT_EQ(ss::energy_rank(torch::tensor({1.0, 1.0}), 0.5), 0);  // 0.5 < 0.5 is false
  EXPECT_EQ(ss::energy_rank(torch::zeros({3}), 0.9), 0);
  // Incremental: total 100, residual spectrum energies 9, 4, 1 (14) -> acc starts at 0.86.
  auto r = torch::tensor({3.0, 2.0, 1.0});
  EXPECT_EQ(ss::energy_rank_incremental(r, 100.0, 0.85), 0);
  EXPECT_EQ(ss::energy_rank_incremental(r, 100.0, 0.90), 1);   // 0.86 -> 0.95
  EXPECT_EQ(ss::energy_rank_incremental(r, 100.0, 0.96), 2);   // 0.95 -> 0.99
  EXPECT_EQ(ss::energy_rank_incremental(r, 100.0, 0.999), 3);  // 0.99 -> 1.00
}

TEST(Basis, GpmUpdateFirstAndIncremental) {
  // R spans 3 strong directions (energies 100, 25, 4) plus a weak 4th (0.01).
  const int64_t n = 30;
  auto D = orthonormal(n, 6, 5);
  auto C = orthonormal(50, 4, 6);
  auto R = D.narrow(1, 0, 4).mm(torch::diag(torch::tensor({10.0, 5.0, 2.0, 0.1}, torch::kFloat64))).mm(C.t());
  auto u1 = ss::gpm_update_basis(torch::Tensor(), R, 0.97);
  // cumulative 0.775, 0.969, 0.99992: two directions below 0.97
  EXPECT_EQ(u1.rank, 2);
  EXPECT_EQ(u1.added, 2);
  EXPECT_NEAR(u1.captured_energy, 125.0 / 129.01, 1e-6);
  EXPECT_LT(ss::projector_distance(u1.basis, D.narrow(1, 0, 2)), 1e-6);
  // Task 2: new data in the old span plus a new direction D[:, 4].
  auto R2 = torch::cat({D.narrow(1, 0, 1).mm(torch::ones({1, 10}, torch::kFloat64)) * 3,
                        D.narrow(1, 4, 1).mm(torch::ones({1, 10}, torch::kFloat64))},
                       1);
  auto u2 = ss::gpm_update_basis(u1.basis, R2, 0.95);
  // τ = 90 + 10, residual energy 10: acc 0.9 < 0.95 -> add D[:, 4]
  EXPECT_EQ(u2.added, 1);
  EXPECT_EQ(u2.rank, 3);
  EXPECT_LT(ss::projector_distance(u2.basis, torch::cat({D.narrow(1, 0, 2), D.narrow(1, 4, 1)}, 1)), 1e-6);
  EXPECT_LT(max_abs(u2.basis.t().mm(u2.basis) - torch::eye(3, torch::kFloat64)), 1e-10);
  EXPECT_NEAR(u2.captured_energy, 1.0, 1e-9);
  // Threshold already met: no change.
  auto u3 = ss::gpm_update_basis(u2.basis, R2, 0.8);
  EXPECT_EQ(u3.added, 0);
  EXPECT_TRUE(torch::equal(u3.basis, u2.basis));
}

TEST(Basis, ExtendBasisReorthonormalisesAndCaps) {
  auto U = orthonormal(10, 6, 9);
  auto V = torch::randn({10, 8}, torch::kFloat64);
  auto E = ss::extend_basis(U, V);
  EXPECT_EQ(E.size(1), 10);
  EXPECT_LT(max_abs(E.t().mm(E) - torch::eye(10, torch::kFloat64)), 1e-10);
  EXPECT_TRUE(torch::allclose(E.narrow(1, 0, 6), U));
  // A direction already inside span(U) is dropped.
  auto E2 = ss::extend_basis(U, torch::cat({U.narrow(1, 0, 1), V.narrow(1, 0, 1)}, 1));
  EXPECT_EQ(E2.size(1), 7);
  auto E3 = ss::extend_basis(torch::Tensor(), V.narrow(1, 0, 3));
  EXPECT_LT(max_abs(E3.t().mm(E3) - torch::eye(3, torch::kFloat64)), 1e-10);
}

TEST(Basis, PrincipalAnglesOnKnownSubspaces) {
  // span(e1, e2) vs span(e1, cos θ e2 + sin θ e3)
  const double theta = 0.3, tiny = 1e-7;
  auto A = torch::zeros({5, 2}, torch::kFloat64);
  A[0][0] = 1;
  A[1][1] = 1;
  auto B = torch::zeros({5, 2}, torch::kFloat64);
  B[0][0] = 1;
  B[1][1] = std::cos(theta);
  B[2][1] = std::sin(theta);
  auto ang = ss::principal_angles(A, B);
  ASSERT_EQ(ang.size(0), 2);
  EXPECT_NEAR(ang[0].item<double>(), 0.0, 1e-12);
  EXPECT_NEAR(ang[1].item<double>(), theta, 1e-12);
  // Tiny angle stays accurate (sine formula).
  auto C = A.clone();
  C[1][1] = std::cos(tiny);
  C[3][1] = std::sin(tiny);
  EXPECT_NEAR(ss::principal_angles(A, C)[1].item<double>(), tiny, 1e-12);
  // Orthogonal subspaces and unequal dimensions; non-orthonormal columns are fine.
  auto D = torch::zeros({5, 3}, torch::kFloat64);
  D[2][0] = 2;
  D[3][1] = 1;
  D[4][2] = 1;
  D[3][2] = 1;
  auto o = ss::principal_angles(A, D);
  ASSERT_EQ(o.size(0), 2);
  EXPECT_NEAR(o[0].item<double>(), M_PI / 2, 1e-12);
  EXPECT_NEAR(o[1].item<double>(), M_PI / 2, 1e-12);
  EXPECT_NEAR(ss::projector_distance(A, A), 0.0, 1e-12);
  EXPECT_NEAR(ss::projector_distance(A, B), std::sqrt(2.0) * std::sin(theta), 1e-12);
}

TEST(Sketch, CosoVariantBoundsAndPsd) {
  const int64_t m = 40, r = 6;
  ss::FrequentDirections fd(m, ss::SketchOptions(r));
  std::vector<torch::Tensor> fed;
  auto g = at::detail::createCPUGenerator(21);
  auto drift = orthonormal(m, 4, 22);
  for (int t = 0; t < 25; ++t) {
    // Gradients with a shared low-rank structure plus noise, as in training.
    auto G = drift.mm(torch::randn({4, 15}, g, torch::kFloat64)) * 3 + torch::randn({m, 15}, g, torch::kFloat64);
    fd.update_columns(G);
    fed.push_back(G);
  }
  auto A = torch::cat(fed, 1);
  auto B = fd.sketch().to(torch::kFloat64);
  ASSERT_EQ(B.sizes(), (std::vector<int64_t>{m, r}));
  auto D = A.mm(A.t()) - B.mm(B.t());
  auto eig = torch::linalg_eigvalsh(D);
  const double scale = A.square().sum().item<double>();
  EXPECT_GE(eig.min().item<double>(), -1e-5 * scale);  // B Bᵀ ⪯ A Aᵀ
  auto sa = torch::linalg_svdvals(A).square();
  const double err = eig.abs().max().item<double>();
  for (int64_t k = 0; k <= r; ++k) {
    double tail = sa.narrow(0, k, sa.size(0) - k).sum().item<double>();
    EXPECT_LE(err, tail / static_cast<double>(r + 1 - k) * (1 + 1e-6)) << "k = " << k;
  }
  // The sketch finds the dominant subspace.
  EXPECT_LT(ss::principal_angles(drift, fd.top_directions(4)).max().item<double>(), 0.35);
  EXPECT_LT(max_abs(fd.basis().t().mm(fd.basis()) - torch::eye(r, fd.basis().options())), 1e-5);
  // Energy rank on the shrunk spectrum; reset empties it.
  EXPECT_EQ(fd.energy_rank(0.98), ss::energy_rank(fd.singular_values(), 0.98));
  fd.reset();
  EXPECT_TRUE(fd.empty());
}

TEST(Sketch, FirstUpdateShrinksIncomingBlockAndHandlesLowRank) {
  const int64_t m = 10, r = 3;
  auto U = orthonormal(m, 5, 31);
  auto s = torch::tensor({5.0, 4.0, 3.0, 2.0, 1.0}, torch::kFloat64);
  ss::FrequentDirections fd(m, ss::SketchOptions(r));
  fd.update_from_svd(U, s);
  // q_i = sqrt(σ_i² - σ_4²) = sqrt(21), sqrt(12), sqrt(5)
  auto expect = torch::tensor({std::sqrt(21.0), std::sqrt(12.0), std::sqrt(5.0)});
  EXPECT_LT(max_abs(fd.singular_values() - expect), 1e-5);
  // Fewer than r+1 singular values: no shrinkage, zero padding.
  ss::FrequentDirections fd2(m, ss::SketchOptions(r));
  fd2.update_columns(U.narrow(1, 0, 2).to(torch::kFloat32) * 2);
  EXPECT_EQ(fd2.sketch().size(1), r);
  EXPECT_NEAR(fd2.singular_values()[0].item<double>(), 2.0, 1e-5);
  EXPECT_NEAR(fd2.singular_values()[2].item<double>(), 0.0, 1e-6);
  EXPECT_NE(error_of([&] { fd2.update_columns(torch::randn({m + 1, 3})); }).find("expected"), std::string::npos);
}

// Every factored form of the input-side projection of G = δᵀX equals G (I − UUᵀ) computed from
// the materialised G, for wide and narrow batches, small and large k.
TEST(Basis, OuterProjectionFormsMatchProjectedGradient) {
  auto g = at::detail::createCPUGenerator(7);
  for (int64_t rows : {3, 40}) {
    for (int64_t k : {2, 17}) {
      const int64_t out = 12, in = 20;
      auto delta = torch::randn({rows, out}, g, torch::kFloat32);
      auto X = torch::randn({rows, in}, g, torch::kFloat32);
      auto U = orthonormal(in, k, 100 + k).to(torch::kFloat32);
      auto Up = ss::complement_basis(U);
      ASSERT_EQ(Up.size(1), in - k);
      // [U, U⊥] is orthogonal: U⊥ spans exactly the complement.
      auto full = torch::cat({U, Up}, 1).to(torch::kFloat64);
      EXPECT_LT(max_abs(full.t().mm(full) - torch::eye(in, torch::kFloat64)), 1e-5);
      auto ref = (delta.t().to(torch::kFloat64).mm(X.to(torch::kFloat64)));
      auto Ud = U.to(torch::kFloat64);
      ref = ref - ref.mm(Ud).mm(Ud.t());
      const double scale = max_abs(ref);
      for (auto form : {ss::OuterProjection::kAuto, ss::OuterProjection::kInput, ss::OuterProjection::kInputComplement,
                        ss::OuterProjection::kGradient, ss::OuterProjection::kGradientComplement}) {
        auto G = ss::project_out_input_outer(delta, X, U, Up, form);
        ASSERT_EQ(G.sizes(), (torch::IntArrayRef{out, in}));
        EXPECT_LT(max_abs(G.to(torch::kFloat64) - ref), 1e-5 * scale)
            << "rows " << rows << " k " << k << " form " << static_cast<int>(form);
      }
      // Without a complement the automatic form still projects; complement forms refuse.
      EXPECT_LT(max_abs(ss::project_out_input_outer(delta, X, U).to(torch::kFloat64) - ref), 1e-5 * scale);
      EXPECT_THROW(ss::project_out_input_outer(delta, X, U, {}, ss::OuterProjection::kInputComplement), c10::Error);
    }
  }
  // The choice: input side for narrow batches, complement for k > in/2.
  EXPECT_EQ(ss::choose_outer_projection(10, 100, 50, 734), ss::OuterProjection::kInput);
  EXPECT_EQ(ss::choose_outer_projection(10, 100, 500, 284), ss::OuterProjection::kInputComplement);
  EXPECT_EQ(ss::choose_outer_projection(256, 100, 50, 734), ss::OuterProjection::kGradient);
  EXPECT_EQ(ss::choose_outer_projection(256, 100, 500, 284), ss::OuterProjection::kGradientComplement);
  EXPECT_EQ(ss::choose_outer_projection(256, 100, 500, -1), ss::OuterProjection::kGradient);
  // A full basis leaves nothing: the complement is empty and the gradient zero.
  auto U = orthonormal(6, 6, 3).to(torch::kFloat32);
  auto Up = ss::complement_basis(U);
  EXPECT_EQ(Up.size(1), 0);
  auto G = ss::project_out_input_outer(torch::randn({4, 5}), torch::randn({4, 6}), U, Up);
  EXPECT_EQ(max_abs(G), 0.0);
}

// CoSO's power refresh: from the range finder, and warm-started step after step on a slowly
// drifting gradient, the iteration spans the exact top-r left singular subspace (compared by
// projector distance and principal angles; the columns themselves are not singular vectors).
TEST(Svd, SubspaceIterationTracksTheTopSubspace) {
  const int64_t m = 40, n = 120, r = 4;
  // A spectral gap after r (σ_r / σ_{r+1} = 5), as a gradient's dominant directions have.
  auto s = torch::tensor({10.0, 8.0, 6.0, 5.0, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1}, torch::kFloat64);
  auto A = ((orthonormal(m, 12, 11) * s.unsqueeze(0)).mm(orthonormal(n, 12, 12).t())).to(torch::kFloat32);
  auto top = [&](const torch::Tensor& G) { return std::get<0>(torch::linalg_svd(G, false)).narrow(1, 0, r); };
  auto P = ss::subspace_iteration(A, r, {}, 2, 5);
  ASSERT_EQ(P.sizes(), (torch::IntArrayRef{m, r}));
  EXPECT_LT(max_abs(P.t().mm(P) - torch::eye(r)), 1e-5);
  EXPECT_LT(ss::projector_distance(P, top(A)), 0.01);
  auto g = at::detail::createCPUGenerator(9);
  for (int step = 0; step < 30; ++step) {
    A = A + 0.02 * torch::randn({m, n}, g, torch::kFloat32) * A.abs().mean();
    auto Pn = ss::subspace_iteration(A, r, P, 1);
    // Warm start keeps the columns' order and signs: the new P is near the old one column by column.
    EXPECT_GT((Pn * P).sum(0).min().item<double>(), 0.9) << "step " << step;
    P = Pn;
  }
  EXPECT_LT(ss::projector_distance(P, top(A)), 0.02);
  EXPECT_LT(ss::principal_angles(P, top(A)).max().item<double>(), 0.02);
  // A random r-subspace is far: the check can fail.
  auto Q = orthonormal(m, r, 99).to(torch::kFloat32);
  EXPECT_GT(ss::projector_distance(Q, top(A)), 1.0);
  EXPECT_THROW(ss::subspace_iteration(A, m + 1), c10::Error);
}

// With a projector Π = I − MMᵀ the iteration runs on Π A without forming it (CoSO's historical
// projection): the same subspace as iterating on the explicit Π A, from the range finder and warm.
TEST(Svd, SubspaceIterationWithAProjectorMatchesTheProjectedMatrix) {
  const int64_t m = 40, n = 120, r = 4, K = 10;
  auto s = torch::tensor({10.0, 8.0, 6.0, 5.0, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1}, torch::kFloat64);
  auto A = ((orthonormal(m, 12, 21) * s.unsqueeze(0)).mm(orthonormal(n, 12, 22).t())).to(torch::kFloat32);
  // M overlaps A's top directions, so Π changes the answer (the check can fail).
  auto M = std::get<0>(torch::linalg_qr(orthonormal(m, 12, 21).narrow(1, 0, K).to(torch::kFloat32) +
                                        0.3 * orthonormal(m, K, 23).to(torch::kFloat32)));
  auto PA = ss::project_out_output(A, M);
  auto project = [&](const torch::Tensor& Y) { return ss::project_out_output(Y, M); };
  auto ref = ss::subspace_iteration(PA, r, {}, 3, 5);
  auto P = ss::subspace_iteration(A, r, {}, 3, 5, project);
  EXPECT_LT(max_abs(P - ref), 1e-4);  // same seed, same iterates: the columns themselves agree
  EXPECT_LT(max_abs(M.t().mm(P)), 1e-5);
  EXPECT_GT(ss::projector_distance(ss::subspace_iteration(A, r, {}, 3, 5), ref), 0.1);
  auto warm_ref = ss::subspace_iteration(PA, r, ref, 1);
  EXPECT_LT(max_abs(ss::subspace_iteration(A, r, P, 1, 0, project) - warm_ref), 1e-4);
}

// From the factors δ [b, m], X [b, n] of G = δᵀX (a Linear weight gradient, b < m < n) the
// iteration equals the one on the dense G: range finder (same seed), warm start and projector.
TEST(Svd, SubspaceIterationFromFactorsMatchesTheDenseGradient) {
  const int64_t b = 10, m = 40, n = 120, r = 4, K = 6;
  auto g = at::detail::createCPUGenerator(31);
  auto delta = torch::randn({b, m}, g, torch::kFloat32), X = torch::randn({b, n}, g, torch::kFloat32);
  auto G = delta.t().mm(X);
  auto M = orthonormal(m, K, 32).to(torch::kFloat32);
  auto project = [&](const torch::Tensor& Y) { return ss::project_out_output(Y, M); };
  for (bool with_projector : {false, true}) {
    std::function<torch::Tensor(const torch::Tensor&)> pr;
    if (with_projector) pr = project;
    auto ref = ss::subspace_iteration(G, r, {}, 2, 5, pr);
    auto P = ss::subspace_iteration_outer(delta, X, r, {}, 2, 5, pr);
    ASSERT_EQ(P.sizes(), (torch::IntArrayRef{m, r}));
    EXPECT_LT(max_abs(P - ref), 1e-4) << with_projector;  // the columns themselves agree
    auto warm = ss::subspace_iteration(G, r, ref, 1, 0, pr);
    EXPECT_LT(max_abs(ss::subspace_iteration_outer(delta, X, r, P, 1, 0, pr) - warm), 1e-4) << with_projector;
  }
  EXPECT_THROW(ss::subspace_iteration_outer(delta, X.narrow(0, 0, b - 1), r), c10::Error);
  EXPECT_THROW(ss::subspace_iteration_outer(delta, X, m + 1), c10::Error);
}

TEST(Basis, GpmUpdateWithATruncatedSvdGivesTheExactRule) {
  // R [400, 600]: a decaying rank-40 part plus noise, so the rule stops well inside the spectrum.
  // Randomized (no rank given) and auto (which now picks randomized on the CPU for this shape)
  // must reach the exact SVD's k and basis; the incremental rule too.
  auto R = low_rank_plus_noise(400, 600, 40, 1e-3, 21);
  auto exact = ss::gpm_update_basis(torch::Tensor(), R, 0.95);
  EXPECT_EQ(exact.svd_method, "exact");
  ASSERT_GT(exact.rank, 3);
  for (const std::string method : {"randomized", "auto"}) {
    auto up = ss::gpm_update_basis(torch::Tensor(), R, 0.95, ss::SvdOptions().method(method));
    EXPECT_EQ(up.svd_method, "randomized") << method;
    EXPECT_LT(up.spectrum.size(0), 400) << method;  // truncated
    EXPECT_EQ(up.rank, exact.rank) << method;
    EXPECT_NEAR(up.captured_energy, exact.captured_energy, 1e-6) << method;
    EXPECT_LT(ss::projector_distance(up.basis, exact.basis), 1e-4) << method;
    // Incremental: new data = the old directions plus 5 new strong ones.
    auto R2 = torch::cat({R.narrow(1, 0, 100), low_rank_plus_noise(400, 200, 5, 1e-3, 77)}, 1);
    auto e2 = ss::gpm_update_basis(exact.basis, R2, 0.97);
    auto u2 = ss::gpm_update_basis(up.basis, R2, 0.97, ss::SvdOptions().method(method));
    ASSERT_GT(e2.added, 0);
    EXPECT_EQ(u2.added, e2.added) << method;
    EXPECT_LT(ss::projector_distance(u2.basis, e2.basis), 1e-3) << method;
  }
  // Where the rule needs the whole spectrum the truncated methods fall back to the exact SVD.
  auto full = ss::gpm_update_basis(torch::Tensor(), R, 1.0, ss::SvdOptions().method("randomized"));
  EXPECT_EQ(full.svd_method, "exact");
  EXPECT_EQ(full.rank, ss::gpm_update_basis(torch::Tensor(), R, 1.0).rank);
}
