#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "core/h5.h"
#include "tests/support.h"

namespace sc = strata::core;

namespace {
std::string tmp_file(const std::string& name) {
  return ::testing::TempDir() + "strata_h5_" + std::to_string(::getpid()) + "_" + name;
}
std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
using strata::testing::error_of;
}  // namespace

TEST(H5, RoundTripEachDtype) {
  const std::string path = tmp_file("dtypes.h5");
  torch::manual_seed(0);
  std::vector<std::pair<std::string, torch::Tensor>> cases = {
      {"f32", torch::randn({3, 4})},
      {"f64", torch::randn({2, 3, 5}, torch::kFloat64)},
      {"i64", torch::randint(-1000, 1000, {7}, torch::kInt64)},
      {"i32", torch::randint(-1000, 1000, {2, 2}, torch::kInt32)},
      {"u8", torch::randint(0, 255, {4, 1}, torch::kUInt8)},
      {"b", torch::randn({5}) > 0},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 3})},
      {"noncontig", torch::randn({4, 6}).t()},
  };
  {
    auto f = sc::open_file(path, sc::FileMode::kTruncate);
    for (auto& [name, t] : cases) sc::write_tensor(f, "deep/group/" + name, t);
    sc::write_tensor(f, "compressed", torch::randn({300, 200}), sc::H5Options::compressed());
  }
  auto f = sc::open_file(path, sc::FileMode::kRead);
  for (auto& [name, t] : cases) {
    auto r = sc::read_tensor(f, "/deep/group/" + name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(r, t)) << name;
  }
  EXPECT_EQ(sc::read_tensor(f, "compressed").sizes(), (std::vector<int64_t>{300, 200}));
  EXPECT_TRUE(sc::exists(f, "deep/group/f32"));
  EXPECT_FALSE(sc::exists(f, "deep/nothere/f32"));
  EXPECT_TRUE(sc::is_group(f, "deep"));
  EXPECT_FALSE(sc::is_group(f, "deep/group/f32"));
  auto kids = sc::list_children(f, "deep/group");
  EXPECT_EQ(kids.size(), cases.size());
  EXPECT_EQ(kids.front(), "b");
  std::remove(path.c_str());
}

TEST(H5, ExistingDatasetNeedsOverwrite) {
  const std::string path = tmp_file("overwrite.h5");
  auto f = sc::open_file(path, sc::FileMode::kTruncate);
  sc::write_tensor(f, "x", torch::ones({2}));
  EXPECT_NE(error_of([&] { sc::write_tensor(f, "x", torch::zeros({2})); }).find("already exists"), std::string::npos);
  sc::write_tensor(f, "x", torch::zeros({3}), sc::H5Options().overwrite(true));
  EXPECT_TRUE(torch::equal(sc::read_tensor(f, "x"), torch::zeros({3})));
  f.close();
  std::remove(path.c_str());
}

TEST(H5, Attributes) {
  const std::string path = tmp_file("attrs.h5");
  {
    auto f = sc::open_file(path, sc::FileMode::kTruncate);
    sc::set_attr(f, "format", "strata-test");
    sc::set_attr(f, "version", 3);
    auto g = sc::open_group(f, "a/b", true);
    sc::set_attr(g, "eps", 0.97);
    sc::write_tensor(f, "a/b/t", torch::ones({2}));
    auto ds = sc::open_dataset(f, "a/b/t");
    sc::set_attr(ds, "side", std::string("input"));
    sc::set_attr(ds, "side", std::string("output"));  // replaces
  }
  auto f = sc::open_file(path, sc::FileMode::kRead);
  EXPECT_EQ(sc::get_attr_string(f, "format"), "strata-test");
  EXPECT_EQ(sc::get_attr_int(f, "version"), 3);
  EXPECT_DOUBLE_EQ(sc::get_attr_double(sc::open_group(f, "a/b"), "eps"), 0.97);
  auto ds = sc::open_dataset(f, "a/b/t");
  EXPECT_EQ(sc::get_attr_string(ds, "side"), "output");
  EXPECT_TRUE(sc::has_attr(f, "format"));
  EXPECT_FALSE(sc::has_attr(f, "nope"));
  auto err = error_of([&] { sc::get_attr_string(f, "nope"); });
  EXPECT_NE(err.find("missing attribute 'nope'"), std::string::npos) << err;
  EXPECT_NE(err.find(path), std::string::npos) << err;
  err = error_of([&] { sc::get_attr_int(f, "format"); });
  EXPECT_NE(err.find("not an integer"), std::string::npos) << err;
  EXPECT_EQ(sc::list_attrs(f), (std::vector<std::string>{"format", "version"}));
  std::remove(path.c_str());
}

TEST(H5, MissingDatasetErrorNamesFileAndPath) {
  const std::string path = tmp_file("missing.h5");
  { auto f = sc::open_file(path, sc::FileMode::kTruncate); }
  auto f = sc::open_file(path, sc::FileMode::kRead);
  auto err = error_of([&] { sc::read_tensor(f, "g/nothing"); });
  EXPECT_NE(err.find("g/nothing"), std::string::npos) << err;
  EXPECT_NE(err.find(path), std::string::npos) << err;
  std::remove(path.c_str());
}

TEST(H5, FileErrors) {
  const std::string missing = tmp_file("does_not_exist.h5");
  EXPECT_NE(error_of([&] { sc::open_file(missing, sc::FileMode::kRead); }).find("no such file"), std::string::npos);

  const std::string text = tmp_file("text.h5");
  { std::ofstream(text) << "this is not hdf5\n"; }
  auto err = error_of([&] { sc::open_file(text, sc::FileMode::kRead); });
  EXPECT_NE(err.find("is not an HDF5 file"), std::string::npos) << err;
  EXPECT_NE(err.find(text), std::string::npos) << err;

  // Truncated: a valid file cut in half.
  const std::string good = tmp_file("good.h5");
  {
    auto f = sc::open_file(good, sc::FileMode::kTruncate);
    sc::write_tensor(f, "x", torch::randn({200, 200}));
  }
  std::string bytes = read_all(good);
  const std::string cut = tmp_file("cut.h5");
  { std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2)); }
  err = error_of([&] {
    auto f = sc::open_file(cut, sc::FileMode::kRead);
    sc::read_tensor(f, "x");
  });
  EXPECT_FALSE(err.empty());
  EXPECT_NE(err.find(cut), std::string::npos) << err;
  EXPECT_NE(error_of([&] { sc::open_file(good, sc::FileMode::kCreate); }).find("already exists"), std::string::npos);
  for (auto& p : {text, good, cut}) std::remove(p.c_str());
}

TEST(H5, Fletcher32DetectsCorruption) {
  const std::string path = tmp_file("fletcher.h5");
  torch::Tensor x = torch::arange(20000, torch::kFloat32);
  {
    auto f = sc::open_file(path, sc::FileMode::kTruncate);
    sc::write_tensor(f, "x", x, sc::H5Options().chunked(true).fletcher32(true));
  }
  std::string bytes = read_all(path);
  // Flip a byte in the raw data: find the float 12345.0f pattern.
  float needle = 12345.0f;
  auto pos = bytes.find(std::string(reinterpret_cast<char*>(&needle), 4));
  ASSERT_NE(pos, std::string::npos);
  bytes[pos + 1] ^= 0x5a;
  { std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size())); }
  auto f = sc::open_file(path, sc::FileMode::kRead);
  auto err = error_of([&] { sc::read_tensor(f, "x"); });
  EXPECT_NE(err.find("cannot read 'x'"), std::string::npos) << err;
  std::remove(path.c_str());
}

TEST(H5, AtomicWriteKeepsOldFileWhenFillThrows) {
  const std::string path = tmp_file("atomic.h5");
  sc::atomic_write_h5(path, [](H5::H5File& f) { sc::write_tensor(f, "v", torch::full({3}, 1.0)); });
  EXPECT_THROW(sc::atomic_write_h5(path,
                                   [](H5::H5File& f) {
                                     sc::write_tensor(f, "v", torch::full({3}, 2.0));
                                     throw std::runtime_error("simulated crash");
                                   }),
               std::runtime_error);
  auto f = sc::open_file(path, sc::FileMode::kRead);
  EXPECT_TRUE(torch::equal(sc::read_tensor(f, "v"), torch::full({3}, 1.0)));
  f.close();
  EXPECT_NE(::access((path + ".tmp-" + std::to_string(::getpid())).c_str(), F_OK), 0);
  sc::atomic_write_h5(path, [](H5::H5File& f) { sc::write_tensor(f, "v", torch::full({3}, 2.0)); });
  auto g = sc::open_file(path, sc::FileMode::kRead);
  EXPECT_TRUE(torch::equal(sc::read_tensor(g, "v"), torch::full({3}, 2.0)));
  std::remove(path.c_str());
}

TEST(H5, Crc32) {
  // Standard check value of CRC-32 for "123456789".
  EXPECT_EQ(sc::crc32_bytes("123456789", 9), 0xCBF43926u);
  auto t = torch::arange(10, torch::kFloat32);
  EXPECT_EQ(sc::crc32_tensor(t), sc::crc32_tensor(t.clone()));
  auto u = t.clone();
  u[3] = 3.0001f;
  EXPECT_NE(sc::crc32_tensor(t), sc::crc32_tensor(u));
  // Split computation continues correctly.
  uint32_t a = sc::crc32_bytes("12345", 5);
  EXPECT_EQ(sc::crc32_bytes("6789", 4, a), 0xCBF43926u);
}
