#include "../store_gpu_engine.h"

#include "../../core/error.h"
#include "../../distributed/remote_store.h"

namespace tiemb {

std::shared_ptr<gpu_engine> shared_gpu_engine(const std::string& dir, int device, const store_manifest** manifest) {
  return shared_store_engine<gpu_engine>(store_key(dir), device, dir, manifest,
                                         [&](store_manifest& m) {
    auto engine = std::make_shared<gpu_engine>(m.config, device);
    if (store_is_distributed(dir, m)) {
      // Tables in a Redis Cluster: the GPU cache over each one's host tier
      // and the cluster. The GPU tables follow the refresher's version
      // switches at their next call (gpu_table::follow_remote).
      size_t i = 0;
      engine->attach(load_remote_store(
          dir, m,
          [&](const table_file_header& h, const void* rows) {
            tier_config tiers = m.tiers;
            tiers.backing_file = m.table_path(dir, i++);
            tiers.backing_file_holds_table = true;
            engine->add_table(h.type, h.rows, h.dim, rows, tiers, nullptr, 0);
          },
          [&](std::shared_ptr<remote_table> t) {
            ++i;
            engine->add_remote_table(std::move(t), m.tiers, nullptr, 0);
          },
          true));
      engine->freeze();
      return engine;
    }
    size_t i = 0;
    for_each_store_table(dir, m, [&](const table_file_header& h, const void* rows) {
      // The store's table file is the backing tier: nothing is written
      // anywhere, and the store may be read-only.
      tier_config tiers = m.tiers;
      tiers.backing_file = m.table_path(dir, i++);
      tiers.backing_file_holds_table = true;
      engine->add_table(h.type, h.rows, h.dim, rows, tiers, nullptr, 0);
    });
    engine->freeze();
    return engine;
  });
}

}  // namespace tiemb
