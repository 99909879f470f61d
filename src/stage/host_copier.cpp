// HostCopier: the Copier for tensors in host memory. Each chunk is one task on the executor that
// lays the chunk's segments (header bytes, then tensor byte ranges gathered in C order) end to end
// into the staging buffer, so a chunk costs one hand-off however many small tensors it holds.
//
// `plan` is read from the worker thread and must stay alive until `done` has run; the chunk is
// copied into the task, so it need not.
#include <atomic>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"
#include "stage/copier.hpp"
#include "stage/copy_segment.hpp"

namespace quicksave::stage {
namespace {

// Guarantees `done` runs once even if the executor both fails and (later) runs the task.
class OnceCompletion {
 public:
  explicit OnceCompletion(CopyDone done) : done_(std::move(done)) {}
  void operator()(std::exception_ptr error) {
    if (!fired_.exchange(true, std::memory_order_acq_rel)) done_(std::move(error));
  }

 private:
  CopyDone done_;
  std::atomic<bool> fired_{false};
};

std::string chunk_context(const plan::Chunk& chunk) {
  return "file=" + std::to_string(chunk.file) + ", offset=" + std::to_string(chunk.file_offset) +
         ", length=" + std::to_string(chunk.length);
}

void copy_chunk_now(const plan::SavePlan& plan, const plan::Chunk& chunk, std::byte* dst) {
  // Check the whole chunk before writing a byte: dst holds chunk.length bytes and no more.
  std::uint64_t total = 0;
  for (const plan::Segment& segment : chunk.segments) {
    if (__builtin_add_overflow(total, segment.length, &total)) total = UINT64_MAX;
  }
  if (total != chunk.length) {
    throw Error(ErrorCode::invalid_argument, "copy_chunk: segments sum to " + std::to_string(total) +
                                                 " bytes, not the chunk's length (" + chunk_context(chunk) + ")");
  }
  if (chunk.length != 0 && dst == nullptr) {
    throw Error(ErrorCode::invalid_argument, "copy_chunk: null destination (" + chunk_context(chunk) + ")");
  }

  std::uint64_t position = 0;
  for (const plan::Segment& segment : chunk.segments) {
    if (segment.tensor == plan::Segment::kHeader) {
      if (chunk.file >= plan.files.size()) {
        throw Error(ErrorCode::invalid_argument, "copy_chunk: no such file in the plan (" + chunk_context(chunk) + ")");
      }
      const std::string& header = plan.files[chunk.file].header;
      if (segment.source_offset > header.size() || segment.length > header.size() - segment.source_offset) {
        throw Error(ErrorCode::invalid_argument,
                    "copy_chunk: header segment [" + std::to_string(segment.source_offset) + ", +" +
                        std::to_string(segment.length) + ") outside the " + std::to_string(header.size()) +
                        "-byte header (" + chunk_context(chunk) + ")");
      }
      if (segment.length != 0) std::memcpy(dst + position, header.data() + segment.source_offset, segment.length);
    } else {
      if (segment.tensor >= plan.tensors.size()) {
        throw Error(ErrorCode::invalid_argument, "copy_chunk: segment names tensor " + std::to_string(segment.tensor) +
                                                     " of " + std::to_string(plan.tensors.size()) + " (" +
                                                     chunk_context(chunk) + ")");
      }
      stage::copy_segment(plan.tensors[segment.tensor], segment.source_offset, segment.length, dst + position);
    }
    position += segment.length;
  }
}

class HostCopier final : public Copier {
 public:
  explicit HostCopier(Executor executor) : executor_(std::move(executor)) {}

  std::string name() const override { return "host"; }

  bool handles(const Device& device) const override { return device.kind == DeviceKind::cpu; }

  void copy_chunk(const plan::SavePlan& plan, const plan::Chunk& chunk, std::byte* dst, CopyDone done) override {
    std::shared_ptr<OnceCompletion> once;
    try {
      once = std::make_shared<OnceCompletion>(std::move(done));
      executor_([&plan, chunk, dst, once] {
        std::exception_ptr error;
        try {
          copy_chunk_now(plan, chunk, dst);
        } catch (...) {
          error = std::current_exception();
        }
        (*once)(std::move(error));
      });
    } catch (...) {
      // Could not hand the task over (no memory, executor stopped): report it, never throw.
      if (once) {
        (*once)(std::current_exception());
      } else if (done) {
        done(std::current_exception());
      }
    }
  }

 private:
  Executor executor_;
};

}  // namespace

std::unique_ptr<Copier> make_host_copier(Executor executor) {
  if (!executor) throw Error(ErrorCode::invalid_argument, "make_host_copier: empty executor");
  return std::make_unique<HostCopier>(std::move(executor));
}

}  // namespace quicksave::stage
