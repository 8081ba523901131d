// A table whose rows live in a Redis Cluster, with a host tier: a fixed share
// of its rows (the hottest by the optimize-time profile) copied into host
// memory, the rest read from the cluster on every call that needs them.
//
// Layout in the cluster: the table's rows in blocks of block_rows rows, one
// value per block (rows * row_bytes raw little-endian bytes), under
// "<layer prefix>:b<block>". A content version is a stack of layers (the
// published table, then one layer per update holding the blocks it changed);
// `block_layer[b]` names the layer that holds block b's current bytes.
//
// Host-tier policy: static. The resident set is chosen once, at load, and
// never changes with traffic (no admission, no eviction: no writer on the
// lookup path, no lock contention, no RSS growth); an update rewrites the
// resident copies of the rows it changed before the new version is served.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "../core/types.h"
#include "cluster_client.h"

namespace tiemb {

/// Where one content version of a table lives in the cluster.
struct remote_layout {
  std::string name;                     ///< the table's name, for errors
  dtype type = dtype::float32;
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t block_rows = 0;               ///< rows per value
  std::vector<std::string> layers;      ///< key prefixes, oldest first
  std::vector<uint16_t> block_layer;    ///< per block: index into layers
  int64_t row_bytes() const { return dim * size_of(type); }
  int64_t blocks() const { return (rows + block_rows - 1) / block_rows; }
  std::string block_key(int64_t block) const;
  /// block_key(block) into `out`, reusing its capacity.
  void block_key_into(int64_t block, std::string& out) const;
  void validate() const;
};

/// Per-tier counters of a remote table since load (ids after dedup per call).
struct remote_stats {
  int64_t host_hits = 0;       ///< distinct ids per call served from the host tier
  int64_t cluster_rows = 0;    ///< distinct ids per call read from the cluster
  int64_t cluster_values = 0;  ///< block values read from the cluster
  int64_t host_rows = 0;       ///< rows resident in host memory
  int64_t refreshes = 0;       ///< versions switched to after load
};

class remote_table {
 public:
  /// Loads the host tier: the rows `host_ids` (the hottest first; at most
  /// rows), read from the cluster in pipelined batches. Throws tiemb::error
  /// naming the table when a block is missing (a wrong namespace or version,
  /// or keys evicted by the cluster's maxmemory policy).
  /// With `host_rows` (host_ids.size() rows, in the order of host_ids: the
  /// store's copy of this version) the host tier is copied from there
  /// instead, and nothing is read from the cluster.
  remote_table(std::shared_ptr<cluster_client> client, remote_layout layout, const std::vector<int64_t>& host_ids,
               const char* host_rows = nullptr);

  dtype type() const { return layout_.type; }
  int64_t rows() const { return layout_.rows; }
  int64_t dim() const { return layout_.dim; }
  int64_t row_bytes() const { return layout_.row_bytes(); }
  const std::string& name() const { return layout_.name; }
  cluster_client& client() { return *client_; }

  /// Row `id`'s host copy, or nullptr when it is not resident. Call under
  /// a shared lock of mutex().
  const char* host_row(int64_t id) const {
    const int32_t s = host_slot_[static_cast<size_t>(id)];
    return s < 0 ? nullptr : host_data_.data() + static_cast<size_t>(s) * static_cast<size_t>(row_bytes());
  }
  /// Key of the block holding row `id`, in the current version (shared lock).
  std::string block_key_of(int64_t id) const { return layout_.block_key(id / layout_.block_rows); }
  void block_key_of(int64_t id, std::string& out) const { layout_.block_key_into(id / layout_.block_rows, out); }
  int64_t block_of(int64_t id) const { return id / layout_.block_rows; }
  int64_t block_rows() const { return layout_.block_rows; }
  std::shared_mutex& mutex() const { return mutex_; }

  /// Switches to a new version of the same shape; the resident copies of
  /// `changed_ids` are re-read from it first, then the switch happens under
  /// the exclusive lock, so no lookup sees half an update.
  void update(remote_layout layout, const std::vector<int64_t>& changed_ids);

  void count(int64_t host_hits, int64_t cluster_rows, int64_t values) {
    host_hits_ += host_hits;
    cluster_rows_ += cluster_rows;
    cluster_values_ += values;
  }
  remote_stats stats() const;
  /// Versions switched to since load (cheap: caches above this table that
  /// cannot follow a switch compare it per call).
  int64_t refreshes() const { return refreshes_.load(std::memory_order_acquire); }

  /// Reads rows `ids` of the version served now (host copies where
  /// resident, the rest from the cluster) into dst (ids.size() * row_bytes).
  /// For loading other tiers (the GPU cache's warm rows), not a lookup path.
  void read_current(const std::vector<int64_t>& ids, char* dst);

  /// Reads rows `ids` of `layout` from the cluster into dst (ids.size() *
  /// row_bytes), one pipelined round trip per node. Throws naming the table
  /// and key when a block is missing or has the wrong size.
  void read_rows(const remote_layout& layout, const std::vector<int64_t>& ids, char* dst);

  /// The change log, for caches above this table (the GPU cache) that
  /// follow version switches: the ids that refreshes since + 1 .. now
  /// changed, sorted and unique, into `ids`; `now` = refreshes() they cover.
  /// Returns false (ids empty) when the log no longer reaches back to
  /// `since`: the consumer must treat every row as changed. The log keeps
  /// the last kChangeLogRefreshes refreshes and at most rows() ids in all
  /// (past that, "everything changed" costs a consumer no more than the
  /// list would).
  bool changed_since(int64_t since, std::vector<int64_t>* ids, int64_t* now) const;
  static constexpr size_t kChangeLogRefreshes = 64;

 private:
  std::shared_ptr<cluster_client> client_;
  remote_layout layout_;
  std::vector<int32_t> host_slot_;  // per row: index into host_data_, -1 = cluster only
  std::vector<char> host_data_;
  mutable std::shared_mutex mutex_;
  std::atomic<int64_t> host_hits_{0}, cluster_rows_{0}, cluster_values_{0}, refreshes_{0};
  // Change log (under mutex_): change_log_[k] holds the ids refresh
  // change_log_first_ + k changed; change_log_ids_ counts them all.
  std::deque<std::vector<int64_t>> change_log_;
  int64_t change_log_first_ = 1;
  size_t change_log_ids_ = 0;
};

/// Checks one block value read for `key` and copies nothing; throws the
/// error a missing or damaged block gets.
void check_block_value(const remote_layout& layout, int64_t block, const std::string& key,
                       const cluster_reply& reply);

}  // namespace tiemb
