// IDX reader and Fashion-MNIST loader: valid files, every malformed-file error, the real data.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tasks/idx.h"

// AddressSanitizer: gcc defines __SANITIZE_ADDRESS__, clang answers __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define STRATA_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRATA_TEST_ASAN 1
#endif
#endif
#ifndef STRATA_TEST_ASAN
#define STRATA_TEST_ASAN 0
#endif

namespace fs = std::filesystem;
using strata::tasks::read_idx;

namespace {

const char* kFmnistDir = "/usr/share/datasets/fashion-mnist";

std::vector<uint8_t> idx_bytes(uint8_t type, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    b.push_back(uint8_t(d >> 24));
    b.push_back(uint8_t(d >> 16));
    b.push_back(uint8_t(d >> 8));
    b.push_back(uint8_t(d));
  }
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(i * 7 + 3);
  return v;
}

// Reads `path` with the address space capped 256 MiB above what the process maps now; for a
// child process. 0: the truncation error; anything else: a wrong answer or no cap.
int read_idx_with_capped_memory(const std::string& path) {
  long pages = 0;
  std::ifstream("/proc/self/statm") >> pages;
  const rlim_t cap = rlim_t(pages) * rlim_t(::sysconf(_SC_PAGESIZE)) + (rlim_t(256) << 20);
  const rlimit lim{cap, cap};
  if (::setrlimit(RLIMIT_AS, &lim) != 0) return 2;
  try {
    read_idx(path);
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    return msg.find("truncated data") != std::string::npos ? 0 : 3;
  } catch (...) {
    return 4;
  }
  return 5;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("strata_idx_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string write_plain(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }
  std::string write_gz(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string p = (dir_ / name).string();
    gzFile g = gzopen(p.c_str(), "wb");
    EXPECT_NE(g, nullptr);
    EXPECT_EQ(gzwrite(g, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    gzclose(g);
    return p;
  }
  std::vector<uint8_t> read_all(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
  }
  // Expects read_idx(path) to throw with a message naming the file and containing `what`.
  void expect_error(const std::string& path, const std::string& what) {
    try {
      read_idx(path);
      ADD_FAILURE() << "read_idx(" << path << ") did not throw (expected: " << what << ")";
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
  }
  fs::path dir_;
};

TEST_F(IdxTest, ReadsPlainAndGzip) {
  const auto data = iota_bytes(3 * 4 * 5);
  const auto bytes = idx_bytes(0x08, {3, 4, 5}, data);
  for (const std::string& p : {write_plain("a.idx", bytes), write_gz("a.idx.gz", bytes)}) {
    torch::Tensor t = read_idx(p);
    ASSERT_EQ(t.scalar_type(), torch::kUInt8);
    ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 4, 5}));
    ASSERT_TRUE(t.is_contiguous());
    const uint8_t* d = t.data_ptr<uint8_t>();
    for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(d[i], data[i]) << p << " byte " << i;
  }
  torch::Tensor one_d = read_idx(write_gz("labels.gz", idx_bytes(0x08, {6}, {0, 1, 2, 9, 8, 7})));
  EXPECT_TRUE(torch::equal(one_d, torch::tensor({0, 1, 2, 9, 8, 7}, torch::kUInt8)));
}

TEST_F(IdxTest, BadMagic) {
  auto bytes = idx_bytes(0x08, {2}, {1, 2});
  bytes[0] = 0x1f;
  expect_error(write_plain("bad_magic.idx", bytes), "bad magic number");
}

TEST_F(IdxTest, WrongTypeCode) {
  expect_error(write_gz("float.idx.gz", idx_bytes(0x0D, {1}, {0, 0, 0, 0})), "unsupported data type code 0xd");
}

TEST_F(IdxTest, BadDimensions) {
  expect_error(write_plain("zero_dim.idx", idx_bytes(0x08, {2, 0}, {})), "dimension 1 is zero");
  expect_error(write_plain("no_dims.idx", idx_bytes(0x08, {}, {})), "bad number of dimensions 0");
  expect_error(write_plain("huge.idx", idx_bytes(0x08, {65536, 65536, 65536}, {})), "absurd data size");
  expect_error(write_plain("empty.idx", {}), "truncated header");
  expect_error(write_plain("short_dims.idx", {0, 0, 8, 2, 0, 0, 0, 1}), "truncated header (dimension sizes)");
}

TEST_F(IdxTest, TruncatedData) {
  const auto bytes = idx_bytes(0x08, {4, 3}, iota_bytes(11));  // one byte short
  expect_error(write_plain("short.idx", bytes), "truncated data");
  expect_error(write_gz("short.idx.gz", bytes), "truncated data");
}

// Found by fuzzing (fuzz_idx): a 12-byte file whose header claims 1 GiB made read_idx allocate the
// whole claimed size before noticing the data is missing (any size up to the 4 GiB bound). Here a
// file claims 65536 x 256 x 256 = 4 GiB, read in a child whose address space is capped 256 MiB above
// what it already maps: the answer must be the truncation error, not an allocation failure.
TEST_F(IdxTest, HugeHeaderOnTinyFileAllocatesNothingLarge) {
#if STRATA_TEST_ASAN
  GTEST_SKIP() << "an address-space limit cannot be combined with AddressSanitizer's shadow memory";
#endif
  const std::string p = write_plain("claims_4gib.idx", idx_bytes(0x08, {65536, 256, 256}, iota_bytes(3)));
  EXPECT_EXIT(std::_Exit(read_idx_with_capped_memory(p)), ::testing::ExitedWithCode(0), "");
}

TEST_F(IdxTest, TrailingGarbage) {
  const auto bytes = idx_bytes(0x08, {4, 3}, iota_bytes(13));  // one byte too many
  expect_error(write_plain("long.idx", bytes), "trailing bytes");
  expect_error(write_gz("long.idx.gz", bytes), "trailing bytes");
}

TEST_F(IdxTest, TruncatedGzip) {
  const auto bytes = idx_bytes(0x08, {50, 40}, iota_bytes(2000));
  const std::string full = write_gz("full.gz", bytes);
  auto gz = read_all(full);
  ASSERT_GT(gz.size(), 30u);
  // Cut inside the compressed data: the data comes up short.
  const std::string mid = write_plain("cut_mid.gz", std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2));
  expect_error(mid, "truncated");
  // Cut inside the 8-byte CRC/length trailer: all data decodes, the stream is still corrupt.
  const std::string tail = write_plain("cut_tail.gz", std::vector<uint8_t>(gz.begin(), gz.end() - 4));
  expect_error(tail, "gzip");
  // A flipped byte in the trailer's CRC.
  auto bad_crc = gz;
  bad_crc[bad_crc.size() - 6] ^= 0xff;
  expect_error(write_plain("bad_crc.gz", bad_crc), "gzip");
}

TEST_F(IdxTest, MissingFile) {
  const std::string p = (dir_ / "does-not-exist.gz").string();
  expect_error(p, "file not found");
}

TEST_F(IdxTest, FashionMnistMissingFileSuggestsPackage) {
  // Three of the four files present: the error names the missing one and the package.
  const auto img = idx_bytes(0x08, {1, 28, 28}, std::vector<uint8_t>(784, 0));
  write_gz("train-images-idx3-ubyte.gz", img);
  write_gz("train-labels-idx1-ubyte.gz", idx_bytes(0x08, {1}, {3}));
  write_gz("t10k-images-idx3-ubyte.gz", img);
  try {
    strata::tasks::load_fashion_mnist(dir_.string());
    ADD_FAILURE() << "no error for a missing file";
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("t10k-labels-idx1-ubyte.gz"), std::string::npos) << msg;
    EXPECT_NE(msg.find("apt-get install dataset-fashion-mnist"), std::string::npos) << msg;
  }
  // Now complete but with a label out of 0..9.
  write_gz("t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {1}, {10}));
  try {
    strata::tasks::load_fashion_mnist(dir_.string());
    ADD_FAILURE() << "no error for label 10";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("label 10 is out of range"), std::string::npos)
        << e.what_without_backtrace();
  }
  // Count mismatch between images and labels.
  write_gz("t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {2}, {1, 2}));
  try {
    strata::tasks::load_fashion_mnist(dir_.string());
    ADD_FAILURE() << "no error for 1 image vs 2 labels";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("1 images but 2 labels"), std::string::npos)
        << e.what_without_backtrace();
  }
  // Consistent: loads, and the second call returns the cached object.
  write_gz("t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {1}, {9}));
  const auto& a = strata::tasks::load_fashion_mnist(dir_.string());
  const auto& b = strata::tasks::load_fashion_mnist(dir_.string() + "/.");
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(a.test_labels.item<int64_t>(), 9);
  EXPECT_EQ(a.test_labels.scalar_type(), torch::kInt64);
}

TEST(FashionMnist, LoadsWithExpectedShapes) {
  if (!fs::exists(kFmnistDir)) GTEST_SKIP() << kFmnistDir << " missing (apt-get install dataset-fashion-mnist)";
  const auto& d = strata::tasks::load_fashion_mnist(kFmnistDir);
  EXPECT_EQ(d.train_images.sizes(), (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(d.train_labels.sizes(), (std::vector<int64_t>{60000}));
  EXPECT_EQ(d.test_images.sizes(), (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_EQ(d.test_labels.sizes(), (std::vector<int64_t>{10000}));
  EXPECT_EQ(d.train_images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(d.train_labels.scalar_type(), torch::kInt64);
  // Fashion-MNIST is balanced: 6000 train / 1000 test examples per class.
  EXPECT_TRUE(torch::equal(torch::bincount(d.train_labels), torch::full({10}, 6000, torch::kInt64)));
  EXPECT_TRUE(torch::equal(torch::bincount(d.test_labels), torch::full({10}, 1000, torch::kInt64)));
  // The normalisation constants of streams.cpp are the training-set statistics.
  auto unit = d.train_images.to(torch::kFloat64).div(255.0);
  EXPECT_NEAR(unit.mean().item<double>(), 0.2860, 5e-4);
  EXPECT_NEAR(unit.std().item<double>(), 0.3530, 5e-4);
  EXPECT_EQ(&d, &strata::tasks::load_fashion_mnist(kFmnistDir));  // cached
}

}  // namespace
