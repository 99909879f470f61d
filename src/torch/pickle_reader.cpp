// Reads the zip archives torch.save writes (PyTorch >= 1.6's default format) as a state dict,
// with a small pickle machine of our own. LibTorch 1.13's C++ unpickler cannot rebuild
// collections.OrderedDict (what torch.save(model.state_dict()) holds) nor single-entry dicts
// (SETITEM), so it fails on most .bin checkpoints that Python writes.
//
// Only what a state dict of tensors needs is understood: dicts, lists, tuples, scalars, strings,
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the typed
// storage classes. Any other global is refused (as torch.load(weights_only=True) does), so a
// checkpoint cannot run code. Storages shared between tensors stay shared.
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>
#include <memory>
#include <variant>

#include "quicksave/error.hpp"
#include "torch/pickle_reader.hpp"

namespace quicksave::torch_pickle {
namespace {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Global {
  std::string module, name;
};
struct StorageRef {
  at::ScalarType dtype;
  std::string key;
  std::string location;
  std::int64_t numel;
};
struct Dict {
  std::vector<std::pair<ValuePtr, ValuePtr>> items;
};
struct List {
  std::vector<ValuePtr> items;
};
struct Tuple {
  std::vector<ValuePtr> items;
};
struct Mark {};
struct None {};

struct Value {
  std::variant<None, Mark, bool, std::int64_t, double, std::string, Global, StorageRef, Dict, List, Tuple, at::Tensor> v;
};

ValuePtr make(auto x) {
  auto p = std::make_shared<Value>();
  p->v = std::move(x);
  return p;
}

Error corrupt(const std::string& path, const std::string& why) {
  return Error(ErrorCode::corrupt, "cannot read the pickle checkpoint " + path + ": " + why);
}

at::ScalarType storage_dtype(const std::string& name) {
  static const std::map<std::string, at::ScalarType> table{
      {"FloatStorage", at::kFloat},      {"DoubleStorage", at::kDouble},        {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong},           {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},      {"CharStorage", at::kChar},            {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool},        {"ComplexFloatStorage", at::kComplexFloat}, {"ComplexDoubleStorage", at::kComplexDouble}};
  const auto it = table.find(name);
  if (it == table.end()) throw std::invalid_argument(name);
  return it->second;
}

class Machine {
 public:
  Machine(const std::string& path, const char* data, std::size_t size, caffe2::serialize::PyTorchStreamReader& archive)
      : path_(path), data_(data), size_(size), archive_(archive) {}

  ValuePtr run() {
    while (true) {
      const auto op = static_cast<unsigned char>(byte());
      switch (op) {
        case 0x80: byte(); break;                                   // PROTO
        case 0x95: take(8); break;                                  // FRAME
        case '.': return pop();                                     // STOP
        case '(': stack_.push_back(make(Mark{})); break;            // MARK
        case 'N': stack_.push_back(make(None{})); break;
        case 0x88: stack_.push_back(make(true)); break;             // NEWTRUE
        case 0x89: stack_.push_back(make(false)); break;            // NEWFALSE
        case '}': stack_.push_back(make(Dict{})); break;            // EMPTY_DICT
        case ']': stack_.push_back(make(List{})); break;            // EMPTY_LIST
        case ')': stack_.push_back(make(Tuple{})); break;           // EMPTY_TUPLE
        case 'K': stack_.push_back(make(static_cast<std::int64_t>(static_cast<unsigned char>(byte())))); break;  // BININT1
        case 'M': stack_.push_back(make(static_cast<std::int64_t>(le<std::uint16_t>()))); break;  // BININT2
        case 'J': stack_.push_back(make(static_cast<std::int64_t>(le<std::int32_t>()))); break;   // BININT
        case 0x8a: stack_.push_back(make(long1())); break;          // LONG1
        case 'G': stack_.push_back(make(binfloat())); break;        // BINFLOAT
        case 'X': stack_.push_back(make(std::string(take(le<std::uint32_t>())))); break;  // BINUNICODE
        case 0x8c: stack_.push_back(make(std::string(take(static_cast<unsigned char>(byte()))))); break;  // SHORT_BINUNICODE
        case 'T': stack_.push_back(make(std::string(take(le<std::uint32_t>())))); break;  // BINSTRING
        case 'U': stack_.push_back(make(std::string(take(static_cast<unsigned char>(byte()))))); break;  // SHORT_BINSTRING
        case 'c': {                                                 // GLOBAL
          std::string module = line(), name = line();
          stack_.push_back(make(Global{std::move(module), std::move(name)}));
          break;
        }
        case 'q': memo_[static_cast<unsigned char>(byte())] = top(); break;  // BINPUT
        case 'r': memo_[le<std::uint32_t>()] = top(); break;                 // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;                        // MEMOIZE
        case 'h': stack_.push_back(memo(static_cast<unsigned char>(byte()))); break;  // BINGET
        case 'j': stack_.push_back(memo(le<std::uint32_t>())); break;                // LONG_BINGET
        case 't': stack_.push_back(make(Tuple{pop_to_mark()})); break;               // TUPLE
        case 0x85: stack_.push_back(make(Tuple{{pop()}})); break;                    // TUPLE1
        case 0x86: {                                                                 // TUPLE2
          auto b = pop(), a = pop();
          stack_.push_back(make(Tuple{{a, b}}));
          break;
        }
        case 0x87: {                                                                 // TUPLE3
          auto c = pop(), b = pop(), a = pop();
          stack_.push_back(make(Tuple{{a, b, c}}));
          break;
        }
        case 's': {                                                                  // SETITEM
          auto value = pop(), key = pop();
          as<Dict>(top(), "SETITEM").items.emplace_back(key, value);
          break;
        }
        case 'u': {                                                                  // SETITEMS
          auto items = pop_to_mark();
          auto& dict = as<Dict>(top(), "SETITEMS");
          for (std::size_t i = 0; i + 1 < items.size(); i += 2) dict.items.emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'a': {                                                                  // APPEND
          auto value = pop();
          as<List>(top(), "APPEND").items.push_back(value);
          break;
        }
        case 'e': {                                                                  // APPENDS
          auto items = pop_to_mark();
          auto& list = as<List>(top(), "APPENDS");
          list.items.insert(list.items.end(), items.begin(), items.end());
          break;
        }
        case 'Q': stack_.push_back(persistent_load(pop())); break;                   // BINPERSID
        case 'R': {                                                                  // REDUCE
          auto args = pop(), callable = pop();
          stack_.push_back(reduce(callable, args));
          break;
        }
        case 'b': pop(); break;  // BUILD: attributes (e.g. OrderedDict._metadata) are not needed
        default:
          throw corrupt(path_, "unsupported pickle opcode 0x" + hex(op) + " at byte " + std::to_string(at_ - 1));
      }
    }
  }

 private:
  template <class T>
  T& as(const ValuePtr& v, const char* op) {
    if (auto* p = std::get_if<T>(&v->v)) return *p;
    throw corrupt(path_, std::string(op) + " on an object of the wrong type");
  }

  static std::string hex(unsigned v) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%02x", v);
    return buf;
  }

  char byte() {
    if (at_ >= size_) throw corrupt(path_, "truncated pickle");
    return data_[at_++];
  }
  std::string_view take(std::size_t n) {
    if (at_ + n > size_) throw corrupt(path_, "truncated pickle");
    std::string_view s(data_ + at_, n);
    at_ += n;
    return s;
  }
  template <class T>
  T le() {
    T v;
    std::memcpy(&v, take(sizeof(T)).data(), sizeof(T));
    return v;
  }
  std::int64_t long1() {
    const auto n = static_cast<unsigned char>(byte());
    if (n > 8) throw corrupt(path_, "integer wider than 64 bits");
    const auto bytes = take(n);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
    if (n > 0 && n < 8 && (static_cast<unsigned char>(bytes[n - 1]) & 0x80)) v |= ~0ull << (8 * n);  // sign-extend
    return static_cast<std::int64_t>(v);
  }
  double binfloat() {
    const auto bytes = take(8);
    std::uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<unsigned char>(bytes[i]);  // big-endian
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  std::string line() {
    std::string s;
    for (char c = byte(); c != '\n'; c = byte()) s += c;
    return s;
  }
  ValuePtr pop() {
    if (stack_.empty()) throw corrupt(path_, "pickle stack underflow");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  ValuePtr top() {
    if (stack_.empty()) throw corrupt(path_, "pickle stack underflow");
    return stack_.back();
  }
  ValuePtr memo(std::size_t key) {
    const auto it = memo_.find(key);
    if (it == memo_.end()) throw corrupt(path_, "pickle memo entry " + std::to_string(key) + " is missing");
    return it->second;
  }
  std::vector<ValuePtr> pop_to_mark() {
    std::vector<ValuePtr> items;
    while (true) {
      auto v = pop();
      if (std::holds_alternative<Mark>(v->v)) break;
      items.push_back(std::move(v));
    }
    return {items.rbegin(), items.rend()};
  }

  // ('storage', <storage class>, key, location, numel): a storage record of the archive.
  ValuePtr persistent_load(const ValuePtr& pid) {
    const auto& t = as<Tuple>(pid, "persistent id").items;
    if (t.size() != 5 || !std::holds_alternative<std::string>(t[0]->v) || std::get<std::string>(t[0]->v) != "storage") {
      throw corrupt(path_, "unsupported persistent id");
    }
    const auto& type = as<Global>(t[1], "storage type");
    StorageRef ref;
    try {
      ref.dtype = storage_dtype(type.name);
    } catch (const std::invalid_argument&) {
      throw corrupt(path_, "unsupported storage type " + type.module + "." + type.name);
    }
    ref.key = std::get<std::string>(t[2]->v);
    ref.location = std::get<std::string>(t[3]->v);
    ref.numel = std::get<std::int64_t>(t[4]->v);
    return make(ref);
  }

  c10::Storage storage(const StorageRef& ref) {
    if (auto it = storages_.find(ref.key); it != storages_.end()) return it->second;
    auto [data, size] = archive_.getRecord("data/" + ref.key);
    const std::size_t nbytes = static_cast<std::size_t>(ref.numel) * c10::elementSize(ref.dtype);
    if (size < nbytes) throw corrupt(path_, "storage " + ref.key + " has " + std::to_string(size) + " bytes, expected " + std::to_string(nbytes));
    c10::Storage s(c10::Storage::use_byte_size_t(), nbytes, std::move(data), nullptr, /*resizable=*/false);
    storages_.emplace(ref.key, s);
    return s;
  }

  std::vector<std::int64_t> ints(const ValuePtr& v) {
    std::vector<std::int64_t> out;
    for (const auto& item : as<Tuple>(v, "size/stride").items) out.push_back(std::get<std::int64_t>(item->v));
    return out;
  }

  ValuePtr reduce(const ValuePtr& callable, const ValuePtr& args_value) {
    const auto& g = as<Global>(callable, "REDUCE");
    const auto& args = as<Tuple>(args_value, "REDUCE arguments").items;
    if (g.module == "collections" && g.name == "OrderedDict") return make(Dict{});
    if (g.module == "torch._utils" && g.name == "_rebuild_tensor_v2" && args.size() >= 4) {
      const auto& ref = as<StorageRef>(args[0], "tensor storage");
      auto t = at::empty({0}, at::TensorOptions().dtype(ref.dtype));
      t.set_(storage(ref), std::get<std::int64_t>(args[1]->v), ints(args[2]), ints(args[3]));
      return make(t);
    }
    if (g.module == "torch._utils" && g.name == "_rebuild_parameter" && !args.empty()) {
      return make(as<at::Tensor>(args[0], "parameter data"));
    }
    throw corrupt(path_, "refusing to load " + g.module + "." + g.name + ": only state dicts of tensors are read");
  }

  std::string path_;
  const char* data_;
  std::size_t size_;
  std::size_t at_ = 0;
  caffe2::serialize::PyTorchStreamReader& archive_;
  std::vector<ValuePtr> stack_;
  std::map<std::size_t, ValuePtr> memo_;
  std::map<std::string, c10::Storage> storages_;
};

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> read_state_dict(const std::filesystem::path& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> archive;
  try {
    archive = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path.string());
  } catch (const c10::Error& e) {
    throw corrupt(path.string(), std::string("not a torch.save zip archive (the legacy pre-1.6 format is not supported): ") +
                                     e.what_without_backtrace());
  }
  auto [data, size] = archive->getRecord("data.pkl");
  Machine machine(path.string(), static_cast<const char*>(data.get()), size, *archive);
  const ValuePtr result = machine.run();
  const auto* dict = std::get_if<Dict>(&result->v);
  if (dict == nullptr) throw corrupt(path.string(), "the archive does not hold a dict");
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [key, value] : dict->items) {
    const auto* name = std::get_if<std::string>(&key->v);
    const auto* tensor = std::get_if<at::Tensor>(&value->v);
    if (name == nullptr || tensor == nullptr) throw corrupt(path.string(), "the dict holds an entry that is not str → tensor");
    out.emplace_back(*name, *tensor);
  }
  return out;
}

}  // namespace quicksave::torch_pickle
