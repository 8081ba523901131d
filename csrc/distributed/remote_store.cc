#include "remote_store.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "../core/error.h"
#include "../core/table_store.h"
#include "../cpu/cpu_engine.h"

namespace tiemb {

namespace {

std::string read_text(const std::string& path, bool* exists) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  *exists = f != nullptr;
  if (f == nullptr) return {};
  std::string text;
  char buf[4096];
  for (size_t got; (got = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, got);
  std::fclose(f);
  return text;
}

std::vector<std::pair<std::string, std::string>> key_values(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    out.emplace_back(line.substr(0, sp), sp == std::string::npos ? "" : line.substr(sp + 1));
  }
  return out;
}

int64_t to_int(const std::string& v, const std::string& where) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  TIEMB_EXPECT(!v.empty() && *end == '\0' && errno == 0, where, ": expected an integer, got '", v, "'");
  return x;
}

std::string table_prefix(const std::string& ns, const std::string& model, const std::string& table) {
  return ns + ":" + model + ":" + table;
}

std::string get_one(cluster_client& client, const std::string& key, bool* found) {
  std::vector<cluster_reply> r;
  client.get_many({key}, &r);
  *found = !r[0].nil;
  return r[0].value;
}

}  // namespace

bool read_remote_store_spec(const std::string& dir, remote_store_spec* spec) {
  const std::string path = dir + "/distributed/remote.txt";
  bool exists = false;
  const std::string text = read_text(path, &exists);
  if (!exists) return false;
  auto kv = key_values(text);
  TIEMB_EXPECT(!kv.empty() && kv[0].first == "tiemb-remote" && kv[0].second == "1", path,
               ": expected 'tiemb-remote 1' on the first line");
  for (size_t i = 1; i < kv.size(); ++i) {
    const auto& [k, v] = kv[i];
    const std::string where = path + ":" + std::to_string(i + 1);
    if (k == "address") {
      spec->address = v;
    } else if (k == "namespace") {
      spec->ns = v;
    } else if (k == "model") {
      spec->model = v;
    } else if (k == "timeout_ms") {
      spec->timeout_ms = static_cast<int>(to_int(v, where));
    } else if (k == "retries") {
      spec->retries = static_cast<int>(to_int(v, where));
    } else if (k == "refresh_seconds") {
      spec->refresh_seconds = std::atof(v.c_str());
    } else if (k == "table") {
      const size_t sp = v.find(' ');
      TIEMB_EXPECT(sp != std::string::npos, where, ": expected 'table <file> <host ids file>'");
      spec->tables.push_back({v.substr(0, sp), v.substr(sp + 1)});
    } else {
      TIEMB_EXPECT(false, where, ": unknown key '", k, "'");
    }
  }
  if (const char* env = std::getenv("TIEMB_REDIS_ADDRESS")) {
    if (*env) spec->address = env;  // the same model served against another cluster
  }
  TIEMB_EXPECT(!spec->ns.empty() && !spec->model.empty(), path, ": needs namespace and model");
  return true;
}

std::string remote_current_version(cluster_client& client, const std::string& ns, const std::string& model,
                                   const std::string& table) {
  const std::string key = table_prefix(ns, model, table) + ":current";
  bool found = false;
  std::string v = get_one(client, key, &found);
  TIEMB_EXPECT(found, "distributed table '", table, "': not published in namespace '", ns, "' for model '", model,
               "' (key '", key, "' missing): publish the store (tiemb publish STORE --address ...) or check "
               "tiemb/distributed_namespace");
  return v;
}

remote_layout resolve_remote_layout(cluster_client& client, const std::string& ns, const std::string& model,
                                    const std::string& table, const std::string& version) {
  struct meta {
    std::string version, base;
    int64_t rows = 0, dim = 0, block_rows = 0;
    std::string dtype;
    std::vector<int64_t> changed;
  };
  std::vector<meta> chain;
  std::string v = version;
  while (!v.empty()) {
    TIEMB_EXPECT(chain.size() < 60000, "distributed table '", table, "': version chain too long");
    const std::string key = table_prefix(ns, model, table) + ":" + v + ":meta";
    bool found = false;
    const std::string text = get_one(client, key, &found);
    TIEMB_EXPECT(found, "distributed table '", table, "': version ", v, " is not in the cluster (key '", key,
                 "' missing; namespace '", ns, "', model '", model, "')");
    auto kv = key_values(text);
    TIEMB_EXPECT(!kv.empty() && kv[0].first == "tiemb-meta" && kv[0].second == "1", "key '", key,
                 "': not a tiemb table version");
    meta m;
    m.version = v;
    for (const auto& [k, val] : kv) {
      if (k == "rows") m.rows = to_int(val, key);
      if (k == "dim") m.dim = to_int(val, key);
      if (k == "block_rows") m.block_rows = to_int(val, key);
      if (k == "dtype") m.dtype = val;
      if (k == "base") m.base = val == "-" ? "" : val;
      if (k == "changed" && val != "-") {
        size_t p = 0;
        while (p < val.size()) {
          size_t c = val.find(',', p);
          if (c == std::string::npos) c = val.size();
          m.changed.push_back(to_int(val.substr(p, c - p), key));
          p = c + 1;
        }
      }
    }
    v = m.base;
    chain.push_back(std::move(m));
  }
  const meta& root = chain.back();
  remote_layout l;
  l.name = table;
  TIEMB_EXPECT(root.dtype == "float32" || root.dtype == "float16", "distributed table '", table, "': dtype '",
               root.dtype, "' is not float32 or float16");
  l.type = root.dtype == "float32" ? dtype::float32 : dtype::float16;
  l.rows = root.rows;
  l.dim = root.dim;
  l.block_rows = root.block_rows;
  TIEMB_EXPECT(l.rows > 0 && l.block_rows > 0, "distributed table '", table, "': bad version metadata");
  l.block_layer.assign(static_cast<size_t>(l.blocks()), 0);
  for (size_t i = chain.size(); i-- > 0;) {
    const auto layer = static_cast<uint16_t>(l.layers.size());
    l.layers.push_back(table_prefix(ns, model, table) + ":" + chain[i].version);
    for (int64_t b : chain[i].changed) {
      TIEMB_EXPECT(b >= 0 && b < l.blocks(), "distributed table '", table, "': version ", chain[i].version,
                   " changes block ", b, " of ", l.blocks());
      l.block_layer[static_cast<size_t>(b)] = layer;
    }
  }
  return l;
}

remote_refresher::remote_refresher(std::shared_ptr<cluster_client> client, std::string ns, std::string model,
                                   std::vector<entry> tables, double period_seconds)
    : client_(std::move(client)), ns_(std::move(ns)), model_(std::move(model)), tables_(std::move(tables)),
      period_(period_seconds) {
  if (period_ > 0) thread_ = std::thread([this] { loop(); });
}

remote_refresher::~remote_refresher() {
  {
    std::lock_guard<std::mutex> lk(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int remote_refresher::refresh() {
  int switched = 0;
  for (entry& e : tables_) {
    const std::string cur = remote_current_version(*client_, ns_, model_, e.name);
    if (cur == e.version) continue;
    remote_layout next = resolve_remote_layout(*client_, ns_, model_, e.name, cur);
    TIEMB_EXPECT(next.rows == e.layout.rows && next.dim == e.layout.dim && next.type == e.layout.type &&
                     next.block_rows == e.layout.block_rows,
                 "distributed table '", e.name, "': version ", cur, " has another shape than the one served");
    std::vector<int64_t> changed;
    for (int64_t b = 0; b < next.blocks(); ++b) {
      if (next.block_key(b) == e.layout.block_key(b)) continue;
      for (int64_t id = b * next.block_rows; id < std::min(next.rows, (b + 1) * next.block_rows); ++id) {
        changed.push_back(id);
      }
    }
    e.table->update(next, changed);
    e.layout = std::move(next);
    e.version = cur;
    ++switched;
  }
  return switched;
}

void remote_refresher::loop() {
  std::unique_lock<std::mutex> lk(mutex_);
  while (!stop_) {
    wake_.wait_for(lk, std::chrono::duration<double>(period_), [this] { return stop_; });
    if (stop_) break;
    lk.unlock();
    std::string err;
    try {
      refresh();
    } catch (const std::exception& e) {
      err = e.what();  // keep serving the last good version
    }
    lk.lock();
    last_error_ = err;
  }
}

std::string remote_refresher::last_error() const {
  std::lock_guard<std::mutex> lk(mutex_);
  return last_error_;
}

std::shared_ptr<remote_refresher> load_remote_store(const std::string& dir, const store_manifest& manifest,
                                                    const remote_store_spec& spec, cpu_engine& engine) {
  auto client = std::make_shared<cluster_client>(spec.address, spec.timeout_ms, spec.retries);
  std::map<std::string, std::string> host_files;
  for (const auto& t : spec.tables) host_files[t.file] = t.host_ids;
  std::vector<remote_refresher::entry> entries;
  std::vector<char> rows;
  for (size_t i = 0; i < manifest.tables.size(); ++i) {
    const std::string& file = manifest.tables[i];
    const std::string path = dir + "/" + file;
    auto it = host_files.find(file);
    if (it == host_files.end()) {  // not published: served from its file
      table_file_reader r(path);
      rows.resize(static_cast<size_t>(r.header().data_bytes()));
      r.read_all(rows.data());
      r.verify(rows.data());
      engine.add_table(r.header().type, r.header().rows, r.header().dim, rows.data());
      continue;
    }
    const std::string version = remote_current_version(*client, spec.ns, spec.model, file);
    remote_layout layout = resolve_remote_layout(*client, spec.ns, spec.model, file, version);
    {
      table_file_reader r(path);  // the header only: the graph was built for this shape
      TIEMB_EXPECT(r.header().rows == layout.rows && r.header().dim == layout.dim && r.header().type == layout.type,
                   "distributed table '", file, "': the cluster holds a ", layout.rows, " x ", layout.dim, " ",
                   to_string(layout.type), " table, the store a ", r.header().rows, " x ", r.header().dim, " ",
                   to_string(r.header().type), " one (namespace '", spec.ns, "', model '", spec.model, "')");
    }
    const std::string ids_path = dir + "/" + it->second;
    bool exists = false;
    const std::string raw = read_text(ids_path, &exists);
    TIEMB_EXPECT(exists && raw.size() % 8 == 0, "distributed table '", file, "': host ids file ", ids_path,
                 exists ? " is not a whole number of int64" : " is missing");
    std::vector<int64_t> ids(raw.size() / 8);
    std::memcpy(ids.data(), raw.data(), raw.size());
    auto table = std::make_shared<remote_table>(client, layout, ids);
    engine.add_remote_table(table);
    entries.push_back({table, file, version, std::move(layout)});
  }
  if (spec.refresh_seconds <= 0) return nullptr;
  return std::make_shared<remote_refresher>(client, spec.ns, spec.model, std::move(entries), spec.refresh_seconds);
}

}  // namespace tiemb
