// The probe of an HDF5 file that carries no Strata checksum (declared in core/h5.h): HDF5 walks
// the file's metadata in a child process first, so that a damaged or crafted file that crashes or
// hangs the library (HDF5 1.10.8: H5HG_read trusts a damaged global heap) is refused with one line.
#include "core/h5.h"
#include "core/isolate.h"

#include <hdf5.h>

#include <atomic>
#include <cstdlib>
#include <vector>

namespace strata::core {
namespace {

std::atomic<double> probe_timeout{30.0};

// Bounds of the walk: a file with more (hard-link cycles, millions of objects) is walked in part,
// and its rest is read in-process as before.
constexpr int kMaxDepth = 64;
constexpr int64_t kMaxObjects = 200000;
// Largest attribute or variable-length dataset the probe reads (bytes of its memory type).
constexpr size_t kMaxProbeBytes = size_t(64) << 20;

struct Walk {
  int64_t objects = 0;
};

// Reads an attribute (every type) or a dataset holding variable-length data, strings or
// references (the global heap: where 1.10.8 over-reads). Numeric datasets are not read: their bytes
// are the payload, which the readers check themselves, and they can be gigabytes.
void read_values(hid_t obj, bool attribute) {
  const hid_t ftype = attribute ? H5Aget_type(obj) : H5Dget_type(obj);
  const hid_t space = attribute ? H5Aget_space(obj) : H5Dget_space(obj);
  if (ftype >= 0 && space >= 0) {
    const bool heap = H5Tdetect_class(ftype, H5T_VLEN) > 0 || H5Tdetect_class(ftype, H5T_STRING) > 0 ||
                      H5Tdetect_class(ftype, H5T_REFERENCE) > 0;
    const hssize_t n = H5Sget_simple_extent_npoints(space);
    if ((attribute || heap) && n > 0) {
      const hid_t mtype = H5Tget_native_type(ftype, H5T_DIR_DEFAULT);
      const size_t size = mtype >= 0 ? H5Tget_size(mtype) : 0;
      if (size > 0 && static_cast<size_t>(n) <= kMaxProbeBytes / size) {
        std::vector<unsigned char> buf(static_cast<size_t>(n) * size, 0);
        const herr_t rc = attribute ? H5Aread(obj, mtype, buf.data())
                                    : H5Dread(obj, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
        if (rc >= 0 && (H5Tdetect_class(mtype, H5T_VLEN) > 0 || H5Tis_variable_str(mtype) > 0))
          H5Dvlen_reclaim(mtype, space, H5P_DEFAULT, buf.data());
      }
      if (mtype >= 0) H5Tclose(mtype);
    }
  }
  if (space >= 0) H5Sclose(space);
  if (ftype >= 0) H5Tclose(ftype);
}

herr_t visit_attribute(hid_t loc, const char* name, const H5A_info_t*, void*) {
  const hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a >= 0) {
    read_values(a, true);
    H5Aclose(a);
  }
  return 0;  // go on with the next one whatever happened
}

void walk_object(hid_t obj, int depth, Walk& w) {
  if (++w.objects > kMaxObjects) return;
  hsize_t idx = 0;
  H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, visit_attribute, nullptr);
  const H5I_type_t type = H5Iget_type(obj);
  if (type == H5I_DATASET) read_values(obj, false);
  if (type != H5I_GROUP || depth >= kMaxDepth) return;
  H5G_info_t info;
  if (H5Gget_info(obj, &info) < 0) return;
  for (hsize_t i = 0; i < info.nlinks && w.objects <= kMaxObjects; ++i) {
    // Soft and external links do not open (nothing of this file behind them): skipped.
    const hid_t child = H5Oopen_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_NATIVE, i, H5P_DEFAULT);
    if (child < 0) continue;
    walk_object(child, depth + 1, w);
    H5Oclose(child);
  }
}

void walk_file(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return;  // the in-process open names the problem
  const hid_t root = H5Gopen2(f, "/", H5P_DEFAULT);
  if (root >= 0) {
    Walk w;
    walk_object(root, 0, w);
    H5Gclose(root);
  }
  H5Fclose(f);
}

}  // namespace

void set_h5_probe_timeout(double seconds) {
  TORCH_CHECK(seconds > 0, "strata::core::set_h5_probe_timeout(): seconds must be > 0, got ", seconds);
  probe_timeout = seconds;
}

void probe_h5_file(const std::string& path, const std::string& who) {
  const double timeout = probe_timeout.load();
  const IsolatedResult r = run_isolated([&] { walk_file(path); }, timeout);
  // fork() failed (no memory for the page tables, a process limit): read as before, unprobed.
  if (r.outcome == IsolatedResult::Outcome::kNotRun || r.outcome == IsolatedResult::Outcome::kFinished) return;
  const char* tail = " in a probe process; the file is damaged (or crafted) and carries no Strata checksum to say where";
  TORCH_CHECK(r.outcome != IsolatedResult::Outcome::kTimedOut, who, ": '", path,
              "': HDF5 did not finish reading its metadata within ", timeout, " s", tail);
  TORCH_CHECK(false, who, ": '", path, "': HDF5 ", r.describe(), " reading its metadata", tail);
}

}  // namespace strata::core
