// The CPU lookup group's hook for tables in a Redis Cluster: before the
// pooling pass, the ids of every remote slot are deduplicated and remapped to
// rows of a per-slot staging table; host-tier rows are copied in, the rest
// are read from the cluster with one pipelined batch (at most one round trip
// per cluster node for the whole call, every remote slot together). The
// pooling then runs unchanged over the staging tables, so results are the
// stored rows, exactly, or the call fails: never a default row.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "../core/config.h"
#include "../core/request.h"
#include "remote_table.h"

namespace tiemb {

class remote_resolver {
 public:
  /// tables[s]: slot s's remote table, or null for a resident one. Scratch
  /// is sized here from the config, once.
  remote_resolver(const engine_config& cfg, const std::vector<slot_config>& slots,
                  std::vector<std::shared_ptr<remote_table>> tables);

  /// Stages the rows of every remote slot of validated `requests`.
  /// Throws tiemb::error naming the table on a missing block or a cluster
  /// that stays unreachable past its retries.
  void resolve(const slot_request* requests, int64_t n);

  bool remote(int64_t s) const { return tables_[static_cast<size_t>(s)] != nullptr; }
  /// After resolve: slot s's request over its staging table.
  const slot_request& request(int64_t s) const { return staged_[static_cast<size_t>(s)]; }
  const void* data(int64_t s) const { return scratch_[static_cast<size_t>(s)].rows.data(); }
  int64_t rows(int64_t s) const { return scratch_[static_cast<size_t>(s)].count; }
  int64_t default_id(int64_t s) const { return scratch_[static_cast<size_t>(s)].default_id; }

 private:
  struct slot_scratch {
    std::vector<int64_t> ids;        // remapped ids, max_ids entries
    std::vector<char> rows;          // (max_ids + 1) staged rows
    std::vector<int64_t> unique;     // table row of each staged row
    std::vector<int64_t> map_keys;   // open addressing: id -> staged row
    std::vector<int32_t> map_vals;
    std::vector<int64_t> touched;    // map buckets used this call
    int64_t count = 0;
    int64_t default_id = -1;
  };
  int64_t stage(slot_scratch& sc, int64_t id);

  std::vector<slot_config> slots_;
  std::vector<std::shared_ptr<remote_table>> tables_;
  std::vector<remote_table*> distinct_;  // each remote table once
  // Held while a call reads versions: every slot of the call sees the same
  // version of a table, even when refresh() switches it meanwhile.
  std::vector<std::shared_lock<std::shared_mutex>> locks_;
  std::vector<slot_scratch> scratch_;
  std::vector<slot_request> staged_;
  // The call's misses: (slot, staged row, table row), and their block keys.
  struct miss {
    int32_t slot;
    int32_t staged;
    int64_t id;
    int32_t key;
  };
  std::vector<miss> misses_;
  // The call's block keys: keys_[0..num_keys_) (strings reused across
  // calls), deduplicated by (table, block) in an open-addressing map.
  std::vector<std::string> keys_;
  size_t num_keys_ = 0;
  std::vector<int64_t> key_blocks_;
  std::vector<int32_t> key_slots_;
  std::vector<int64_t> block_map_keys_;
  std::vector<int32_t> block_map_vals_;
  std::vector<int64_t> block_map_touched_;
  std::vector<char> checked_;
  std::vector<cluster_reply> replies_;
  int32_t key_of_block(int64_t table_ordinal, int64_t block, bool* fresh);
};

}  // namespace tiemb
