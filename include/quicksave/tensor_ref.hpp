// TensorRef: the framework-agnostic view of one tensor that everything below the adapters
// (torch, DLPack) works on. It does not own memory; `keepalive` may hold whatever keeps the
// bytes valid while a save reads them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "quicksave/dtype.hpp"
#include "quicksave/storage_key.hpp"

namespace quicksave {

enum class DeviceKind : std::uint8_t { cpu, cuda, meta };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = -1;  // CUDA ordinal; -1 for cpu and meta
  // "cpu", "cuda:0", "meta" (torch's spelling).
  std::string str() const;
  friend bool operator==(const Device&, const Device&) = default;
};

struct TensorRef {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;   // in elements, one per dimension; empty = C-contiguous
  Device device;
  const void* data = nullptr;          // the first element (may be null when nothing is read)
  const void* storage_base = nullptr;  // start of the storage the tensor views (null: no storage)
  std::uint64_t storage_nbytes = 0;    // size of that storage in bytes
  std::shared_ptr<const void> keepalive;
  // CUDA tensors: the stream (a cudaStream_t, opaque here) whose queued work produces the bytes;
  // the save copies them only after that work. Null: the device's legacy default stream. The
  // torch adapter sets each device's current stream; SaveOptions::producer_streams overrides it.
  void* producer_stream = nullptr;

  std::uint64_t numel() const;
  std::uint64_t nbytes() const;        // bytes of the tensor's own elements, C order
  bool is_contiguous() const;          // C-contiguous (size-1 dimensions' strides ignored)
  // Offset of `data` from `storage_base`, in bytes.
  std::uint64_t storage_offset_bytes() const;
  // True when the tensor covers its whole storage: starts at the base and has as many bytes.
  bool is_complete() const;
  // The identity the HF planner groups by: (device, storage base, storage bytes).
  StorageKey storage_key() const;
};

}  // namespace quicksave
