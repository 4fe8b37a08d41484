// The safetensors file format (Hugging Face), read and written without the Python package:
//
//   [8 bytes]  N, little-endian uint64: length of the header
//   [N bytes]  UTF-8 JSON object: {"<name>": {"dtype": "F32", "shape": [d0, d1, ...],
//                                             "data_offsets": [begin, end]}, ...,
//                                  "__metadata__": {"<key>": "<string>", ...}}   (optional)
//   [rest]     raw little-endian C-order tensor bytes; [begin, end) is relative to the start of
//              this data section
//
// dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL <-> torch float64 float32 float16 bfloat16
// int64 int32 int16 int8 uint8 bool. Tensors keep the dtype stored in the file (an F16 file reads
// as float16 tensors): callers that load into a float32 model convert on copy, and nothing is
// lost or silently widened on a read-then-write round trip.
//
// Reading is strict, as the reference implementation is, because a checkpoint is untrusted input:
// every problem is one c10::Error naming the file (and the tensor, when there is one), never a
// crash or an allocation larger than the file. Refused: a header length above 100 MB or past the
// end of the file, a header that is not a JSON object, an entry that is not exactly
// {dtype, shape, data_offsets}, an unknown dtype, a negative / non-integer / overflowing shape,
// begin > end, a byte size other than element size x prod(shape), tensors whose byte ranges do not
// tile the data section exactly (overlaps, gaps, ranges past its end, or bytes after the last
// tensor), duplicate names, and non-string metadata values.
//
// Writing follows the reference writer (byte for byte when all tensors share one dtype): tensors
// sorted by name within each dtype, dtypes with larger elements first (I64 F64 F32 I32 BF16 F16 I16
// I8 U8 BOOL) so every tensor starts at a multiple of its element size; the header lists
// "__metadata__" first, then the tensors in that order; it is padded with spaces to a multiple of
// 8 bytes so the data section starts 8-byte aligned; the file is replaced atomically
// (core::AtomicFile: nothing half-written on failure).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace strata::core {

using NamedTensorList = std::vector<std::pair<std::string, torch::Tensor>>;

struct SafetensorsContents {
  /// Tensors in the order of their data in the file (ascending offsets). CPU, contiguous.
  NamedTensorList tensors;
  /// The "__metadata__" object (empty when absent).
  std::map<std::string, std::string> metadata;
};

/// One header entry, as read_safetensors_header() returns it.
struct SafetensorsEntry {
  std::string name;
  torch::Dtype dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  ///< byte range relative to the data section
};

/// The largest header the reader accepts (the reference implementation's limit).
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

/// Parses and validates the header only (no tensor data is read): entries sorted by offset,
/// plus the metadata. Throws on any malformed header (see above).
std::vector<SafetensorsEntry> read_safetensors_header(const std::string& path,
                                                      std::map<std::string, std::string>* metadata = nullptr);

/// Reads every tensor of a safetensors file. Throws on any malformed file (see above).
SafetensorsContents read_safetensors(const std::string& path);

/// Writes `tensors` (any device/dtype of the list above; copied to CPU contiguous) and `metadata`
/// to `path`, replacing it atomically. Names must be non-empty, unique and not "__metadata__".
void write_safetensors(const std::string& path, const NamedTensorList& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// "F32" for torch::kFloat32, ...; throws for a dtype the format has no name for.
std::string safetensors_dtype_name(torch::Dtype dtype);

/// True when the file starts like a safetensors file (an 8-byte length followed by '{'); cheap,
/// for telling weight formats apart. Never throws.
bool looks_like_safetensors(const std::string& path);

}  // namespace strata::core
