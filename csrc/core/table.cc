#include "table.h"

#include <cstdlib>
#include <cstring>

#include "error.h"

namespace tiemb {

void table::aligned_free::operator()(void* p) const { std::free(p); }

table::table(dtype type, int64_t rows, int64_t dim, const void* data)
    : type_(type), rows_(rows), dim_(dim) {
  TIEMB_EXPECT(type == dtype::float32 || type == dtype::float16,
               "table dtype must be float32 or float16, got ", to_string(type));
  TIEMB_EXPECT(rows > 0, "table must have at least one row, got ", rows);
  TIEMB_EXPECT(dim > 0, "table dimension must be > 0, got ", dim);
  const size_t bytes = static_cast<size_t>(rows) * static_cast<size_t>(row_bytes());
  // Round up: aligned_alloc requires a multiple of the alignment.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  TIEMB_EXPECT(p != nullptr, "cannot allocate ", bytes, " bytes for a ", rows, " x ", dim,
               " table");
  data_.reset(p);
  std::memcpy(p, data, bytes);
}

int32_t table_set::add(dtype type, int64_t rows, int64_t dim, const void* data) {
  tables_.push_back(std::make_unique<table>(type, rows, dim, data));
  return static_cast<int32_t>(tables_.size() - 1);
}

const table& table_set::at(int32_t id) const {
  TIEMB_EXPECT(id >= 0 && id < size(), "table id ", id, " does not exist (engine has ", size(),
               " tables)");
  return *tables_[static_cast<size_t>(id)];
}

}  // namespace tiemb
