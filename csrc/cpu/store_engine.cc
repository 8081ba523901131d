#include "store_engine.h"

#include <climits>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "../core/error.h"
#include "../core/table_file.h"

namespace tiemb {

std::shared_ptr<cpu_engine> shared_cpu_engine(const std::string& dir, const store_manifest** manifest) {
  struct entry {
    std::weak_ptr<cpu_engine> engine;
    std::shared_ptr<store_manifest> manifest;
  };
  static std::mutex mutex;
  static std::map<std::string, entry> engines;
  char resolved[PATH_MAX];
  const std::string key = ::realpath(dir.c_str(), resolved) != nullptr ? std::string(resolved) : dir;
  std::lock_guard<std::mutex> lk(mutex);
  entry& e = engines[key];
  if (auto live = e.engine.lock()) {
    *manifest = e.manifest.get();
    return live;
  }
  auto m = std::make_shared<store_manifest>(store_manifest::read(dir));
  // Serving processes size the lookup threads next to TensorFlow's own pools.
  if (const char* env = std::getenv("TIEMB_CPU_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    TIEMB_EXPECT(end != env && *end == '\0' && n >= 0 && n <= 4096,
                 "TIEMB_CPU_THREADS must be a thread count (0 = all cores), got '", env, "'");
    m->config.num_threads = static_cast<int32_t>(n);
  }
  auto engine = std::make_shared<cpu_engine>(m->config);
  std::vector<char> rows;
  for (const auto& file : m->tables) {
    table_file_reader r(dir + "/" + file);
    const auto& h = r.header();
    rows.resize(static_cast<size_t>(h.rows * h.row_bytes()));
    r.read_all(rows.data());
    engine->add_table(h.type, h.rows, h.dim, rows.data());
  }
  e.engine = engine;
  e.manifest = m;
  *manifest = m.get();
  return engine;
}

}  // namespace tiemb
