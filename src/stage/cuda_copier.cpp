// CudaCopier: see cuda_copier.hpp for the protocol. The pieces:
//   CudaCopierState  the long-lived part shared by the copier and every save's copier: per device
//                    (created on first use) its copy streams, their scratch buffers and a free
//                    list of producer events;
//   ProducerFence    one save's producer events (one per device), back to the free list when the
//                    save's copier goes;
//   ChunkOp          one chunk's completion: the parts (host, one per device) still running, the
//                    first error, and `done`, called once when the last part finishes;
//   StreamCompletion what a copy stream's callback needs to hand the completion to a worker.
//
// Threads: copy_chunk runs on the engine's workers (begin_save on the caller's thread); CUDA
// calls are made only there and in destructors, never inside stream callbacks. A stream is used
// by one chunk at a time while it enqueues (its scratch buffer is shared by the chunks queued on
// it, which stream order keeps apart).
#include "plan/tensor_view_check.hpp"
#include "stage/copy_segment.hpp"
#include "stage/cuda_copier.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "kernels/cuda_error.hpp"
#include "kernels/staging_kernels.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"

namespace quicksave::stage {

using kernels::cuda_check;
using kernels::cuda_error;

int cuda_device_count() noexcept {
  int count = 0;
  if (::cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)::cudaGetLastError();  // not sticky, but keep it out of later, unrelated checks
    return 0;
  }
  return count;
}

namespace {

std::string device_name(int device) { return "cuda:" + std::to_string(device); }

// Makes `device` current on this thread while alive, then restores the previous device (the
// caller of begin_save is the training thread: its current device must not change under it).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (::cudaGetDevice(&previous_) != cudaSuccess) {
      (void)::cudaGetLastError();
      previous_ = -1;
    }
    if (previous_ != device) {
      cuda_check(::cudaSetDevice(device), "cudaSetDevice", "device=" + device_name(device));
      switched_ = true;
    }
  }
  ~DeviceGuard() {
    if (switched_ && previous_ >= 0 && ::cudaSetDevice(previous_) != cudaSuccess) (void)::cudaGetLastError();
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool switched_ = false;
};

std::string chunk_context(const plan::Chunk& chunk) {
  return "file=" + std::to_string(chunk.file) + ", offset=" + std::to_string(chunk.file_offset) +
         ", length=" + std::to_string(chunk.length);
}

[[noreturn]] void bad_tensor(const TensorRef& t, const std::string& what) {
  throw Error(ErrorCode::invalid_argument, "CUDA copier: tensor '" + t.name + "' " + what);
}

// Everything about a CUDA tensor that can be checked before its bytes are read: the device
// ordinal, sizes and strides, that a strided view stays inside its storage and is packable, and
// (`check_pointer`) that its memory really is on that device, so that a mislabelled TensorRef
// fails with a message instead of a copy fault.
void check_device_tensor(const TensorRef& t, int device_count, bool check_pointer) {
  const int device = t.device.index;
  if (device < 0 || device >= device_count) {
    bad_tensor(t, "is on " + t.device.str() + ", but this process sees " + std::to_string(device_count) + " CUDA device(s)");
  }
  // The view's geometry (plan/tensor_view_check.hpp), shared with the host gather.
  const plan::ViewExtent extent = plan::check_view(t, "CUDA copier");
  if (extent.nbytes == 0) return;
  if (!extent.contiguous) {
    // Throws for more than 8 dimensions left after merging, or an element size the kernel lacks.
    (void)kernels::make_strided_view(t.data, t.shape.size(), t.shape.data(), t.strides.empty() ? nullptr : t.strides.data(),
                                     dtype_bits(t.dtype) / 8);
  }
  if (check_pointer) {
    cudaPointerAttributes attributes{};
    const cudaError_t rc = ::cudaPointerGetAttributes(&attributes, t.data);
    if (rc != cudaSuccess) {
      (void)::cudaGetLastError();
      throw cuda_error(rc, "cudaPointerGetAttributes", "tensor '" + t.name + "' on " + t.device.str());
    }
    const bool managed = attributes.type == cudaMemoryTypeManaged;
    if (!managed && (attributes.type != cudaMemoryTypeDevice || attributes.device != device)) {
      const std::string where = attributes.type == cudaMemoryTypeDevice ? "memory of " + device_name(attributes.device)
                                : attributes.type == cudaMemoryTypeHost ? std::string("pinned host memory")
                                                                        : std::string("memory CUDA does not know");
      bad_tensor(t, "says " + t.device.str() + " but its data is " + where);
    }
  }
}

}  // namespace

// ---- CudaCopierState -------------------------------------------------------------------------

struct CopyStream {
  cudaStream_t stream = nullptr;
  std::mutex mutex;         // held by the chunk that is enqueueing on this stream
  void* scratch = nullptr;  // device memory of scratch_bytes, allocated on first use
};

struct DeviceContext {
  int device = 0;
  std::vector<std::unique_ptr<CopyStream>> streams;
  std::atomic<unsigned> next{0};
  std::mutex events_mutex;
  std::vector<cudaEvent_t> free_events;
};

class CudaCopierState {
 public:
  CudaCopierState(Executor executor, CudaCopierOptions options)
      : executor_(std::move(executor)), options_(std::move(options)) {}
  ~CudaCopierState();
  CudaCopierState(const CudaCopierState&) = delete;
  CudaCopierState& operator=(const CudaCopierState&) = delete;

  const Executor& executor() const { return executor_; }
  const CudaCopierOptions& options() const { return options_; }

  // The device's context, created on first use (streams only; scratch and events come later).
  DeviceContext& device(int device);
  // Records an event on the producer stream of `device` (current device: anything).
  // `given`: the save's producer stream for `device` (null: the options', else legacy default).
  cudaEvent_t record_producer(int device, CudaStream given = nullptr);
  void give_back_events(const std::vector<std::pair<int, cudaEvent_t>>& events) noexcept;
  // Waits for every stream (and so for their callbacks) to finish.
  void drain() noexcept;

  int device_count();

  std::atomic<std::uint64_t> chunks{0};
  std::atomic<std::uint64_t> memcpy_calls{0};
  std::atomic<std::uint64_t> gather_launches{0};
  std::atomic<std::uint64_t> gathered_pieces{0};
  std::atomic<std::uint64_t> pack_launches{0};
  std::atomic<std::uint64_t> producer_events{0};
  std::atomic<std::uint64_t> device_bytes{0};

 private:
  Executor executor_;
  CudaCopierOptions options_;
  std::mutex mutex_;
  std::map<int, std::unique_ptr<DeviceContext>> devices_;
  int device_count_ = -1;
};

int CudaCopierState::device_count() {
  std::lock_guard lock(mutex_);
  // The device count of a process does not change; cudaGetDeviceCount's failure reason is kept in
  // the message of whoever asks first.
  if (device_count_ < 0) device_count_ = cuda_device_count();
  return device_count_;
}

DeviceContext& CudaCopierState::device(int device) {
  std::lock_guard lock(mutex_);
  std::unique_ptr<DeviceContext>& slot = devices_[device];
  if (slot) return *slot;
  auto context = std::make_unique<DeviceContext>();
  context->device = device;
  DeviceGuard guard(device);
  int least = 0;
  int greatest = 0;
  cuda_check(::cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange",
             "device=" + device_name(device));
  const unsigned count = std::max(1u, options_.streams_per_device);
  for (unsigned i = 0; i < count; ++i) {
    auto stream = std::make_unique<CopyStream>();
    // Non-blocking: the copies never serialize with the legacy default stream (training work);
    // the producer event is the only ordering. Lowest priority: kernels of the training step
    // that are ready first win the SMs over the staging kernels.
    const cudaError_t rc = ::cudaStreamCreateWithPriority(&stream->stream, cudaStreamNonBlocking, least);
    if (rc != cudaSuccess) {
      for (auto& made : context->streams) (void)::cudaStreamDestroy(made->stream);
      throw cuda_error(rc, "cudaStreamCreateWithPriority", "device=" + device_name(device));
    }
    context->streams.push_back(std::move(stream));
  }
  slot = std::move(context);
  return *slot;
}

cudaEvent_t CudaCopierState::record_producer(int device, CudaStream given) {
  DeviceContext& context = this->device(device);
  DeviceGuard guard(device);
  cudaEvent_t event = nullptr;
  {
    std::lock_guard lock(context.events_mutex);
    if (!context.free_events.empty()) {
      event = context.free_events.back();
      context.free_events.pop_back();
    }
  }
  if (event == nullptr) {
    cuda_check(::cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags",
               "device=" + device_name(device));
  }
  CudaStream producer = given != nullptr ? given : options_.producer_stream ? options_.producer_stream(device) : nullptr;
  const cudaError_t rc = ::cudaEventRecord(event, producer != nullptr ? producer : cudaStreamLegacy);
  if (rc != cudaSuccess) {
    give_back_events({{device, event}});
    throw cuda_error(rc, "cudaEventRecord",
                     "producer stream of " + device_name(device) + (producer != nullptr ? " (given)" : " (legacy default)"));
  }
  ++producer_events;
  return event;
}

void CudaCopierState::give_back_events(const std::vector<std::pair<int, cudaEvent_t>>& events) noexcept {
  // No CUDA call: a save's copier may be destroyed on any thread. An event may be recorded again
  // as soon as the waits on it are enqueued, which happened before its save could end.
  for (const auto& [device, event] : events) {
    DeviceContext* context = nullptr;
    {
      std::lock_guard lock(mutex_);
      const auto it = devices_.find(device);
      if (it != devices_.end()) context = it->second.get();
    }
    if (context == nullptr) continue;
    std::lock_guard lock(context->events_mutex);
    try {
      context->free_events.push_back(event);
    } catch (...) {
      // Out of memory for one pointer: the event is leaked rather than destroyed here.
    }
  }
}

void CudaCopierState::drain() noexcept {
  // Not under mutex_ while waiting: a callback's completion may reach give_back_events.
  std::vector<std::pair<int, cudaStream_t>> streams;
  try {
    std::lock_guard lock(mutex_);
    for (auto& [device, context] : devices_) {
      if (!context) continue;
      for (auto& stream : context->streams) streams.emplace_back(device, stream->stream);
    }
  } catch (...) {
    return;
  }
  for (const auto& [device, stream] : streams) {
    try {
      DeviceGuard guard(device);
      if (::cudaStreamSynchronize(stream) != cudaSuccess) (void)::cudaGetLastError();
    } catch (...) {
    }
  }
}

CudaCopierState::~CudaCopierState() {
  drain();
  for (auto& [device, context] : devices_) {
    if (!context) continue;
    try {
      DeviceGuard guard(device);
      for (auto& stream : context->streams) {
        if (stream->scratch != nullptr) (void)::cudaFree(stream->scratch);
        (void)::cudaStreamDestroy(stream->stream);
      }
      for (cudaEvent_t event : context->free_events) (void)::cudaEventDestroy(event);
    } catch (...) {
    }
    (void)::cudaGetLastError();
  }
}

namespace {

// ---- one save's producer events --------------------------------------------------------------

struct ProducerFence {
  std::shared_ptr<CudaCopierState> state;
  std::vector<std::pair<int, cudaEvent_t>> events;

  cudaEvent_t event_for(int device) const {
    for (const auto& [d, event] : events) {
      if (d == device) return event;
    }
    return nullptr;
  }
  ~ProducerFence() {
    if (state) state->give_back_events(events);
  }
};

// ---- one chunk -------------------------------------------------------------------------------

class ChunkOp {
 public:
  explicit ChunkOp(CopyDone done) : done_(std::move(done)) {}

  void add_part() { pending_.fetch_add(1, std::memory_order_relaxed); }
  void fail(std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    if (!error_) error_ = std::move(error);
  }
  // Each part (and the setup, which holds one part until everything is dispatched) ends here
  // exactly once; the last one calls `done`.
  void finish_part(std::exception_ptr error) {
    if (error) fail(std::move(error));
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    std::exception_ptr first;
    {
      std::lock_guard lock(mutex_);
      first = error_;
    }
    CopyDone done = std::move(done_);
    if (done) done(std::move(first));
  }

 private:
  CopyDone done_;
  std::atomic<int> pending_{1};
  std::mutex mutex_;
  std::exception_ptr error_;
};

struct StreamCompletion {
  std::shared_ptr<StreamCompletion> self;  // alive until the stream callback takes it
  std::shared_ptr<ChunkOp> op;
  Executor executor;
  std::exception_ptr enqueue_error;
  std::string context;

  void finish(cudaError_t status, bool may_call_cuda) {
    std::exception_ptr error = enqueue_error;
    if (!error && status != cudaSuccess) {
      error = may_call_cuda
                  ? std::make_exception_ptr(cuda_error(status, "cudaMemcpyAsync/staging kernels on the copy stream", context))
                  : std::make_exception_ptr(Error(ErrorCode::internal, "copy stream: CUDA error " +
                                                                           std::to_string(static_cast<int>(status)) +
                                                                           " (" + context + ")"));
    }
    op->finish_part(std::move(error));
  }
};

// Runs on a CUDA driver thread once the work queued before it on the stream is done; called even
// when that work failed (`status` then says how), which is why it is cudaStreamAddCallback and
// not cudaLaunchHostFunc (whose function is skipped after a device error, which would leave the
// chunk's `done` uncalled forever). CUDA calls are not allowed here, so everything, including the
// error's text (cudaGetErrorName), is done by a worker.
void CUDART_CB on_stream_done(cudaStream_t, cudaError_t status, void* user) {
  std::shared_ptr<StreamCompletion> completion = std::move(static_cast<StreamCompletion*>(user)->self);
  try {
    completion->executor([completion, status] { completion->finish(status, true); });
  } catch (...) {
    completion->finish(status, false);  // could not hand it over: finish here, still without CUDA calls
  }
}

// One piece of a chunk on a device: `length` bytes of `tensor` from `source_offset` (C order),
// at `position` in the chunk.
struct Piece {
  const TensorRef* tensor = nullptr;
  std::uint64_t source_offset = 0;
  std::uint64_t length = 0;
  std::uint64_t position = 0;
  bool contiguous = true;
};

struct HostPiece {
  plan::Segment segment;
  std::uint64_t position = 0;
};

void copy_host_pieces(const plan::SavePlan& plan, std::size_t file, const std::vector<HostPiece>& pieces, std::byte* dst) {
  for (const HostPiece& piece : pieces) {
    const plan::Segment& s = piece.segment;
    if (s.tensor == plan::Segment::kHeader) {
      const std::string& header = plan.files[file].header;
      if (s.source_offset > header.size() || s.length > header.size() - s.source_offset) {
        throw Error(ErrorCode::invalid_argument, "CUDA copier: header segment [" + std::to_string(s.source_offset) + ", +" +
                                                     std::to_string(s.length) + ") outside the " +
                                                     std::to_string(header.size()) + "-byte header");
      }
      if (s.length != 0) std::memcpy(dst + piece.position, header.data() + s.source_offset, s.length);
    } else {
      stage::copy_segment(plan.tensors[s.tensor], s.source_offset, s.length, dst + piece.position);
    }
  }
}

// ---- the copy --------------------------------------------------------------------------------

// Enqueues one chunk's pieces of one device on `cs` (device current, stream locked).
void enqueue_pieces(CudaCopierState& state, int device, CopyStream& cs, cudaEvent_t producer,
                    const std::vector<Piece>& pieces, std::byte* dst, const std::string& context) {
  const CudaCopierOptions& options = state.options();
  const cudaStream_t stream = cs.stream;
  cuda_check(::cudaStreamWaitEvent(stream, producer, 0), "cudaStreamWaitEvent", "producer of " + context);

  std::vector<const Piece*> staged;
  for (const Piece& piece : pieces) {
    state.device_bytes += piece.length;
    if (piece.contiguous && piece.length >= options.small_copy_bytes) {
      const auto* src = static_cast<const std::byte*>(piece.tensor->data) + piece.source_offset;
      cuda_check(::cudaMemcpyAsync(dst + piece.position, src, piece.length, cudaMemcpyDeviceToHost, stream),
                 "cudaMemcpyAsync", "tensor '" + piece.tensor->name + "', bytes=" + std::to_string(piece.length) + ", " + context);
      ++state.memcpy_calls;
    } else {
      staged.push_back(&piece);
    }
  }
  if (staged.empty()) return;

  // Small and strided pieces go through the stream's scratch, at their chunk positions relative to
  // a window start, so that adjacent pieces leave the device in one copy. A chunk larger than the
  // scratch is done in several windows; stream order keeps a window's kernels behind the previous
  // window's copy out.
  const std::uint64_t window = std::max<std::uint64_t>(options.scratch_bytes, 4096);
  if (cs.scratch == nullptr) {
    cuda_check(::cudaMalloc(&cs.scratch, window), "cudaMalloc",
               "staging scratch of " + device_name(device) + ", bytes=" + std::to_string(window));
  }
  auto* scratch = static_cast<std::byte*>(cs.scratch);
  std::vector<kernels::GatherEntry> entries;
  struct Run {
    std::uint64_t begin;
    std::uint64_t end;
  };
  std::vector<Run> runs;
  std::size_t index = 0;
  std::uint64_t done_in_piece = 0;  // bytes of staged[index] already handled
  while (index < staged.size()) {
    const std::uint64_t base = staged[index]->position + done_in_piece;
    const std::uint64_t limit = base + window;
    entries.clear();
    runs.clear();
    while (index < staged.size() && staged[index]->position + done_in_piece < limit) {
      const Piece& piece = *staged[index];
      const std::uint64_t start = piece.position + done_in_piece;
      const std::uint64_t take = std::min(piece.length - done_in_piece, limit - start);
      std::byte* out = scratch + (start - base);
      if (piece.contiguous) {
        entries.push_back({static_cast<const std::byte*>(piece.tensor->data) + piece.source_offset + done_in_piece,
                           start - base, take});
      } else {
        const TensorRef& t = *piece.tensor;
        const kernels::StridedView view = kernels::make_strided_view(
            t.data, t.shape.size(), t.shape.data(), t.strides.empty() ? nullptr : t.strides.data(), dtype_bits(t.dtype) / 8);
        kernels::pack_strided(view, piece.source_offset + done_in_piece, take, out, stream);
        ++state.pack_launches;
      }
      if (!runs.empty() && runs.back().end == start) {
        runs.back().end += take;
      } else {
        runs.push_back({start, start + take});
      }
      done_in_piece += take;
      if (done_in_piece == piece.length) {
        ++index;
        done_in_piece = 0;
      }
    }
    if (!entries.empty()) {
      kernels::gather(entries.data(), entries.size(), scratch, stream);
      state.gather_launches += kernels::gather_launches(entries.size());
      state.gathered_pieces += entries.size();
    }
    for (const Run& run : runs) {
      cuda_check(::cudaMemcpyAsync(dst + run.begin, scratch + (run.begin - base), run.end - run.begin, cudaMemcpyDeviceToHost, stream),
                 "cudaMemcpyAsync", "staged bytes [" + std::to_string(run.begin) + ", " + std::to_string(run.end) + ") of " + context);
      ++state.memcpy_calls;
    }
  }
}

// Copies one chunk's pieces on `device`; always ends the part in `op` exactly once (after the
// work it queued has drained, whatever fails).
void copy_on_device(const std::shared_ptr<CudaCopierState>& state, const ProducerFence* fence, int device,
                    const std::vector<Piece>& pieces, std::byte* dst, const std::shared_ptr<ChunkOp>& op,
                    const std::string& chunk_text) noexcept {
  std::exception_ptr error;
  try {
    const std::string context = device_name(device) + ", " + chunk_text;
    DeviceContext& ctx = state->device(device);
    // The producer event: this save's (recorded at save_async), or one recorded now.
    cudaEvent_t own_event = nullptr;
    cudaEvent_t producer = fence != nullptr ? fence->event_for(device) : nullptr;
    if (producer == nullptr) producer = own_event = state->record_producer(device);
    struct GiveBack {
      CudaCopierState& state;
      int device;
      cudaEvent_t event;
      ~GiveBack() {
        if (event != nullptr) state.give_back_events({{device, event}});
      }
    } give_back{*state, device, own_event};

    DeviceGuard guard(device);
    CopyStream& cs = *ctx.streams[ctx.next.fetch_add(1, std::memory_order_relaxed) % ctx.streams.size()];
    std::lock_guard lock(cs.mutex);
    ++state->chunks;
    auto completion = std::make_shared<StreamCompletion>();
    completion->op = op;
    completion->executor = state->executor();
    completion->context = context;
    try {
      enqueue_pieces(*state, device, cs, producer, pieces, dst, context);
    } catch (...) {
      // Part of the chunk may be queued already and would still write into dst: report the error
      // only once the stream has drained that work.
      completion->enqueue_error = std::current_exception();
    }
    completion->self = completion;
    const cudaError_t rc = ::cudaStreamAddCallback(cs.stream, &on_stream_done, completion.get(), 0);
    if (rc == cudaSuccess) return;  // the callback ends the part
    completion->self.reset();
    error = completion->enqueue_error ? completion->enqueue_error
                                      : std::make_exception_ptr(cuda_error(rc, "cudaStreamAddCallback", context));
    if (::cudaStreamSynchronize(cs.stream) != cudaSuccess) (void)::cudaGetLastError();
  } catch (...) {
    error = std::current_exception();
  }
  op->finish_part(std::move(error));
}

void copy_chunk_with(const std::shared_ptr<CudaCopierState>& state, const ProducerFence* fence, const plan::SavePlan& plan,
                     const plan::Chunk& chunk, std::byte* dst, CopyDone done) {
  std::shared_ptr<ChunkOp> op;
  try {
    op = std::make_shared<ChunkOp>(std::move(done));
  } catch (...) {
    if (done) done(std::current_exception());
    return;
  }
  try {
    // Check the whole chunk and sort its pieces before queueing anything.
    std::uint64_t total = 0;
    for (const plan::Segment& segment : chunk.segments) {
      if (__builtin_add_overflow(total, segment.length, &total)) total = UINT64_MAX;
    }
    if (total != chunk.length) {
      throw Error(ErrorCode::invalid_argument, "CUDA copier: segments sum to " + std::to_string(total) +
                                                   " bytes, not the chunk's length (" + chunk_context(chunk) + ")");
    }
    if (chunk.length != 0 && dst == nullptr) {
      throw Error(ErrorCode::invalid_argument, "CUDA copier: null destination (" + chunk_context(chunk) + ")");
    }
    if (chunk.file >= plan.files.size()) {
      throw Error(ErrorCode::invalid_argument, "CUDA copier: no such file in the plan (" + chunk_context(chunk) + ")");
    }
    std::vector<HostPiece> host;
    std::map<int, std::vector<Piece>> by_device;
    int device_count = -1;
    std::uint64_t position = 0;
    for (const plan::Segment& segment : chunk.segments) {
      if (segment.tensor == plan::Segment::kHeader) {
        host.push_back({segment, position});
      } else {
        if (segment.tensor >= plan.tensors.size()) {
          throw Error(ErrorCode::invalid_argument, "CUDA copier: segment names tensor " + std::to_string(segment.tensor) +
                                                       " of " + std::to_string(plan.tensors.size()) + " (" +
                                                       chunk_context(chunk) + ")");
        }
        const TensorRef& t = plan.tensors[segment.tensor];
        if (t.device.kind == DeviceKind::cpu) {
          host.push_back({segment, position});
        } else if (t.device.kind == DeviceKind::cuda) {
          if (device_count < 0) device_count = state->device_count();
          if (device_count == 0) {
            throw Error(ErrorCode::unavailable, "CUDA copier: tensor '" + t.name + "' is on " + t.device.str() +
                                                    ", but no CUDA device is usable here");
          }
          // A save's copier checked its tensors (pointers too) in begin_save.
          check_device_tensor(t, device_count, fence == nullptr);
          std::uint64_t end = 0;
          if (__builtin_add_overflow(segment.source_offset, segment.length, &end) || end > t.nbytes()) {
            bad_tensor(t, "has " + std::to_string(t.nbytes()) + " bytes; cannot copy bytes [" +
                              std::to_string(segment.source_offset) + ", +" + std::to_string(segment.length) + ")");
          }
          if (segment.length != 0) {
            by_device[t.device.index].push_back(Piece{&t, segment.source_offset, segment.length, position, t.is_contiguous()});
          }
        } else {
          throw Error(ErrorCode::invalid_argument, "CUDA copier: tensor '" + t.name + "' is on " + t.device.str() +
                                                       ", which holds no bytes to copy");
        }
      }
      position += segment.length;
    }

    const std::string text = chunk_context(chunk);
    if (!host.empty()) {
      op->add_part();
      try {
        state->executor()([&plan, file = chunk.file, host = std::move(host), dst, op] {
          std::exception_ptr error;
          try {
            copy_host_pieces(plan, file, host, dst);
          } catch (...) {
            error = std::current_exception();
          }
          op->finish_part(std::move(error));
        });
      } catch (...) {
        op->finish_part(std::current_exception());
      }
    }
    for (const auto& [device, pieces] : by_device) {
      op->add_part();
      copy_on_device(state, fence, device, pieces, dst, op, text);
    }
  } catch (...) {
    op->fail(std::current_exception());
  }
  op->finish_part(nullptr);  // the setup's part
}

class SaveCopier final : public Copier {
 public:
  SaveCopier(std::shared_ptr<CudaCopierState> state, std::shared_ptr<ProducerFence> fence)
      : state_(std::move(state)), fence_(std::move(fence)) {}
  std::string name() const override { return "cuda"; }
  bool handles(const Device& device) const override {
    return device.kind == DeviceKind::cpu || device.kind == DeviceKind::cuda;
  }
  void copy_chunk(const plan::SavePlan& plan, const plan::Chunk& chunk, std::byte* dst, CopyDone done) override {
    copy_chunk_with(state_, fence_.get(), plan, chunk, dst, std::move(done));
  }

 private:
  std::shared_ptr<CudaCopierState> state_;
  std::shared_ptr<ProducerFence> fence_;
};

}  // namespace

// ---- CudaCopier ------------------------------------------------------------------------------

CudaCopier::CudaCopier(Executor executor, CudaCopierOptions options) {
  if (!executor) throw Error(ErrorCode::invalid_argument, "CudaCopier: empty executor");
  if (options.streams_per_device == 0) throw Error(ErrorCode::invalid_argument, "CudaCopier: streams_per_device must be at least 1");
  if (options.scratch_bytes < 4096) {
    throw Error(ErrorCode::invalid_argument, "CudaCopier: scratch_bytes must be at least 4096, got " + std::to_string(options.scratch_bytes));
  }
  state_ = std::make_shared<CudaCopierState>(std::move(executor), std::move(options));
}

CudaCopier::~CudaCopier() {
  if (state_) state_->drain();
}

bool CudaCopier::handles(const Device& device) const {
  return device.kind == DeviceKind::cpu || device.kind == DeviceKind::cuda;
}

void CudaCopier::copy_chunk(const plan::SavePlan& plan, const plan::Chunk& chunk, std::byte* dst, CopyDone done) {
  copy_chunk_with(state_, nullptr, plan, chunk, dst, std::move(done));
}

std::shared_ptr<Copier> CudaCopier::begin_save(const std::vector<TensorRef>& tensors) {
  const TensorRef* first = nullptr;
  for (const TensorRef& t : tensors) {
    if (t.device.kind == DeviceKind::cuda && first == nullptr) first = &t;
  }
  auto fence = std::make_shared<ProducerFence>();
  if (first != nullptr) {
    int count = 0;
    const cudaError_t rc = ::cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0) {
      (void)::cudaGetLastError();
      const std::string why = rc != cudaSuccess ? kernels::cuda_error(rc, "cudaGetDeviceCount").what()
                                                : std::string("cudaGetDeviceCount: 0 devices");
      throw Error(ErrorCode::unavailable, "tensor '" + first->name + "' is on " + first->device.str() +
                                              ", but no CUDA device is usable here (" + why + ")");
    }
    for (const TensorRef& t : tensors) {
      if (t.device.kind == DeviceKind::cuda) check_device_tensor(t, count, /*check_pointer=*/true);
    }
    fence->state = state_;
    // One producer stream per device: the first tensor's; its other tensors must agree.
    std::vector<std::pair<int, CudaStream>> producers;
    for (const TensorRef& t : tensors) {
      if (t.device.kind != DeviceKind::cuda) continue;
      const auto stream = static_cast<CudaStream>(t.producer_stream);
      const auto known = std::find_if(producers.begin(), producers.end(), [&](const auto& p) { return p.first == t.device.index; });
      if (known == producers.end()) {
        producers.emplace_back(t.device.index, stream);
      } else if (known->second != stream) {
        throw Error(ErrorCode::invalid_argument, "tensor '" + t.name + "' names another producer stream for " + t.device.str() +
                                                     " than the save's other tensors there (one stream per device)");
      }
    }
    for (const auto& [device, stream] : producers) fence->events.emplace_back(device, state_->record_producer(device, stream));
  }
  return std::make_shared<SaveCopier>(state_, std::move(fence));
}

CudaCopierStats CudaCopier::stats() const {
  CudaCopierStats s;
  s.chunks = state_->chunks.load();
  s.memcpy_calls = state_->memcpy_calls.load();
  s.gather_launches = state_->gather_launches.load();
  s.gathered_pieces = state_->gathered_pieces.load();
  s.pack_launches = state_->pack_launches.load();
  s.producer_events = state_->producer_events.load();
  s.device_bytes = state_->device_bytes.load();
  return s;
}

}  // namespace quicksave::stage
