#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "core/h5.h"
#include "subspaces/store.h"
#include "tests/support.h"

namespace ss = strata::subspaces;

namespace {
std::string tmp_file(const std::string& name) {
  return ::testing::TempDir() + "strata_store_" + std::to_string(::getpid()) + "_" + name;
}
using strata::testing::error_of;
ss::SubspaceRecord make_record(int64_t dim, int64_t k, const std::string& side, uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  ss::SubspaceRecord r;
  r.basis = std::get<0>(torch::linalg_qr(torch::randn({dim, k}, g)));
  r.singular_values = torch::linspace(5, 1, k + 2);
  r.captured_energy = 0.97;
  r.threshold = 0.95;
  r.side = side;
  r.method = "gpm";
  return r;
}
}  // namespace

TEST(Store, RoundTripAndOrder) {
  const std::string path = tmp_file("rt.h5");
  std::remove(path.c_str());
  auto store = ss::SubspaceStore::create(path);
  auto a = make_record(20, 3, "input", 1);
  a.extra["lora_A"] = torch::randn({4, 20});
  a.extra["mask"] = torch::tensor({true, false, true});
  store.put_task("task_b", {{"fc1", a}, {"fc2", make_record(8, 2, "output", 2)}});
  store.put("task_a", "blocks.0.attn.proj", make_record(16, 0, "output", 3));  // rank 0 is a valid record
  store.put("task_a", "fc1", make_record(20, 5, "input", 4));

  auto reopened = ss::SubspaceStore::open(path);
  EXPECT_EQ(reopened.tasks(), (std::vector<std::string>{"task_b", "task_a"}));  // insertion order
  EXPECT_EQ(reopened.layers("task_b"), (std::vector<std::string>{"fc1", "fc2"}));
  EXPECT_TRUE(reopened.has("task_a", "blocks.0.attn.proj"));
  EXPECT_FALSE(reopened.has("task_a", "fc2"));
  auto r = reopened.get("task_b", "fc1");
  EXPECT_TRUE(torch::allclose(r.basis, a.basis));
  EXPECT_TRUE(torch::allclose(r.singular_values, a.singular_values));
  EXPECT_EQ(r.rank(), 3);
  EXPECT_EQ(r.side, "input");
  EXPECT_EQ(r.method, "gpm");
  EXPECT_DOUBLE_EQ(r.threshold, 0.95);
  EXPECT_DOUBLE_EQ(r.captured_energy, 0.97);
  ASSERT_EQ(r.extra.size(), 2u);
  EXPECT_TRUE(torch::equal(r.extra["lora_A"], a.extra["lora_A"]));
  EXPECT_TRUE(torch::equal(r.extra["mask"], a.extra["mask"]));
  EXPECT_EQ(reopened.get("task_a", "blocks.0.attn.proj").rank(), 0);
  EXPECT_EQ(reopened.get("task_b", "fc2").side, "output");

  // Datasets are chunked with deflate and Fletcher32.
  auto f = strata::core::open_file(path, strata::core::FileMode::kRead);
  auto ds = strata::core::open_dataset(f, "tasks/task_b/fc1/basis");
  auto dcpl = ds.getCreatePlist();
  EXPECT_EQ(dcpl.getLayout(), H5D_CHUNKED);
  EXPECT_TRUE(dcpl.allFiltersAvail());
  bool deflate = false, fletcher = false;
  for (int i = 0; i < dcpl.getNfilters(); ++i) {
    unsigned flags = 0, cfg = 0;
    size_t nelem = 0;
    char name[64];
    auto id = dcpl.getFilter(i, flags, nelem, nullptr, sizeof(name), name, cfg);
    deflate |= id == H5Z_FILTER_DEFLATE;
    fletcher |= id == H5Z_FILTER_FLETCHER32;
  }
  EXPECT_TRUE(deflate);
  EXPECT_TRUE(fletcher);
  std::remove(path.c_str());
}

TEST(Store, AppendOnly) {
  const std::string path = tmp_file("append.h5");
  std::remove(path.c_str());
  auto store = ss::SubspaceStore::create(path);
  store.put_task("t0", {{"fc1", make_record(10, 2, "input", 1)}});
  auto before = store.get("t0", "fc1");
  auto err = error_of([&] { store.put_task("t0", {{"fc2", make_record(10, 2, "input", 2)}}); });
  EXPECT_NE(err.find("already exists"), std::string::npos) << err;
  err = error_of([&] { store.put("t0", "fc1", make_record(10, 3, "input", 3)); });
  EXPECT_NE(err.find("already exists"), std::string::npos) << err;
  EXPECT_EQ(store.layers("t0"), (std::vector<std::string>{"fc1"}));
  EXPECT_TRUE(torch::equal(store.get("t0", "fc1").basis, before.basis));
  EXPECT_NE(error_of([&] { ss::SubspaceStore::create(path); }).find("already exists"), std::string::npos);
  EXPECT_NE(error_of([&] { store.put("bad/name", "fc1", make_record(10, 2, "input", 1)); }).find("invalid task"),
            std::string::npos);
  auto bad = make_record(10, 2, "sideways", 1);
  EXPECT_NE(error_of([&] { store.put("t1", "fc1", bad); }).find("side"), std::string::npos);
  EXPECT_FALSE(store.has_task("t1"));  // a refused write leaves nothing behind
  EXPECT_NE(error_of([&] { store.get("t0", "nope"); }).find("no record"), std::string::npos);
  EXPECT_NE(error_of([&] { store.layers("nope"); }).find("no task 'nope'"), std::string::npos);
  std::remove(path.c_str());
}

TEST(Store, MissingCorruptForeignFiles) {
  const std::string missing = tmp_file("missing.h5");
  std::remove(missing.c_str());
  EXPECT_NE(error_of([&] { ss::SubspaceStore::open(missing); }).find("no such file"), std::string::npos);

  const std::string text = tmp_file("text.h5");
  { std::ofstream(text) << "definitely not HDF5"; }
  EXPECT_NE(error_of([&] { ss::SubspaceStore::open(text); }).find("not an HDF5 file"), std::string::npos);

  const std::string foreign = tmp_file("foreign.h5");
  {
    auto f = strata::core::open_file(foreign, strata::core::FileMode::kTruncate);
    strata::core::write_tensor(f, "weights", torch::ones({3}));
  }
  auto err = error_of([&] { ss::SubspaceStore::open(foreign); });
  EXPECT_NE(err.find("not a Strata subspace store"), std::string::npos) << err;
  EXPECT_NE(err.find(foreign), std::string::npos) << err;

  // Truncated store.
  const std::string good = tmp_file("good.h5");
  std::remove(good.c_str());
  auto store = ss::SubspaceStore::create(good);
  store.put("t0", "fc1", make_record(300, 40, "input", 5));
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string cut = tmp_file("cut.h5");
  { std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2)); }
  err = error_of([&] {
    auto s = ss::SubspaceStore::open(cut);
    s.get("t0", "fc1");
  });
  EXPECT_FALSE(err.empty());
  EXPECT_NE(err.find(cut), std::string::npos) << err;
  for (auto& p : {text, foreign, good, cut}) std::remove(p.c_str());
}

TEST(Store, UserBlockIsRewrittenOnAppendAndCheckedBeforeHdf5) {
  const std::string path = tmp_file("ub.h5");
  std::remove(path.c_str());
  auto store = ss::SubspaceStore::create(path);
  auto sound = [&] { return strata::core::check_user_block(path, ss::SubspaceStore::kUserBlockMagic); };
  EXPECT_TRUE(sound().present);
  EXPECT_EQ(sound().problem, "");
  // Every append rewrites the header for the new bytes.
  store.put("t0", "fc1", make_record(30, 4, "input", 5));
  store.put_task("t1", {{"fc1", make_record(30, 3, "input", 6)}});
  EXPECT_TRUE(sound().present);
  EXPECT_EQ(sound().problem, "");
  EXPECT_EQ(ss::SubspaceStore::open(path).tasks(), (std::vector<std::string>{"t0", "t1"}));

  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  // One flipped byte in the HDF5 part: open() and put() refuse it, naming the file, before HDF5 reads it.
  std::string damaged = bytes;
  damaged[bytes.size() / 3] ^= 0x40;
  const std::string bad = tmp_file("ub_bad.h5");
  { std::ofstream(bad, std::ios::binary).write(damaged.data(), static_cast<std::streamsize>(damaged.size())); }
  const std::string err = error_of([&] { ss::SubspaceStore::open(bad); });
  EXPECT_EQ(err.rfind("strata::subspaces::SubspaceStore::open(): '" + bad + "': checksum mismatch: bytes 512..", 0), 0u)
      << err;
  { std::ofstream(bad, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 7)); }
  EXPECT_NE(error_of([&] { ss::SubspaceStore::open(bad); })
                .find("'" + bad + "': file is truncated: " + std::to_string(bytes.size() - 7) + " bytes, header says " +
                      std::to_string(bytes.size())),
            std::string::npos);

  // A store written before the user block (HDF5 superblock at byte 0) opens and is appended to without one.
  const std::string legacy = tmp_file("ub_legacy.h5");
  { std::ofstream(legacy, std::ios::binary).write(bytes.data() + 512, static_cast<std::streamsize>(bytes.size() - 512)); }
  auto old = ss::SubspaceStore::open(legacy);
  old.put("t2", "fc1", make_record(30, 2, "input", 7));
  EXPECT_EQ(old.tasks(), (std::vector<std::string>{"t0", "t1", "t2"}));
  EXPECT_FALSE(strata::core::check_user_block(legacy, ss::SubspaceStore::kUserBlockMagic).present);
  for (auto& p : {path, bad, legacy}) std::remove(p.c_str());
}
