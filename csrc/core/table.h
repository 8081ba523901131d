// In-memory embedding tables owned by an engine.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "types.h"

namespace tiemb {

/// One embedding table: `rows` x `dim` elements of float32 or float16,
/// row-major, 64-byte aligned. Immutable once built.
class table {
 public:
  /// Copies `rows * dim` elements of type `type` from `data`.
  table(dtype type, int64_t rows, int64_t dim, const void* data);

  dtype type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t dim() const { return dim_; }
  int64_t row_bytes() const { return dim_ * size_of(type_); }
  const void* data() const { return data_.get(); }

 private:
  struct aligned_free {
    void operator()(void* p) const;
  };
  dtype type_;
  int64_t rows_;
  int64_t dim_;
  std::unique_ptr<void, aligned_free> data_;
};

/// The tables of one engine, addressed by the id add() returned.
class table_set {
 public:
  int32_t add(dtype type, int64_t rows, int64_t dim, const void* data);
  const table& at(int32_t id) const;  ///< throws tiemb::error on a bad id
  int32_t size() const { return static_cast<int32_t>(tables_.size()); }

 private:
  std::vector<std::unique_ptr<table>> tables_;
};

}  // namespace tiemb
