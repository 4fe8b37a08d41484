// Version files: round trips, atomic writes, and every refusal on load (predictions.h5: tests/compat).
#include "checkpoints/version_store.h"
#include "core/h5.h"
#include "tests/support.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace strata;
using namespace strata::checkpoints;

namespace {

using strata::testing::TempDir;

Version sample_version() {
  torch::manual_seed(3);
  Version v;
  v.version = 1;
  v.method = "naive";
  v.config_ini = "stream = synthetic\nhidden = 4\n";
  v.parameters = {{"fc1.weight", torch::randn({4, 3})}, {"fc1.bias", torch::randn({4})},
                  {"head.weight", torch::randn({2, 4})}};
  v.requires_grad = {true, false, true};
  v.buffers = {{"norm.running_mean", torch::randn({4}, torch::kFloat64)}, {"mask", torch::rand({4}) > 0.5}};
  v.method_tensors = {{"basis/fc1", torch::randn({3, 2})}, {"count", torch::tensor(int64_t{7})}};
  v.method_meta = {{"step", 12}, {"ranks", {1, 2}}};
  v.rng_cpu = cpu_rng_state();
  v.position.next_task = 2;
  v.position.num_tasks = 3;
  v.position.accuracy_matrix = torch::zeros({3, 3}, torch::kFloat64);
  v.position.accuracy_matrix[0][0] = 0.9;
  v.position.accuracy_matrix[1][0] = 0.7;
  v.position.accuracy_matrix[1][1] = 0.95;
  v.position.initial_accuracy = torch::full({3}, 0.25, torch::kFloat64);
  v.position.timings = {{0, 1.5, 0.1, 1000, 40}, {1, 1.25, 0.2, 1100, 40}};
  return v;
}

std::string load_error(const std::string& path) {
  try {
    read_version(path);
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void put_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// XORs the byte at `offset` with `mask` in place.
void flip(const std::string& path, size_t offset, char mask = 0x01) {
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  io.read(&c, 1);
  c ^= mask;
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(&c, 1);
}

// A version file as written before the user block existed: the same HDF5 bytes with the HDF5
// superblock at byte 0 (what h5unjam does; HDF5 addresses are relative to the superblock).
std::string legacy_copy(const std::string& good, const std::string& path) {
  put_bytes(path, file_bytes(good).substr(core::kUserBlockSize));
  return path;
}

}  // namespace

TEST(Checkpoints, VersionRoundTrip) {
  TempDir dir;
  const std::string path = version_path(dir.path.string(), 1);
  EXPECT_EQ(path, (dir.path / "versions" / "v001.h5").string());
  const Version v = sample_version();
  write_version(path, v);
  ASSERT_TRUE(fs::exists(path));
  for (const auto& e : fs::directory_iterator(dir.path / "versions"))
    EXPECT_EQ(e.path().filename().string(), "v001.h5") << "temporary left behind";

  const Version r = read_version(path);
  EXPECT_EQ(r.version, 1);
  EXPECT_EQ(r.method, "naive");
  EXPECT_EQ(r.config_ini, v.config_ini);
  EXPECT_EQ(r.method_meta, v.method_meta);
  ASSERT_EQ(r.parameters.size(), 3u);
  ASSERT_EQ(r.buffers.size(), 2u);
  std::map<std::string, torch::Tensor> got;
  for (const auto& [n, t] : r.parameters) got[n] = t;
  for (const auto& [n, t] : r.buffers) got[n] = t;
  for (const auto& [n, t] : v.parameters) EXPECT_TRUE(torch::equal(got.at(n), t)) << n;
  for (const auto& [n, t] : v.buffers) {
    EXPECT_EQ(got.at(n).scalar_type(), t.scalar_type()) << n;
    EXPECT_TRUE(torch::equal(got.at(n), t)) << n;
  }
  for (size_t i = 0; i < r.parameters.size(); ++i)
    if (r.parameters[i].first == "fc1.bias") {
      EXPECT_FALSE(r.requires_grad[i]);
    }
  ASSERT_EQ(r.method_tensors.size(), 2u);
  EXPECT_TRUE(torch::equal(r.method_tensors.at("basis/fc1"), v.method_tensors.at("basis/fc1")));
  EXPECT_EQ(r.method_tensors.at("count").item<int64_t>(), 7);
  EXPECT_TRUE(torch::equal(r.rng_cpu, v.rng_cpu));
  EXPECT_EQ(r.position.next_task, 2);
  EXPECT_TRUE(torch::equal(r.position.accuracy_matrix, v.position.accuracy_matrix));
  EXPECT_TRUE(torch::equal(r.position.initial_accuracy, v.position.initial_accuracy));
  ASSERT_EQ(r.position.timings.size(), 2u);
  EXPECT_EQ(r.position.timings[1].train_seconds, 1.25);
  EXPECT_EQ(r.position.timings[1].train_steps, 40);
  EXPECT_NE(r.checksum, 0u);

  // The layout a PyTorch user iterates: /model/<state_dict key>, kind attributes, optimizer note.
  auto f = core::open_file(path, core::FileMode::kRead);
  EXPECT_EQ(core::list_children(f, "model"),
            (std::vector<std::string>{"fc1.bias", "fc1.weight", "head.weight", "mask", "norm.running_mean"}));
  EXPECT_EQ(core::get_attr_string(core::open_dataset(f, "/model/mask"), "kind"), "buffer");
  EXPECT_EQ(core::get_attr_string(f, "format"), "strata-version");
  EXPECT_EQ(core::get_attr_int(f, "format_version"), kFormatVersion);
  EXPECT_TRUE(core::list_children(f, "optimizer").empty());
  EXPECT_NE(core::get_attr_string(core::open_group(f, "optimizer"), "note").find("fresh optimizer"),
            std::string::npos);
}

TEST(Checkpoints, RngStateRestores) {
  torch::manual_seed(11);
  const auto state = cpu_rng_state();
  const auto a = torch::rand({5});
  torch::rand({17});
  set_cpu_rng_state(state);
  EXPECT_TRUE(torch::equal(torch::rand({5}), a));
}

TEST(Checkpoints, RefusesBadFilesNamingFileAndField) {
  TempDir dir;
  const Version v = sample_version();
  auto make = [&](const std::string& name, const std::function<void(H5::H5File&)>& edit) {
    const std::string p = dir / name;
    write_version(p, v);
    auto f = core::open_file(p, core::FileMode::kReadWrite);
    edit(f);
    f.close();
    // An intact file another writer made this way: a fresh user block, so only the check under test sees it.
    core::write_user_block(p, kUserBlockMagic);
    return p;
  };
  auto expect = [&](const std::string& path, std::vector<std::string> parts) {
    const std::string before = file_bytes(path);
    const std::string msg = load_error(path);
    ASSERT_FALSE(msg.empty()) << path << " loaded without error";
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    EXPECT_EQ(file_bytes(path), before) << "a refused load changed the file";
  };

  expect(make("fmt.h5", [](H5::H5File& f) { core::set_attr(f, "format_version", int64_t{99}); }),
         {"unknown format_version 99", "format_version 1"});
  expect(make("notver.h5", [](H5::H5File& f) { core::set_attr(f, "format", "something-else"); }),
         {"not a Strata version file", "'format'"});
  expect(make("noattr.h5", [](H5::H5File& f) { f.removeAttr("checksum_crc32"); }), {"missing attribute 'checksum_crc32'"});
  expect(make("missing.h5", [](H5::H5File& f) { f.unlink("/position/accuracy_matrix"); }),
         {"missing dataset '/position/accuracy_matrix'"});
  expect(make("rng.h5", [](H5::H5File& f) { f.unlink("/rng/torch_cpu"); }), {"missing dataset '/rng/torch_cpu'"});
  // Same shape, one value changed: only the checksum can tell.
  expect(make("crc.h5",
              [&](H5::H5File& f) {
                auto w = v.parameters[0].second.clone();
                w[0][0] += 1e-3;
                core::write_tensor(f, "/model/fc1.weight", w, core::H5Options().overwrite(true));
              }),
         {"checksum mismatch"});

  // Truncated: the first half of a good file.
  const std::string good = dir / "good.h5";
  write_version(good, v);
  const std::string trunc = dir / "trunc.h5";
  fs::copy_file(good, trunc);
  fs::resize_file(trunc, fs::file_size(good) / 2);
  expect(trunc, {"file is truncated: " + std::to_string(fs::file_size(good) / 2) + " bytes, header says " +
                 std::to_string(fs::file_size(good))});
  // Not HDF5 at all.
  const std::string text = dir / "text.h5";
  std::ofstream(text) << "not an hdf5 file\n";
  expect(text, {"is not an HDF5 file"});
  // Absent.
  EXPECT_NE(load_error(dir / "absent.h5").find("no such file"), std::string::npos);
  // The good file still loads.
  EXPECT_NO_THROW(read_version(good));
}

TEST(Checkpoints, CopyNamedTensorsChecksEverythingBeforeCopying) {
  const Version v = sample_version();
  auto target = [] {
    return NamedTensors{{"fc1.weight", torch::zeros({4, 3})}, {"fc1.bias", torch::zeros({4})},
                        {"head.weight", torch::zeros({2, 4})}};
  };
  auto err = [&](const NamedTensors& stored, const NamedTensors& targets) {
    try {
      copy_named_tensors(stored, targets, "runs/x/versions/v001.h5");
    } catch (const c10::Error& e) {
      return std::string(e.msg());
    }
    return std::string();
  };
  auto ok = target();
  copy_named_tensors(v.parameters, ok, "f.h5");
  EXPECT_TRUE(torch::equal(ok[0].second, v.parameters[0].second));

  // Wrong shape (another hidden width): nothing copied, message names file, dataset and shapes.
  auto wrong = target();
  wrong[2].second = torch::zeros({2, 5});
  const std::string m = err(v.parameters, wrong);
  EXPECT_NE(m.find("runs/x/versions/v001.h5"), std::string::npos) << m;
  EXPECT_NE(m.find("'/model/head.weight' has shape [2, 4]"), std::string::npos) << m;
  EXPECT_NE(m.find("[2, 5]"), std::string::npos) << m;
  EXPECT_EQ(wrong[0].second.abs().sum().item<double>(), 0.0) << "copied before the check failed";

  auto extra = target();
  extra.emplace_back("lora.A", torch::zeros({2, 2}));
  EXPECT_NE(err(v.parameters, extra).find("missing dataset '/model/lora.A'"), std::string::npos);
  auto fewer = target();
  fewer.pop_back();
  EXPECT_NE(err(v.parameters, fewer).find("unexpected dataset '/model/head.weight'"), std::string::npos);
}

TEST(Checkpoints, FailedWriteKeepsTheOldFile) {
  TempDir dir;
  const std::string path = dir / "v000.h5";
  Version v = sample_version();
  write_version(path, v);
  const std::string before = file_bytes(path);
  Version bad = v;
  bad.parameters.emplace_back("broken", torch::Tensor());
  EXPECT_THROW(write_version(path, bad), c10::Error);
  Version bad_dtype = v;
  bad_dtype.parameters.emplace_back("half", torch::zeros({2}, torch::kFloat16));
  EXPECT_THROW(write_version(path, bad_dtype), c10::Error);
  EXPECT_EQ(file_bytes(path), before);
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

TEST(Checkpoints, ScanReportsPartialFiles) {
  TempDir dir;
  EXPECT_TRUE(scan_versions(dir.path.string()).versions.empty());
  const Version v = sample_version();
  write_version(version_path(dir.path.string(), 0), v);
  write_version(version_path(dir.path.string(), 2), v);
  std::ofstream(dir / "versions/v003.h5.tmp-4242") << "partial";
  std::ofstream(dir / "versions/notes.txt") << "x";
  const auto s = scan_versions(dir.path.string());
  EXPECT_EQ(s.versions, (std::vector<int64_t>{0, 2}));
  ASSERT_EQ(s.partial.size(), 1u);
  EXPECT_NE(s.partial[0].find("v003.h5.tmp-4242"), std::string::npos);
  ASSERT_EQ(s.other.size(), 1u);
}


TEST(Checkpoints, UserBlockDescribesTheWholeFile) {
  TempDir dir;
  const std::string path = dir / "v001.h5";
  write_version(path, sample_version());
  const std::string bytes = file_bytes(path);
  ASSERT_GT(bytes.size(), core::kUserBlockSize);
  // The header a reader sees with `head -c 512`: magic, size, CRC of the rest, then the header's own CRC.
  const std::string header = bytes.substr(0, bytes.find('\0'));
  EXPECT_EQ(header.rfind("strata-version-userblock\nsize=" + std::to_string(bytes.size()) + "\ncrc32=", 0), 0u)
      << header;
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x",
                core::crc32_bytes(bytes.data() + core::kUserBlockSize, bytes.size() - core::kUserBlockSize));
  EXPECT_NE(header.find(std::string("\ncrc32=") + crc + "\nheader_crc32="), std::string::npos) << header;
  EXPECT_EQ(bytes.substr(core::kUserBlockSize, 4), "\x89HDF") << "the HDF5 superblock is not at byte 512";
  EXPECT_EQ(bytes.find_first_not_of('\0', header.size()), core::kUserBlockSize) << "padding is not NUL";
  EXPECT_TRUE(has_version_user_block(path));
  const auto check = core::check_user_block(path, kUserBlockMagic);
  EXPECT_TRUE(check.present);
  EXPECT_EQ(check.problem, "");
  // HDF5 itself skips the block: the file opens and reads as before.
  auto f = core::open_file(path, core::FileMode::kRead);
  EXPECT_EQ(core::get_attr_string(f, "format"), "strata-version");
}

TEST(Checkpoints, TruncatedFileIsRefusedBeforeHdf5) {
  TempDir dir;
  const std::string good = dir / "good.h5";
  write_version(good, sample_version());
  const std::string bytes = file_bytes(good);
  const std::string cut = dir / "cut.h5";
  for (size_t keep : {bytes.size() - 1, bytes.size() / 2, core::kUserBlockSize + 8, core::kUserBlockSize, size_t(200)}) {
    put_bytes(cut, bytes.substr(0, keep));
    const std::string msg = load_error(cut);
    EXPECT_EQ(msg, "strata::checkpoints::read_version(): '" + cut + "': file is truncated: " + std::to_string(keep) +
                       " bytes, header says " + std::to_string(bytes.size()))
        << keep;
  }
  // Cut inside the header itself.
  put_bytes(cut, bytes.substr(0, 40));
  EXPECT_NE(load_error(cut).find("file is truncated: 40 bytes, shorter than its 512-byte header"), std::string::npos)
      << load_error(cut);
  // Longer than written (bytes appended) is damage too.
  put_bytes(cut, bytes + "x");
  EXPECT_NE(load_error(cut).find("file is longer than written: " + std::to_string(bytes.size() + 1) +
                                 " bytes, header says " + std::to_string(bytes.size())),
            std::string::npos)
      << load_error(cut);
}

TEST(Checkpoints, EveryFlippedByteAfterTheUserBlockIsACleanChecksumError) {
  TempDir dir;
  const std::string path = dir / "v001.h5";
  write_version(path, sample_version());
  const size_t size = fs::file_size(path);
  // Every byte of the HDF5 part: superblock, object headers, the global heap HDF5 1.10.8 over-reads
  // when damaged, dataset bytes. Each is refused by the user block check, before HDF5 opens the file.
  size_t refused = 0;
  for (size_t at = core::kUserBlockSize; at < size; ++at) {
    flip(path, at, 0x20);
    const std::string msg = load_error(path);
    flip(path, at, 0x20);
    const bool ok = msg.rfind("strata::checkpoints::read_version(): '" + path + "': checksum mismatch: bytes 512..", 0) == 0;
    refused += ok;
    if (!ok) ADD_FAILURE() << "byte " << at << ": " << msg;
    if (!ok) break;
  }
  EXPECT_EQ(refused, size - core::kUserBlockSize);
  EXPECT_NO_THROW(read_version(path)) << "the restored file no longer loads";
}

TEST(Checkpoints, EveryFlippedByteInsideTheUserBlockIsRefused) {
  TempDir dir;
  const std::string path = dir / "v001.h5";
  write_version(path, sample_version());
  for (size_t at = 0; at < core::kUserBlockSize; ++at) {
    flip(path, at, 0x04);
    const std::string msg = load_error(path);
    flip(path, at, 0x04);
    ASSERT_EQ(msg.rfind("strata::checkpoints::read_version(): '" + path + "': user block is damaged: ", 0), 0u)
        << "byte " << at << ": " << msg;
  }
  EXPECT_NO_THROW(read_version(path));
}

TEST(Checkpoints, LegacyFileWithoutUserBlockStillLoadsAndIsChecked) {
  TempDir dir;
  const Version v = sample_version();
  const std::string good = dir / "good.h5";
  write_version(good, v);
  const std::string legacy = legacy_copy(good, dir / "legacy.h5");
  const auto check = core::check_user_block(legacy, kUserBlockMagic);
  EXPECT_FALSE(check.present);
  EXPECT_EQ(check.problem, "");
  EXPECT_FALSE(has_version_user_block(legacy));
  const Version r = read_version(legacy);
  EXPECT_EQ(r.checksum, read_version(good).checksum);
  for (const auto& [n, t] : r.parameters)
    if (n == "fc1.weight") { EXPECT_TRUE(torch::equal(t, v.parameters[0].second)); }
  // The in-HDF5 checksum still guards it: one value changed in a dataset's bytes.
  auto f = core::open_file(legacy, core::FileMode::kRead);
  const haddr_t offset = core::open_dataset(f, "/model/fc1.weight").getOffset();
  f.close();
  flip(legacy, offset, 0x10);
  const std::string msg = load_error(legacy);
  EXPECT_NE(msg.find("'" + legacy + "': checksum mismatch (stored checksum_crc32"), std::string::npos) << msg;
}
