// A Redis Cluster client over hiredis: routes every key by its hash slot
// (CRC16, as CLUSTER SLOTS maps them), pipelines the commands of one batch so
// that each node costs one round trip, follows MOVED/ASK, and reconnects and
// retries a bounded number of times before failing with an error that names
// the node. Thread-safe: each call borrows one connection per node from a
// small pool, so concurrent callers never share a hiredis context.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

struct redisContext;

namespace tiemb {

/// One host:port of the cluster.
struct cluster_endpoint {
  std::string host;
  int port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
};

/// Parses "host:port[,host:port...]"; throws tiemb::error naming the entry
/// and the whole address ("tiemb/distributed_address: ...").
std::vector<cluster_endpoint> parse_cluster_address(const std::string& address);

/// The cluster hash slot of a key (CRC16/XMODEM mod 16384, {hash tag} aware).
int key_hash_slot(const char* key, size_t len);

/// Counters since the client was created (all callers together).
struct cluster_stats {
  int64_t round_trips = 0;   ///< node round trips (one pipelined batch to one node)
  int64_t commands = 0;      ///< commands sent, redirects and retries included
  int64_t bytes_in = 0;      ///< reply payload bytes (string replies)
  int64_t bytes_out = 0;     ///< argument bytes sent
  int64_t redirects = 0;     ///< MOVED and ASK replies followed
  int64_t reconnects = 0;    ///< connections dropped after an error and reopened
  int64_t slot_refreshes = 0;///< CLUSTER SLOTS reloads
};

/// One command's outcome.
struct cluster_reply {
  bool nil = true;        ///< the key does not exist (GET), or no value
  std::string value;      ///< string/status reply
  int64_t integer = 0;    ///< integer reply
  bool is_integer = false;
};

class cluster_client {
 public:
  /// Connects to the first reachable node of `address`, loads the slot map.
  /// `timeout_ms`: connect and per-reply timeout; `retries`: how many times
  /// one batch is retried (after a reconnect and a slot-map reload) on a
  /// connection error, CLUSTERDOWN or TRYAGAIN before the call fails.
  /// Throws tiemb::error for a malformed or unreachable address and for a
  /// Redis that is not a cluster.
  cluster_client(const std::string& address, int timeout_ms, int retries);
  ~cluster_client();
  cluster_client(const cluster_client&) = delete;
  cluster_client& operator=(const cluster_client&) = delete;

  /// Runs every command (argv; argv[1] is the key that routes it, argv[3]
  /// for EVAL / EVALSHA: their first key) with one
  /// pipelined round trip per node that owns some of the keys (more only for
  /// redirects and retries). replies[i] answers cmds[i]. Throws tiemb::error
  /// naming the node and key on an error reply or after the retries.
  void run(const std::vector<std::vector<std::string>>& cmds, std::vector<cluster_reply>* replies);

  /// GET of many keys, as run().
  void get_many(const std::vector<std::string>& keys, std::vector<cluster_reply>* replies);
  /// GET of keys[0..n), as run(). `replies` is reused: its strings keep
  /// their capacity from call to call.
  void get_many(const std::string* keys, size_t n, std::vector<cluster_reply>* replies);

  /// Most arguments one command may have.
  static constexpr int kMaxArgs = 8;

  /// Nodes (masters) in the current slot map.
  std::vector<std::string> masters() const;
  cluster_stats stats() const;
  const std::string& address() const { return address_; }
  int timeout_ms() const { return timeout_ms_; }
  int retries() const { return retries_; }

 private:
  struct node;
  // Fills argv/argl (at most kMaxArgs) for command i; returns argc.
  using command_fn = int (*)(const void* ctx, size_t i, const char** argv, size_t* argl);
  void run_commands(size_t n, command_fn fn, const void* ctx, std::vector<cluster_reply>* replies);
  node* node_for(const cluster_endpoint& ep);  // under exclusive map lock
  void refresh_slots();
  redisContext* connect(const cluster_endpoint& ep) const;
  redisContext* borrow(node& n);
  void give_back(node& n, redisContext* c, bool broken);

  std::string address_;
  std::vector<cluster_endpoint> seeds_;
  int timeout_ms_;
  int retries_;
  mutable std::shared_mutex map_mutex_;
  std::vector<std::unique_ptr<node>> nodes_;
  std::vector<int32_t> slot_node_;  // 16384 entries, -1 = unassigned
  std::mutex refresh_mutex_;
  std::atomic<int64_t> round_trips_{0}, commands_{0}, bytes_in_{0}, bytes_out_{0}, redirects_{0},
      reconnects_{0}, slot_refreshes_{0};
};

}  // namespace tiemb
