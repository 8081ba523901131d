// The table store: the tables an optimized model's lookups read, as files
// in one directory, outside the graph (no 2 GB GraphDef limit; the model
// directory can be moved or copied).
//
// <store>/manifest.txt:
//   tiemb-store 2
//   content_id <32 hex digits>  (random, new for every store written: the store's identity)
//   max_batch_size <int>
//   slot_num <int>
//   max_nnz <int>
//   table <file name> <crc32c, 8 hex digits> <file bytes>
//                            (one line per table, files in the same directory;
//                             the table file's block CRC32C, see checksum.h)
//   checksum <crc32c, 8 hex digits>  (of every byte before this line; last line)
//
// Version 1 manifests (no content id, no checksums) are refused with a message
// saying to re-optimize.
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
  // Appended for store identity and integrity (format 2):
  std::string content_id;              ///< 32 hex digits, unique per written store
  std::vector<uint32_t> checksums;     ///< per table: the file's data block CRC32C
  std::vector<int64_t> file_bytes;     ///< per table: the file's size

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

/// Reads every table file of the store in table-id order, checks its size and
/// checksum against the manifest (in parallel) and hands each to
/// `add(header, rows)`; the rows buffer is reused between tables. Throws
/// tiemb::error naming the file when one is missing, truncated or damaged.
void for_each_store_table(const std::string& dir, const store_manifest& manifest,
                          const std::function<void(const table_file_header&, const void*)>& add);

/// Every problem of the store at `dir`, one line each naming the file:
/// manifest unreadable or damaged, table files missing, of the wrong size, or
/// whose checksum does not match. Empty when the store is sound. Reads every
/// byte (in chunks; no buffer of a table's size).
std::vector<std::string> check_store(const std::string& dir);

/// One engine per `key` (a store, or a store and a device) and store content
/// id per process, shared by all its users: built by `build(manifest)` on
/// first use, released with its last user. `manifest` receives the store's
/// manifest. The manifest is read on every call (only when an op first opens
/// a store), so a directory replaced by another store (a new content id) gets
/// a new engine, never the cached one of the store it replaced.
template <class Engine, class Key, class Build>
std::shared_ptr<Engine> shared_store_engine(const Key& key, const std::string& dir, const store_manifest** manifest,
                                            Build&& build) {
  struct entry {
    std::weak_ptr<Engine> engine;
    std::shared_ptr<store_manifest> manifest;
  };
  static std::mutex mutex;
  static std::map<std::pair<Key, std::string>, entry> engines;
  auto m = std::make_shared<store_manifest>(store_manifest::read(dir));
  std::lock_guard<std::mutex> lk(mutex);
  for (auto it = engines.begin(); it != engines.end();) {  // forget released engines
    it = it->second.engine.expired() ? engines.erase(it) : std::next(it);
  }
  entry& e = engines[std::make_pair(key, m->content_id)];
  if (auto live = e.engine.lock()) {
    *manifest = e.manifest.get();
    return live;
  }
  std::shared_ptr<Engine> engine;
  try {
    engine = build(*m);
  } catch (...) {
    engines.erase(std::make_pair(key, m->content_id));
    throw;
  }
  e.engine = engine;
  e.manifest = m;
  *manifest = m.get();
  return engine;
}

}  // namespace tiemb
