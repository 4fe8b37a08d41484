// HDF5 attributes: scalar and list attributes of groups and datasets (declared in core/h5.h).
#include "core/h5.h"

#include <string>
#include <vector>

namespace strata::core {

// ---- attributes ---------------------------------------------------------------------------

namespace {
std::string obj_name(const H5::H5Object& obj) {
  try {
    return obj.getObjName();
  } catch (const H5::Exception&) {
    return "<object>";
  }
}
H5::Attribute replace_attr(H5::H5Object& obj, const std::string& name, const H5::DataType& type) {
  if (obj.attrExists(name)) obj.removeAttr(name);
  return obj.createAttribute(name, type, H5::DataSpace(H5S_SCALAR));
}
H5::Attribute open_attr(const H5::H5Object& obj, const std::string& name, const char* fn) {
  TORCH_CHECK(obj.attrExists(name), "strata::core::", fn, "(): missing attribute '", name, "' on '",
              obj_name(obj), "' in file '", file_of(obj), "'");
  H5::Attribute a = obj.openAttribute(name);
  TORCH_CHECK(a.getSpace().getSimpleExtentNpoints() == 1, "strata::core::", fn, "(): attribute '", name,
              "' on '", obj_name(obj), "' in file '", file_of(obj), "' is not a scalar");
  return a;
}
}  // namespace

void set_attr(H5::H5Object& obj, const std::string& name, const std::string& value) {
  h5_guard("set_attr", file_of(obj), obj_name(obj) + "@" + name, [&] {
    H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
    type.setCset(H5T_CSET_UTF8);
    H5::Attribute a = replace_attr(obj, name, type);
    const char* c = value.c_str();
    a.write(type, &c);
  });
}
void set_attr(H5::H5Object& obj, const std::string& name, const char* value) {
  set_attr(obj, name, std::string(value));
}
void set_attr(H5::H5Object& obj, const std::string& name, int64_t value) {
  h5_guard("set_attr", file_of(obj), obj_name(obj) + "@" + name, [&] {
    H5::Attribute a = replace_attr(obj, name, H5::PredType::STD_I64LE);
    a.write(H5::PredType::NATIVE_INT64, &value);
  });
}
void set_attr(H5::H5Object& obj, const std::string& name, int value) {
  set_attr(obj, name, static_cast<int64_t>(value));
}
void set_attr(H5::H5Object& obj, const std::string& name, double value) {
  h5_guard("set_attr", file_of(obj), obj_name(obj) + "@" + name, [&] {
    H5::Attribute a = replace_attr(obj, name, H5::PredType::IEEE_F64LE);
    a.write(H5::PredType::NATIVE_DOUBLE, &value);
  });
}

bool has_attr(const H5::H5Object& obj, const std::string& name) {
  bool out = false;
  h5_guard("has_attr", file_of(obj), obj_name(obj) + "@" + name, [&] { out = obj.attrExists(name); });
  return out;
}

std::string get_attr_string(const H5::H5Object& obj, const std::string& name) {
  std::string out;
  h5_guard("get_attr_string", file_of(obj), obj_name(obj) + "@" + name, [&] {
    H5::Attribute a = open_attr(obj, name, "get_attr_string");
    TORCH_CHECK(a.getTypeClass() == H5T_STRING, "strata::core::get_attr_string(): attribute '", name,
                "' on '", obj_name(obj), "' in file '", file_of(obj), "' is not a string");
    a.read(a.getStrType(), out);
    // Fixed-length strings may carry NUL padding.
    auto nul = out.find('\0');
    if (nul != std::string::npos) out.resize(nul);
  });
  return out;
}

int64_t get_attr_int(const H5::H5Object& obj, const std::string& name) {
  int64_t out = 0;
  h5_guard("get_attr_int", file_of(obj), obj_name(obj) + "@" + name, [&] {
    H5::Attribute a = open_attr(obj, name, "get_attr_int");
    TORCH_CHECK(a.getTypeClass() == H5T_INTEGER, "strata::core::get_attr_int(): attribute '", name, "' on '",
                obj_name(obj), "' in file '", file_of(obj), "' is not an integer");
    a.read(H5::PredType::NATIVE_INT64, &out);
  });
  return out;
}

double get_attr_double(const H5::H5Object& obj, const std::string& name) {
  double out = 0;
  h5_guard("get_attr_double", file_of(obj), obj_name(obj) + "@" + name, [&] {
    H5::Attribute a = open_attr(obj, name, "get_attr_double");
    auto cls = a.getTypeClass();
    TORCH_CHECK(cls == H5T_FLOAT || cls == H5T_INTEGER, "strata::core::get_attr_double(): attribute '", name,
                "' on '", obj_name(obj), "' in file '", file_of(obj), "' is not a number");
    a.read(H5::PredType::NATIVE_DOUBLE, &out);
  });
  return out;
}

std::vector<std::string> list_attrs(const H5::H5Object& obj) {
  std::vector<std::string> out;
  h5_guard("list_attrs", file_of(obj), obj_name(obj), [&] {
    int n = obj.getNumAttrs();
    for (int i = 0; i < n; ++i) out.push_back(obj.openAttribute(static_cast<unsigned>(i)).getName());
  });
  std::sort(out.begin(), out.end());
  return out;
}

namespace {
// Opens `name` on `obj` and checks it is a scalar or a 1-D array; returns its length.
H5::Attribute open_list_attr(const H5::H5Object& obj, const std::string& name, const char* fn, hssize_t* n) {
  TORCH_CHECK(obj.attrExists(name), "strata::core::", fn, "(): missing attribute '", name, "' on '",
              obj_name(obj), "' in file '", file_of(obj), "'");
  H5::Attribute a = obj.openAttribute(name);
  H5::DataSpace space = a.getSpace();
  TORCH_CHECK(space.getSimpleExtentNdims() <= 1, "strata::core::", fn, "(): attribute '", name, "' on '",
              obj_name(obj), "' in file '", file_of(obj), "' has rank ", space.getSimpleExtentNdims(),
              " (expected a scalar or a 1-D list)");
  *n = space.getSimpleExtentNpoints();
  return a;
}
}  // namespace

std::vector<double> get_attr_doubles(const H5::H5Object& obj, const std::string& name) {
  std::vector<double> out;
  h5_guard("get_attr_doubles", file_of(obj), obj_name(obj) + "@" + name, [&] {
    hssize_t n = 0;
    H5::Attribute a = open_list_attr(obj, name, "get_attr_doubles", &n);
    auto cls = a.getTypeClass();
    TORCH_CHECK(cls == H5T_FLOAT || cls == H5T_INTEGER, "strata::core::get_attr_doubles(): attribute '", name,
                "' on '", obj_name(obj), "' in file '", file_of(obj), "' is not numeric");
    out.resize(static_cast<size_t>(n));
    if (n > 0) a.read(H5::PredType::NATIVE_DOUBLE, out.data());
  });
  return out;
}

std::vector<std::string> get_attr_strings(const H5::H5Object& obj, const std::string& name) {
  std::vector<std::string> out;
  h5_guard("get_attr_strings", file_of(obj), obj_name(obj) + "@" + name, [&] {
    hssize_t n = 0;
    H5::Attribute a = open_list_attr(obj, name, "get_attr_strings", &n);
    TORCH_CHECK(a.getTypeClass() == H5T_STRING, "strata::core::get_attr_strings(): attribute '", name, "' on '",
                obj_name(obj), "' in file '", file_of(obj), "' is not a string or list of strings");
    if (n == 0) return;
    H5::StrType ft = a.getStrType();
    if (ft.isVariableStr()) {
      H5::StrType mem(H5::PredType::C_S1, H5T_VARIABLE);
      mem.setCset(ft.getCset());
      std::vector<char*> buf(static_cast<size_t>(n), nullptr);
      a.read(mem, buf.data());
      for (char* c : buf) out.emplace_back(c ? c : "");
      H5::DataSpace space = a.getSpace();
      H5Dvlen_reclaim(mem.getId(), space.getId(), H5P_DEFAULT, buf.data());
    } else {
      const size_t len = ft.getSize();
      std::vector<char> buf(static_cast<size_t>(n) * len);
      a.read(ft, buf.data());
      for (hssize_t i = 0; i < n; ++i) {
        std::string v(buf.data() + i * len, len);
        auto nul = v.find('\0');
        if (nul != std::string::npos) v.resize(nul);
        out.push_back(v);
      }
    }
  });
  return out;
}

}  // namespace strata::core
