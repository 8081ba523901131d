// The table file: one embedding table on disk, the backing tier of the
// cache and the unit of the table store.
//
// Layout (little-endian):
//   bytes 0..7    magic "TIEMBTB1"
//   bytes 8..11   format version (uint32, currently 2)
//   bytes 12..15  dtype (uint32, the tiemb::dtype value: 0 float32, 1 float16)
//   bytes 16..23  rows (int64)
//   bytes 24..31  dim (int64)
//   bytes 32..35  block CRC32C of the data (checksum.h)           [version 2]
//   bytes 36..39  CRC32C of header bytes 0..35                    [version 2]
//   bytes 40..63  zero
//   bytes 64..    rows * dim elements, row-major
//
// Version 1 files (no checksums) are refused with a message saying to
// re-optimize: serving unverified rows is what the checksums exist to stop.
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
  uint32_t checksum = 0;  ///< block CRC32C of the data
  int64_t row_bytes() const { return dim * size_of(type); }
  int64_t data_bytes() const { return rows * row_bytes(); }
};

/// Writes `parts` (address, bytes) one after the other to `path` through a
/// temporary file and a rename, so readers never see half a file. Throws
/// tiemb::error starting with `what`.
void write_file_atomically(const std::string& path, const std::vector<std::pair<const void*, size_t>>& parts,
                           const std::string& what);

/// Writes a whole table (rows * dim elements at `data`) to `path`, replacing
/// it; returns the data's block CRC32C (also stored in the header).
uint32_t write_table_file(const std::string& path, dtype type, int64_t rows, int64_t dim,
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
  /// Throws tiemb::error naming the file when the `data_bytes()` bytes at
  /// `rows` (as read_all gave them) do not match the header's checksum.
  void verify(const void* rows) const;
  /// Reads the whole file in chunks and verifies its checksum (no buffer of
  /// the table's size); throws like verify.
  void verify_file() const;

 private:
  std::string path_;
  table_file_header header_{};
  int fd_ = -1;
};

}  // namespace tiemb
