// Owning RAII wrappers for device and pinned host memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "cuda_check.h"

namespace tiemb {
namespace gpu {

/// cudaMalloc'ed bytes, freed on destruction.
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) TIEMB_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~device_buffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  device_buffer(device_buffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  template <class T = void>
  T* get() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// Page-locked host bytes (cudaHostAlloc), optionally mapped into the
/// device address space for zero-copy reads.
class pinned_buffer {
 public:
  pinned_buffer() = default;
  explicit pinned_buffer(size_t bytes, bool mapped = false) : bytes_(bytes) {
    if (bytes > 0) {
      TIEMB_CUDA_CHECK(cudaHostAlloc(&ptr_, bytes, mapped ? cudaHostAllocMapped : cudaHostAllocDefault));
      if (mapped) TIEMB_CUDA_CHECK(cudaHostGetDevicePointer(&dev_ptr_, ptr_, 0));
    }
  }
  ~pinned_buffer() {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
  }
  pinned_buffer(pinned_buffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), dev_ptr_(o.dev_ptr_), bytes_(o.bytes_) {}
  pinned_buffer& operator=(pinned_buffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(dev_ptr_, o.dev_ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  template <class T = void>
  T* get() const { return static_cast<T*>(ptr_); }
  /// The device-side address of a mapped buffer.
  template <class T = void>
  T* device() const { return static_cast<T*>(dev_ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  void* dev_ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// Makes `device` current for the lifetime of the guard.
class device_guard {
 public:
  explicit device_guard(int device) {
    TIEMB_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) TIEMB_CUDA_CHECK(cudaSetDevice(device));
    restore_ = previous_ != device;
  }
  ~device_guard() {
    if (restore_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
  bool restore_ = false;
};

}  // namespace gpu
}  // namespace tiemb
