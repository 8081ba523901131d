#include "../store_gpu_engine.h"

#include "../../core/error.h"

namespace tiemb {

std::shared_ptr<gpu_engine> shared_gpu_engine(const std::string& dir, int device, const store_manifest** manifest) {
  return shared_store_engine<gpu_engine>(store_key(dir), device, dir, manifest,
                                         [&](store_manifest& m) {
    auto engine = std::make_shared<gpu_engine>(m.config, device);
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
