// IDX reader and the cached Fashion-MNIST loader.
#include "tasks/idx.h"

#include <zlib.h>

#include <climits>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace strata::tasks {
namespace {

// Largest payload we accept: 4 GiB. Fashion-MNIST's train images are 47 MB; anything near this
// bound is a corrupt header, not a data set.
constexpr uint64_t kMaxIdxBytes = uint64_t(1) << 32;
constexpr int kMaxIdxDims = 8;

struct GzFile {
  gzFile f = nullptr;
  ~GzFile() {
    if (f) gzclose(f);
  }
};

std::string gz_error_text(gzFile f) {
  int errnum = Z_OK;
  const char* msg = gzerror(f, &errnum);
  if (errnum == Z_OK || msg == nullptr) return "";
  return std::string(" (zlib: ") + msg + ")";
}

// Reads up to n bytes; returns the count actually read (short on end of file). A zlib error
// (corrupt gzip stream) throws.
uint64_t read_bytes(gzFile f, uint8_t* dst, uint64_t n, const std::string& path) {
  uint64_t done = 0;
  // gzread takes an unsigned count and returns int: read in 64 MiB chunks straight into `dst`.
  constexpr uint64_t kChunk = uint64_t(1) << 26;
  while (done < n) {
    const unsigned want = static_cast<unsigned>(std::min(kChunk, n - done));
    const int got = gzread(f, dst + done, want);
    TORCH_CHECK(got >= 0, "strata::tasks::read_idx(): ", path, ": corrupt or truncated gzip stream", gz_error_text(f));
    if (got == 0) break;
    done += static_cast<uint64_t>(got);
  }
  return done;
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  std::error_code ec;
  TORCH_CHECK(std::filesystem::exists(path, ec), "strata::tasks::read_idx(): file not found: ", path);
  TORCH_CHECK(!std::filesystem::is_directory(path, ec), "strata::tasks::read_idx(): ", path,
              " is a directory, not an IDX file");
  GzFile g;
  // gzopen reads plain (non-gzip) files transparently, so one code path serves both.
  g.f = gzopen(path.c_str(), "rb");
  TORCH_CHECK(g.f != nullptr, "strata::tasks::read_idx(): cannot open ", path, ": ", std::strerror(errno));
  gzbuffer(g.f, 1 << 20);

  uint8_t magic[4];
  TORCH_CHECK(read_bytes(g.f, magic, 4, path) == 4, "strata::tasks::read_idx(): ", path,
              ": truncated header (fewer than 4 bytes)", gz_error_text(g.f));
  TORCH_CHECK(magic[0] == 0 && magic[1] == 0, "strata::tasks::read_idx(): ", path,
              ": bad magic number (first two bytes must be 0x00 0x00, got 0x", std::hex,
              int(magic[0]), " 0x", int(magic[1]), "); not an IDX file");
  TORCH_CHECK(magic[2] == 0x08, "strata::tasks::read_idx(): ", path, ": unsupported data type code 0x",
              std::hex, int(magic[2]), " (only unsigned byte, 0x08, is supported)");
  const int ndim = magic[3];
  TORCH_CHECK(ndim >= 1 && ndim <= kMaxIdxDims, "strata::tasks::read_idx(): ", path,
              ": bad number of dimensions ", ndim, " (expected 1..", kMaxIdxDims, ")");

  uint8_t dim_bytes[4 * kMaxIdxDims];
  TORCH_CHECK(read_bytes(g.f, dim_bytes, 4 * ndim, path) == uint64_t(4 * ndim), "strata::tasks::read_idx(): ",
              path, ": truncated header (dimension sizes)", gz_error_text(g.f));
  std::vector<int64_t> sizes(ndim);
  uint64_t total = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* b = dim_bytes + 4 * d;
    const uint32_t v = (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
    TORCH_CHECK(v > 0, "strata::tasks::read_idx(): ", path, ": dimension ", d, " is zero");
    sizes[d] = v;
    total *= v;  // each factor < 2^32 and the running product is checked below: no overflow
    TORCH_CHECK(total <= kMaxIdxBytes, "strata::tasks::read_idx(): ", path, ": absurd data size (dimensions ",
                c10::IntArrayRef(sizes.data(), d + 1), " exceed ", kMaxIdxBytes, " bytes)");
  }

  // The header's sizes are not trusted with memory: the data is read in chunks (64 KiB, doubling up
  // to 16 MiB) and the tensor allocated only once the file has shown it holds them all, so a 12-byte
  // file claiming 4 GiB fails as truncated after a 64 KiB read instead of allocating 4 GiB first.
  constexpr uint64_t kMaxReadChunk = uint64_t(1) << 24;
  std::vector<std::vector<uint8_t>> chunks;
  uint64_t got = 0, chunk = uint64_t(1) << 16;
  while (got < total) {
    const uint64_t want = std::min(chunk, total - got);
    chunks.emplace_back(want);
    const uint64_t n = read_bytes(g.f, chunks.back().data(), want, path);
    got += n;
    if (n < want) break;
    chunk = std::min(2 * chunk, kMaxReadChunk);
  }
  TORCH_CHECK(got == total, "strata::tasks::read_idx(): ", path, ": truncated data: dimensions ",
              c10::IntArrayRef(sizes), " need ", total, " bytes, file has ", got, gz_error_text(g.f));
  torch::Tensor out = torch::empty(sizes, torch::kUInt8);
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (const auto& c : chunks) {
    std::memcpy(dst, c.data(), c.size());
    dst += c.size();
  }
  chunks.clear();
  uint8_t extra;
  const int more = gzread(g.f, &extra, 1);
  TORCH_CHECK(more >= 0, "strata::tasks::read_idx(): ", path, ": corrupt gzip stream after the data",
              gz_error_text(g.f));
  TORCH_CHECK(more == 0, "strata::tasks::read_idx(): ", path, ": trailing bytes after the ", total,
              " data bytes of dimensions ", c10::IntArrayRef(sizes));
  // A gzip stream cut inside its trailer (CRC/length) reads all data but leaves an error set.
  int errnum = Z_OK;
  gzerror(g.f, &errnum);
  TORCH_CHECK(errnum == Z_OK, "strata::tasks::read_idx(): ", path, ": corrupt or truncated gzip stream",
              gz_error_text(g.f));
  return out;
}

namespace {

torch::Tensor read_part(const std::filesystem::path& dir, const char* file) {
  const std::filesystem::path p = dir / file;
  std::error_code ec;
  TORCH_CHECK(std::filesystem::exists(p, ec), "strata::tasks::load_fashion_mnist(): missing file ", p.string(),
              " (install the data set with `apt-get install dataset-fashion-mnist`, or point data_dir at a folder "
              "holding the four gzip'd IDX files)");
  return read_idx(p.string());
}

void check_pair(const torch::Tensor& images, const torch::Tensor& labels, const std::string& what,
                const std::string& dir) {
  TORCH_CHECK(images.dim() == 3 && images.size(1) == 28 && images.size(2) == 28,
              "strata::tasks::load_fashion_mnist(): ", dir, ": ", what, " images must be [N, 28, 28], got ",
              images.sizes());
  TORCH_CHECK(labels.dim() == 1, "strata::tasks::load_fashion_mnist(): ", dir, ": ", what,
              " labels must be 1-D, got ", labels.sizes());
  TORCH_CHECK(images.size(0) == labels.size(0), "strata::tasks::load_fashion_mnist(): ", dir, ": ", what,
              " has ", images.size(0), " images but ", labels.size(0), " labels");
  const int64_t max_label = labels.max().item<int64_t>();
  TORCH_CHECK(max_label <= 9, "strata::tasks::load_fashion_mnist(): ", dir, ": ", what, " label ", max_label,
              " is out of range 0..9");
}

}  // namespace

const FashionMnist& load_fashion_mnist(const std::string& dir) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<FashionMnist>> cache;
  std::error_code ec;
  std::filesystem::path key = std::filesystem::weakly_canonical(dir, ec);
  if (ec) key = dir;
  // Held across the load: concurrent callers for the same folder wait for one read, not four.
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key.string());
  if (it != cache.end()) return *it->second;

  auto data = std::make_unique<FashionMnist>();
  data->train_images = read_part(key, "train-images-idx3-ubyte.gz");
  data->train_labels = read_part(key, "train-labels-idx1-ubyte.gz").to(torch::kInt64);
  data->test_images = read_part(key, "t10k-images-idx3-ubyte.gz");
  data->test_labels = read_part(key, "t10k-labels-idx1-ubyte.gz").to(torch::kInt64);
  check_pair(data->train_images, data->train_labels, "train", dir);
  check_pair(data->test_images, data->test_labels, "test", dir);
  const FashionMnist& ref = *data;
  cache.emplace(key.string(), std::move(data));
  return ref;
}

}  // namespace strata::tasks
