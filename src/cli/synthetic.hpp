// Synthetic state dicts with realistic names and shapes (GPT-2 XL, a LLaMA-7B-like decoder),
// scaled to a requested byte size, filled with deterministic pseudo-random weights: the same
// seed always gives the same bytes, and any byte range of any tensor can be regenerated alone
// (which is how `quicksave demo` checks a reloaded checkpoint without keeping a copy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "quicksave/dtype.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave::cli {

enum class Layout { gpt2_xl, llama_7b_like };

// "gpt2-xl" / "llama-7b-like"; parse_layout throws UsageError for anything else.
std::string_view layout_name(Layout layout);
Layout parse_layout(std::string_view name);
// "bf16", "f16", "f32" → DType; UsageError otherwise.
DType parse_weight_dtype(std::string_view name);

struct SyntheticTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::uint64_t nbytes = 0;
};

struct SyntheticModel {
  Layout layout{};
  DType dtype{};
  int layers = 0;
  std::int64_t hidden = 0;        // model width (n_embd / hidden_size)
  std::int64_t intermediate = 0;  // MLP width
  std::int64_t vocab = 0;
  std::vector<SyntheticTensor> tensors;  // in state-dict order
  std::uint64_t total_bytes = 0;
  // "llama-7b-like, bf16, 9 layers, hidden 4096".
  std::string description() const;
};

// The model of `layout` closest to `target_bytes`: the real widths with as many layers as fit
// (at least one); below one real layer the widths shrink too, so small sizes (tests) still get
// every kind of tensor.
SyntheticModel plan_synthetic_model(Layout layout, DType dtype, std::uint64_t target_bytes);

// Writes bytes [offset, offset + length) of tensor `tensor_index` for `seed`. Floating dtypes get
// finite values of weight-like magnitude (about 1e-3 to 1e-1, random sign and mantissa); other
// dtypes raw pseudo-random bits.
void fill_synthetic(std::uint64_t seed, std::size_t tensor_index, DType dtype, std::uint64_t offset, std::byte* dst,
                    std::size_t length);

// The tensors of a SyntheticModel in memory (page-aligned, one allocation per tensor like a real
// model's storages), generated on all cores.
class SyntheticStateDict {
 public:
  SyntheticStateDict(SyntheticModel model, std::uint64_t seed);
  SyntheticStateDict(const SyntheticStateDict&) = delete;
  SyntheticStateDict& operator=(const SyntheticStateDict&) = delete;

  const SyntheticModel& model() const { return model_; }
  std::uint64_t seed() const { return seed_; }
  std::size_t size() const { return model_.tensors.size(); }
  std::byte* data(std::size_t i) const { return buffers_[i].get(); }
  // CPU TensorRefs over the buffers (they stay owned by this object).
  std::vector<TensorRef> tensor_refs() const;

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept;
  };
  SyntheticModel model_;
  std::uint64_t seed_;
  std::vector<std::unique_ptr<std::byte[], Free>> buffers_;
};

}  // namespace quicksave::cli
