// A table store whose tables were published to a Redis Cluster: what the
// store records (store.json's "distributed" object, store_distributed in
// csrc/core/table_store.h), the versions resolved from the cluster, and the
// background refresh that follows `tiemb update`.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster_client.h"
#include "remote_table.h"

namespace tiemb {

class cpu_engine;
struct store_manifest;
struct table_file_header;

/// True when the store's tables live in a Redis Cluster (store.json has a
/// "distributed" object). Throws naming the store when it has the layout
/// before store.json recorded the cluster (distributed.json,
/// distributed/remote.txt): that layout is no longer served.
bool store_is_distributed(const std::string& dir, const store_manifest& manifest);

/// The `current` version of a table; throws naming table, namespace and
/// model when nothing is published there.
std::string remote_current_version(cluster_client& client, const std::string& ns, const std::string& model,
                                   const std::string& table);

/// The layers of `version` and the layer of each block (follows the chain
/// of `base` versions); throws naming the table when a version is missing.
remote_layout resolve_remote_layout(cluster_client& client, const std::string& ns, const std::string& model,
                                    const std::string& table, const std::string& version);

/// Checks every `period` seconds whether a table's current version moved,
/// and switches it (remote_table::update). Errors are kept, not thrown: the
/// last good version goes on being served.
class remote_refresher {
 public:
  struct entry {
    std::shared_ptr<remote_table> table;
    std::string name;
    std::string version;
    remote_layout layout;
  };
  remote_refresher(std::shared_ptr<cluster_client> client, std::string ns, std::string model,
                   std::vector<entry> tables, double period_seconds);
  ~remote_refresher();
  /// One check now; returns how many tables switched.
  int refresh();
  std::string last_error() const;

 private:
  void loop();
  std::shared_ptr<cluster_client> client_;
  std::string ns_, model_;
  std::vector<entry> tables_;
  double period_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::string last_error_;
  std::thread thread_;
};

/// Adds the store's tables to `engine`: those in the manifest's
/// `distributed` as remote tables, the rest from their files. A remote
/// table's host tier comes from its store file when the cluster still serves
/// the recorded version, else (after `tiemb update`) from the cluster.
/// TIEMB_REDIS_ADDRESS overrides the recorded address. Returns the refresher
/// to keep alive with the engine (null when refresh_seconds is 0).
std::shared_ptr<remote_refresher> load_remote_store(const std::string& dir, const store_manifest& manifest,
                                                    cpu_engine& engine);

/// The same for any engine, in table-id order: `add_file(header, rows)` for
/// a table served from its file, `add_remote(table)` for one in the cluster.
/// follow_updates = false never starts the refresher (an engine whose
/// caches cannot follow a version switch serves the version current at load).
std::shared_ptr<remote_refresher> load_remote_store(
    const std::string& dir, const store_manifest& manifest,
    const std::function<void(const table_file_header&, const void*)>& add_file,
    const std::function<void(std::shared_ptr<remote_table>)>& add_remote, bool follow_updates);

}  // namespace tiemb
