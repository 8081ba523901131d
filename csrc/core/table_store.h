// The table store: the tables an optimized model's lookups read, as files
// in one directory, outside the graph (no 2 GB GraphDef limit; the model
// directory can be moved or copied).
//
// <store>/manifest.txt:
//   tiemb-store 1
//   max_batch_size <int>
//   slot_num <int>
//   max_nnz <int>
//   table <file name>        (one line per table, files in the same directory)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"

namespace tiemb {

struct store_manifest {
  engine_config config;
  std::vector<std::string> tables;  ///< file names, in table-id order

  /// Reads <dir>/manifest.txt; throws tiemb::error naming the file, line and problem.
  static store_manifest read(const std::string& dir);
  /// Writes <dir>/manifest.txt (the table files are written separately).
  void write(const std::string& dir) const;
  /// Table id of a file name; throws naming the store when absent.
  int32_t table_id(const std::string& file, const std::string& dir) const;
};

}  // namespace tiemb
