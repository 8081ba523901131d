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

bool store_is_distributed(const std::string& dir, const store_manifest& manifest) {
  if (manifest.has_distributed) return true;
  for (const char* old : {"distributed.json", "distributed/remote.txt"}) {
    bool exists = false;
    read_text(dir + "/" + old, &exists);
    TIEMB_EXPECT(!exists, "table store ", dir, ": has ", old, " but its ", kStoreDescription,
                 " records no cluster: this is the distributed layout before store.json recorded it, no longer "
                 "served; re-publish it with this tiemb (tiemb publish ", dir, " --address ...) or re-optimize");
  }
  return false;
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
                                                    cpu_engine& engine) {
  return load_remote_store(
      dir, manifest, [&](const table_file_header& h, const void* rows) { engine.add_table(h.type, h.rows, h.dim, rows); },
      [&](std::shared_ptr<remote_table> t) { engine.add_remote_table(std::move(t)); }, true);
}

std::shared_ptr<remote_refresher> load_remote_store(
    const std::string& dir, const store_manifest& manifest,
    const std::function<void(const table_file_header&, const void*)>& add_file,
    const std::function<void(std::shared_ptr<remote_table>)>& add_remote, bool follow_updates) {
  const store_distributed& spec = manifest.distributed;
  std::string address = spec.address;
  if (const char* env = std::getenv("TIEMB_REDIS_ADDRESS")) {
    if (*env) address = env;  // the same model served against another cluster
  }
  auto client = std::make_shared<cluster_client>(address, static_cast<int>(spec.timeout_ms),
                                                 static_cast<int>(spec.retries));
  std::vector<remote_refresher::entry> entries;
  std::vector<char> rows;
  for (size_t i = 0; i < manifest.tables.size(); ++i) {
    const std::string& name = manifest.tables[i];
    const std::string path = manifest.table_path(dir, i);
    const store_distributed::table* remote = spec.find(name);
    table_file_reader r(path);
    const table_file_header& h = r.header();
    TIEMB_EXPECT(h.rows == manifest.stored_rows(i) && h.checksum == manifest.checksums[i], "table file ", path,
                 ": does not match the store's ", kStoreDescription, " (", h.rows, " rows, checksum ", h.checksum,
                 "; expected ", manifest.stored_rows(i), ", ", manifest.checksums[i], ")");
    rows.resize(static_cast<size_t>(h.data_bytes()));
    r.read_all(rows.data());
    r.verify(rows.data());
    if (remote == nullptr) {  // not published: served from its file
      add_file(h, rows.data());
      continue;
    }
    const std::string version = remote_current_version(*client, spec.ns, spec.model, name);
    remote_layout layout = resolve_remote_layout(*client, spec.ns, spec.model, name, version);
    TIEMB_EXPECT(manifest.rows[i] == layout.rows && h.dim == layout.dim && h.type == layout.type,
                 "distributed table '", name, "': the cluster holds a ", layout.rows, " x ", layout.dim, " ",
                 to_string(layout.type), " table, the store a ", manifest.rows[i], " x ", h.dim, " ",
                 to_string(h.type), " one (namespace '", spec.ns, "', model '", spec.model, "')");
    const std::vector<int64_t> ids = read_host_ids(dir, *remote);
    // The stored host rows are the recorded version's; after an update the
    // cluster's are the ones to serve.
    const char* host_rows = version == remote->version ? rows.data() : nullptr;
    auto table = std::make_shared<remote_table>(client, layout, ids, host_rows);
    add_remote(table);
    entries.push_back({table, name, version, std::move(layout)});
  }
  if (spec.refresh_seconds <= 0 || !follow_updates) return nullptr;
  return std::make_shared<remote_refresher>(client, spec.ns, spec.model, std::move(entries), spec.refresh_seconds);
}

}  // namespace tiemb
