// The DLPack adapter and the TensorFlow-style splitter (upstream test_get_tf_storage_size and
// the factory's packing over DLPack sizes).
#include <gtest/gtest.h>

#include "quicksave/dlpack.hpp"
#include "quicksave/error.hpp"
#include "quicksave/reader.hpp"
#include "quicksave/save.hpp"
#include "test_support.hpp"

namespace quicksave {
namespace {

struct OwnedDLTensor {
  OwnedDLTensor(std::vector<std::int64_t> dims, DLDataType type, DLDeviceType device = kDLCPU)
      : shape(std::move(dims)), bytes(1024) {
    tensor.data = bytes.data();
    tensor.device = DLDevice{device, 0};
    tensor.ndim = static_cast<int>(shape.size());
    tensor.dtype = type;
    tensor.shape = shape.data();
    tensor.strides = nullptr;
    tensor.byte_offset = 0;
  }
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;
  DLTensor tensor{};
};

constexpr DLDataType kF64{kDLFloat, 64, 1};
constexpr DLDataType kF16{kDLFloat, 16, 1};
constexpr DLDataType kBool{kDLPackBoolCode, 8, 1};

TEST(DLPack, TensorflowStorageSizes) {  // v0.36.2 test_get_tf_storage_size: [1..5] f64 → 40, f16 → 10
  OwnedDLTensor f64({5}, kF64), f16({5}, kF16), flags({10}, kBool);
  const auto split = split_tf_state_dict_into_shards({{"a", &f64.tensor}, {"b", &f16.tensor}, {"c", &flags.tensor}});
  EXPECT_EQ(split.total_size(), 40 + 10 + 2);  // 10 booleans count as ceil(10/8) = 2 bytes
  ASSERT_EQ(split.filename_to_tensors.size(), 1u);
  EXPECT_EQ(split.filename_to_tensors[0].first, "tf_model.h5");
  const auto real = split_dlpack_state_dict_into_shards({{"c", &flags.tensor}});
  EXPECT_EQ(real.total_size(), 10);
  EXPECT_EQ(real.filename_to_tensors[0].first, "model.safetensors");
}

TEST(DLPack, TensorflowSplitPacksLikeTheFactory) {
  OwnedDLTensor t6({6}, DLDataType{kDLUInt, 8, 1}), t10({10}, DLDataType{kDLUInt, 8, 1}), t30({30}, DLDataType{kDLUInt, 8, 1}),
      t2({2}, DLDataType{kDLUInt, 8, 1}), u2({2}, DLDataType{kDLUInt, 8, 1});
  const auto split = split_tf_state_dict_into_shards(
      {{"layer_1", &t6.tensor}, {"layer_2", &t10.tensor}, {"layer_3", &t30.tensor}, {"layer_4", &t2.tensor}, {"layer_5", &u2.tensor}},
      "tf_model{suffix}.h5", 10);
  ASSERT_EQ(split.filename_to_tensors.size(), 4u);
  EXPECT_EQ(split.filename_to_tensors[1].first, "tf_model-00002-of-00004.h5");
  EXPECT_EQ(split.filename_to_tensors[1].second, std::vector<std::string>{"layer_3"});
}

TEST(DLPack, TensorRefsCarryLayoutAndDevice) {
  OwnedDLTensor t({2, 3}, DLDataType{kDLBfloat, 16, 1}, kDLCUDA);
  std::int64_t strides[] = {1, 2};
  t.tensor.strides = strides;
  t.tensor.byte_offset = 16;
  const TensorRef ref = tensor_ref_from_dlpack("w", t.tensor);
  EXPECT_EQ(ref.dtype, DType::BF16);
  EXPECT_EQ(ref.device.str(), "cuda:0");
  EXPECT_FALSE(ref.is_contiguous());
  EXPECT_EQ(ref.data, t.bytes.data() + 16);
  EXPECT_EQ(ref.nbytes(), 12u);
}

TEST(DLPack, UnsupportedTypesAreRefused) {
  EXPECT_THROW(dtype_from_dlpack(DLDataType{kDLFloat, 32, 4}), Error);   // vector lanes
  EXPECT_THROW(dtype_from_dlpack(DLDataType{kDLComplex, 128, 1}), Error);  // no C128 in safetensors
  OwnedDLTensor c128({2}, DLDataType{kDLComplex, 128, 1});
  EXPECT_EQ(split_tf_state_dict_into_shards({{"c", &c128.tensor}}).total_size(), 32);  // TF sizes still work
  EXPECT_THROW(split_dlpack_state_dict_into_shards({{"c", &c128.tensor}}), Error);
  OwnedDLTensor opencl({2}, kF16, kDLOpenCL);
  EXPECT_THROW(tensor_ref_from_dlpack("x", opencl.tensor), Error);
}

TEST(DLPack, StridedTensorsSaveInCOrder) {
  // A 3x4 float32 matrix exported transposed (4x3, strides {1, 4}), as frameworks export views.
  std::vector<float> values(12);
  for (int i = 0; i < 12; ++i) values[i] = static_cast<float>(i);
  std::int64_t shape[] = {4, 3};
  std::int64_t strides[] = {1, 4};
  DLTensor t{};
  t.data = values.data();
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = 2;
  t.dtype = DLDataType{kDLFloat, 32, 1};
  t.shape = shape;
  t.strides = strides;
  testing::TempDir tmp;
  save_state_dict({tensor_ref_from_dlpack("w_t", t)}, tmp.path() / "c");
  const auto file = SafetensorsFile::open(tmp.path() / "c" / "model.safetensors");
  const auto bytes = file.data(*file.find("w_t"));
  ASSERT_EQ(bytes.size(), 48u);
  const float* saved = reinterpret_cast<const float*>(bytes.data());
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(saved[r * 3 + c], values[c * 4 + r]) << r << "," << c;
  }
}

}  // namespace
}  // namespace quicksave
