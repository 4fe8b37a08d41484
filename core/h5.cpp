#include "core/h5.h"

#include "core/fault.h"

#include <filesystem>
#include <fstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <csignal>

namespace strata::core {
namespace {

constexpr const char* kDtypeAttr = "strata_dtype";

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : path) {
    if (c == '/') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}

std::string join(const std::vector<std::string>& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    if (i) out += "/";
    out += parts[i];
  }
  return out;
}


// Innermost message of HDF5's current error stack (the most specific cause), or "".
herr_t walk_cb(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n == 0 && err && err->desc) *out = err->desc;
  return 0;
}
std::string hdf5_cause() {
  std::string out;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &out);
  return out;
}

[[noreturn]] void fail_h5(const std::string& what, const std::string& file, const std::string& object,
                          const H5::Exception& e) {
  std::string cause = hdf5_cause();
  TORCH_CHECK(false, "strata::core::", what, "(): HDF5 error on '", object, "' in file '", file,
              "': ", e.getDetailMsg(), cause.empty() ? "" : " (" + cause + ")");
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// (file type, memory type) for a tensor dtype.
std::pair<H5::PredType, H5::PredType> h5_types(torch::ScalarType dt) {
  switch (dt) {
    case torch::kFloat32: return {H5::PredType::IEEE_F32LE, H5::PredType::NATIVE_FLOAT};
    case torch::kFloat64: return {H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE};
    case torch::kInt64: return {H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64};
    case torch::kInt32: return {H5::PredType::STD_I32LE, H5::PredType::NATIVE_INT32};
    case torch::kUInt8:
    case torch::kBool: return {H5::PredType::STD_U8LE, H5::PredType::NATIVE_UINT8};
    default:
      TORCH_CHECK(false, "strata::core::write_tensor(): unsupported dtype ", dt,
                  " (supported: float32, float64, int64, int32, uint8, bool)");
  }
}

std::vector<hsize_t> auto_chunk(const std::vector<hsize_t>& dims, size_t elem_size) {
  constexpr size_t kMaxChunkBytes = 1 << 20;
  std::vector<hsize_t> chunk = dims;
  auto bytes = [&]() {
    size_t b = elem_size;
    for (auto d : chunk) b *= d;
    return b;
  };
  size_t axis = 0;
  while (bytes() > kMaxChunkBytes && axis < chunk.size()) {
    if (chunk[axis] > 1) {
      chunk[axis] = (chunk[axis] + 1) / 2;
    } else {
      ++axis;
    }
  }
  return chunk;
}

}  // namespace

std::string file_of(const H5::H5Location& loc) {
  try {
    return loc.getFileName();
  } catch (const H5::Exception&) {
    return "<unknown file>";
  }
}

void quiet_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5::Exception::dontPrint(); });
}

void h5_guard(const std::string& what, const std::string& file, const std::string& object,
              const std::function<void()>& fn) {
  quiet_hdf5();
  try {
    fn();
  } catch (const H5::Exception& e) {
    fail_h5(what, file, object, e);
  }
}

H5::H5File open_file(const std::string& path, FileMode mode, bool checksum_verified) {
  quiet_hdf5();
  if (mode == FileMode::kRead || mode == FileMode::kReadWrite) {
    TORCH_CHECK(file_exists(path), "strata::core::open_file(): '", path, "': no such file");
    htri_t is = H5Fis_hdf5(path.c_str());
    TORCH_CHECK(is > 0, "strata::core::open_file(): '", path, "' is not an HDF5 file");
    if (!checksum_verified) probe_h5_file(path, "strata::core::open_file()");
    try {
      return H5::H5File(path, mode == FileMode::kRead ? H5F_ACC_RDONLY : H5F_ACC_RDWR);
    } catch (const H5::Exception& e) {
      std::string cause = hdf5_cause();
      TORCH_CHECK(false, "strata::core::open_file(): '", path,
                  "' is corrupt or truncated (HDF5 cannot open it",
                  cause.empty() ? "" : ": " + cause, ")");
    }
  }
  if (mode == FileMode::kCreate)
    TORCH_CHECK(!file_exists(path), "strata::core::open_file(): '", path, "' already exists");
  try {
    return H5::H5File(path, mode == FileMode::kCreate ? H5F_ACC_EXCL : H5F_ACC_TRUNC);
  } catch (const H5::Exception& e) {
    std::string cause = hdf5_cause();
    TORCH_CHECK(false, "strata::core::open_file(): cannot create '", path, "'",
                cause.empty() ? "" : ": " + cause);
  }
}

bool exists(const H5::Group& loc, const std::string& path) {
  quiet_hdf5();
  auto parts = split_path(path);
  for (size_t i = 1; i <= parts.size(); ++i) {
    std::string p = join(parts, i);
    if (H5Lexists(loc.getId(), p.c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return true;
}

bool is_group(const H5::Group& loc, const std::string& path) {
  if (split_path(path).empty()) return true;
  if (!exists(loc, path)) return false;
  bool out = false;
  h5_guard("is_group", file_of(loc), path, [&] { out = loc.childObjType(path) == H5O_TYPE_GROUP; });
  return out;
}

H5::Group open_group(const H5::Group& loc, const std::string& path, bool create) {
  quiet_hdf5();
  auto parts = split_path(path);
  H5::Group g;
  h5_guard("open_group", file_of(loc), path, [&] {
    g = loc.openGroup(".");
    for (size_t i = 0; i < parts.size(); ++i) {
      if (H5Lexists(g.getId(), parts[i].c_str(), H5P_DEFAULT) > 0) {
        TORCH_CHECK(g.childObjType(parts[i]) == H5O_TYPE_GROUP, "strata::core::open_group(): '",
                    join(parts, i + 1), "' in file '", file_of(loc), "' is not a group");
        g = g.openGroup(parts[i]);
      } else {
        TORCH_CHECK(create, "strata::core::open_group(): no group '", join(parts, i + 1),
                    "' in file '", file_of(loc), "'");
        g = g.createGroup(parts[i]);
      }
    }
  });
  return g;
}

std::vector<std::string> list_children(const H5::Group& loc, const std::string& path) {
  H5::Group g = open_group(loc, path, false);
  std::vector<std::string> out;
  h5_guard("list_children", file_of(loc), path, [&] {
    hsize_t n = g.getNumObjs();
    for (hsize_t i = 0; i < n; ++i) out.push_back(g.getObjnameByIdx(i));
  });
  std::sort(out.begin(), out.end());
  return out;
}

H5::DataSet open_dataset(const H5::Group& loc, const std::string& path) {
  quiet_hdf5();
  TORCH_CHECK(exists(loc, path), "strata::core::open_dataset(): no dataset '", path, "' in file '",
              file_of(loc), "'");
  H5::DataSet ds;
  h5_guard("open_dataset", file_of(loc), path, [&] {
    TORCH_CHECK(loc.childObjType(path) == H5O_TYPE_DATASET, "strata::core::open_dataset(): '", path,
                "' in file '", file_of(loc), "' is not a dataset");
    ds = loc.openDataSet(path);
  });
  return ds;
}

void write_tensor(const H5::Group& loc, const std::string& path, const torch::Tensor& t,
                  const H5Options& options) {
  quiet_hdf5();
  TORCH_CHECK(t.defined(), "strata::core::write_tensor(): undefined tensor for '", path, "'");
  auto parts = split_path(path);
  TORCH_CHECK(!parts.empty(), "strata::core::write_tensor(): empty dataset path");
  const std::string file = file_of(loc);
  auto types = h5_types(t.scalar_type());
  torch::Tensor data = t.detach().to(torch::kCPU).contiguous();
  if (data.scalar_type() == torch::kBool) data = data.to(torch::kUInt8);

  H5::Group parent = open_group(loc, join(parts, parts.size() - 1), /*create=*/true);
  const std::string& name = parts.back();
  h5_guard("write_tensor", file, path, [&] {
    if (H5Lexists(parent.getId(), name.c_str(), H5P_DEFAULT) > 0) {
      TORCH_CHECK(options.overwrite(), "strata::core::write_tensor(): '", path, "' already exists in file '",
                  file, "' (set H5Options::overwrite to replace it)");
      parent.unlink(name);
    }
    std::vector<hsize_t> dims(data.sizes().begin(), data.sizes().end());
    H5::DataSpace space = dims.empty() ? H5::DataSpace(H5S_SCALAR)
                                       : H5::DataSpace(static_cast<int>(dims.size()), dims.data());
    H5::DSetCreatPropList dcpl;
    bool want_chunks = options.chunked() || options.deflate_level() > 0 || options.fletcher32();
    // Chunks (and so filters) need a non-scalar, non-empty dataset.
    if (want_chunks && !dims.empty() && data.numel() > 0) {
      std::vector<hsize_t> chunk;
      if (options.chunk_shape().empty()) {
        chunk = auto_chunk(dims, data.element_size());
      } else {
        TORCH_CHECK(options.chunk_shape().size() == dims.size(),
                    "strata::core::write_tensor(): chunk_shape rank ", options.chunk_shape().size(),
                    " != tensor rank ", dims.size(), " for '", path, "'");
        for (size_t i = 0; i < dims.size(); ++i) {
          auto c = options.chunk_shape()[i];
          TORCH_CHECK(c > 0, "strata::core::write_tensor(): chunk_shape entries must be > 0, got ", c);
          chunk.push_back(std::min<hsize_t>(static_cast<hsize_t>(c), dims[i]));
        }
      }
      dcpl.setChunk(static_cast<int>(chunk.size()), chunk.data());
      if (options.deflate_level() > 0) {
        TORCH_CHECK(options.deflate_level() <= 9, "strata::core::write_tensor(): deflate_level must be 0..9, got ",
                    options.deflate_level());
        if (options.shuffle()) dcpl.setShuffle();
        dcpl.setDeflate(static_cast<unsigned>(options.deflate_level()));
      }
      if (options.fletcher32()) dcpl.setFletcher32();
    }
    H5::DataSet ds = parent.createDataSet(name, types.first, space, dcpl);
    if (data.numel() > 0) ds.write(data.data_ptr(), types.second);
    if (t.scalar_type() == torch::kBool) set_attr(ds, kDtypeAttr, "bool");
  });
}

torch::Tensor read_tensor(const H5::Group& loc, const std::string& path) {
  H5::DataSet ds = open_dataset(loc, path);
  const std::string file = file_of(loc);
  torch::Tensor out;
  h5_guard("read_tensor", file, path, [&] {
    H5::DataSpace space = ds.getSpace();
    H5S_class_t sclass = space.getSimpleExtentType();
    TORCH_CHECK(sclass != H5S_NULL, "strata::core::read_tensor(): '", path, "' in file '", file,
                "' has a null dataspace (no data)");
    int nd = space.getSimpleExtentNdims();
    std::vector<hsize_t> dims(static_cast<size_t>(nd));
    if (nd > 0) space.getSimpleExtentDims(dims.data());
    std::vector<int64_t> shape(dims.begin(), dims.end());

    H5T_class_t tclass = ds.getTypeClass();
    torch::ScalarType st;
    hid_t mem_type = -1;
    bool close_mem_type = false;
    bool as_bool = false;
    if (tclass == H5T_FLOAT) {
      size_t size = ds.getFloatType().getSize();
      st = size <= 4 ? torch::kFloat32 : torch::kFloat64;
      mem_type = size <= 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE;
    } else if (tclass == H5T_INTEGER) {
      H5::IntType it = ds.getIntType();
      size_t size = it.getSize();
      bool is_signed = it.getSign() != H5T_SGN_NONE;
      if (!is_signed && size == 1) {
        st = torch::kUInt8;
        mem_type = H5T_NATIVE_UINT8;
        if (has_attr(ds, kDtypeAttr) && get_attr_string(ds, kDtypeAttr) == "bool") as_bool = true;
      } else if ((is_signed && size <= 4) || (!is_signed && size <= 2)) {
        st = torch::kInt32;
        mem_type = H5T_NATIVE_INT32;
      } else {
        st = torch::kInt64;
        mem_type = H5T_NATIVE_INT64;
      }
    } else if (tclass == H5T_ENUM) {
      // h5py stores numpy bool as a 1-byte enum {FALSE=0, TRUE=1}: read the raw byte values.
      H5::EnumType et = ds.getEnumType();
      TORCH_CHECK(et.getSize() == 1, "strata::core::read_tensor(): '", path, "' in file '", file,
                  "' is an enum of size ", et.getSize(), " (only 1-byte boolean enums are supported)");
      mem_type = H5Tget_native_type(et.getId(), H5T_DIR_ASCEND);
      close_mem_type = true;
      st = torch::kUInt8;
      as_bool = true;
    } else {
      TORCH_CHECK(false, "strata::core::read_tensor(): '", path, "' in file '", file,
                  "' has an unsupported HDF5 type class ", static_cast<int>(tclass));
    }
    out = torch::empty(shape, torch::TensorOptions().dtype(st));
    herr_t rc = 0;
    if (out.numel() > 0) rc = H5Dread(ds.getId(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data_ptr());
    if (close_mem_type) H5Tclose(mem_type);
    if (rc < 0) {
      std::string cause = hdf5_cause();
      TORCH_CHECK(false, "strata::core::read_tensor(): cannot read '", path, "' in file '", file,
                  "' (corrupt data or checksum mismatch", cause.empty() ? "" : ": " + cause, ")");
    }
    if (as_bool) out = out.to(torch::kBool);
  });
  return out;
}

DatasetInfo dataset_info(const H5::Group& loc, const std::string& path) {
  H5::DataSet ds = open_dataset(loc, path);
  const std::string file = file_of(loc);
  DatasetInfo info;
  h5_guard("dataset_info", file, path, [&] {
    H5::DataSpace space = ds.getSpace();
    if (space.getSimpleExtentType() != H5S_NULL) {
      const int nd = space.getSimpleExtentNdims();
      std::vector<hsize_t> dims(static_cast<size_t>(nd));
      if (nd > 0) space.getSimpleExtentDims(dims.data());
      info.shape.assign(dims.begin(), dims.end());
    }
    const H5T_class_t tclass = ds.getTypeClass();
    if (tclass == H5T_FLOAT) {
      const size_t size = ds.getFloatType().getSize();
      info.type_name = "float" + std::to_string(size * 8);
      info.dtype = size <= 4 ? torch::kFloat32 : torch::kFloat64;
    } else if (tclass == H5T_INTEGER) {
      H5::IntType it = ds.getIntType();
      const size_t size = it.getSize();
      const bool is_signed = it.getSign() != H5T_SGN_NONE;
      info.type_name = std::string(is_signed ? "int" : "uint") + std::to_string(size * 8);
      if (!is_signed && size == 1) {
        const bool as_bool = has_attr(ds, kDtypeAttr) && get_attr_string(ds, kDtypeAttr) == "bool";
        info.dtype = as_bool ? torch::kBool : torch::kUInt8;
        if (as_bool) info.type_name = "bool";
      } else {
        info.dtype = (is_signed && size <= 4) || (!is_signed && size <= 2) ? torch::kInt32 : torch::kInt64;
      }
    } else if (tclass == H5T_ENUM) {
      info.type_name = "enum";
      if (ds.getEnumType().getSize() == 1) {
        info.type_name = "bool";
        info.dtype = torch::kBool;
      }
    } else if (tclass == H5T_STRING) {
      info.type_name = "string";
    } else if (tclass == H5T_COMPOUND) {
      info.type_name = "compound";
    } else {
      info.type_name = "HDF5 type class " + std::to_string(static_cast<int>(tclass));
    }
  });
  return info;
}

// ---- crash-safe writes --------------------------------------------------------------------

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  TORCH_CHECK(!path_.empty(), "strata::core::AtomicFile(): empty path");
  tmp_path_ = path_ + ".tmp-" + std::to_string(::getpid());
  ::unlink(tmp_path_.c_str());  // stale leftover of an earlier crashed run with the same pid
}

AtomicFile::~AtomicFile() {
  if (!committed_) ::unlink(tmp_path_.c_str());
}

void AtomicFile::commit() {
  TORCH_CHECK(!committed_, "strata::core::AtomicFile::commit(): '", path_, "' already committed");
  const std::string fault = injected_fault(path_);
  if (fault == "kill") ::kill(::getpid(), SIGKILL);
  if (fault == "enospc") {
    struct stat st {};
    if (::stat(tmp_path_.c_str(), &st) == 0) (void)::truncate(tmp_path_.c_str(), st.st_size / 2);
    TORCH_CHECK(false, "strata::core::AtomicFile::commit(): writing '", path_,
                "' failed: No space left on device (injected by STRATA_FAULT); the previous file is unchanged");
  }
  int fd = ::open(tmp_path_.c_str(), O_RDONLY);
  TORCH_CHECK(fd >= 0, "strata::core::AtomicFile::commit(): cannot open '", tmp_path_, "': ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  TORCH_CHECK(rc == 0, "strata::core::AtomicFile::commit(): fsync of '", tmp_path_, "' failed: ", std::strerror(err));
  TORCH_CHECK(std::rename(tmp_path_.c_str(), path_.c_str()) == 0, "strata::core::AtomicFile::commit(): rename '",
              tmp_path_, "' -> '", path_, "' failed: ", std::strerror(errno));
  committed_ = true;
  // Make the rename itself durable.
  auto slash = path_.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void atomic_write_h5(const std::string& path, const std::function<void(H5::H5File&)>& fill,
                     const std::string& user_block_magic) {
  AtomicFile af(path);
  {
    auto create = [&] {
      if (user_block_magic.empty()) return open_file(af.tmp_path(), FileMode::kTruncate);
      quiet_hdf5();
      try {
        H5::FileCreatPropList fcpl;
        fcpl.setUserblock(kUserBlockSize);
        return H5::H5File(af.tmp_path(), H5F_ACC_TRUNC, fcpl);
      } catch (const H5::Exception& e) {
        fail_h5("atomic_write_h5", af.tmp_path(), "/", e);
      }
    };
    H5::H5File f = create();
    fill(f);
    h5_guard("atomic_write_h5", af.tmp_path(), "/", [&] {
      f.flush(H5F_SCOPE_GLOBAL);
      f.close();
    });
  }
  if (!user_block_magic.empty()) write_user_block(af.tmp_path(), user_block_magic);
  af.commit();
}

void atomic_update_h5(const std::string& path, const std::function<void(H5::H5File&)>& update,
                      const std::string& user_block_magic) {
  if (!std::filesystem::exists(path)) return atomic_write_h5(path, update, user_block_magic);
  bool user_block = false;
  if (!user_block_magic.empty()) {
    const UserBlockCheck block = check_user_block(path, user_block_magic);
    TORCH_CHECK(block.problem.empty(), "strata::core::atomic_update_h5(): '", path, "': ", block.problem);
    user_block = block.present;
  }
  AtomicFile af(path);
  std::error_code ec;
  std::filesystem::copy_file(path, af.tmp_path(), std::filesystem::copy_options::overwrite_existing, ec);
  TORCH_CHECK(!ec, "strata::core::atomic_update_h5(): cannot copy '", path, "' to '", af.tmp_path(), "': ",
              ec.message());
  {
    // A copy of a file whose checksum was just checked needs no probe.
    H5::H5File f = open_file(af.tmp_path(), FileMode::kReadWrite, user_block);
    update(f);
    h5_guard("atomic_update_h5", af.tmp_path(), "/", [&] {
      f.flush(H5F_SCOPE_GLOBAL);
      f.close();
    });
  }
  // HDF5 never touches the user block's bytes: the copy still describes the old file until this.
  if (user_block) write_user_block(af.tmp_path(), user_block_magic);
  af.commit();
}

void atomic_write_text(const std::string& path, const std::string& text) {
  atomic_write_text(path, std::vector<std::string_view>{text});
}

void atomic_write_text(const std::string& path, const std::vector<std::string_view>& parts) {
  AtomicFile af(path);
  {
    std::ofstream f(af.tmp_path(), std::ios::binary | std::ios::trunc);
    TORCH_CHECK(f, "strata::core::atomic_write_text(): cannot write '", af.tmp_path(), "': ", std::strerror(errno));
    for (const auto& part : parts) f.write(part.data(), static_cast<std::streamsize>(part.size()));
    f.flush();
    TORCH_CHECK(f, "strata::core::atomic_write_text(): writing '", af.tmp_path(), "' failed (disk full?)");
  }
  af.commit();
}

// ---- whole-file checksum in the HDF5 user block ----------------------------------------------

namespace {

constexpr char kHdf5Signature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};

// Reads up to `n` bytes at `offset` (fewer at the end of the file); -1 on an error.
ssize_t read_at(int fd, void* buf, size_t n, off_t offset) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, static_cast<char*>(buf) + got, n - got, offset + static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(got);
}

// CRC-32 of bytes [from, end of file); false on a read error.
bool crc32_file_from(int fd, off_t from, uint32_t& crc, int64_t& bytes) {
  std::vector<char> buf(1 << 20);
  crc = 0;
  bytes = 0;
  for (off_t at = from;;) {
    const ssize_t r = read_at(fd, buf.data(), buf.size(), at);
    if (r < 0) return false;
    if (r == 0) return true;
    crc = crc32_bytes(buf.data(), static_cast<size_t>(r), crc);
    at += r;
    bytes += r;
  }
}

std::string hex8(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

// The exact 512 bytes of the user block for (magic, size, crc).
std::string user_block_bytes(const std::string& magic, int64_t size, uint32_t crc) {
  std::string h = magic + "\nsize=" + std::to_string(size) + "\ncrc32=" + hex8(crc) + "\n";
  h += "header_crc32=" + hex8(crc32_bytes(h.data(), h.size())) + "\n";
  TORCH_CHECK(h.size() < kUserBlockSize, "strata::core::write_user_block(): magic '", magic, "' is too long");
  h.resize(kUserBlockSize, '\0');
  return h;
}

// "key=value\n" at `pos` of `text`; advances `pos`. False when the line is not there.
bool take_field(const std::string& text, size_t& pos, const std::string& key, std::string& value) {
  if (text.compare(pos, key.size() + 1, key + "=") != 0) return false;
  const size_t end = text.find('\n', pos);
  if (end == std::string::npos) return false;
  value = text.substr(pos + key.size() + 1, end - pos - key.size() - 1);
  pos = end + 1;
  return true;
}

bool parse_decimal(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 18) return false;
  out = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + (c - '0');
  }
  return true;
}

bool parse_hex8(const std::string& s, uint32_t& out) {
  if (s.size() != 8) return false;
  out = 0;
  for (char c : s) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    out = out * 16 + static_cast<uint32_t>(d);
  }
  return true;
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

bool starts_with_user_block(const std::string& path, const std::string& magic) {
  Fd f{::open(path.c_str(), O_RDONLY)};
  if (f.fd < 0) return false;
  std::string head(magic.size() + 1, '\0');
  return read_at(f.fd, head.data(), head.size(), 0) == static_cast<ssize_t>(head.size()) && head == magic + "\n";
}

UserBlockCheck check_user_block(const std::string& path, const std::string& magic) {
  UserBlockCheck out;
  Fd f{::open(path.c_str(), O_RDONLY)};
  if (f.fd < 0) return out;  // open_file() names a missing or unreadable file
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) return out;
  const int64_t size = st.st_size;
  std::string block(kUserBlockSize, '\0');
  const ssize_t got = read_at(f.fd, block.data(), block.size(), 0);
  if (got < 0) {
    out.present = true;
    out.problem = std::string("cannot read the file: ") + std::strerror(errno);
    return out;
  }
  char sig[8] = {};
  const bool sig_at_512 = read_at(f.fd, sig, sizeof sig, kUserBlockSize) == 8 && std::memcmp(sig, kHdf5Signature, 8) == 0;
  const bool has_magic = block.compare(0, magic.size() + 1, magic + "\n") == 0;
  if (!has_magic) {
    if (!sig_at_512 || block.compare(0, 8, std::string(kHdf5Signature, 8)) == 0) return out;  // no user block
    out.present = true;
    out.problem = "user block is damaged: it does not start with '" + magic + "' (the HDF5 data starts at byte " +
                  std::to_string(kUserBlockSize) + ")";
    return out;
  }
  out.present = true;
  // The header, as written: every field and the NUL padding (user_block_bytes() rebuilds it).
  size_t pos = magic.size() + 1;
  std::string size_s, crc_s, hcrc_s;
  int64_t want_size = 0;
  uint32_t want_crc = 0, want_hcrc = 0;
  const bool parsed = take_field(block, pos, "size", size_s) && parse_decimal(size_s, want_size) &&
                      take_field(block, pos, "crc32", crc_s) && parse_hex8(crc_s, want_crc);
  const size_t header_end = pos;
  const bool hparsed = parsed && take_field(block, pos, "header_crc32", hcrc_s) && parse_hex8(hcrc_s, want_hcrc);
  if (!hparsed) {
    out.problem = size < static_cast<int64_t>(kUserBlockSize)
                      ? "file is truncated: " + std::to_string(size) + " bytes, shorter than its " +
                            std::to_string(kUserBlockSize) + "-byte header"
                      : "user block is damaged: its header does not parse";
    return out;
  }
  if (crc32_bytes(block.data(), header_end) != want_hcrc || block != user_block_bytes(magic, want_size, want_crc)) {
    out.problem = "user block is damaged: header checksum mismatch";
    return out;
  }
  if (size != want_size) {
    out.problem = size < want_size ? "file is truncated: " + std::to_string(size) + " bytes, header says " +
                                         std::to_string(want_size)
                                   : "file is longer than written: " + std::to_string(size) + " bytes, header says " +
                                         std::to_string(want_size);
    return out;
  }
  uint32_t crc = 0;
  int64_t bytes = 0;
  if (!crc32_file_from(f.fd, kUserBlockSize, crc, bytes)) {
    out.problem = std::string("cannot read the file: ") + std::strerror(errno);
    return out;
  }
  if (bytes + static_cast<int64_t>(kUserBlockSize) != want_size) {
    out.problem = "file changed while it was read (" + std::to_string(bytes + kUserBlockSize) + " bytes, header says " +
                  std::to_string(want_size) + ")";
    return out;
  }
  if (crc != want_crc)
    out.problem = "checksum mismatch: bytes " + std::to_string(kUserBlockSize) + ".." + std::to_string(size) +
                  " give crc32 " + hex8(crc) + ", the header says " + hex8(want_crc) + " (the file is corrupt)";
  return out;
}

void write_user_block(const std::string& path, const std::string& magic) {
  TORCH_CHECK(!magic.empty() && magic.find('\n') == std::string::npos && magic.find('\0') == std::string::npos,
              "strata::core::write_user_block(): bad magic '", magic, "'");
  Fd f{::open(path.c_str(), O_RDWR)};
  TORCH_CHECK(f.fd >= 0, "strata::core::write_user_block(): cannot open '", path, "': ", std::strerror(errno));
  char sig[8] = {};
  TORCH_CHECK(read_at(f.fd, sig, sizeof sig, kUserBlockSize) == 8 && std::memcmp(sig, kHdf5Signature, 8) == 0,
              "strata::core::write_user_block(): '", path, "' has no ", kUserBlockSize,
              "-byte HDF5 user block (its HDF5 superblock is not at byte ", kUserBlockSize, ")");
  uint32_t crc = 0;
  int64_t bytes = 0;
  TORCH_CHECK(crc32_file_from(f.fd, kUserBlockSize, crc, bytes), "strata::core::write_user_block(): reading '", path,
              "' failed: ", std::strerror(errno));
  const std::string block = user_block_bytes(magic, bytes + static_cast<int64_t>(kUserBlockSize), crc);
  size_t done = 0;
  while (done < block.size()) {
    const ssize_t w = ::pwrite(f.fd, block.data() + done, block.size() - done, static_cast<off_t>(done));
    if (w < 0 && errno == EINTR) continue;
    TORCH_CHECK(w > 0, "strata::core::write_user_block(): writing '", path, "' failed: ", std::strerror(errno));
    done += static_cast<size_t>(w);
  }
}

// ---- checksums ----------------------------------------------------------------------------

uint32_t crc32_bytes(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  constexpr size_t kStep = 1u << 30;
  while (size > 0) {
    size_t n = std::min(size, kStep);
    c = ::crc32(c, p, static_cast<uInt>(n));
    p += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

uint32_t crc32_tensor(const torch::Tensor& t, uint32_t crc) {
  TORCH_CHECK(t.defined(), "strata::core::crc32_tensor(): undefined tensor");
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  return crc32_bytes(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size(), crc);
}

}  // namespace strata::core
