// The table store: the tables an optimized model's lookups read, as files
// in one directory, outside the graph (no 2 GB GraphDef limit; the model
// directory can be moved or copied).
//
// <store>/store.json, the store's one description (format 3; written by
// tiemb/store.py, read here):
//   {
//     "format": "tiemb-store",
//     "version": 3,
//     "content_id": "<32 hex digits>",   random, new for every store written: its identity
//     "sizes": {"max_batch_size": <int>, "slot_num": <int>, "max_nnz": <int>},
//     "tables": [{"name": "<name>", "file": "<file name in the store>", "rows": <int>,
//                 "dim": <int>, "dtype": "float32"|"float16",
//                 "checksum": "<the table file's block CRC32C, 8 hex digits>",
//                 "bytes": <the table file's size>}, ...],      in table-id order
//     "tiers": {"cache_percentage": <x>, "cpu_cache_percentage": <x>,
//               "hit_rate_threshold": <x>},     optional; absent keys: the defaults
//     "distributed": {...},                 optional: see store_distributed
//     "checksum": "<8 hex digits>"
//   }
// The last checksum is the CRC32C of the file's bytes with its own 8 digits
// read as "00000000": a damaged description is refused, not half-believed.
// Unknown keys are errors (a newer writer's settings are never ignored).
//
// Stores of formats 1 and 2 (manifest.txt, tiers in tiemb_config.json) are
// refused with a message saying to re-optimize the model.
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
#include "tier_config.h"

namespace tiemb {

/// The description file's name and format version.
constexpr const char* kStoreDescription = "store.json";
constexpr int kStoreFormatVersion = 3;

/// What a store published to a Redis Cluster records (tiemb/enable_distributed;
/// written by tiemb/distributed/store.py), store.json's optional object
///   "distributed": {"namespace": "<ns>", "model": "<model>", "cpu_cache_percentage": <x>,
///                   "settings": {"address": "<host:port[,...]>", "timeout_ms": <int>,
///                                "retries": <int>, "refresh_seconds": <x>},
///                   "tables": [{"name": "<table>", "version": "<content version>",
///                               "block_rows": <int>, "host_rows": <int>,
///                               "host_ids": "<file>", "host_ids_checksum": "<8 hex>"}, ...]}
/// A table listed there lives in the cluster: its store file holds only the
/// host tier (host_rows rows, in the order of the ids file: raw little-endian
/// int64, hottest first, CRC32C host_ids_checksum), so the store's table entry
/// describes that file while "rows" stays the table's full row count.
struct store_distributed {
  struct table {
    std::string name, version;
    int64_t block_rows = 0, host_rows = 0;
    std::string host_ids;  ///< file name in the store directory
    uint32_t host_ids_checksum = 0;
  };
  std::string ns, model, address;  ///< TIEMB_REDIS_ADDRESS overrides address at load
  int64_t timeout_ms = 1000, retries = 5;
  double refresh_seconds = 5.0, cpu_cache_percentage = 1.0;
  std::vector<table> tables;
  /// The entry of table `name`, or nullptr when it is served from its file.
  const table* find(const std::string& name) const;
};

/// A store's description (store.json), checked: every field present, of its
/// type and in range.
struct store_manifest {
  engine_config config;
  std::vector<std::string> tables;  ///< table names (= file names), in table-id order
  std::string content_id;              ///< 32 hex digits, unique per written store
  std::vector<uint32_t> checksums;     ///< per table: the file's data block CRC32C
  std::vector<int64_t> file_bytes;     ///< per table: the file's size
  // Format 3:
  std::vector<std::string> files;      ///< per table: its file in the store directory
  std::vector<int64_t> rows;           ///< per table
  std::vector<int64_t> dims;           ///< per table
  std::vector<dtype> dtypes;           ///< per table: float32 or float16
  tier_config tiers;                   ///< the store's tiers (defaults where absent); no backing_file
  bool has_distributed = false;        ///< store.json has a "distributed" object
  store_distributed distributed;

  /// Rows in table `i`'s file: its host tier's for a table in the cluster.
  int64_t stored_rows(size_t i) const;

  /// Reads and checks <dir>/store.json; throws tiemb::error naming the file
  /// and the field. A store of an older format (manifest.txt) is refused
  /// with the fix (re-optimize).
  static store_manifest read(const std::string& dir);
  /// Checks the text of a description; `where` names it in errors.
  static store_manifest parse(const std::string& text, const std::string& where);
  /// Table id of a table name; throws naming the store when absent.
  int32_t table_id(const std::string& name, const std::string& dir) const;
  /// The file of table `i` in the store at `dir`.
  std::string table_path(const std::string& dir, size_t i) const;
};

/// The real path of a store directory (the directory itself where it has none):
/// one key for every spelling of the same store.
std::string store_key(const std::string& dir);

/// Reads every table file of the store in table-id order, checks its size and
/// checksum against the manifest (in parallel) and hands each to
/// `add(header, rows)`; the rows buffer is reused between tables. Throws
/// tiemb::error naming the file when one is missing, truncated or damaged,
/// and naming the table when it lives in a Redis Cluster (its file holds only
/// the host tier: the caller must serve it through csrc/distributed).
void for_each_store_table(const std::string& dir, const store_manifest& manifest,
                          const std::function<void(const table_file_header&, const void*)>& add);

/// Reads the host tier row ids of a table in the cluster (the store's ids
/// file), checked against its size and checksum; throws naming the file.
std::vector<int64_t> read_host_ids(const std::string& dir, const store_distributed::table& t);

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
