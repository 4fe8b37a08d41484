// `strata subspaces ...` end to end (only when the CLI target exists in this build).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/h5.h"
#include "subspaces/store.h"

#ifdef STRATA_CLI_PATH
namespace {
std::string tmp_file(const std::string& name) {
  return ::testing::TempDir() + "strata_cli_" + std::to_string(::getpid()) + "_" + name;
}
// Runs the CLI; returns (exit code, stdout+stderr).
std::pair<int, std::string> run(const std::string& args) {
  const std::string out = tmp_file("out.txt");
  int rc = std::system((std::string(STRATA_CLI_PATH) + " subspaces " + args + " > " + out + " 2>&1").c_str());
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  std::remove(out.c_str());
  return {WEXITSTATUS(rc), ss.str()};
}
}  // namespace

TEST(SubspacesCli, LsShowAnglesExport) {
  namespace ss = strata::subspaces;
  const std::string path = tmp_file("store.h5");
  std::remove(path.c_str());
  auto store = ss::SubspaceStore::create(path);
  auto e = torch::eye(6);
  ss::SubspaceRecord a;
  a.basis = e.narrow(1, 0, 2).contiguous();
  a.singular_values = torch::tensor({3.0f, 1.0f});
  a.method = "gpm";
  store.put("t0", "fc1", a);
  ss::SubspaceRecord b = a;
  b.basis = torch::stack({e[0], (e[1] + e[2]) / std::sqrt(2.0f)}, 1);
  store.put("t1", "fc1", b);

  auto [rc, out] = run("ls " + path);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("fc1"), std::string::npos) << out;
  std::tie(rc, out) = run("show " + path + " --layer fc1 --task t1");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("rank 2"), std::string::npos) << out;
  std::tie(rc, out) = run("angles " + path + " --layer fc1 --between memories");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("45.00"), std::string::npos) << out;  // principal angles 0 and 45 degrees
  // What t1 added beyond t0's span(e0, e1) is e2: orthogonal to everything t0 had.
  std::tie(rc, out) = run("angles " + path + " --layer fc1");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("t1 (rank 1)"), std::string::npos) << out;
  EXPECT_NE(out.find("min 90.00"), std::string::npos) << out;
  std::tie(rc, out) = run("angles " + path + " --layer fc1 --between everything");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--between"), std::string::npos) << out;
  // plot: one spectrum chart per layer plus the rank and energy heatmaps.
  const std::string plots = tmp_file("plots");
  std::tie(rc, out) = run("plot " + path + " --output " + plots);
  EXPECT_EQ(rc, 0) << out;
  for (const char* f : {"spectrum_fc1.svg", "ranks.svg", "captured_energy.svg"}) {
    std::ifstream svg(plots + "/" + f);
    const std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("</svg>"), std::string::npos) << f;
    if (std::string(f) == "spectrum_fc1.svg") { EXPECT_NE(text.find("t1"), std::string::npos); }
  }
  std::tie(rc, out) = run("plot " + path);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--output"), std::string::npos) << out;
  const std::string csv = tmp_file("basis.csv");
  std::tie(rc, out) = run("export " + path + " --layer fc1 --task t0 --format csv --output " + csv);
  EXPECT_EQ(rc, 0) << out;
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "1,0");
  const std::string npy = tmp_file("basis.npy");
  std::tie(rc, out) = run("export " + path + " --layer fc1 --task t0 --format npy --output " + npy);
  EXPECT_EQ(rc, 0) << out;
  std::ifstream nin(npy, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(nin)), std::istreambuf_iterator<char>());
  ASSERT_GE(bytes.size(), 128u + 12 * 4);
  EXPECT_EQ(bytes.substr(1, 5), "NUMPY");
  EXPECT_EQ((10 + static_cast<unsigned char>(bytes[8]) + 256 * static_cast<unsigned char>(bytes[9])) % 64, 0u);
  EXPECT_NE(bytes.find("'shape': (6,2)"), std::string::npos);

  // Missing, foreign and non-HDF5 files: one line on stderr, non-zero exit.
  std::tie(rc, out) = run("ls " + tmp_file("nope.h5"));
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("no such file"), std::string::npos) << out;
  const std::string text = tmp_file("text.h5");
  { std::ofstream(text) << "hello"; }
  std::tie(rc, out) = run("ls " + text);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("not an HDF5 file"), std::string::npos) << out;
  const std::string foreign = tmp_file("foreign.h5");
  {
    auto f = strata::core::open_file(foreign, strata::core::FileMode::kTruncate);
    strata::core::write_tensor(f, "x", torch::ones({2}));
  }
  std::tie(rc, out) = run("show " + foreign + " --layer fc1");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("not a Strata subspace store"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  for (auto& p : {path, csv, npy, text, foreign}) std::remove(p.c_str());
}
#endif
