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
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config.h"
#include "table_file.h"

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

/// The real path of a store directory (the directory itself where it has none):
/// one key for every spelling of the same store.
std::string store_key(const std::string& dir);

/// Reads every table file of the store in table-id order and hands each to
/// `add(header, rows)`; the rows buffer is reused between tables.
void for_each_store_table(const std::string& dir, const store_manifest& manifest,
                          const std::function<void(const table_file_header&, const void*)>& add);

/// One engine per `key` (a store, or a store and a device) per process,
/// shared by all its users: built by `build(manifest)` on first use, released
/// with its last user. `manifest` receives the store's manifest.
template <class Engine, class Key, class Build>
std::shared_ptr<Engine> shared_store_engine(const Key& key, const std::string& dir, const store_manifest** manifest,
                                            Build&& build) {
  struct entry {
    std::weak_ptr<Engine> engine;
    std::shared_ptr<store_manifest> manifest;
  };
  static std::mutex mutex;
  static std::map<Key, entry> engines;
  std::lock_guard<std::mutex> lk(mutex);
  entry& e = engines[key];
  if (auto live = e.engine.lock()) {
    *manifest = e.manifest.get();
    return live;
  }
  auto m = std::make_shared<store_manifest>(store_manifest::read(dir));
  std::shared_ptr<Engine> engine = build(*m);
  e.engine = engine;
  e.manifest = m;
  *manifest = m.get();
  return engine;
}

}  // namespace tiemb
