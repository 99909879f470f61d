// Synthetic state dicts: layouts, scaling and the position-addressable generator.
//
// The generator is splitmix64 used as a counter-based function: word w of a tensor is
// mix(key + (w + 1) * gamma), exactly the splitmix64 sequence seeded with the tensor's key, so
// any word can be computed without its predecessors and threads may fill disjoint ranges.
#include "cli/synthetic.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "cli/cli.hpp"

namespace quicksave::cli {
namespace {

constexpr std::uint64_t kGamma = 0x9E3779B97F4A7C15ull;

inline std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::uint64_t tensor_key(std::uint64_t seed, std::size_t tensor_index) {
  return mix(mix(seed ^ 0x5153415645ull) + static_cast<std::uint64_t>(tensor_index) * kGamma);
}

// One 64-bit word of random bits shaped into finite weights of magnitude 2^-10..2^-3.
inline std::uint64_t shape_word(std::uint64_t r, DType dtype) {
  switch (dtype) {
    case DType::BF16: {  // 4 lanes: sign | 8-bit exponent | 7-bit mantissa
      const std::uint64_t exponent = ((r >> 7) & 0x0007000700070007ull) + 0x0075007500750075ull;  // 117..124
      return (r & 0x807F807F807F807Full) | (exponent << 7);
    }
    case DType::F16: {  // 4 lanes: sign | 5-bit exponent | 10-bit mantissa
      const std::uint64_t exponent = ((r >> 10) & 0x0007000700070007ull) + 0x0005000500050005ull;  // 5..12
      return (r & 0x83FF83FF83FF83FFull) | (exponent << 10);
    }
    case DType::F32: {  // 2 lanes: sign | 8-bit exponent | 23-bit mantissa
      const std::uint64_t exponent = ((r >> 23) & 0x0000000700000007ull) + 0x0000007500000075ull;
      return (r & 0x807FFFFF807FFFFFull) | (exponent << 23);
    }
    case DType::F64: {  // 1 lane: sign | 11-bit exponent | 52-bit mantissa
      const std::uint64_t exponent = ((r >> 52) & 0x7ull) + 1013;  // 2^-10..2^-3
      return (r & 0x800FFFFFFFFFFFFFull) | (exponent << 52);
    }
    default:
      return r;
  }
}

struct Dims {
  std::int64_t hidden, intermediate, vocab, positions;
  int layers;
};

Dims real_dims(Layout layout) {
  return layout == Layout::gpt2_xl ? Dims{1600, 6400, 50257, 1024, 48} : Dims{4096, 11008, 32000, 0, 32};
}

std::vector<SyntheticTensor> tensors_of(Layout layout, const Dims& d, DType dtype) {
  std::vector<SyntheticTensor> out;
  const auto add = [&](std::string name, std::vector<std::int64_t> shape) {
    std::uint64_t numel = 1;
    for (auto s : shape) numel *= static_cast<std::uint64_t>(s);
    out.push_back({std::move(name), std::move(shape), numel * static_cast<std::uint64_t>(dtype_bits(dtype)) / 8});
  };
  const std::int64_t h = d.hidden;
  if (layout == Layout::gpt2_xl) {  // GPT2Model.state_dict() order (Conv1D weights are [in, out])
    add("wte.weight", {d.vocab, h});
    add("wpe.weight", {d.positions, h});
    for (int i = 0; i < d.layers; ++i) {
      const std::string p = "h." + std::to_string(i) + ".";
      add(p + "ln_1.weight", {h});
      add(p + "ln_1.bias", {h});
      add(p + "attn.c_attn.weight", {h, 3 * h});
      add(p + "attn.c_attn.bias", {3 * h});
      add(p + "attn.c_proj.weight", {h, h});
      add(p + "attn.c_proj.bias", {h});
      add(p + "ln_2.weight", {h});
      add(p + "ln_2.bias", {h});
      add(p + "mlp.c_fc.weight", {h, d.intermediate});
      add(p + "mlp.c_fc.bias", {d.intermediate});
      add(p + "mlp.c_proj.weight", {d.intermediate, h});
      add(p + "mlp.c_proj.bias", {h});
    }
    add("ln_f.weight", {h});
    add("ln_f.bias", {h});
  } else {  // LlamaForCausalLM.state_dict() order (Linear weights are [out, in])
    add("model.embed_tokens.weight", {d.vocab, h});
    for (int i = 0; i < d.layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      add(p + "self_attn.q_proj.weight", {h, h});
      add(p + "self_attn.k_proj.weight", {h, h});
      add(p + "self_attn.v_proj.weight", {h, h});
      add(p + "self_attn.o_proj.weight", {h, h});
      add(p + "mlp.gate_proj.weight", {d.intermediate, h});
      add(p + "mlp.up_proj.weight", {d.intermediate, h});
      add(p + "mlp.down_proj.weight", {h, d.intermediate});
      add(p + "input_layernorm.weight", {h});
      add(p + "post_attention_layernorm.weight", {h});
    }
    add("model.norm.weight", {h});
    add("lm_head.weight", {d.vocab, h});
  }
  return out;
}

std::uint64_t bytes_of(Layout layout, const Dims& d, DType dtype) {
  std::uint64_t total = 0;
  for (const auto& t : tensors_of(layout, d, dtype)) total += t.nbytes;
  return total;
}

// Every width times `f`, rounded to a multiple of 8 (at least 8); the MLP keeps its ratio to the
// hidden size (GPT-2: exactly 4x).
Dims scaled(const Dims& real, double f, int layers) {
  const auto s = [](double v) { return std::max<std::int64_t>(8, std::llround(v / 8) * 8); };
  const std::int64_t hidden = s(static_cast<double>(real.hidden) * f);
  const double mlp_ratio = static_cast<double>(real.intermediate) / static_cast<double>(real.hidden);
  return Dims{hidden, s(static_cast<double>(hidden) * mlp_ratio), s(static_cast<double>(real.vocab) * f),
              real.positions == 0 ? 0 : s(static_cast<double>(real.positions) * f), layers};
}

// Layers of width `d` that bring the total closest to `target` (at least one).
int layers_for(Layout layout, Dims d, DType dtype, std::uint64_t target) {
  d.layers = 0;
  const std::uint64_t fixed = bytes_of(layout, d, dtype);
  d.layers = 1;
  const std::uint64_t per_layer = bytes_of(layout, d, dtype) - fixed;
  if (target <= fixed) return 1;
  return std::max(1, static_cast<int>(std::llround(static_cast<double>(target - fixed) / static_cast<double>(per_layer))));
}

}  // namespace

std::string_view layout_name(Layout layout) { return layout == Layout::gpt2_xl ? "gpt2-xl" : "llama-7b-like"; }

Layout parse_layout(std::string_view name) {
  if (name == "gpt2-xl") return Layout::gpt2_xl;
  if (name == "llama-7b-like" || name == "llama") return Layout::llama_7b_like;
  throw UsageError("--layout must be gpt2-xl or llama-7b-like, got '" + std::string(name) + "'");
}

DType parse_weight_dtype(std::string_view name) {
  if (name == "bf16") return DType::BF16;
  if (name == "f16") return DType::F16;
  if (name == "f32") return DType::F32;
  throw UsageError("--dtype must be bf16, f16 or f32, got '" + std::string(name) + "'");
}

std::string SyntheticModel::description() const {
  std::string dtype_text(dtype_name(dtype));
  std::transform(dtype_text.begin(), dtype_text.end(), dtype_text.begin(), [](unsigned char c) { return std::tolower(c); });
  return std::string(layout_name(layout)) + ", " + dtype_text + ", " + std::to_string(layers) + " layers, hidden " +
         std::to_string(hidden);
}

SyntheticModel plan_synthetic_model(Layout layout, DType dtype, std::uint64_t target_bytes) {
  const Dims real = real_dims(layout);
  Dims d = real;
  d.layers = 1;
  if (bytes_of(layout, d, dtype) > target_bytes) {
    // Below one real layer: the largest width factor at which a 4-layer model still fits.
    const int small_layers = std::min(real.layers, 4);
    double lo = 0, hi = 1;
    for (int i = 0; i < 40; ++i) {
      const double mid = (lo + hi) / 2;
      (bytes_of(layout, scaled(real, mid, small_layers), dtype) <= target_bytes ? lo : hi) = mid;
    }
    d = scaled(real, lo, small_layers);
  }
  d.layers = layers_for(layout, d, dtype, target_bytes);
  SyntheticModel model{.layout = layout, .dtype = dtype, .layers = d.layers, .hidden = d.hidden,
                       .intermediate = d.intermediate, .vocab = d.vocab};
  model.tensors = tensors_of(layout, d, dtype);
  for (const auto& t : model.tensors) model.total_bytes += t.nbytes;
  return model;
}

void fill_synthetic(std::uint64_t seed, std::size_t tensor_index, DType dtype, std::uint64_t offset, std::byte* dst,
                    std::size_t length) {
  const std::uint64_t key = tensor_key(seed, tensor_index);
  std::uint64_t word = offset / 8;
  std::size_t skip = static_cast<std::size_t>(offset % 8);
  while (length > 0) {
    if (skip == 0 && length >= 8) {
      // The hot loop: whole words.
      const std::size_t words = length / 8;
      for (std::size_t i = 0; i < words; ++i) {
        const std::uint64_t v = shape_word(mix(key + (word + i + 1) * kGamma), dtype);
        std::memcpy(dst + 8 * i, &v, 8);
      }
      word += words;
      dst += 8 * words;
      length -= 8 * words;
      continue;
    }
    // A partial word at either end.
    const std::uint64_t value = shape_word(mix(key + (word + 1) * kGamma), dtype);
    const std::size_t take = std::min<std::size_t>(8 - skip, length);
    std::memcpy(dst, reinterpret_cast<const std::byte*>(&value) + skip, take);
    dst += take;
    length -= take;
    skip = 0;
    ++word;
  }
}

void SyntheticStateDict::Free::operator()(std::byte* p) const noexcept { std::free(p); }

SyntheticStateDict::SyntheticStateDict(SyntheticModel model, std::uint64_t seed) : model_(std::move(model)), seed_(seed) {
  constexpr std::size_t kPage = 4096;
  for (const auto& t : model_.tensors) {
    const std::size_t bytes = std::max<std::size_t>(kPage, (t.nbytes + kPage - 1) / kPage * kPage);
    auto* p = static_cast<std::byte*>(std::aligned_alloc(kPage, bytes));
    if (p == nullptr) throw Error(ErrorCode::resource_exhausted, "cannot allocate " + std::to_string(bytes) + " bytes for " + t.name);
    buffers_.emplace_back(p);
  }
  // Work items of at most 32 MiB so that both big and small tensors spread over all cores.
  struct Piece {
    std::size_t tensor;
    std::uint64_t offset, length;
  };
  std::vector<Piece> pieces;
  constexpr std::uint64_t kPiece = 32ull << 20;
  for (std::size_t i = 0; i < model_.tensors.size(); ++i) {
    for (std::uint64_t o = 0; o < model_.tensors[i].nbytes; o += kPiece) {
      pieces.push_back({i, o, std::min(kPiece, model_.tensors[i].nbytes - o)});
    }
  }
  std::atomic<std::size_t> next{0};
  const auto work = [&] {
    for (std::size_t k; (k = next.fetch_add(1)) < pieces.size();) {
      const Piece& p = pieces[k];
      fill_synthetic(seed_, p.tensor, model_.dtype, p.offset, buffers_[p.tensor].get() + p.offset, p.length);
    }
  };
  std::vector<std::thread> threads;
  const unsigned n = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 1; i < n; ++i) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
}

std::vector<TensorRef> SyntheticStateDict::tensor_refs() const {
  std::vector<TensorRef> refs;
  refs.reserve(model_.tensors.size());
  for (std::size_t i = 0; i < model_.tensors.size(); ++i) {
    const auto& t = model_.tensors[i];
    TensorRef r{.name = t.name, .dtype = model_.dtype, .shape = t.shape};
    r.data = r.storage_base = buffers_[i].get();
    r.storage_nbytes = t.nbytes;
    refs.push_back(std::move(r));
  }
  return refs;
}

}  // namespace quicksave::cli
