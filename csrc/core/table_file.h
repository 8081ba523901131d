// The table file: one embedding table on disk, the backing tier of the
// cache and the unit of the table store.
//
// Layout (little-endian):
//   bytes 0..7    magic "TIEMBTB1"
//   bytes 8..11   format version (uint32, currently 1)
//   bytes 12..15  dtype (uint32, the tiemb::dtype value: 0 float32, 1 float16)
//   bytes 16..23  rows (int64)
//   bytes 24..31  dim (int64)
//   bytes 32..63  zero
//   bytes 64..    rows * dim elements, row-major
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "types.h"

namespace tiemb {

constexpr int64_t kTableFileHeaderBytes = 64;

struct table_file_header {
  dtype type;
  int64_t rows;
  int64_t dim;
  int64_t row_bytes() const { return dim * size_of(type); }
};

/// Writes `parts` (address, bytes) one after the other to `path` through a
/// temporary file and a rename, so readers never see half a file. Throws
/// tiemb::error starting with `what`.
void write_file_atomically(const std::string& path, const std::vector<std::pair<const void*, size_t>>& parts,
                           const std::string& what);

/// Writes a whole table (rows * dim elements at `data`) to `path`, replacing it.
void write_table_file(const std::string& path, dtype type, int64_t rows, int64_t dim,
                      const void* data);

/// Reads rows of a table file on demand. Thread-safe.
class table_file_reader {
 public:
  /// Opens and checks the header; throws tiemb::error naming the path and
  /// what is wrong (missing, truncated, bad magic, unknown version/dtype).
  explicit table_file_reader(const std::string& path);
  ~table_file_reader();
  table_file_reader(const table_file_reader&) = delete;
  table_file_reader& operator=(const table_file_reader&) = delete;

  const table_file_header& header() const { return header_; }
  const std::string& path() const { return path_; }

  /// Copies row `id` into `dst` (row_bytes bytes).
  void read_row(int64_t id, void* dst) const;
  /// Copies every row into `dst` (rows * row_bytes bytes).
  void read_all(void* dst) const;

 private:
  std::string path_;
  table_file_header header_{};
  int fd_ = -1;
};

}  // namespace tiemb
