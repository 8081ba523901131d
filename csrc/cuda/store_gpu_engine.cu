#include "store_gpu_engine.h"

#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>
#include <vector>

#include "../core/error.h"
#include "../core/table_file.h"

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
  tier_config t;  // resident by default
  const std::string file = dir + "/tiemb_config.json";
  std::ifstream in(file);
  if (!in) return t;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  t.cache_percentage = json_number(text, "tiemb/cache_percentage", 1.0, file);
  t.cpu_cache_percentage = json_number(text, "tiemb/cpu_cache_percentage", 1.0, file);
  t.hit_rate_threshold = json_number(text, "tiemb/hit_rate_threshold", 0.95, file);
  return t;
}

std::shared_ptr<gpu_engine> shared_gpu_engine(const std::string& dir, int device, const store_manifest** manifest) {
  struct entry {
    std::weak_ptr<gpu_engine> engine;
    std::shared_ptr<store_manifest> manifest;
  };
  static std::mutex mutex;
  static std::map<std::pair<std::string, int>, entry> engines;
  static int backing_files = 0;
  char resolved[PATH_MAX];
  const std::string key = ::realpath(dir.c_str(), resolved) != nullptr ? std::string(resolved) : dir;
  std::lock_guard<std::mutex> lk(mutex);
  entry& e = engines[{key, device}];
  if (auto live = e.engine.lock()) {
    *manifest = e.manifest.get();
    return live;
  }
  auto m = std::make_shared<store_manifest>(store_manifest::read(dir));
  const tier_config base = store_tiers(dir);
  auto engine = std::make_shared<gpu_engine>(m->config, device);
  std::vector<char> rows;
  for (const auto& file : m->tables) {
    table_file_reader r(dir + "/" + file);
    const auto& h = r.header();
    rows.resize(static_cast<size_t>(h.rows * h.row_bytes()));
    r.read_all(rows.data());
    tier_config tiers = base;
    // The tiered table writes its own backing file; never into the model's
    // (possibly read-only) store.
    const char* tmp = std::getenv("TMPDIR");
    tiers.backing_file = std::string(tmp != nullptr ? tmp : "/tmp") + "/tiemb-" + std::to_string(::getpid()) + "-" +
                         std::to_string(device) + "-" + std::to_string(backing_files++) + ".tiemb";
    engine->add_table(h.type, h.rows, h.dim, rows.data(), tiers, nullptr, 0);
  }
  engine->freeze();
  e.engine = engine;
  e.manifest = m;
  *manifest = m.get();
  return engine;
}

}  // namespace tiemb
