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

/// An engine in the process-wide registry of store engines (see
/// shared_store_engine): what tests and tools compare to prove that the
/// Python API and the TensorFlow op share one engine.
struct store_engine_entry {
  std::string store;       ///< store_key() of the directory
  int device = -1;         ///< CUDA device, -1 for a CPU engine
  std::string content_id;  ///< the store's content id when the engine was built
  const void* engine = nullptr;  ///< the engine's address: its identity in this process
  long users = 0;          ///< shared_ptr owners right now (groups, Python objects)
};

/// The live engines of the registry. The registry lives in the core shared
/// library (libtiemb_core.so), so every module of the process sees one list.
std::vector<store_engine_entry> live_store_engines();

namespace detail {
/// The registry behind shared_store_engine, with the engine type erased.
std::shared_ptr<void> shared_store_engine(const std::string& store, int device, const std::string& dir,
                                          const store_manifest** manifest,
                                          const std::function<std::shared_ptr<void>(store_manifest&)>& build);
}  // namespace detail

/// One engine per (store, device) and store content id per process, shared
/// by all its users: built by `build(manifest)` on first use, released with
/// its last user. `store` is store_key(dir); `device` is -1 for CPU engines.
/// `manifest` receives the store's manifest. The manifest is read on every
/// call (only when an op first opens a store), so a directory replaced by
/// another store (a new content id) gets a new engine, never the cached one
/// of the store it replaced.
template <class Engine, class Build>
std::shared_ptr<Engine> shared_store_engine(const std::string& store, int device, const std::string& dir,
                                            const store_manifest** manifest, Build&& build) {
  return std::static_pointer_cast<Engine>(detail::shared_store_engine(
      store, device, dir, manifest, [&](store_manifest& m) -> std::shared_ptr<void> { return build(m); }));
}

}  // namespace tiemb
