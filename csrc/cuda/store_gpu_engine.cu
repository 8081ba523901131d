#include "store_gpu_engine.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "../core/error.h"

namespace tiemb {
namespace {

// The number after "key": in a flat JSON object, or `fallback` when the key is absent.
double json_number(const std::string& text, const std::string& key, double fallback, const std::string& file) {
  const std::string quoted = "\"" + key + "\"";
  const size_t at = text.find(quoted);
  if (at == std::string::npos) return fallback;
  const size_t colon = text.find(':', at + quoted.size());
  TIEMB_EXPECT(colon != std::string::npos, file, ": ", key, " has no value");
  const char* start = text.c_str() + colon + 1;
  char* end = nullptr;
  const double v = std::strtod(start, &end);
  TIEMB_EXPECT(end != start, file, ": ", key, " is not a number");
  return v;
}

}  // namespace

tier_config store_tiers(const std::string& dir) {
  tier_config t;  // the tiemb/* parameters' defaults
  const std::string file = dir + "/tiemb_config.json";
  std::ifstream in(file);
  if (!in) return t;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  t.cache_percentage = json_number(text, "tiemb/cache_percentage", kDefaultCachePercentage, file);
  t.cpu_cache_percentage = json_number(text, "tiemb/cpu_cache_percentage", kDefaultCpuCachePercentage, file);
  t.hit_rate_threshold = json_number(text, "tiemb/hit_rate_threshold", kDefaultHitRateThreshold, file);
  return t;
}

std::shared_ptr<gpu_engine> shared_gpu_engine(const std::string& dir, int device, const store_manifest** manifest) {
  return shared_store_engine<gpu_engine>(store_key(dir), device, dir, manifest,
                                         [&](store_manifest& m) {
    static int backing_files = 0;  // guarded by shared_store_engine's lock
    const tier_config base = store_tiers(dir);
    auto engine = std::make_shared<gpu_engine>(m.config, device);
    for_each_store_table(dir, m, [&](const table_file_header& h, const void* rows) {
      tier_config tiers = base;
      // The tiered table writes its own backing file; never into the model's
      // (possibly read-only) store.
      const char* tmp = std::getenv("TMPDIR");
      tiers.backing_file = std::string(tmp != nullptr ? tmp : "/tmp") + "/tiemb-" + std::to_string(::getpid()) +
                           "-" + std::to_string(device) + "-" + std::to_string(backing_files++) + ".tiemb";
      engine->add_table(h.type, h.rows, h.dim, rows, tiers, nullptr, 0);
    });
    engine->freeze();
    return engine;
  });
}

}  // namespace tiemb
