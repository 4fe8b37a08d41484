#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/safetensors.h"

namespace sc = strata::core;

namespace {

std::string tmp_file(const std::string& name) {
  return ::testing::TempDir() + "strata_st_" + std::to_string(::getpid()) + "_" + name;
}
std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}
// A file made of a raw header text and `data_bytes` bytes of data.
std::string make_file(const std::string& name, const std::string& header, size_t data_bytes) {
  const auto path = tmp_file(name);
  write_all(path, le64(header.size()) + header + std::string(data_bytes, '\x01'));
  return path;
}
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  const auto path = tmp_file("dtypes.safetensors");
  torch::manual_seed(0);
  sc::NamedTensorList cases = {
      {"f32", torch::randn({3, 4})},
      {"f64", torch::randn({2, 3, 5}, torch::kFloat64)},
      {"f16", torch::randn({5}).to(torch::kFloat16)},
      {"bf16", torch::randn({3}).to(torch::kBFloat16)},
      {"i64", torch::randint(-1000, 1000, {7}, torch::kInt64)},
      {"i32", torch::randint(-1000, 1000, {2, 2}, torch::kInt32)},
      {"i16", torch::randint(-1000, 1000, {3}, torch::kInt16)},
      {"i8", torch::randint(-100, 100, {3}, torch::kInt8)},
      {"u8", torch::randint(0, 255, {4, 1}, torch::kUInt8)},
      {"b", torch::randn({5}) > 0},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 3})},
      {"noncontig", torch::randn({4, 6}).t()},
  };
  sc::write_safetensors(path, cases, {{"format", "pt"}, {"note", "x"}});
  const auto r = sc::read_safetensors(path);
  ASSERT_EQ(r.tensors.size(), cases.size());
  EXPECT_EQ(r.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"note", "x"}}));
  for (const auto& [name, t] : cases) {
    auto it = std::find_if(r.tensors.begin(), r.tensors.end(), [&](const auto& p) { return p.first == name; });
    ASSERT_NE(it, r.tensors.end()) << name;
    EXPECT_EQ(it->second.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(it->second.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(it->second, t)) << name;
  }
  EXPECT_TRUE(sc::looks_like_safetensors(path));
  std::remove(path.c_str());
}

TEST(Safetensors, LayoutFollowsTheReferenceWriter) {
  const auto path = tmp_file("layout.safetensors");
  // An odd-sized F16 tensor named first alphabetically must not misalign the F32 after it.
  sc::write_safetensors(path, {{"b", torch::ones({3})}, {"a", torch::ones({3}, torch::kFloat16)},
                               {"c", torch::ones({2}, torch::kFloat64)}});
  const auto bytes = read_all(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u) << "header padded to a multiple of 8";
  const std::string header = bytes.substr(8, n);
  const auto last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}') << "only spaces after the JSON object";
  EXPECT_LT(header.size() - last - 1, 8u);
  auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["c"]["data_offsets"], nlohmann::json::array({0, 16}));  // F64 first
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json::array({16, 28}));  // then F32
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json::array({28, 34}));  // then F16
  EXPECT_EQ(j["a"]["dtype"], "F16");
  EXPECT_EQ(j["a"]["shape"], nlohmann::json::array({3}));
  EXPECT_FALSE(j.contains("__metadata__")) << "no metadata written when there is none";
  // The header lists tensors in data order.
  EXPECT_LT(header.find("\"c\""), header.find("\"b\""));
  EXPECT_LT(header.find("\"b\""), header.find("\"a\""));
  EXPECT_EQ(bytes.size(), 8 + n + 34);
  std::remove(path.c_str());
}

TEST(Safetensors, ExactBytesOfAHandBuiltFile) {
  // What the reference writer (safetensors.torch.save_file) produces for
  // {"w": float32 [[1, 2]], "b": float32 [3]} with metadata {"format": "pt"}.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("w":{"dtype":"F32","shape":[1,2],"data_offsets":[4,12]}})";
  std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  float vals[3] = {3.f, 1.f, 2.f};
  const auto path = tmp_file("hand.safetensors");
  write_all(path, le64(padded.size()) + padded + std::string(reinterpret_cast<char*>(vals), 12));
  auto r = sc::read_safetensors(path);
  ASSERT_EQ(r.tensors.size(), 2u);
  EXPECT_EQ(r.tensors[0].first, "b");
  EXPECT_TRUE(torch::equal(r.tensors[1].second, torch::tensor({{1.f, 2.f}})));
  EXPECT_EQ(r.metadata.at("format"), "pt");
  // And writing it back gives the same bytes.
  const auto path2 = tmp_file("hand2.safetensors");
  sc::write_safetensors(path2, {r.tensors[1], r.tensors[0]}, r.metadata);
  EXPECT_EQ(read_all(path2), read_all(path));
  std::remove(path.c_str());
  std::remove(path2.c_str());
}

TEST(Safetensors, AtomicWriteLeavesTheOldFileOnError) {
  const auto path = tmp_file("atomic.safetensors");
  sc::write_safetensors(path, {{"x", torch::ones({2})}});
  const auto before = read_all(path);
  EXPECT_NE(error_of([&] { sc::write_safetensors(path, {{"x", torch::ones({2})}, {"x", torch::ones({1})}}); }), "");
  EXPECT_NE(error_of([&] { sc::write_safetensors(path, {{"__metadata__", torch::ones({2})}}); }), "");
  EXPECT_NE(error_of([&] { sc::write_safetensors(path, {{"c", torch::ones({2}, torch::kComplexFloat)}}); }), "");
  EXPECT_EQ(read_all(path), before);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp-" + std::to_string(::getpid())));
  std::remove(path.c_str());
}

// Each hostile file gives one error naming the file (and the tensor where there is one).
struct Hostile {
  const char* name;
  std::string header;
  size_t data;
  const char* expect;  // a fragment of the message
  const char* tensor;  // the tensor the message must name, or ""
};

TEST(Safetensors, HostileFilesAreOneClearError) {
  const std::string ok = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<Hostile> cases = {
      {"badjson", "{\"w\": [", 8, "not valid JSON", ""},
      {"notobject", "[1,2,3]", 0, "not a JSON object", ""},
      {"past_end", "{" + ok + "}", 4, "past the end", "w"},
      {"trailing", "{" + ok + "}", 12, "trailing garbage", ""},
      {"begin_gt_end", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8, "begin > end", "w"},
      {"size_mismatch", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12", "w"},
      {"negative_shape", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "non-negative", "w"},
      {"float_shape", R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8, "non-negative", "w"},
      {"overflow_shape",
       R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", 8, "overflows", "w"},
      {"huge_dim", R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", 8, "overflows",
       "w"},
      {"unknown_dtype", R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2, "unknown dtype", "w"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, "overlap", "b"},
      {"gap",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       12, "gap", "b"},
      {"duplicate",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, "appears twice", "a"},
      {"missing_field", R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8, "shape", "w"},
      {"extra_field", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8, "unknown field", "w"},
      {"one_offset", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", 8, "[begin, end]", "w"},
      {"bad_metadata", "{" + ok + R"(,"__metadata__":{"k":3}})", 8, "not a string", ""},
  };
  for (const auto& c : cases) {
    const auto path = make_file(c.name, c.header, c.data);
    const auto msg = error_of([&] { sc::read_safetensors(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": " << msg;
    if (*c.tensor) {
      EXPECT_NE(msg.find(std::string("tensor '") + c.tensor + "'"), std::string::npos) << c.name << ": " << msg;
    }
    // The header-only reader refuses the same files.
    EXPECT_NE(error_of([&] { sc::read_safetensors_header(path); }), "") << c.name;
    std::remove(path.c_str());
  }
}

TEST(Safetensors, HostileLengthsNeverAllocate) {
  // A header length of 2^63 or just above the 100 MB limit, in a tiny file.
  for (uint64_t n : {uint64_t{1} << 63, sc::kSafetensorsMaxHeader + 1, uint64_t{1000}}) {
    const auto path = tmp_file("len");
    write_all(path, le64(n) + "{}");
    const auto msg = error_of([&] { sc::read_safetensors(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_TRUE(msg.find("limit") != std::string::npos || msg.find("past the end") != std::string::npos) << msg;
    EXPECT_FALSE(sc::looks_like_safetensors(path));
    std::remove(path.c_str());
  }
  const auto tiny = tmp_file("tiny");
  write_all(tiny, "abc");
  EXPECT_NE(error_of([&] { sc::read_safetensors(tiny); }).find("shorter than"), std::string::npos);
  std::remove(tiny.c_str());
  EXPECT_NE(error_of([&] { sc::read_safetensors(tmp_file("does-not-exist")); }).find("no such file"),
            std::string::npos);
}

TEST(Safetensors, EmptyAndZeroSizedTensors) {
  const auto path = tmp_file("empty.safetensors");
  sc::write_safetensors(path, {});
  EXPECT_TRUE(sc::read_safetensors(path).tensors.empty());
  sc::write_safetensors(path, {{"z", torch::zeros({0})}, {"y", torch::zeros({2, 0})}, {"x", torch::ones({1})}});
  const auto r = sc::read_safetensors(path);
  ASSERT_EQ(r.tensors.size(), 3u);
  std::remove(path.c_str());
}

TEST(Safetensors, RewritingThePythonFixtureGivesTheSameBytes) {
  // tests/fixtures/make_vit_fixture.py writes these with a Python writer that follows the
  // reference layout; reading and writing them back must reproduce every byte.
  for (const char* name : {"vit_torchvision.safetensors", "vit_timm.safetensors", "vit_io.safetensors"}) {
    const std::string path = std::string(STRATA_SOURCE_DIR) + "/tests/fixtures/" + name;
    const auto r = sc::read_safetensors(path);
    ASSERT_FALSE(r.tensors.empty()) << name;
    const auto out = tmp_file(std::string("rewrite_") + name);
    sc::write_safetensors(out, r.tensors, r.metadata);
    EXPECT_EQ(read_all(out), read_all(path)) << name;
    std::remove(out.c_str());
  }
}
