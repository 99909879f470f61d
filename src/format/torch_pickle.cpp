// A small pickle machine for the data.pkl of torch.save archives (see torch_pickle.hpp).
//
// Hostile programs are expected, so:
//  - values live in an arena and refer to each other by pointer: destroying a 300,000-deep
//    nest is a loop over the arena, never a recursion, and memo cycles cannot leak;
//  - MARK is an index into a side stack (as in CPython), not a value;
//  - the stack, the open MARKs, the memo, the nesting depth and the number of values are bounded
//    (PickleLimits), so a small file cannot take gigabytes;
//  - every value is type-checked before use, with a message naming the opcode and what it found.
#include "format/torch_pickle.hpp"

#include <cstring>
#include <deque>
#include <map>
#include <variant>

#include "quicksave/error.hpp"

namespace quicksave::format {
namespace {

struct Value;
using Ref = Value*;

struct GlobalName {
  std::string module, name;
};
struct Global {
  std::size_t index;  // into Machine::globals_
};
struct List {
  std::vector<Ref> items;
};
struct Tuple {
  std::vector<Ref> items;
};
struct Dict {
  std::vector<std::pair<Ref, Ref>> items;
};
struct None {};
struct StorageRef {
  std::size_t index;  // into PickleStateDict::storages
};
struct TensorRef {
  std::size_t index;  // into Machine::tensors_ (kept out of Value, which stays 48 bytes)
};

struct Value {
  std::variant<None, bool, std::int64_t, double, std::string, Global, StorageRef, Dict, List, Tuple, TensorRef> v;
  std::size_t depth = 0;  // containers: 1 + the deepest item seen when built or extended
};

// "an int", "a tuple", ... for messages.
const char* type_name(const Value& value) {
  static constexpr const char* kNames[] = {"None", "a bool", "an int", "a float", "a str", "a global",
                                           "a storage", "a dict", "a list", "a tuple", "a tensor"};
  return kNames[value.v.index()];
}

Error corrupt(const std::string& why) { return Error(ErrorCode::corrupt, why); }

std::string hex(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02x", v);
  return buf;
}

bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }
bool checked_add(std::uint64_t a, std::uint64_t b, std::uint64_t& out) { return !__builtin_add_overflow(a, b, &out); }

class Machine {
 public:
  Machine(std::string_view program, const PickleLimits& limits) : in_(program), limits_(limits) {}

  PickleStateDict run() {
    const Ref result = execute();
    const auto* dict = std::get_if<Dict>(&result->v);
    if (dict == nullptr) throw corrupt(std::string("the pickle holds ") + type_name(*result) + ", not a dict of tensors");
    std::map<std::string_view, std::size_t> seen;
    for (const auto& [key, value] : dict->items) {
      const auto* name = std::get_if<std::string>(&key->v);
      if (name == nullptr) throw corrupt(std::string("the dict has ") + type_name(*key) + " as a key, not a str");
      const auto* tensor = std::get_if<TensorRef>(&value->v);
      if (tensor == nullptr) throw corrupt("the dict maps \"" + *name + "\" to " + type_name(*value) + ", not a tensor");
      if (!seen.emplace(*name, out_.entries.size()).second) throw corrupt("the dict holds the key \"" + *name + "\" twice");
      out_.entries.emplace_back(*name, tensors_[tensor->index]);
    }
    return std::move(out_);
  }

 private:
  Ref execute() {
    while (true) {
      const std::size_t where = at_;
      op_at_ = where;
      const auto op = static_cast<unsigned char>(byte());
      switch (op) {
        case 0x80: byte(); break;                          // PROTO
        case 0x95: take(8); break;                         // FRAME
        case '.': return pop("STOP");                      // STOP
        case '(':                                          // MARK
          if (marks_.size() >= limits_.max_marks) throw limit("open MARKs", limits_.max_marks);
          marks_.push_back(stack_.size());
          break;
        case 'N': push(&none_); break;
        case 0x88: push(&true_); break;                    // NEWTRUE
        case 0x89: push(&false_); break;                   // NEWFALSE
        case '}': push(make(Dict{})); break;               // EMPTY_DICT
        case ']': push(make(List{})); break;               // EMPTY_LIST
        case ')': push(make(Tuple{})); break;              // EMPTY_TUPLE
        case 'K': push(make(static_cast<std::int64_t>(static_cast<unsigned char>(byte())))); break;  // BININT1
        case 'M': push(make(static_cast<std::int64_t>(le<std::uint16_t>()))); break;                 // BININT2
        case 'J': push(make(static_cast<std::int64_t>(le<std::int32_t>()))); break;                  // BININT
        case 0x8a: push(make(long1())); break;             // LONG1
        case 'G': push(make(binfloat())); break;           // BINFLOAT
        case 'X':                                          // BINUNICODE
        case 'T': push(make(std::string(take(le<std::uint32_t>())))); break;               // BINSTRING
        case 0x8c:                                         // SHORT_BINUNICODE
        case 'U': push(make(std::string(take(static_cast<unsigned char>(byte()))))); break;  // SHORT_BINSTRING
        case 'c': {                                        // GLOBAL
          if (globals_.size() >= limits_.max_globals) throw limit("GLOBAL opcodes", limits_.max_globals);
          std::string module = line(), name = line();
          globals_.push_back(GlobalName{std::move(module), std::move(name)});
          push(make(Global{globals_.size() - 1}));
          break;
        }
        case 'q': memo_put(static_cast<unsigned char>(byte())); break;  // BINPUT
        case 'r': memo_put(le<std::uint32_t>()); break;                 // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;                        // MEMOIZE
        case 'h': push(memo_get(static_cast<unsigned char>(byte()))); break;  // BINGET
        case 'j': push(memo_get(le<std::uint32_t>())); break;                 // LONG_BINGET
        case 't': push(container(Tuple{pop_to_mark("TUPLE")})); break;        // TUPLE
        case 0x85: {                                                          // TUPLE1
          auto a = pop("TUPLE1");
          push(container(Tuple{{a}}));
          break;
        }
        case 0x86: {                                                          // TUPLE2
          auto b = pop("TUPLE2"), a = pop("TUPLE2");
          push(container(Tuple{{a, b}}));
          break;
        }
        case 0x87: {                                                          // TUPLE3
          auto c = pop("TUPLE3"), b = pop("TUPLE3"), a = pop("TUPLE3");
          push(container(Tuple{{a, b, c}}));
          break;
        }
        case 's': {                                                           // SETITEM
          auto value = pop("SETITEM"), key = pop("SETITEM");
          Ref dict = top("SETITEM");
          as<Dict>(dict, "SETITEM").items.emplace_back(key, value);
          extend_depth(dict, {key, value});
          break;
        }
        case 'u': {                                                           // SETITEMS
          auto items = pop_to_mark("SETITEMS");
          if (items.size() % 2 != 0) throw corrupt("SETITEMS at byte " + std::to_string(where) + " has an odd number of items");
          Ref dict = top("SETITEMS");
          auto& d = as<Dict>(dict, "SETITEMS");
          for (std::size_t i = 0; i + 1 < items.size(); i += 2) d.items.emplace_back(items[i], items[i + 1]);
          extend_depth(dict, items);
          break;
        }
        case 'a': {                                                           // APPEND
          auto value = pop("APPEND");
          Ref list = top("APPEND");
          as<List>(list, "APPEND").items.push_back(value);
          extend_depth(list, {value});
          break;
        }
        case 'e': {                                                           // APPENDS
          auto items = pop_to_mark("APPENDS");
          Ref list = top("APPENDS");
          auto& l = as<List>(list, "APPENDS");
          l.items.insert(l.items.end(), items.begin(), items.end());
          extend_depth(list, items);
          break;
        }
        case 'Q': push(persistent_load(pop("BINPERSID"))); break;            // BINPERSID
        case 'R': {                                                           // REDUCE
          auto args = pop("REDUCE"), callable = pop("REDUCE");
          push(reduce(callable, args));
          break;
        }
        case 'b':  // BUILD: the state (e.g. OrderedDict._metadata) is not needed, the object stays
          pop("BUILD");
          top("BUILD");
          break;
        default:
          throw corrupt("unsupported pickle opcode 0x" + hex(op) + " at byte " + std::to_string(where));
      }
    }
  }

  Error limit(const char* what, std::size_t bound) const {
    return corrupt("the pickle needs more than " + std::to_string(bound) + " " + what + " (at byte " + std::to_string(op_at_) +
                   "); a state dict never does");
  }

  template <class T>
  Ref make(T x) {
    if (arena_.size() >= limits_.max_values) throw limit("values", limits_.max_values);
    arena_.emplace_back();
    arena_.back().v = std::move(x);
    return &arena_.back();
  }
  template <class T>
  Ref container(T x) {
    std::size_t depth = 0;
    for (Ref item : x.items) depth = std::max(depth, item->depth);
    Ref v = make(std::move(x));
    set_depth(v, depth + 1);
    return v;
  }
  void extend_depth(Ref container, const std::vector<Ref>& items) {
    for (Ref item : items) set_depth(container, std::max(container->depth, item->depth + 1));
  }
  void set_depth(Ref v, std::size_t depth) {
    if (depth > limits_.max_depth) throw limit("levels of nesting", limits_.max_depth);
    v->depth = depth;
  }

  template <class T>
  T& as(Ref v, const std::string& what) {
    if (auto* p = std::get_if<T>(&v->v)) return *p;
    static const Value expected{T{}};
    throw corrupt(what + " at byte " + std::to_string(op_at_) + " expects " + type_name(expected) + ", found " + type_name(*v));
  }

  char byte() {
    if (at_ >= in_.size()) throw corrupt("the pickle ends at byte " + std::to_string(at_) + " without STOP");
    return in_[at_++];
  }
  std::string_view take(std::size_t n) {
    if (n > in_.size() - at_) {
      throw corrupt("the pickle declares " + std::to_string(n) + " bytes at byte " + std::to_string(at_) + " but has only " +
                    std::to_string(in_.size() - at_) + " left");
    }
    const std::string_view s = in_.substr(at_, n);
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
    if (n > 8) throw corrupt("integer of " + std::to_string(n) + " bytes at byte " + std::to_string(op_at_) + ": wider than 64 bits");
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
    const auto end = in_.find('\n', at_);
    if (end == std::string_view::npos) throw corrupt("GLOBAL at byte " + std::to_string(op_at_) + " has no end of line");
    std::string s(in_.substr(at_, end - at_));
    at_ = end + 1;
    return s;
  }

  void push(Ref v) {
    if (stack_.size() >= limits_.max_stack) throw limit("values on the stack", limits_.max_stack);
    stack_.push_back(v);
  }
  // The bottom of the current MARK's frame: values below it belong to an enclosing frame.
  std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Ref pop(const char* op) {
    if (stack_.size() <= floor()) throw corrupt(std::string(op) + " at byte " + std::to_string(op_at_) + " pops from an empty stack");
    Ref v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Ref top(const char* op) {
    if (stack_.size() <= floor()) throw corrupt(std::string(op) + " at byte " + std::to_string(op_at_) + " finds an empty stack");
    return stack_.back();
  }
  std::vector<Ref> pop_to_mark(const char* op) {
    if (marks_.empty()) throw corrupt(std::string(op) + " at byte " + std::to_string(op_at_) + " has no MARK");
    const std::size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Ref> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  void memo_put(std::size_t key) {
    if (key >= limits_.max_memo) throw limit("memo slots", limits_.max_memo);
    Ref v = top("PUT");
    if (key >= memo_.size()) memo_.resize(key + 1, nullptr);
    memo_[key] = v;
  }
  Ref memo_get(std::size_t key) {
    if (key >= memo_.size() || memo_[key] == nullptr) {
      throw corrupt("GET at byte " + std::to_string(op_at_) + " reads memo entry " + std::to_string(key) + ", which was never set");
    }
    return memo_[key];
  }

  std::int64_t integer(Ref v, const std::string& what) { return as<std::int64_t>(v, what); }
  const std::string& string(Ref v, const std::string& what) { return as<std::string>(v, what); }

  // ('storage', torch.<Type>Storage, key, location, numel): a storage record of the archive.
  Ref persistent_load(Ref pid) {
    const auto& t = as<Tuple>(pid, "BINPERSID").items;
    if (t.size() != 5 || !std::holds_alternative<std::string>(t[0]->v) || std::get<std::string>(t[0]->v) != "storage") {
      throw corrupt("BINPERSID at byte " + std::to_string(op_at_) + ": the persistent id is not ('storage', type, key, location, numel)");
    }
    const auto& type = globals_[as<Global>(t[1], "the storage type of BINPERSID").index];
    PickleStorage s;
    s.type = type.name;
    s.element_size = type.module == "torch" ? storage_element_size(type.name) : 0;
    if (s.element_size == 0) throw corrupt("unsupported storage type " + type.module + "." + type.name);
    s.key = string(t[2], "the storage key of BINPERSID");
    s.location = string(t[3], "the storage location of BINPERSID");
    s.numel = integer(t[4], "the storage size of BINPERSID");
    std::uint64_t nbytes = 0;
    if (s.numel < 0 || !checked_mul(static_cast<std::uint64_t>(s.numel), s.element_size, nbytes) || nbytes > INT64_MAX) {
      throw corrupt("storage " + s.key + " declares " + std::to_string(s.numel) + " elements of " + s.type);
    }
    if (const auto it = storage_index_.find(s.key); it != storage_index_.end()) {
      const PickleStorage& first = out_.storages[it->second];
      if (first.type != s.type || first.numel != s.numel) {
        throw corrupt("storage " + s.key + " is declared as " + std::to_string(first.numel) + " " + first.type + " and as " +
                      std::to_string(s.numel) + " " + s.type);
      }
      return make(StorageRef{it->second});
    }
    storage_index_.emplace(s.key, out_.storages.size());
    out_.storages.push_back(std::move(s));
    return make(StorageRef{out_.storages.size() - 1});
  }

  std::vector<std::int64_t> ints(Ref v, const char* what) {
    std::vector<std::int64_t> out;
    for (Ref item : as<Tuple>(v, what).items) {
      const std::int64_t x = integer(item, what);
      if (x < 0) throw corrupt(std::string(what) + " holds the negative value " + std::to_string(x));
      out.push_back(x);
    }
    return out;
  }

  // The tensor must lie inside its storage: offset + sum((size-1) * stride) < numel, unless empty.
  void check_extent(const PickleTensor& t) {
    const PickleStorage& s = out_.storages[t.storage];
    if (t.sizes.size() != t.strides.size()) {
      throw corrupt("a tensor of storage " + s.key + " has " + std::to_string(t.sizes.size()) + " sizes but " +
                    std::to_string(t.strides.size()) + " strides");
    }
    std::uint64_t last = static_cast<std::uint64_t>(t.offset), numel = 1;
    for (std::size_t d = 0; d < t.sizes.size(); ++d) {
      std::uint64_t step = 0;
      if (!checked_mul(static_cast<std::uint64_t>(t.sizes[d]), numel, numel) ||
          (t.sizes[d] > 0 && (!checked_mul(static_cast<std::uint64_t>(t.sizes[d] - 1), static_cast<std::uint64_t>(t.strides[d]), step) ||
                              !checked_add(last, step, last)))) {
        throw corrupt("a tensor of storage " + s.key + " has sizes and strides that overflow 64 bits");
      }
    }
    if (numel > static_cast<std::uint64_t>(INT64_MAX)) throw corrupt("a tensor of storage " + s.key + " has more than 2^63 elements");
    if (numel > 0 && last >= static_cast<std::uint64_t>(s.numel)) {
      throw corrupt("a tensor of storage " + s.key + " reaches element " + std::to_string(last) + " but the storage has " +
                    std::to_string(s.numel));
    }
  }

  Ref reduce(Ref callable, Ref args_value) {
    const auto& g = globals_[as<Global>(callable, "REDUCE").index];
    const auto& args = as<Tuple>(args_value, "the arguments of REDUCE").items;
    if (g.module == "collections" && g.name == "OrderedDict") return make(Dict{});
    if (g.module == "torch._utils" && g.name == "_rebuild_tensor_v2") {
      if (args.size() < 4) throw corrupt("_rebuild_tensor_v2 at byte " + std::to_string(op_at_) + " has " + std::to_string(args.size()) + " arguments, not 4 or more");
      PickleTensor t;
      t.storage = as<StorageRef>(args[0], "the storage of _rebuild_tensor_v2").index;
      t.offset = integer(args[1], "the storage offset of _rebuild_tensor_v2");
      if (t.offset < 0) throw corrupt("a tensor has the negative storage offset " + std::to_string(t.offset));
      t.sizes = ints(args[2], "the size of _rebuild_tensor_v2");
      t.strides = ints(args[3], "the stride of _rebuild_tensor_v2");
      check_extent(t);
      tensors_.push_back(std::move(t));
      return make(TensorRef{tensors_.size() - 1});
    }
    if (g.module == "torch._utils" && g.name == "_rebuild_parameter") {
      if (args.empty()) throw corrupt("_rebuild_parameter at byte " + std::to_string(op_at_) + " has no arguments");
      return make(as<TensorRef>(args[0], "the data of _rebuild_parameter"));
    }
    throw corrupt("refusing to call " + g.module + "." + g.name + ": only state dicts of tensors are read");
  }

  std::string_view in_;
  PickleLimits limits_;
  std::size_t at_ = 0, op_at_ = 0;
  std::deque<Value> arena_;  // every value built; freed in one pass, never recursively
  Value none_{None{}}, true_{true}, false_{false};
  std::vector<Ref> stack_;
  std::vector<std::size_t> marks_;  // stack heights at each open MARK
  std::vector<Ref> memo_;
  std::map<std::string, std::size_t> storage_index_;
  std::vector<PickleTensor> tensors_;
  std::vector<GlobalName> globals_;
  PickleStateDict out_;
};

}  // namespace

std::size_t storage_element_size(std::string_view type) {
  static const std::map<std::string_view, std::size_t> table{
      {"FloatStorage", 4},  {"DoubleStorage", 8},       {"HalfStorage", 2},          {"BFloat16Storage", 2},
      {"LongStorage", 8},   {"IntStorage", 4},          {"ShortStorage", 2},         {"CharStorage", 1},
      {"ByteStorage", 1},   {"BoolStorage", 1},         {"ComplexFloatStorage", 8},  {"ComplexDoubleStorage", 16}};
  const auto it = table.find(type);
  return it == table.end() ? 0 : it->second;
}

PickleStateDict parse_torch_pickle(std::string_view program, const PickleLimits& limits) {
  return Machine(program, limits).run();
}

}  // namespace quicksave::format
