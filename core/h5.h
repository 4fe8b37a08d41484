// Small, reusable HDF5 helpers: tensors as datasets, attributes, group listing, crash-safe
// writes and checksums. Used by the subspace store, checkpoints, predictions and compat.
//
// Conventions
// - Every function takes an HDF5 location (`H5::H5File` is a `H5::Group`) plus a slash-separated
//   path relative to it ("a/b/c"; a leading "/" is allowed and means the same when `loc` is the
//   file). Writing creates the intermediate groups.
// - Every error is a c10::Error (catch `c10::Error` or `std::exception`) whose message names the
//   function, the file and the object path. HDF5's own error printing is switched off by these
//   helpers (see `quiet_hdf5`), and H5::Exception never escapes them.
// - Tensors are stored in C order with their exact shape (0-d tensors as HDF5 scalars), so h5py /
//   h5dump read them directly. dtype mapping (file type = native little-endian type):
//       float32 <-> H5T_IEEE_F32LE    float64 <-> H5T_IEEE_F64LE
//       int64   <-> H5T_STD_I64LE     int32   <-> H5T_STD_I32LE
//       uint8   <-> H5T_STD_U8LE      bool    -> H5T_STD_U8LE + attribute strata_dtype = "bool"
//   Reading maps back by class/size/sign; a uint8 dataset carrying strata_dtype="bool" comes back
//   as bool. Other integer widths read as int32 (<= 4 bytes, signed) or int64; other dtypes
//   (half, complex, ...) are refused on write.
#pragma once

#include <torch/torch.h>

#include <H5Cpp.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::core {

// Dataset creation options. Defaults: contiguous, no filters (fast, small files).
// `compressed()` gives the archival setting: chunked + shuffle + deflate(4) + Fletcher32.
struct H5Options {
  // Chunk the dataset. Implied by deflate_level > 0 or fletcher32 (HDF5 filters need chunks).
  TORCH_ARG(bool, chunked) = false;
  // Explicit chunk shape (same rank as the tensor); empty = automatic (whole tensor when it is
  // <= 1 MiB, otherwise the leading dimension is split until a chunk is <= 1 MiB).
  TORCH_ARG(std::vector<int64_t>, chunk_shape) = {};
  // 0 = no compression, 1..9 = zlib level.
  TORCH_ARG(int, deflate_level) = 0;
  // Byte-shuffle filter before deflate (helps float data); only applied with deflate.
  TORCH_ARG(bool, shuffle) = true;
  // Fletcher32 checksum per chunk: HDF5 verifies it on every read (corruption -> read error).
  TORCH_ARG(bool, fletcher32) = false;
  // Replace an existing dataset at the same path (default: existing path is an error).
  TORCH_ARG(bool, overwrite) = false;

 public:
  static H5Options compressed(int level = 4) {
    return H5Options().chunked(true).deflate_level(level).fletcher32(true);
  }
};

// ---- files --------------------------------------------------------------------------------

enum class FileMode {
  kRead,       // must exist, read-only
  kReadWrite,  // must exist
  kCreate,     // must not exist
  kTruncate,   // create or replace
};

// Switches off HDF5's automatic error-stack printing (process-wide; idempotent, cheap).
void quiet_hdf5();

// Opens or creates `path`. Errors are one clear c10::Error:
//   "... '<path>': no such file", "... '<path>' is not an HDF5 file",
//   "... '<path>' is corrupt or truncated (HDF5 cannot open it)", "... already exists".
// Unless `checksum_verified` (the caller checked the file's Strata user block, check_user_block),
// an existing file is first probed (probe_h5_file): HDF5 reads its metadata in a child process, and
// a file that crashes or hangs the library there is refused with one line.
H5::H5File open_file(const std::string& path, FileMode mode, bool checksum_verified = false);

// HDF5 1.10.8 trusts damaged metadata in places (H5HG_read over-reads a damaged global heap and
// can spend minutes decoding one), and a file without a Strata checksum — an older Strata file, a
// file made by h5py, a crafted one — reaches it. The probe forks; the child opens `path` and reads
// every object header, every attribute and every dataset of variable-length data, strings or
// references (the global heap; numeric datasets are not read), and exits. A child that crashes or
// runs past the timeout (set_h5_probe_timeout, default 30 s) is an error "<who>: '<path>': HDF5
// crashed (signal 11, ...) reading its metadata in a probe process; ...". HDF5 errors in the child
// are not reported: the in-process read that follows names them as before. Costs one fork and one
// metadata pass per unchecked file; files with a Strata checksum skip it. The child has only the
// calling thread: were another thread inside HDF5 at that moment (HDF5's global lock held), the
// child would wait on the lock until the timeout. Strata uses HDF5 from one thread at a time.
void probe_h5_file(const std::string& path, const std::string& who);
void set_h5_probe_timeout(double seconds);

/// The file name of an HDF5 object, for error messages ("<unknown file>" when HDF5 cannot tell).
std::string file_of(const H5::H5Location& loc);

// Runs `fn`, converting H5::Exception into c10::Error naming `what` (e.g. "read_tensor"), the file
// and the object. Use it around direct H5Cpp calls so callers only ever see c10::Error.
void h5_guard(const std::string& what, const std::string& file, const std::string& object,
              const std::function<void()>& fn);

// ---- paths and groups ---------------------------------------------------------------------

// True when every component of `path` exists below `loc` (never throws for missing parents).
bool exists(const H5::Group& loc, const std::string& path);
// Opens the group at `path` ("" or "/" = loc itself); with create=true missing groups are made.
H5::Group open_group(const H5::Group& loc, const std::string& path, bool create = false);
// Names of the direct children (groups and datasets) of the group at `path`, sorted by name.
std::vector<std::string> list_children(const H5::Group& loc, const std::string& path = "");
// True when `path` is a group (false for datasets and missing paths).
bool is_group(const H5::Group& loc, const std::string& path);

// ---- tensors ------------------------------------------------------------------------------

// Writes `t` (any device; copied to CPU contiguous) as a dataset at `path`.
void write_tensor(const H5::Group& loc, const std::string& path, const torch::Tensor& t,
                  const H5Options& options = {});
// Reads the dataset at `path` into a CPU tensor with the dtype/shape described above.
torch::Tensor read_tensor(const H5::Group& loc, const std::string& path);

// Shape and the dtype read_tensor would return, without reading the data (so callers can refuse
// a wrong rank, dtype or an oversized dataset before allocating). `dtype` is nullopt for HDF5
// types read_tensor refuses (strings, compounds, ...); `type_name` describes the file type either
// way (e.g. "float64", "uint16", "string"), for error messages.
struct DatasetInfo {
  std::vector<int64_t> shape;
  c10::optional<torch::ScalarType> dtype;
  std::string type_name;
};
DatasetInfo dataset_info(const H5::Group& loc, const std::string& path);

// ---- attributes ---------------------------------------------------------------------------
// On any H5Object: the file (root group), a group or a dataset. Writing replaces an existing
// attribute of the same name. Strings are variable-length UTF-8 (h5py reads them as str);
// ints are int64, doubles are float64. Reading a missing attribute, or one of another type,
// throws c10::Error naming the file, object and attribute.

void set_attr(H5::H5Object& obj, const std::string& name, const std::string& value);
void set_attr(H5::H5Object& obj, const std::string& name, const char* value);
void set_attr(H5::H5Object& obj, const std::string& name, int64_t value);
void set_attr(H5::H5Object& obj, const std::string& name, int value);
void set_attr(H5::H5Object& obj, const std::string& name, double value);
bool has_attr(const H5::H5Object& obj, const std::string& name);
std::string get_attr_string(const H5::H5Object& obj, const std::string& name);
int64_t get_attr_int(const H5::H5Object& obj, const std::string& name);
double get_attr_double(const H5::H5Object& obj, const std::string& name);
std::vector<std::string> list_attrs(const H5::H5Object& obj);
// Numeric attribute as a list: a scalar gives one value, a 1-D array its values (h5py writes
// `attrs['mean'] = [0.5, 0.5]` as a float64 array). Other ranks or types throw.
std::vector<double> get_attr_doubles(const H5::H5Object& obj, const std::string& name);
// String attribute as a list: a scalar string gives one value, a 1-D array of variable- or
// fixed-length strings its values (h5py: `attrs['classes'] = ['a', 'b']` or np.array(..., 'S')).
std::vector<std::string> get_attr_strings(const H5::H5Object& obj, const std::string& name);

// Opens the dataset at `path` (e.g. for attribute access).
H5::DataSet open_dataset(const H5::Group& loc, const std::string& path);

// ---- crash-safe writes --------------------------------------------------------------------

// Write-to-temporary-then-rename. The temporary lives next to the target as
// "<path>.tmp-<pid>"; commit() fsyncs it, renames it over <path> (atomic on POSIX) and fsyncs the
// directory. If commit() is never reached (exception, crash) the old <path> is untouched and the
// destructor removes the temporary.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& tmp_path() const { return tmp_path_; }
  // Everything writing to tmp_path() must be closed before this is called.
  void commit();

 private:
  std::string path_;
  std::string tmp_path_;
  bool committed_ = false;
};

// Creates a fresh HDF5 file at the temporary path, runs `fill` on it, closes it and commits.
// If `fill` throws, nothing at `path` changes and the exception propagates. With a non-empty
// `user_block_magic` the file gets a whole-file checksum in its HDF5 user block (below), written
// after the HDF5 file is closed and before the rename.
void atomic_write_h5(const std::string& path, const std::function<void(H5::H5File&)>& fill,
                     const std::string& user_block_magic = "");
// Changes an existing HDF5 file atomically: copies it to the temporary path, opens the copy for
// writing, runs `update`, closes and commits; a missing `path` is created fresh (as atomic_write_h5).
// A file that only grows (one group per task or version) costs one sequential copy per change, and a
// crash or full disk at any point leaves the previous file whole. With `user_block_magic`, an
// existing file must be sound (check_user_block) and the copy's user block is rewritten for its new
// bytes; a file without a user block (older) stays without one.
void atomic_update_h5(const std::string& path, const std::function<void(H5::H5File&)>& update,
                      const std::string& user_block_magic = "");
// Writes `text` to `path` through an AtomicFile (a short write, e.g. on a full disk, is an error
// naming the file, and the old content stays).
void atomic_write_text(const std::string& path, const std::string& text);
// The same for a text given in pieces, written one after the other (a large report need not be
// joined into one string first).
void atomic_write_text(const std::string& path, const std::vector<std::string_view>& parts);

// ---- whole-file checksum in the HDF5 user block ----------------------------------------------
// A file written by atomic_write_h5(path, fill, magic) starts with a 512-byte HDF5 user block
// (H5Pset_userblock: the HDF5 superblock sits at byte 512, and HDF5 — h5py, h5dump, every tool —
// skips the block, so the file reads as usual). It holds a text header, then NUL bytes up to 512:
//     <magic>\n                           e.g. "strata-version-userblock"
//     size=<the file's length in bytes, decimal>\n
//     crc32=<zlib CRC-32 of bytes [512, size), 8 lowercase hex digits>\n
//     header_crc32=<CRC-32 of the header bytes before this line, 8 lowercase hex digits>\n
// check_user_block() verifies it with plain reads, before HDF5 parses a single byte: a cut or a
// flipped byte anywhere in the file becomes one clear error instead of whatever damaged HDF5
// metadata makes the library do (HDF5 1.10.8 over-reads on a damaged global heap). It catches
// accidental damage, not a crafted file (whoever forges the bytes can forge the CRC).
constexpr size_t kUserBlockSize = 512;

struct UserBlockCheck {
  bool present = false;  ///< the file carries a user block with `magic` (intact or damaged)
  std::string problem;   ///< "" = sound or absent; else one line: "file is truncated: ...", ...
};
// present = false, no problem: a missing file, or an HDF5 file whose superblock is at byte 0 (one
// written without a user block: older files), or any other file not starting with `magic` (left
// for open_file() to refuse). A file whose HDF5 superblock is at byte 512 but that lacks `magic`
// is a damaged user block (present, with a problem).
UserBlockCheck check_user_block(const std::string& path, const std::string& magic);
// Only the first bytes: does `path` start with `magic`? (Tells a file's kind without HDF5.)
bool starts_with_user_block(const std::string& path, const std::string& magic);
// Fills the user block of the closed HDF5 file at `path` (created with a 512-byte user block) with
// the header above for the file's current bytes. For writers that modify a copy in place before an
// AtomicFile commit; atomic_write_h5 calls it itself.
void write_user_block(const std::string& path, const std::string& magic);

// ---- checksums ----------------------------------------------------------------------------

// zlib CRC-32 of raw bytes, continuing from `crc` (start with 0).
uint32_t crc32_bytes(const void* data, size_t size, uint32_t crc = 0);
// CRC-32 of a tensor's bytes in C order (CPU contiguous copy). Covers values only, not dtype or
// shape: store those alongside if they matter.
uint32_t crc32_tensor(const torch::Tensor& t, uint32_t crc = 0);

}  // namespace strata::core
