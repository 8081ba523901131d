// A table store whose tables were published to a Redis Cluster: what the
// store records (<store>/distributed/remote.txt, written by
// tiemb/distributed/store.py), the versions resolved from the cluster, and
// the background refresh that follows `tiemb update`.
//
// remote.txt:
//   tiemb-remote 1
//   address <host:port[,...]>      (TIEMB_REDIS_ADDRESS overrides it)
//   namespace <ns>
//   model <model>
//   timeout_ms <int>
//   retries <int>
//   refresh_seconds <float>        (0: no background refresh)
//   table <file> <host ids file>   (one per table; ids: raw little-endian int64, hottest first)
#pragma once

#include <atomic>
#include <condition_variable>
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

struct remote_store_spec {
  std::string address, ns, model;
  int timeout_ms = 1000;
  int retries = 5;
  double refresh_seconds = 5.0;
  struct table_entry {
    std::string file;
    std::string host_ids;
  };
  std::vector<table_entry> tables;
};

/// Reads <dir>/distributed/remote.txt; false when the store has none.
/// Throws tiemb::error naming the file and line when it is malformed.
bool read_remote_store_spec(const std::string& dir, remote_store_spec* spec);

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

/// Adds the store's tables to `engine`: those in `spec` as remote tables
/// (their host tier read from the cluster; the local file's rows are not
/// loaded, only its header checked against the cluster's shape), the rest
/// from their files. Returns the refresher to keep alive with the engine
/// (null when refresh_seconds is 0).
std::shared_ptr<remote_refresher> load_remote_store(const std::string& dir, const store_manifest& manifest,
                                                    const remote_store_spec& spec, cpu_engine& engine);

}  // namespace tiemb
