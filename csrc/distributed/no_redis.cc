// Built instead of cluster_client.cc when CMake found no hiredis: every use
// of a cluster fails with an error that says how to get one.
#include "../core/error.h"
#include "cluster_client.h"

namespace tiemb {

namespace {
[[noreturn]] void no_redis() {
  throw error(
      "tiemb/enable_distributed: this tiemb was built without hiredis, so it cannot reach a Redis Cluster; install "
      "it (Debian/Ubuntu: apt-get install libhiredis-dev; or pkg-config must find 'hiredis') and rebuild with "
      "TIEMB_REDIS=ON");
}
}  // namespace

struct cluster_client::node {};  // never created without hiredis

cluster_client::cluster_client(const std::string& address, int timeout_ms, int retries)
    : address_(address), timeout_ms_(timeout_ms), retries_(retries) {
  no_redis();
}
cluster_client::~cluster_client() = default;
void cluster_client::run(const std::vector<std::vector<std::string>>&, std::vector<cluster_reply>*) { no_redis(); }
void cluster_client::get_many(const std::vector<std::string>&, std::vector<cluster_reply>*) { no_redis(); }
void cluster_client::get_many(const std::string*, size_t, std::vector<cluster_reply>*) { no_redis(); }
std::vector<std::string> cluster_client::masters() const { no_redis(); }
cluster_stats cluster_client::stats() const { return cluster_stats{}; }

}  // namespace tiemb
