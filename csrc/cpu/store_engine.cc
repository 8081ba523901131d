#include "store_engine.h"

#include <cstdlib>

#include "../core/error.h"
#include "../distributed/remote_store.h"

namespace tiemb {

std::shared_ptr<cpu_engine> shared_cpu_engine(const std::string& dir, const store_manifest** manifest) {
  return shared_store_engine<cpu_engine>(store_key(dir), -1, dir, manifest, [&](store_manifest& m) {
    // Serving processes size the lookup threads next to TensorFlow's own pools.
    if (const char* env = std::getenv("TIEMB_CPU_THREADS")) {
      char* end = nullptr;
      const long n = std::strtol(env, &end, 10);
      TIEMB_EXPECT(end != env && *end == '\0' && n >= 0 && n <= 4096,
                   "TIEMB_CPU_THREADS must be a thread count (0 = all cores), got '", env, "'");
      m.config.num_threads = static_cast<int32_t>(n);
    }
    auto engine = std::make_shared<cpu_engine>(m.config);
    if (store_is_distributed(dir, m)) {  // tables in a Redis Cluster (tiemb/enable_distributed)
      engine->attach(load_remote_store(dir, m, *engine));
      return engine;
    }
    for_each_store_table(dir, m, [&](const table_file_header& h, const void* rows) {
      engine->add_table(h.type, h.rows, h.dim, rows);
    });
    return engine;
  });
}

}  // namespace tiemb
