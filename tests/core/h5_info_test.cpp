// dataset_info (shape and dtype without reading) and list-valued attributes, as h5py writes them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cstdio>

#include "core/h5.h"

namespace sc = strata::core;

namespace {

std::string tmp_path(const std::string& name) {
  return ::testing::TempDir() + "strata_h5info_" + std::to_string(::getpid()) + "_" + name;
}

TEST(H5Info, ShapeAndDtypeWithoutReading) {
  const std::string path = tmp_path("info.h5");
  {
    H5::H5File f = sc::open_file(path, sc::FileMode::kTruncate);
    sc::write_tensor(f, "a/x", torch::zeros({3, 1, 2, 2}, torch::kUInt8));
    sc::write_tensor(f, "a/y", torch::zeros({3}, torch::kInt64));
    sc::write_tensor(f, "f", torch::zeros({2, 5}, torch::kFloat64));
    sc::write_tensor(f, "b", torch::zeros({4}, torch::kBool));
    hsize_t n = 6;
    f.createDataSet("u16", H5::PredType::STD_U16LE, H5::DataSpace(1, &n));
    f.createDataSet("s", H5::StrType(H5::PredType::C_S1, 8), H5::DataSpace(1, &n));
  }
  H5::H5File f = sc::open_file(path, sc::FileMode::kRead);
  auto x = sc::dataset_info(f, "a/x");
  EXPECT_EQ(x.shape, (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_EQ(x.dtype, torch::kUInt8);
  EXPECT_EQ(x.type_name, "uint8");
  EXPECT_EQ(sc::dataset_info(f, "a/y").type_name, "int64");
  EXPECT_EQ(sc::dataset_info(f, "f").dtype, torch::kFloat64);
  EXPECT_EQ(sc::dataset_info(f, "f").type_name, "float64");
  EXPECT_EQ(sc::dataset_info(f, "b").dtype, torch::kBool);
  auto u16 = sc::dataset_info(f, "u16");
  EXPECT_EQ(u16.dtype, torch::kInt32);  // what read_tensor returns for it
  EXPECT_EQ(u16.type_name, "uint16");
  EXPECT_EQ(sc::read_tensor(f, "u16").scalar_type(), *u16.dtype);
  auto s = sc::dataset_info(f, "s");
  EXPECT_FALSE(s.dtype.has_value());
  EXPECT_EQ(s.type_name, "string");
  EXPECT_THROW(sc::dataset_info(f, "missing"), c10::Error);
  f.close();
  std::remove(path.c_str());
}

TEST(H5Info, ListAttributes) {
  const std::string path = tmp_path("attrs.h5");
  {
    H5::H5File f = sc::open_file(path, sc::FileMode::kTruncate);
    hsize_t n = 3;
    std::vector<double> mean = {0.1, 0.2, 0.3};
    f.createAttribute("mean", H5::PredType::IEEE_F64LE, H5::DataSpace(1, &n))
        .write(H5::PredType::NATIVE_DOUBLE, mean.data());
    std::vector<int32_t> ints = {1, 2, 3};
    f.createAttribute("ints", H5::PredType::STD_I32LE, H5::DataSpace(1, &n)).write(H5::PredType::NATIVE_INT32, ints.data());
    H5::StrType vl(H5::PredType::C_S1, H5T_VARIABLE);
    std::vector<const char*> names = {"cat", "dog", "ship"};
    f.createAttribute("vlen", vl, H5::DataSpace(1, &n)).write(vl, names.data());
    H5::StrType fixed(H5::PredType::C_S1, 4);
    const char buf[] = "ab\0\0cdefg\0\0\0";
    f.createAttribute("fixed", fixed, H5::DataSpace(1, &n)).write(fixed, buf);
    sc::set_attr(f, "scalar", 2.5);
    sc::set_attr(f, "word", "hello");
    hsize_t d2[2] = {2, 2};
    std::vector<double> m(4, 0.0);
    f.createAttribute("matrix", H5::PredType::IEEE_F64LE, H5::DataSpace(2, d2)).write(H5::PredType::NATIVE_DOUBLE, m.data());
  }
  H5::H5File f = sc::open_file(path, sc::FileMode::kRead);
  EXPECT_EQ(sc::get_attr_doubles(f, "mean"), (std::vector<double>{0.1, 0.2, 0.3}));
  EXPECT_EQ(sc::get_attr_doubles(f, "ints"), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(sc::get_attr_doubles(f, "scalar"), (std::vector<double>{2.5}));
  EXPECT_EQ(sc::get_attr_strings(f, "vlen"), (std::vector<std::string>{"cat", "dog", "ship"}));
  EXPECT_EQ(sc::get_attr_strings(f, "fixed"), (std::vector<std::string>{"ab", "cdef", "g"}));
  EXPECT_EQ(sc::get_attr_strings(f, "word"), (std::vector<std::string>{"hello"}));
  EXPECT_THROW(sc::get_attr_doubles(f, "vlen"), c10::Error);
  EXPECT_THROW(sc::get_attr_strings(f, "mean"), c10::Error);
  EXPECT_THROW(sc::get_attr_doubles(f, "matrix"), c10::Error);
  EXPECT_THROW(sc::get_attr_doubles(f, "missing"), c10::Error);
  f.close();
  std::remove(path.c_str());
}

}  // namespace
