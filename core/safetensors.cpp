#include "core/safetensors.h"

#include "core/h5.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "strata::core safetensors I/O copies raw bytes and assumes a little-endian host"
#endif

namespace strata::core {

namespace {

using json = nlohmann::json;

struct DtypeName {
  const char* name;
  torch::Dtype dtype;
};

const DtypeName kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

// The reference writer's dtype order for laying out data (its dtype enum, descending).
int dtype_rank(torch::Dtype d) {
  static const torch::Dtype order[] = {torch::kInt64, torch::kFloat64, torch::kFloat32, torch::kInt32, torch::kBFloat16,
                                       torch::kFloat16, torch::kInt16, torch::kInt8, torch::kUInt8, torch::kBool};
  for (int i = 0; i < 10; ++i)
    if (order[i] == d) return i;
  return 10;
}

const char* kValidDtypes = "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL";

std::string where(const std::string& fn, const std::string& path) {
  return "strata::core::" + fn + "(): '" + path + "': ";
}

uint64_t read_u64_le(const unsigned char* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

// Header parse shared by the two readers. `data_size` receives the size of the data section.
std::vector<SafetensorsEntry> parse_header(const std::string& path, std::ifstream& in, uint64_t* data_size,
                                           std::map<std::string, std::string>* metadata) {
  const std::string w = where("read_safetensors", path);
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  TORCH_CHECK(!ec && std::filesystem::exists(status), w, "no such file");
  TORCH_CHECK(std::filesystem::is_regular_file(status), w, "not a regular file");
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  TORCH_CHECK(!ec, w, "cannot stat: ", ec.message());
  in.open(path, std::ios::binary);
  TORCH_CHECK(in, w, "cannot open: ", std::strerror(errno));
  TORCH_CHECK(file_size >= 8, w, "not a safetensors file (", file_size, " bytes, shorter than the 8-byte header length)");
  unsigned char lenbuf[8];
  in.read(reinterpret_cast<char*>(lenbuf), 8);
  TORCH_CHECK(in, w, "cannot read the header length");
  const uint64_t n = read_u64_le(lenbuf);
  TORCH_CHECK(n <= kSafetensorsMaxHeader, w, "header length ", n, " exceeds the ", kSafetensorsMaxHeader,
              "-byte limit (not a safetensors file, or corrupt)");
  TORCH_CHECK(n <= file_size - 8, w, "header length ", n, " runs past the end of the file (", file_size,
              " bytes): truncated or not a safetensors file");
  std::string text(static_cast<size_t>(n), '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  TORCH_CHECK(in, w, "cannot read the ", n, "-byte header");

  // nlohmann keeps the last of duplicate keys silently; a duplicate tensor name is an error.
  std::set<std::string> seen;
  std::string duplicate;
  json header;
  try {
    header = json::parse(text, [&](int depth, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
        const auto& k = parsed.get_ref<const std::string&>();
        if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
      }
      return true;
    });
  } catch (const json::exception& e) {
    TORCH_CHECK(false, w, "header is not valid JSON: ", e.what());
  }
  TORCH_CHECK(duplicate.empty(), w, "tensor '", duplicate, "' appears twice in the header");
  TORCH_CHECK(header.is_object(), w, "header is not a JSON object");

  std::vector<SafetensorsEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      TORCH_CHECK(v.is_object(), w, "__metadata__ is not an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        TORCH_CHECK(m.value().is_string(), w, "__metadata__ value '", m.key(), "' is not a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string wt = w + "tensor '" + name + "': ";
    TORCH_CHECK(v.is_object(), wt, "entry is not an object");
    for (auto f = v.begin(); f != v.end(); ++f)
      TORCH_CHECK(f.key() == "dtype" || f.key() == "shape" || f.key() == "data_offsets", wt, "unknown field '",
                  f.key(), "'");
    TORCH_CHECK(v.contains("dtype") && v["dtype"].is_string(), wt, "missing or non-string \"dtype\"");
    TORCH_CHECK(v.contains("shape") && v["shape"].is_array(), wt, "missing or non-array \"shape\"");
    TORCH_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2, wt,
                "\"data_offsets\" must be an array [begin, end]");
    SafetensorsEntry e;
    e.name = name;
    const std::string dt = v["dtype"].get<std::string>();
    bool known = false;
    for (const auto& d : kDtypes)
      if (dt == d.name) {
        e.dtype = d.dtype;
        known = true;
      }
    TORCH_CHECK(known, wt, "unknown dtype '", dt, "' (supported: ", kValidDtypes, ")");
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : v["shape"]) {
      TORCH_CHECK(d.is_number_unsigned(), wt, "shape ", v["shape"].dump(), " must hold non-negative integers");
      const uint64_t s = d.get<uint64_t>();
      TORCH_CHECK(s <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), wt, "shape ", v["shape"].dump(),
                  " overflows");
      overflow = overflow || __builtin_mul_overflow(numel, s, &numel);
      e.shape.push_back(static_cast<int64_t>(s));
    }
    const auto& offs = v["data_offsets"];
    TORCH_CHECK(offs[0].is_number_unsigned() && offs[1].is_number_unsigned(), wt, "data_offsets ", offs.dump(),
                " must be non-negative integers");
    e.begin = offs[0].get<uint64_t>();
    e.end = offs[1].get<uint64_t>();
    TORCH_CHECK(e.begin <= e.end, wt, "data_offsets ", offs.dump(), " begin > end");
    const uint64_t elem = c10::elementSize(e.dtype);
    uint64_t nbytes = 0;
    overflow = overflow || __builtin_mul_overflow(numel, elem, &nbytes);
    TORCH_CHECK(!overflow && nbytes <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), wt, "shape ",
                v["shape"].dump(), " overflows");
    TORCH_CHECK(nbytes == e.end - e.begin, wt, "data_offsets ", offs.dump(), " hold ", e.end - e.begin,
                " bytes but dtype ", dt, " x shape ", v["shape"].dump(), " needs ", nbytes);
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The byte ranges must tile the data section exactly: no overlap, no gap, nothing after.
  const uint64_t data = file_size - 8 - n;
  uint64_t pos = 0;
  for (const auto& e : entries) {
    const std::string wt = w + "tensor '" + e.name + "': ";
    TORCH_CHECK(e.end <= data, wt, "data_offsets [", e.begin, ", ", e.end, "] run past the end of the ", data,
                "-byte data section (truncated file?)");
    TORCH_CHECK(e.begin >= pos, wt, "data_offsets [", e.begin, ", ", e.end, "] overlap the previous tensor (which ends at ",
                pos, ")");
    TORCH_CHECK(e.begin == pos, wt, "data_offsets [", e.begin, ", ", e.end, "] leave a gap after byte ", pos,
                " (tensors must be stored back to back)");
    pos = e.end;
  }
  TORCH_CHECK(pos == data, w, data - pos, " bytes of trailing garbage after the last tensor (data section is ", data,
              " bytes, tensors end at ", pos, ")");
  *data_size = data;
  return entries;
}

}  // namespace

std::string safetensors_dtype_name(torch::Dtype dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  TORCH_CHECK(false, "strata::core::safetensors_dtype_name(): dtype ", dtype,
              " has no safetensors name (supported: ", kValidDtypes, ")");
}

std::vector<SafetensorsEntry> read_safetensors_header(const std::string& path,
                                                      std::map<std::string, std::string>* metadata) {
  std::ifstream in;
  uint64_t data = 0;
  return parse_header(path, in, &data, metadata);
}

SafetensorsContents read_safetensors(const std::string& path) {
  std::ifstream in;
  uint64_t data = 0;
  SafetensorsContents out;
  const auto entries = parse_header(path, in, &data, &out.metadata);
  // Entries tile the data section in order, so reading sequentially reads each byte once.
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    const auto nbytes = static_cast<std::streamsize>(e.end - e.begin);
    if (nbytes > 0) in.read(static_cast<char*>(t.data_ptr()), nbytes);
    TORCH_CHECK(in, where("read_safetensors", path), "tensor '", e.name, "': cannot read ", nbytes, " bytes");
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const NamedTensorList& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string w = where("write_safetensors", path);
  struct Item {
    std::string name;
    torch::Tensor t;
  };
  std::vector<Item> items;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK(!name.empty(), w, "empty tensor name");
    TORCH_CHECK(name != "__metadata__", w, "'__metadata__' is reserved and cannot name a tensor");
    TORCH_CHECK(names.insert(name).second, w, "tensor '", name, "' given twice");
    TORCH_CHECK(t.defined(), w, "tensor '", name, "' is undefined");
    TORCH_CHECK(!t.is_complex() && !t.is_quantized() && !t.is_sparse(), w, "tensor '", name, "': dtype ",
                t.scalar_type(), " has no safetensors name");
    (void)safetensors_dtype_name(t.scalar_type());
    items.push_back({name, t.detach().to(torch::kCPU).contiguous()});
  }
  // The reference writer's order: dtype rank (largest elements first, so every tensor starts at a
  // multiple of its element size), then name. The header lists __metadata__ first, then the
  // tensors in that same order, fields in the order dtype, shape, data_offsets: for files of one
  // dtype the bytes are the reference writer's exactly.
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    const auto ra = dtype_rank(a.t.scalar_type()), rb = dtype_rank(b.t.scalar_type());
    return ra != rb ? ra < rb : a.name < b.name;
  });
  std::string text = "{";
  if (!metadata.empty()) text += "\"__metadata__\":" + json(metadata).dump();
  uint64_t pos = 0;
  for (const auto& it : items) {
    const uint64_t nbytes = static_cast<uint64_t>(it.t.numel()) * it.t.element_size();
    if (text.size() > 1) text += ",";
    text += json(it.name).dump() + ":{\"dtype\":\"" + safetensors_dtype_name(it.t.scalar_type()) +
            "\",\"shape\":" + json(it.t.sizes().vec()).dump() + ",\"data_offsets\":[" + std::to_string(pos) + "," +
            std::to_string(pos + nbytes) + "]}";
    pos += nbytes;
  }
  text += "}";
  text.append((8 - text.size() % 8) % 8, ' ');
  TORCH_CHECK(text.size() <= kSafetensorsMaxHeader, w, "header of ", text.size(), " bytes exceeds the ",
              kSafetensorsMaxHeader, "-byte limit readers accept");

  AtomicFile af(path);
  {
    std::ofstream out(af.tmp_path(), std::ios::binary | std::ios::trunc);
    TORCH_CHECK(out, w, "cannot create '", af.tmp_path(), "': ", std::strerror(errno));
    unsigned char lenbuf[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) lenbuf[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    out.write(reinterpret_cast<const char*>(lenbuf), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& it : items) {
      const auto nbytes = static_cast<std::streamsize>(it.t.numel() * it.t.element_size());
      if (nbytes > 0) out.write(static_cast<const char*>(it.t.data_ptr()), nbytes);
    }
    out.close();
    TORCH_CHECK(out, w, "write to '", af.tmp_path(), "' failed (disk full?)");
  }
  af.commit();
}

bool looks_like_safetensors(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size < 10) return false;
  std::ifstream in(path, std::ios::binary);
  unsigned char b[9];
  if (!in.read(reinterpret_cast<char*>(b), 9)) return false;
  const uint64_t n = read_u64_le(b);
  return n >= 2 && n <= kSafetensorsMaxHeader && n <= size - 8 && b[8] == '{';
}

}  // namespace strata::core
