// quicksave._quicksave: the pybind11 extension under the `quicksave` Python package. It binds the
// C++ Hugging Face API (quicksave/torch.hpp) and the asynchronous engine (quicksave/checkpointer.hpp)
// for Python torch tensors; the package's Python modules add the reference's exact signatures,
// the loading orchestration over Python modules and Future-compatible handles.
//
// Conventions kept by every function here:
//   - Python objects are converted to C++ (at::Tensor, Metadata, options) while the GIL is held;
//     the GIL is then released around every call that does I/O or waits for the engine, so that
//     other Python threads (a training loop) keep running.
//   - Tensors handed to C++ are `detach()`ed aliases: same storage, no Python object attached, so
//     the engine's threads can drop them without ever needing the GIL.
//   - quicksave::Error becomes an instance of the Python class of its ErrorCode (quicksave.Error
//     subclasses that also derive from the matching built-in: ValueError, FileNotFoundError, ...).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "quicksave/checkpointer.hpp"
#include "quicksave/error.hpp"
#include "quicksave/loader.hpp"
#include "quicksave/log.hpp"
#include "quicksave/reader.hpp"
#include "quicksave/save.hpp"
#include "quicksave/torch.hpp"
#include "quicksave/verify.hpp"

namespace py = pybind11;

namespace quicksave::python {
namespace {

// ---- exceptions -------------------------------------------------------------------------------

constexpr std::size_t kCodeCount = static_cast<std::size_t>(ErrorCode::internal) + 1;

// The Python classes, one per ErrorCode, created once at import and kept for the process's life
// (the translator may run at any time, so they are never released).
struct ErrorClasses {
  PyObject* base = nullptr;
  std::array<PyObject*, kCodeCount> by_code{};
};

ErrorClasses& error_classes() {
  static ErrorClasses classes;
  return classes;
}

// "quicksave.<name>" deriving from quicksave.Error and `builtin`, with `code` as a class attribute.
PyObject* make_error_class(py::module_& m, const char* name, ErrorCode code, PyObject* builtin, const char* doc) {
  const std::string qualified = std::string("quicksave.") + name;
  // Not `?:`: pybind11 3 (shipped in the torch wheel's include folder) gives make_tuple of one and
  // of two arguments different types.
  py::tuple bases;
  if (builtin) {
    bases = py::make_tuple(py::handle(error_classes().base), py::handle(builtin));
  } else {
    bases = py::make_tuple(py::handle(error_classes().base));
  }
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (cls == nullptr) throw py::error_already_set();
  if (PyObject_SetAttrString(cls, "code", py::str(to_string(code)).ptr()) != 0) throw py::error_already_set();
  m.add_object(name, py::handle(cls));  // the module holds one reference, the table another
  Py_INCREF(cls);
  error_classes().by_code[static_cast<std::size_t>(code)] = cls;
  return cls;
}

void register_errors(py::module_& m) {
  ErrorClasses& classes = error_classes();
  classes.base = PyErr_NewExceptionWithDoc(
      "quicksave.Error",
      "Base class of quicksave's errors. `code` names the ErrorCode (\"invalid_argument\", \"io\", ...); "
      "`errno` is set for I/O errors.",
      PyExc_Exception, nullptr);
  if (classes.base == nullptr) throw py::error_already_set();
  PyObject_SetAttrString(classes.base, "code", Py_None);
  m.add_object("Error", py::handle(classes.base));
  Py_INCREF(classes.base);

  const py::object futures_cancelled = py::module_::import("concurrent.futures").attr("CancelledError");
  make_error_class(m, "InvalidArgumentError", ErrorCode::invalid_argument, PyExc_ValueError,
                   "An unusable argument: a bad size string, filename pattern, option or state dict value.");
  make_error_class(m, "NotFoundError", ErrorCode::not_found, PyExc_FileNotFoundError,
                   "A file or directory that must exist does not.");
  make_error_class(m, "AlreadyExistsError", ErrorCode::already_exists, PyExc_FileExistsError,
                   "Something that must not exist does.");
  make_error_class(m, "CorruptError", ErrorCode::corrupt, PyExc_OSError,
                   "A file's bytes break its format's rules (safetensors header, index, metadata).");
  make_error_class(m, "IoError", ErrorCode::io, PyExc_OSError, "An operating-system call failed; `errno` says why.");
  make_error_class(m, "ResourceExhaustedError", ErrorCode::resource_exhausted, PyExc_RuntimeError,
                   "A budget (pinned memory, saves in flight) is used up.");
  make_error_class(m, "CancelledError", ErrorCode::cancelled, futures_cancelled.ptr(), "The save was cancelled.");
  make_error_class(m, "UnavailableError", ErrorCode::unavailable, PyExc_RuntimeError,
                   "A facility is missing here (io_uring blocked, no CUDA support, ...).");
  make_error_class(m, "FailedPreconditionError", ErrorCode::failed_precondition, PyExc_RuntimeError,
                   "The call is valid but not in the current state (a closed Checkpointer, ...).");
  make_error_class(m, "BusyError", ErrorCode::busy, PyExc_BlockingIOError,
                   "Another save holds the checkpoint folder; the message names the holder.");
  make_error_class(m, "InternalError", ErrorCode::internal, PyExc_RuntimeError, "A quicksave bug.");

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      PyObject* cls = error_classes().by_code[static_cast<std::size_t>(e.code())];
      if (cls == nullptr) cls = error_classes().base;
      const std::string text = e.what();
      // File names may hold bytes that are not UTF-8: never fail while raising.
      PyObject* message = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "replace");
      PyObject* instance = message ? PyObject_CallOneArg(cls, message) : nullptr;
      Py_XDECREF(message);
      if (instance == nullptr) return;  // the failure to build it is the Python error now
      if (e.errno_value() != 0) {
        PyObject* number = PyLong_FromLong(e.errno_value());
        PyObject_SetAttrString(instance, "errno", number);
        Py_XDECREF(number);
      }
      PyErr_SetObject(cls, instance);
      Py_DECREF(instance);
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
}

[[noreturn]] void invalid(const std::string& message) { throw Error(ErrorCode::invalid_argument, message); }

std::string repr_of(py::handle object) { return py::repr(object).cast<std::string>(); }

// ---- conversions --------------------------------------------------------------------------------

// A Python tensor as an alias the C++ side may keep and drop on any thread (see the top comment).
torch::Tensor tensor_from(py::handle value, py::handle key) {
  if (!THPVariable_Check(value.ptr())) {
    std::string message = "state_dict[" + repr_of(key) + "] is a " + std::string(Py_TYPE(value.ptr())->tp_name) +
                          ", not a torch.Tensor";
    if (py::isinstance<py::str>(value)) message += " (bnb serialization strings cannot be saved; remove them first)";
    invalid(message);
  }
  const torch::Tensor& tensor = THPVariable_Unpack(value.ptr());
  // A __torch_dispatch__ subclass holds no data of its own: name the class and what to do here,
  // where the Python type is known (the adapter's message covers C++ callers).
  if (tensor.key_set().has(c10::DispatchKey::Python)) {
    const py::handle type = py::type::handle_of(value);
    const std::string cls = py::str(type.attr("__name__")).cast<std::string>();
    if (cls == "DTensor") {
      const std::string placements = py::hasattr(value, "placements") ? repr_of(value.attr("placements")) : "?";
      invalid("DTensor state_dict[" + repr_of(key) + "] is distributed over a device mesh (placements " + placements +
              "): a single-process save needs its whole value. Call .full_tensor() on it (or .to_local() for this "
              "rank's shard), or save sharded state dicts with quicksave's distributed checkpointer");
    }
    invalid("state_dict[" + repr_of(key) + "] is a " + cls +
            ", a tensor subclass with no data of its own (__torch_dispatch__): convert it to a plain torch.Tensor first");
  }
  return tensor.detach();
}

StateDict state_dict_from(py::handle mapping) {
  if (!py::hasattr(mapping, "items")) invalid("state_dict must be a mapping of str to torch.Tensor, got " + repr_of(py::type::handle_of(mapping)));
  StateDict out;
  for (py::handle item : mapping.attr("items")()) {
    const py::tuple pair = py::reinterpret_borrow<py::tuple>(item);
    const py::handle key = pair[0];
    if (!py::isinstance<py::str>(key)) invalid("state dict keys must be str, got " + repr_of(key));
    out.insert(key.cast<std::string>(), tensor_from(pair[1], key));
  }
  return out;
}

MetaValue meta_value_from(py::handle value, const std::string& key) {
  if (value.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(value)) return value.cast<bool>();
  if (py::isinstance<py::int_>(value)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    if (overflow != 0) invalid("metadata value of '" + key + "' does not fit in 64 bits");
    return static_cast<std::int64_t>(v);
  }
  if (py::isinstance<py::float_>(value)) return value.cast<double>();
  if (py::isinstance<py::str>(value)) return value.cast<std::string>();
  invalid("metadata value of '" + key + "' must be str, int, float, bool or None, got " +
          std::string(Py_TYPE(value.ptr())->tp_name));
}

Metadata metadata_from(py::handle mapping) {
  Metadata out;
  if (mapping.is_none()) return out;
  if (!py::hasattr(mapping, "items")) invalid("metadata must be a dict, got " + repr_of(py::type::handle_of(mapping)));
  for (py::handle item : mapping.attr("items")()) {
    const py::tuple pair = py::reinterpret_borrow<py::tuple>(item);
    if (!py::isinstance<py::str>(pair[0])) invalid("metadata keys must be str, got " + repr_of(pair[0]));
    const std::string key = pair[0].cast<std::string>();
    out.set(key, meta_value_from(pair[1], key));
  }
  return out;
}

py::object meta_value_to_python(const MetaValue& value) {
  return std::visit(
      [](const auto& v) -> py::object {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>) return py::none();
        else return py::cast(v);
      },
      value);
}

py::dict metadata_to_python(const Metadata& metadata) {
  py::dict out;
  for (const auto& [key, value] : metadata) out[py::str(key)] = meta_value_to_python(value);
  return out;
}

// max_shard_size as the reference takes it: a size string (parsed by parse_size_to_int) or a
// number compared as it is. For integer sizes `size > x` equals `size > floor(x)`, so a float
// limit is floored; infinities saturate.
ShardSize shard_size_from(py::handle value) {
  if (py::isinstance<py::str>(value)) return ShardSize(value.cast<std::string>());
  if (py::isinstance<py::float_>(value)) {
    const double v = value.cast<double>();
    if (std::isnan(v)) invalid("max_shard_size must not be NaN");
    if (v >= 9.2e18) return ShardSize(std::numeric_limits<std::int64_t>::max());
    if (v <= -9.2e18) return ShardSize(std::numeric_limits<std::int64_t>::min());
    return ShardSize(static_cast<std::int64_t>(std::floor(v)));
  }
  if (py::isinstance<py::int_>(value)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    if (overflow > 0) return ShardSize(std::numeric_limits<std::int64_t>::max());
    if (overflow < 0) return ShardSize(std::numeric_limits<std::int64_t>::min());
    return ShardSize(static_cast<std::int64_t>(v));
  }
  invalid("max_shard_size must be a size string such as \"5GB\" or a number of bytes, got " + repr_of(value));
}

std::vector<std::string> names_from(py::handle names) {
  std::vector<std::string> out;
  if (names.is_none()) return out;
  for (py::handle n : names) {
    if (!py::isinstance<py::str>(n)) invalid("shared_tensors_to_discard must hold str names, got " + repr_of(n));
    out.push_back(n.cast<std::string>());
  }
  return out;
}

std::optional<torch::Device> device_from(const std::optional<std::string>& device) {
  if (!device) return std::nullopt;
  try {
    return torch::Device(*device);
  } catch (const c10::Error&) {
    invalid("map_location " + *device + " is not a device");
  }
}

py::dict state_dict_to_python(const StateDict& state_dict) {
  py::dict out;
  for (const auto& item : state_dict) out[py::str(item.key())] = py::cast(item.value());
  return out;
}

// The options shared by save_torch_state_dict and Checkpointer.save_async, converted under the GIL.
struct PySaveArgs {
  std::optional<std::string> filename_pattern;
  bool force_contiguous = true;
  py::object max_shard_size;
  py::object metadata;
  bool is_main_process = true;
  py::object shared_tensors_to_discard;

  SaveOptions to_options() const {
    SaveOptions o;
    o.filename_pattern = filename_pattern;
    o.force_contiguous = force_contiguous;
    o.max_shard_size = shard_size_from(max_shard_size);
    o.metadata = metadata_from(metadata);
    o.is_main_process = is_main_process;
    o.shared_tensors_to_discard = names_from(shared_tensors_to_discard);
    return o;
  }
};

// ---- the asynchronous engine ------------------------------------------------------------------

// Waits for a shared future with the GIL released; true when it is ready. A timeout of None
// waits for ever; 0 only polls.
template <class T>
bool wait_ready(const std::shared_future<T>& future, const std::optional<double>& timeout_s) {
  py::gil_scoped_release release;
  if (!timeout_s) {
    future.wait();
    return true;
  }
  const auto timeout = std::chrono::duration<double>(std::max(0.0, *timeout_s));
  return future.wait_for(timeout) == std::future_status::ready;
}

// A Python callable run by the engine as a completion callback: called, and finally released,
// with the GIL taken (the engine's threads do not hold it). What it raises is reported as
// unraisable, never thrown into the engine.
std::function<void()> engine_callback(py::function callable) {
  std::shared_ptr<py::function> held(new py::function(std::move(callable)), [](py::function* f) {
    py::gil_scoped_acquire gil;
    delete f;
  });
  return [held] {
    py::gil_scoped_acquire gil;
    try {
      (*held)();
    } catch (py::error_already_set& error) {
      error.discard_as_unraisable("quicksave completion callback");
    }
  };
}

// ---- the load engine ----------------------------------------------------------------------------

// One load in flight: the engine's handle and the tensors it fills (shared with Python at once;
// their bytes are valid once wait() has returned True).
class PyLoadJob {
 public:
  explicit PyLoadJob(TensorLoad load) : load_(std::move(load)) {}
  // Waits (GIL released); rethrows the load's error once ready. False on timeout.
  bool wait(std::optional<double> timeout_s) {
    if (!wait_ready(load_.handle.done(), timeout_s)) return false;
    load_.handle.done().get();
    return true;
  }
  bool ready() const { return load_.handle.done().wait_for(std::chrono::seconds(0)) == std::future_status::ready; }
  py::dict tensors() const { return state_dict_to_python(load_.tensors); }
  py::tuple progress() const {
    const LoadProgress p = load_.handle.progress();
    return py::make_tuple(p.bytes_read, p.bytes_total, p.bytes_verified);
  }

 private:
  TensorLoad load_;
};

class PySaveHandle {
 public:
  explicit PySaveHandle(SaveHandle handle) : handle_(std::move(handle)) {}

  // Waits (GIL released); rethrows the save's error once ready. False on timeout.
  bool wait_staged(std::optional<double> timeout_s) {
    const auto future = handle_.staged();
    if (!wait_ready(future, timeout_s)) return false;
    future.get();
    return true;
  }
  std::optional<SaveResult> wait_committed(std::optional<double> timeout_s) {
    const auto future = handle_.committed();
    if (!wait_ready(future, timeout_s)) return std::nullopt;
    return future.get();
  }
  bool staged_ready() const { return handle_.staged().wait_for(std::chrono::seconds(0)) == std::future_status::ready; }
  bool committed_ready() const {
    return handle_.committed().wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
  void cancel() {
    // Cancelling may complete the futures on this thread, running callbacks that take the GIL.
    py::gil_scoped_release release;
    handle_.cancel();
  }
  SaveProgress progress() const { return handle_.progress(); }
  // `callback()` runs once the future is ready (at once if it is): see engine_callback.
  void when_staged(py::function callback) { handle_.when_staged(engine_callback(std::move(callback))); }
  void when_committed(py::function callback) { handle_.when_committed(engine_callback(std::move(callback))); }

 private:
  SaveHandle handle_;
};

// Owns the engine; closing (or garbage collection) waits for the saves in flight with the GIL
// released, since the engine's threads never need it but other Python threads may. A save_async
// running on another thread keeps the engine alive until it returns (shared ownership), so close()
// from one thread never frees it under another.
class PyCheckpointer {
 public:
  explicit PyCheckpointer(const CheckpointerOptions& options) : impl_(std::make_shared<Checkpointer>(options)) {}
  ~PyCheckpointer() { close(); }

  void close() {
    std::shared_ptr<Checkpointer> impl = std::move(impl_);
    py::gil_scoped_release release;
    impl.reset();
  }
  bool closed() const { return impl_ == nullptr; }

  // `streams`: (device index, cudaStream_t as an integer) of the torch.cuda.Stream objects the
  // caller named (quicksave/_engine.py checks them); empty: each device's current stream.
  PySaveHandle save_async(py::handle state_dict, const std::string& directory, const PySaveArgs& args,
                          const std::vector<std::pair<int, std::uintptr_t>>& streams) {
    std::shared_ptr<Checkpointer> ckpt = live();
    StateDict tensors = state_dict_from(state_dict);
    SaveOptions options = args.to_options();
    for (const auto& [device, stream] : streams) {
      options.producer_streams.push_back(ProducerStream{device, reinterpret_cast<void*>(stream)});
    }
    SaveHandle handle;
    {
      py::gil_scoped_release release;
      handle = ckpt->save_async(tensors, directory, options);
      ckpt.reset();  // the last owner when close() ran meanwhile: freed here, without the GIL
    }
    return PySaveHandle(std::move(handle));
  }

  std::string backend_name() { return live()->backend_name(); }
  std::string backend_fallback_reason() { return live()->backend_fallback_reason(); }
  std::uint64_t pinned_bytes() { return live()->pinned_bytes(); }
  CheckpointerOptions options() { return live()->options(); }

 private:
  std::shared_ptr<Checkpointer> live() const {
    if (!impl_) throw Error(ErrorCode::failed_precondition, "the Checkpointer is closed");
    return impl_;
  }
  std::shared_ptr<Checkpointer> impl_;
};

IoBackendChoice backend_choice_from(const std::string& name) {
  if (name == "auto") return IoBackendChoice::automatic;
  if (name == "io_uring") return IoBackendChoice::io_uring;
  if (name == "posix") return IoBackendChoice::posix;
  invalid("io_backend must be 'auto', 'io_uring' or 'posix', got '" + name + "'");
}

const char* backend_choice_name(IoBackendChoice choice) {
  switch (choice) {
    case IoBackendChoice::io_uring: return "io_uring";
    case IoBackendChoice::posix: return "posix";
    case IoBackendChoice::automatic: break;
  }
  return "auto";
}

WhenBusy when_busy_from(const std::string& name) {
  if (name == "wait") return WhenBusy::wait;
  if (name == "fail") return WhenBusy::fail;
  invalid("when_busy must be 'wait' or 'fail', got '" + name + "'");
}

// Options from keyword arguments; None keeps the base value (the defaults, or the environment's).
CheckpointerOptions checkpointer_options(bool from_env, const py::kwargs& kwargs) {
  CheckpointerOptions o = from_env ? CheckpointerOptions::from_env() : CheckpointerOptions{};
  const auto size_of = [](py::handle v) -> std::uint64_t {
    std::int64_t bytes = 0;
    if (py::isinstance<py::str>(v)) bytes = parse_size_to_int(v.cast<std::string>());
    else if (py::isinstance<py::int_>(v) && !py::isinstance<py::bool_>(v)) bytes = v.cast<std::int64_t>();
    else invalid("a size must be a size string such as \"1GB\" or a number of bytes, got " + repr_of(v));
    if (bytes < 0) invalid("a size must not be negative, got " + repr_of(v));
    return static_cast<std::uint64_t>(bytes);
  };
  const auto count_of = [](py::handle v, const char* name) -> unsigned {
    if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v) || v.cast<std::int64_t>() < 0 ||
        v.cast<std::int64_t>() > std::numeric_limits<unsigned>::max()) {
      invalid(std::string(name) + " must be a non-negative int, got " + repr_of(v));
    }
    return v.cast<unsigned>();
  };
  for (const auto& [name_handle, value] : kwargs) {
    const std::string name = name_handle.cast<std::string>();
    if (value.is_none()) continue;
    if (name == "pinned_budget_bytes") o.pinned_budget_bytes = size_of(value);
    else if (name == "chunk_bytes") o.chunk_bytes = size_of(value);
    else if (name == "worker_threads") o.worker_threads = count_of(value, "worker_threads");
    else if (name == "queue_depth") o.queue_depth = count_of(value, "queue_depth");
    else if (name == "io_backend") o.io_backend = backend_choice_from(value.cast<std::string>());
    else if (name == "direct_io") o.direct_io = value.cast<bool>();
    else if (name == "fsync") o.fsync = value.cast<bool>();
    else if (name == "max_in_flight_saves") o.max_in_flight_saves = count_of(value, "max_in_flight_saves");
    else if (name == "when_busy") o.when_busy = when_busy_from(value.cast<std::string>());
    else invalid("Checkpointer() got an unexpected keyword argument '" + name + "'");
  }
  return o;
}

// ---- the Hugging Face API ---------------------------------------------------------------------

// (storage base address, storage bytes) of a tensor, or None for meta tensors; Python adds the
// device to make get_torch_storage_id's tuple.
std::optional<std::pair<std::uintptr_t, std::int64_t>> storage_id(const torch::Tensor& tensor) {
  const auto id = get_torch_storage_id(tensor);
  if (!id) return std::nullopt;
  return std::make_pair(id->storage_ptr, id->storage_nbytes);
}

// The factory over (name, is_string, storage_size, storage_group or None) items; the group is an
// integer standing for a Python storage id (equal ids, equal groups).
py::tuple split_items(const std::vector<std::tuple<std::string, bool, std::int64_t, std::optional<std::uint64_t>>>& items,
                      const std::string& filename_pattern, py::handle max_shard_size) {
  std::vector<SplitItem> split_input;
  split_input.reserve(items.size());
  for (const auto& [name, is_string, size, group] : items) {
    SplitItem item{.name = name, .is_string = is_string, .storage_size = size};
    if (group) item.storage = StorageKey{"python", *group, 0};
    split_input.push_back(std::move(item));
  }
  const StateDictSplit split = split_state_dict_into_shards_factory(split_input, filename_pattern, shard_size_from(max_shard_size));
  py::list files;
  for (const auto& [file, names] : split.filename_to_tensors) files.append(py::make_tuple(file, names));
  py::list tensors;
  for (const auto& [name, file] : split.tensor_to_filename) tensors.append(py::make_tuple(name, file));
  return py::make_tuple(metadata_to_python(split.metadata), files, tensors);
}

SaveResult save_state_dict_binding(py::handle state_dict, const std::string& save_directory, const PySaveArgs& args,
                                   bool safe_serialization) {
  const StateDict tensors = state_dict_from(state_dict);
  const SaveOptions base = args.to_options();
  TorchSaveOptions options;
  options.filename_pattern = base.filename_pattern;
  options.force_contiguous = base.force_contiguous;
  options.max_shard_size = base.max_shard_size;
  options.metadata = base.metadata;
  options.safe_serialization = safe_serialization;
  options.is_main_process = base.is_main_process;
  options.shared_tensors_to_discard = base.shared_tensors_to_discard;
  py::gil_scoped_release release;
  return save_torch_state_dict(tensors, save_directory, options);
}

PySaveArgs save_args(std::optional<std::string> filename_pattern, bool force_contiguous, py::object max_shard_size,
                     py::object metadata, bool is_main_process, py::object shared_tensors_to_discard) {
  return PySaveArgs{std::move(filename_pattern), force_contiguous, std::move(max_shard_size), std::move(metadata),
                    is_main_process, std::move(shared_tensors_to_discard)};
}

std::string list_repr(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", '" : "'") + items[i] + "'";
  return out + "]";
}

// The C++ library's log handler while Python forwards it: calls `target(level, message)` with the
// GIL, from whichever thread logs. While the interpreter shuts down the message goes to stderr
// instead. `target` is deliberately never released (it may be the last reference at exit, when
// no thread may take the GIL to drop it).
void forward_log_to(PyObject* target) {
  set_log_handler([target](LogLevel level, std::string_view message) {
#if PY_VERSION_HEX >= 0x030D0000
    const bool finalizing = Py_IsFinalizing();
#else
    const bool finalizing = _Py_IsFinalizing();
#endif
    if (!Py_IsInitialized() || finalizing) {
      const std::string line = std::string("quicksave: ") + to_string(level) + ": " + std::string(message) + "\n";
      std::fputs(line.c_str(), stderr);
      return;
    }
    py::gil_scoped_acquire gil;
    try {
      py::handle handler(target);
      handler(to_string(level), py::str(message.data(), message.size()));
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("quicksave log forwarding");
    }
  });
}

}  // namespace
}  // namespace quicksave::python

PYBIND11_MODULE(_quicksave, m) {
  using namespace quicksave;
  using namespace quicksave::python;
  m.doc() = "quicksave's C++ core for Python (use the `quicksave` package, not this module)";
  py::module_::import("torch");  // the tensor type casters need torch's Python classes
  register_errors(m);

  py::class_<SaveResult>(m, "SaveResult", "What a save wrote.")
      .def_readonly("files", &SaveResult::files, "The shards in order, then the index.")
      .def_readonly("bytes_written", &SaveResult::bytes_written)
      .def_property_readonly("commit_mode", [](const SaveResult& r) { return std::string(to_string(r.commit_mode)); },
                             "'fresh', 'exchange' or 'in_place'.")
      .def_readonly("removed_stale", &SaveResult::removed_stale, "Files of the pattern the new checkpoint replaced.")
      .def_readonly("backend", &SaveResult::backend, "The I/O backend that wrote the bytes.")
      .def("__repr__", [](const SaveResult& r) {
        return "SaveResult(files=" + list_repr(r.files) + ", bytes_written=" + std::to_string(r.bytes_written) +
               ", commit_mode='" + to_string(r.commit_mode) + "', backend='" + r.backend + "')";
      });

  py::class_<SaveProgress>(m, "SaveProgress", "Bytes of one save staged and written so far.")
      .def_readonly("bytes_staged", &SaveProgress::bytes_staged)
      .def_readonly("bytes_written", &SaveProgress::bytes_written)
      .def_readonly("bytes_total", &SaveProgress::bytes_total)
      .def("__repr__", [](const SaveProgress& p) {
        return "SaveProgress(bytes_staged=" + std::to_string(p.bytes_staged) + ", bytes_written=" +
               std::to_string(p.bytes_written) + ", bytes_total=" + std::to_string(p.bytes_total) + ")";
      });

  // The save options shared by the synchronous and asynchronous paths.
  py::class_<PySaveArgs>(m, "_SaveArgs");
  m.def("_save_args", &save_args, py::arg("filename_pattern"), py::arg("force_contiguous"), py::arg("max_shard_size"),
        py::arg("metadata"), py::arg("is_main_process"), py::arg("shared_tensors_to_discard"));

  m.def("parse_size_to_int", [](const std::string& size) { return parse_size_to_int(size); }, py::arg("size_as_str"),
        "Parses a size string with decimal units (\"5GB\", \"1.5MB\") into bytes, as huggingface_hub does.");
  m.def("get_torch_storage_size", &get_torch_storage_size, py::arg("tensor"),
        "Bytes of the tensor's whole underlying storage (a slice counts its full storage).");
  m.def("_storage_id", &storage_id, py::arg("tensor"));
  m.def("_split_items", &split_items, py::arg("items"), py::arg("filename_pattern"), py::arg("max_shard_size"));
  m.def("_save_torch_state_dict", &save_state_dict_binding, py::arg("state_dict"), py::arg("save_directory"),
        py::arg("args"), py::arg("safe_serialization"));
  m.def(
      "_load_safetensors",
      [](const std::string& path, const std::optional<std::string>& device, bool mmap) {
        const auto map_location = device_from(device);
        StateDict state_dict;
        {
          py::gil_scoped_release release;
          state_dict = load_state_dict_from_file(path, map_location, mmap);
        }
        return state_dict_to_python(state_dict);
      },
      py::arg("path"), py::arg("device"), py::arg("mmap"));
  m.def(
      "_read_index",
      [](const std::string& path) {
        const ShardIndex index = read_index_file(path);
        py::list weight_map;
        for (const auto& [name, file] : index.weight_map) weight_map.append(py::make_tuple(name, file));
        return py::make_tuple(metadata_to_python(index.metadata), weight_map);
      },
      py::arg("path"));
  m.def("_validate_shard_filename", &validate_shard_filename, py::arg("shard"), py::arg("pattern"), py::arg("index_file"));
  m.def("_index_filename", &index_filename, py::arg("pattern"));
  m.def("_format_filename_pattern", &format_filename_pattern, py::arg("pattern"), py::arg("suffix"));
  m.def(
      "_recover_checkpoint",
      [](const std::string& directory) {
        py::gil_scoped_release release;
        return recover_checkpoint(directory);
      },
      py::arg("directory"));
  m.def(
      "_checkpoint_view",
      [](const std::string& directory) {
        CheckpointFolderView view;
        {
          py::gil_scoped_release release;
          view = checkpoint_folder_view(directory);
        }
        return py::make_tuple(view.redirected, view.hidden, view.notes);
      },
      py::arg("directory"));
  m.def(
      "_forward_log",
      [](const py::object& target) {
        if (target.is_none()) {
          set_log_handler(nullptr);
          set_log_level(LogLevel::warning);
          return;
        }
        forward_log_to(target.inc_ref().ptr());
        set_log_level(LogLevel::debug);  // logging's own levels decide what is kept
      },
      py::arg("target"),
      "Sends the C++ library's log messages to target(level_name, message); None restores stderr.");
  m.def(
      "_locate_checkpoint",
      [](const std::string& directory, bool safe, std::optional<std::string> filename_pattern) {
        CheckpointFiles found;
        {
          py::gil_scoped_release release;
          found = locate_checkpoint(directory, safe, filename_pattern);
        }
        const auto as_bytes = [](const std::optional<std::filesystem::path>& path) -> py::object {
          if (!path) return py::none();
          return py::bytes(path->string());
        };
        return py::make_tuple(as_bytes(found.index), as_bytes(found.single), found.pattern);
      },
      py::arg("directory"), py::arg("safe"), py::arg("filename_pattern"),
      "quicksave::locate_checkpoint: (index path or None, single file path or None, pattern); paths as bytes.");
  m.def(
      "_verify_checksums",
      [](const std::string& directory, const std::string& pattern) {
        ChecksumReport report;
        {
          py::gil_scoped_release release;
          report = verify_checksums(directory, pattern);
        }
        std::vector<std::string> mismatches;
        for (const auto& m : report.mismatches) mismatches.push_back(m.what);
        return py::make_tuple(report.manifest_found, mismatches);
      },
      py::arg("directory"), py::arg("pattern"));

  py::class_<VerifiedFile>(m, "VerifiedFile", "One file of a verified checkpoint.")
      .def_readonly("name", &VerifiedFile::name)
      .def_readonly("status", &VerifiedFile::status, "'ok', 'invalid', 'missing', 'unreadable' or 'not checked'.")
      .def_readonly("bytes", &VerifiedFile::bytes)
      .def_readonly("tensors", &VerifiedFile::tensors)
      .def_readonly("xxh64", &VerifiedFile::xxh64, "XXH64 of the whole file (as `xxhsum -H64`), or None.")
      .def("__repr__", [](const VerifiedFile& f) { return "VerifiedFile(name='" + f.name + "', status='" + f.status + "')"; });
  py::class_<VerifyReport>(m, "VerifyReport", "What quicksave.verify_checkpoint found (the `quicksave verify` report).")
      .def_property_readonly("path", [](const VerifyReport& r) { return r.path.string(); })
      .def_readonly("kind", &VerifyReport::kind, "'sharded', 'single' or 'none'.")
      .def_readonly("index", &VerifyReport::index)
      .def_readonly("files", &VerifyReport::files)
      .def_readonly("tensors", &VerifyReport::tensors)
      .def_readonly("data_bytes", &VerifyReport::data_bytes)
      .def_readonly("bytes_read", &VerifyReport::bytes_read)
      .def_readonly("problems", &VerifyReport::problems, "One line per problem; any problem makes the checkpoint invalid.")
      .def_readonly("warnings", &VerifyReport::warnings)
      .def_property_readonly("interrupted_saves",
                             [](const VerifyReport& r) {
                               std::vector<std::string> paths;
                               for (const auto& l : r.leftovers) paths.push_back(l.path.string());
                               return paths;
                             },
                             "Paths an interrupted save left (see `quicksave recover`).")
      .def_readonly("manifest_found", &VerifyReport::manifest_found)
      .def_readonly("checksummed_tensors", &VerifyReport::checksummed_tensors)
      .def_property_readonly("valid", &VerifyReport::valid)
      .def("__bool__", &VerifyReport::valid)
      .def("__repr__", [](const VerifyReport& r) {
        return "VerifyReport(valid=" + std::string(r.valid() ? "True" : "False") + ", kind='" + r.kind + "', files=" +
               std::to_string(r.files.size()) + ", problems=" + std::to_string(r.problems.size()) + ")";
      });
  m.def(
      "verify_checkpoint",
      [](const py::object& path) {
        const std::string native = py::module_::import("os").attr("fsencode")(path).cast<std::string>();
        py::gil_scoped_release release;
        return verify_checkpoint(native);
      },
      py::arg("path"),
      "Checks a checkpoint folder, index or .safetensors file completely without loading it (every header, the index, "
      "every byte, the checksum manifest, leftovers of interrupted saves), like `quicksave verify`; changes nothing. "
      "Returns a VerifyReport (falsy when invalid, with one line per problem).");

  py::class_<LoadSource>(m, "_LoadSource")
      .def("names", [](const LoadSource& source) {
        py::list names;
        for (const auto& tensor : source.tensors()) names.append(py::str(tensor.name));
        return names;
      });
  m.def(
      "_open_checkpoint",
      [](const std::string& path, const std::optional<std::string>& pattern, bool verify,
         const std::optional<std::vector<std::string>>& keys) {
        LoadSourceOptions options{.filename_pattern = pattern, .verify = verify};
        if (keys) {
          // Only the shards holding these keys are opened.
          auto wanted = std::make_shared<std::unordered_set<std::string>>(keys->begin(), keys->end());
          options.key_filter = [wanted](const std::string& name) { return wanted->contains(name); };
        }
        py::gil_scoped_release release;
        return LoadSource::open(path, options);
      },
      py::arg("path"), py::arg("filename_pattern"), py::arg("verify"), py::arg("keys") = py::none());
  m.def(
      "_load_tensors_async",
      [](const LoadSource& source, const std::vector<std::string>& names, const py::dict& into, bool verify) {
        StateDict own;
        for (const auto& [name, value] : into) own.insert(name.cast<std::string>(), value.cast<torch::Tensor>());
        py::gil_scoped_release release;  // allocating and submitting need no Python
        return PyLoadJob(load_tensors_async(source, names, own, LoadOptions{.verify = verify}));
      },
      py::arg("source"), py::arg("names"), py::arg("into"), py::arg("verify"));
  py::class_<PyLoadJob>(m, "_LoadJob")
      .def("wait", &PyLoadJob::wait, py::arg("timeout") = py::none())
      .def("ready", &PyLoadJob::ready)
      .def("tensors", &PyLoadJob::tensors)
      .def("progress", &PyLoadJob::progress);

  py::class_<PySaveHandle>(m, "_SaveHandle")
      .def("wait_staged", &PySaveHandle::wait_staged, py::arg("timeout") = py::none())
      .def("wait_committed", &PySaveHandle::wait_committed, py::arg("timeout") = py::none())
      .def("staged_ready", &PySaveHandle::staged_ready)
      .def("committed_ready", &PySaveHandle::committed_ready)
      .def("cancel", &PySaveHandle::cancel)
      .def("progress", &PySaveHandle::progress)
      .def("when_staged", &PySaveHandle::when_staged, py::arg("callback"))
      .def("when_committed", &PySaveHandle::when_committed, py::arg("callback"));

  py::class_<CheckpointerOptions>(m, "_CheckpointerOptions")
      .def_readonly("pinned_budget_bytes", &CheckpointerOptions::pinned_budget_bytes)
      .def_readonly("chunk_bytes", &CheckpointerOptions::chunk_bytes)
      .def_readonly("worker_threads", &CheckpointerOptions::worker_threads)
      .def_readonly("queue_depth", &CheckpointerOptions::queue_depth)
      .def_property_readonly("io_backend", [](const CheckpointerOptions& o) { return backend_choice_name(o.io_backend); })
      .def_readonly("direct_io", &CheckpointerOptions::direct_io)
      .def_readonly("fsync", &CheckpointerOptions::fsync)
      .def_readonly("max_in_flight_saves", &CheckpointerOptions::max_in_flight_saves)
      .def_property_readonly("when_busy",
                             [](const CheckpointerOptions& o) { return o.when_busy == WhenBusy::fail ? "fail" : "wait"; });

  py::class_<PyCheckpointer>(m, "_Checkpointer")
      .def(py::init([](bool from_env, const py::kwargs& kwargs) {
             return std::make_unique<PyCheckpointer>(checkpointer_options(from_env, kwargs));
           }),
           py::arg("from_env") = false)
      .def("save_async", &PyCheckpointer::save_async, py::arg("state_dict"), py::arg("directory"), py::arg("args"),
           py::arg("streams") = std::vector<std::pair<int, std::uintptr_t>>{})
      .def("close", &PyCheckpointer::close)
      .def_property_readonly("closed", &PyCheckpointer::closed)
      .def_property_readonly("backend_name", &PyCheckpointer::backend_name)
      .def_property_readonly("backend_fallback_reason", &PyCheckpointer::backend_fallback_reason)
      .def_property_readonly("pinned_bytes", &PyCheckpointer::pinned_bytes)
      .def_property_readonly("options", &PyCheckpointer::options);
}
