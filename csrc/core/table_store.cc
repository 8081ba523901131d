#include "table_store.h"

#include <climits>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include <nlohmann/json.hpp>

#include "checksum.h"
#include "error.h"
#include "table_file.h"

namespace tiemb {
namespace {

using json = nlohmann::json;

// Text from a file, safe to show: bytes outside printable ASCII as \xNN (a
// damaged manifest must give a readable error, not undecodable bytes).
std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

bool is_hex(const std::string& text, size_t digits) {
  return text.size() == digits && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

// Typed access to one field of a description, errors naming the field by
// its path ("tables[2].rows") and showing the value.
class fields {
 public:
  fields(const json& object, std::string where, std::string path)
      : object_(object), where_(std::move(where)), path_(std::move(path)) {
    TIEMB_EXPECT(object_.is_object(), where_, ": ", name(""), " must be an object, got ", shown(object_));
  }

  /// Every key must be one of `known`: a setting this reader does not know
  /// is an error, never silently ignored.
  void only(std::initializer_list<const char*> known) const {
    for (const auto& item : object_.items()) {
      bool ok = false;
      for (const char* k : known) ok = ok || item.key() == k;
      TIEMB_EXPECT(ok, where_, ": unknown key ", name(item.key()), " (this tiemb reads store format ",
                   kStoreFormatVersion, ")");
    }
  }
  bool has(const char* key) const { return object_.contains(key); }
  const json& at(const char* key) const {
    TIEMB_EXPECT(object_.contains(key), where_, ": ", name(key), " is missing");
    return object_.at(key);
  }
  int64_t integer(const char* key, int64_t min) const {
    const json& v = at(key);
    TIEMB_EXPECT(v.is_number_integer() && v.get<int64_t>() >= min, where_, ": ", name(key),
                 " must be an integer >= ", min, ", got ", shown(v));
    return v.get<int64_t>();
  }
  double number(const char* key) const {
    const json& v = at(key);
    TIEMB_EXPECT(v.is_number(), where_, ": ", name(key), " must be a number, got ", shown(v));
    return v.get<double>();
  }
  std::string text(const char* key) const {
    const json& v = at(key);
    TIEMB_EXPECT(v.is_string(), where_, ": ", name(key), " must be a string, got ", shown(v));
    return v.get<std::string>();
  }
  std::string hex(const char* key, size_t digits) const {
    const std::string v = text(key);
    TIEMB_EXPECT(is_hex(v, digits), where_, ": ", name(key), " must be ", digits, " lowercase hex digits, got '",
                 printable(v), "'");
    return v;
  }
  std::string name(const std::string& key) const {
    return path_.empty() ? key : key.empty() ? path_ : path_ + "." + key;
  }

 private:
  static std::string shown(const json& v) { return printable(v.dump()); }

  const json& object_;
  std::string where_, path_;
};

// The description's own checksum: CRC32C of its bytes with the checksum's
// digits read as zeros (so the writer can compute it before it knows it).
// The writer puts it last, so it is the last field of that text.
void check_description_checksum(const std::string& text, const std::string& want, const std::string& where) {
  const std::string field = "\"checksum\": \"" + want + "\"";
  const size_t at = text.rfind(field);  // the last field (a table's checksum may read the same)
  TIEMB_EXPECT(at != std::string::npos, where,
               ": the checksum field is not where the writer puts it: the description is damaged or hand-edited");
  std::string zeroed = text;
  zeroed.replace(at + field.size() - 9, 8, "00000000");
  const uint32_t got = crc32c(zeroed.data(), zeroed.size());
  TIEMB_EXPECT(hex32(got) == want, where, ": checksum mismatch (CRC32C ", hex32(got), ", its checksum says ", want,
               "): the description is damaged");
}

void read_tables(const fields& top, const std::string& where, store_manifest& m) {
  const json& tables = top.at("tables");
  TIEMB_EXPECT(tables.is_array(), where, ": tables must be a list, got ", printable(tables.dump()));
  for (size_t i = 0; i < tables.size(); ++i) {
    const fields t(tables[i], where, detail::concat("tables[", i, "]"));
    t.only({"name", "file", "rows", "dim", "dtype", "checksum", "bytes"});
    const std::string name = t.text("name"), file = t.text("file");
    TIEMB_EXPECT(!file.empty() && file.find('/') == std::string::npos && file != kStoreDescription, where, ": ",
                 t.name("file"), " must be a file name in the store directory, got '", printable(file), "'");
    for (const std::string& seen : m.tables) {
      TIEMB_EXPECT(seen != name, where, ": two tables are named '", printable(name), "'");
    }
    const std::string type = t.text("dtype");
    TIEMB_EXPECT(type == "float32" || type == "float16", where, ": ", t.name("dtype"),
                 " must be float32 or float16, got '", printable(type), "'");
    m.tables.push_back(name);
    m.files.push_back(file);
    m.rows.push_back(t.integer("rows", 1));
    m.dims.push_back(t.integer("dim", 1));
    m.dtypes.push_back(type == "float16" ? dtype::float16 : dtype::float32);
    m.checksums.push_back(static_cast<uint32_t>(std::stoul(t.hex("checksum", 8), nullptr, 16)));
    m.file_bytes.push_back(t.integer("bytes", kTableFileHeaderBytes));
  }
}

void read_tiers(const fields& top, const std::string& where, store_manifest& m) {
  if (!top.has("tiers")) return;  // the tiemb/* parameters' defaults
  const fields t(top.at("tiers"), where, "tiers");
  t.only({"cache_percentage", "cpu_cache_percentage", "hit_rate_threshold"});
  if (t.has("cache_percentage")) m.tiers.cache_percentage = t.number("cache_percentage");
  if (t.has("cpu_cache_percentage")) m.tiers.cpu_cache_percentage = t.number("cpu_cache_percentage");
  if (t.has("hit_rate_threshold")) m.tiers.hit_rate_threshold = t.number("hit_rate_threshold");
  // Ranges only: a store's tiered rows are backed by its own table files.
  tier_config ranges = m.tiers;
  ranges.backing_file = "(the table file)";
  try {
    ranges.validate(1);
  } catch (const error& e) {
    throw error(detail::concat(where, ": tiers.", e.what()));
  }
}

void read_distributed_tables(const fields& d, const std::string& where, store_manifest& m) {
  const json& tables = d.at("tables");
  TIEMB_EXPECT(tables.is_array(), where, ": distributed.tables must be a list, got ", printable(tables.dump()));
  for (size_t i = 0; i < tables.size(); ++i) {
    const fields t(tables[i], where, detail::concat("distributed.tables[", i, "]"));
    t.only({"name", "version", "block_rows", "host_rows", "host_ids", "host_ids_checksum"});
    store_distributed::table e;
    e.name = t.text("name");
    TIEMB_EXPECT(m.distributed.find(e.name) == nullptr, where, ": ", t.name("name"), " '", printable(e.name),
                 "' is listed twice");
    size_t id = m.tables.size();
    for (size_t k = 0; k < m.tables.size(); ++k) id = m.tables[k] == e.name ? k : id;
    TIEMB_EXPECT(id < m.tables.size(), where, ": ", t.name("name"), " '", printable(e.name),
                 "' is not a table of the store");
    e.version = t.text("version");
    TIEMB_EXPECT(!e.version.empty() && e.version.find_first_of(" :\n") == std::string::npos, where, ": ",
                 t.name("version"), " must be a content version (no spaces or ':'), got '", printable(e.version), "'");
    e.block_rows = t.integer("block_rows", 1);
    // A table file holds at least one row, so the host tier keeps at least one.
    e.host_rows = t.integer("host_rows", 1);
    TIEMB_EXPECT(e.host_rows <= m.rows[id], where, ": ", t.name("host_rows"), " must be <= the table's rows (",
                 m.rows[id], "), got ", e.host_rows);
    e.host_ids = t.text("host_ids");
    TIEMB_EXPECT(!e.host_ids.empty() && e.host_ids.find('/') == std::string::npos && e.host_ids != kStoreDescription,
                 where, ": ", t.name("host_ids"), " must be a file name in the store directory, got '",
                 printable(e.host_ids), "'");
    e.host_ids_checksum = static_cast<uint32_t>(std::stoul(t.hex("host_ids_checksum", 8), nullptr, 16));
    m.distributed.tables.push_back(std::move(e));
  }
}

// store.json's "distributed" object (see store_distributed).
void read_distributed(const fields& top, const std::string& where, store_manifest& m) {
  if (!top.has("distributed")) return;
  const fields d(top.at("distributed"), where, "distributed");
  d.only({"namespace", "model", "cpu_cache_percentage", "settings", "tables"});
  m.has_distributed = true;
  store_distributed& out = m.distributed;
  out.ns = d.text("namespace");
  out.model = d.text("model");
  for (const auto& [key, value] : {std::pair{"namespace", &out.ns}, std::pair{"model", &out.model}}) {
    TIEMB_EXPECT(!value->empty() && value->find_first_of(" :\n") == std::string::npos, where, ": ", d.name(key),
                 " must be a non-empty key part without spaces or ':', got '", printable(*value), "'");
  }
  out.cpu_cache_percentage = d.number("cpu_cache_percentage");
  TIEMB_EXPECT(out.cpu_cache_percentage >= 0 && out.cpu_cache_percentage <= 1, where, ": ",
               d.name("cpu_cache_percentage"), " must be in [0, 1], got ", out.cpu_cache_percentage);
  const fields s(d.at("settings"), where, "distributed.settings");
  s.only({"address", "timeout_ms", "retries", "refresh_seconds"});
  out.address = s.text("address");
  out.timeout_ms = s.integer("timeout_ms", 1);
  out.retries = s.integer("retries", 0);
  TIEMB_EXPECT(out.timeout_ms <= 3600000 && out.retries <= 1000, where, ": ", s.name("timeout_ms"), " (",
               out.timeout_ms, ") must be <= 3600000 and ", s.name("retries"), " (", out.retries, ") <= 1000");
  out.refresh_seconds = s.number("refresh_seconds");
  TIEMB_EXPECT(out.refresh_seconds >= 0, where, ": ", s.name("refresh_seconds"), " must be >= 0, got ",
               out.refresh_seconds);
  read_distributed_tables(d, where, m);
}

// A store of an older format: the description it has, and the fix.
void refuse_old_format(const std::string& dir) {
  const std::string old = dir + "/manifest.txt";
  std::FILE* f = std::fopen(old.c_str(), "rb");
  if (f == nullptr) return;
  char line[32] = {0};
  const bool got = std::fgets(line, sizeof line, f) != nullptr;
  std::fclose(f);
  const std::string first = got ? std::string(line) : std::string();
  TIEMB_EXPECT(first.rfind("tiemb-store 1", 0) != 0, old,
               ": store format 1 has no checksums and is no longer read; re-optimize the model with this tiemb "
               "(tiemb optimize) to rewrite its store as format ", kStoreFormatVersion, " (store.json)");
  throw error(detail::concat("table store ", dir, ": has manifest.txt (store format 2) but no ", kStoreDescription,
                             "; this tiemb reads store format ", kStoreFormatVersion,
                             ": re-optimize the model with this tiemb (tiemb optimize) to rewrite its store"));
}

}  // namespace

store_manifest store_manifest::parse(const std::string& text, const std::string& where) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    throw error(detail::concat(where, ": not valid JSON (", printable(e.what()), "): the description is damaged"));
  }
  const fields top(doc, where, "");
  top.only({"format", "version", "content_id", "sizes", "tables", "tiers", "distributed", "checksum"});
  TIEMB_EXPECT(top.has("format") && top.at("format") == "tiemb-store", where,
               ": not a tiemb store description (format must be \"tiemb-store\")");
  const int64_t version = top.integer("version", 1);
  TIEMB_EXPECT(version == kStoreFormatVersion, where, ": store format ", version,
               " is not read by this tiemb (it reads ", kStoreFormatVersion, "); re-optimize the model with this tiemb");
  check_description_checksum(text, top.hex("checksum", 8), where);
  store_manifest m;
  m.content_id = top.hex("content_id", 32);
  const fields sizes(top.at("sizes"), where, "sizes");
  sizes.only({"max_batch_size", "slot_num", "max_nnz"});
  m.config.max_batch_size = sizes.integer("max_batch_size", 1);
  m.config.slot_num = sizes.integer("slot_num", 1);
  m.config.max_nnz = sizes.integer("max_nnz", 1);
  try {
    m.config.validate();
  } catch (const error& e) {
    throw error(detail::concat(where, ": sizes: ", e.what()));
  }
  read_tables(top, where, m);
  read_tiers(top, where, m);
  read_distributed(top, where, m);
  return m;
}

store_manifest store_manifest::read(const std::string& dir) {
  const std::string path = dir + "/" + kStoreDescription;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    if (err == ENOENT) refuse_old_format(dir);
    throw error(detail::concat("table store ", dir, ": cannot open ", kStoreDescription, ": ", std::strerror(err)));
  }
  std::string text;
  char buf[4096];
  for (size_t got; (got = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < (1u << 26);) text.append(buf, got);
  std::fclose(f);
  return parse(text, path);
}

int32_t store_manifest::table_id(const std::string& name, const std::string& dir) const {
  for (size_t i = 0; i < tables.size(); ++i) {
    if (tables[i] == name) return static_cast<int32_t>(i);
  }
  throw error(detail::concat("table store ", dir, " has no table '", name, "'"));
}

const store_distributed::table* store_distributed::find(const std::string& name) const {
  for (const table& t : tables) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

int64_t store_manifest::stored_rows(size_t i) const {
  const store_distributed::table* t = distributed.find(tables.at(i));
  return t != nullptr ? t->host_rows : rows.at(i);
}

std::string store_key(const std::string& dir) {
  char resolved[PATH_MAX];
  return ::realpath(dir.c_str(), resolved) != nullptr ? std::string(resolved) : dir;
}

namespace {

// A table file's header against the store's description of it.
void check_table_header(const store_manifest& m, size_t i, const std::string& path, const table_file_header& h) {
  TIEMB_EXPECT(kTableFileHeaderBytes + h.data_bytes() == m.file_bytes[i] && h.checksum == m.checksums[i] &&
                   h.rows == m.stored_rows(i) && h.dim == m.dims[i] && h.type == m.dtypes[i],
               "table file ", path, ": does not match the store's ", kStoreDescription, " (", h.rows, " x ", h.dim,
               " ", to_string(h.type), ", ", kTableFileHeaderBytes + h.data_bytes(), " bytes, checksum ",
               hex32(h.checksum), "; ", kStoreDescription, " says ", m.stored_rows(i), " x ", m.dims[i], " ",
               to_string(m.dtypes[i]), ", ", m.file_bytes[i], " bytes, ", hex32(m.checksums[i]),
               "): the file is damaged or from another store");
}

}  // namespace

std::string store_manifest::table_path(const std::string& dir, size_t i) const { return dir + "/" + files.at(i); }

void for_each_store_table(const std::string& dir, const store_manifest& manifest,
                          const std::function<void(const table_file_header&, const void*)>& add) {
  std::vector<char> rows;
  for (size_t i = 0; i < manifest.tables.size(); ++i) {
    TIEMB_EXPECT(manifest.distributed.find(manifest.tables[i]) == nullptr, "table store ", dir, ": table '",
                 manifest.tables[i], "' lives in a Redis Cluster (", kStoreDescription,
                 " distributed.tables; its file holds only the host tier): it is served by the CPU engine over the "
                 "cluster (the TiembLookup op's CPU kernel, tiemb.distributed.open_store), not from its file");
    const std::string path = manifest.table_path(dir, i);
    table_file_reader r(path);
    const auto& h = r.header();
    check_table_header(manifest, i, path, h);
    rows.resize(static_cast<size_t>(h.data_bytes()));
    r.read_all(rows.data());
    r.verify(rows.data());
    add(h, rows.data());
  }
}

std::vector<int64_t> read_host_ids(const std::string& dir, const store_distributed::table& t) {
  const std::string path = dir + "/" + t.host_ids;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  TIEMB_EXPECT(f != nullptr, "host ids file ", path, " of distributed table '", t.name, "': cannot open: ",
               std::strerror(errno));
  std::vector<int64_t> ids(static_cast<size_t>(t.host_rows) + 1);  // one more: a longer file is caught
  const size_t got = std::fread(ids.data(), 8, ids.size(), f);
  std::fclose(f);
  TIEMB_EXPECT(got == static_cast<size_t>(t.host_rows), "host ids file ", path, " of distributed table '", t.name,
               "': ", got == ids.size() ? "more" : detail::concat(got), " ids, ", kStoreDescription, " says ",
               t.host_rows, ": the file is damaged or from another store");
  ids.pop_back();
  const uint32_t crc = crc32c(ids.data(), ids.size() * 8);
  TIEMB_EXPECT(crc == t.host_ids_checksum, "host ids file ", path, " of distributed table '", t.name,
               "': checksum mismatch (CRC32C ", hex32(crc), ", ", kStoreDescription, " says ",
               hex32(t.host_ids_checksum), "): the file is damaged");
  return ids;
}

std::vector<std::string> check_store(const std::string& dir) {
  std::vector<std::string> problems;
  store_manifest m;
  try {
    m = store_manifest::read(dir);
  } catch (const error& e) {
    problems.push_back(e.what());
    return problems;
  }
  for (size_t i = 0; i < m.tables.size(); ++i) {
    const std::string path = m.table_path(dir, i);
    try {
      table_file_reader r(path);
      check_table_header(m, i, path, r.header());
      r.verify_file();
    } catch (const error& e) {
      problems.push_back(e.what());
    }
  }
  for (const store_distributed::table& t : m.distributed.tables) {
    try {
      read_host_ids(dir, t);
    } catch (const error& e) {
      problems.push_back(e.what());
    }
  }
  return problems;
}

namespace {

struct registry_entry {
  std::weak_ptr<void> engine;
  std::shared_ptr<store_manifest> manifest;
  const void* address = nullptr;
};
using registry_key = std::tuple<std::string, int, std::string>;  // store, device, content id

// Function-local statics in one translation unit of the shared core: one
// registry per process, whichever module (tiemb._C, the op library) asks.
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::map<registry_key, registry_entry>& registry() {
  static std::map<registry_key, registry_entry> r;
  return r;
}

}  // namespace

namespace detail {

std::shared_ptr<void> shared_store_engine(const std::string& store, int device, const std::string& dir,
                                          const store_manifest** manifest,
                                          const std::function<std::shared_ptr<void>(store_manifest&)>& build) {
  auto m = std::make_shared<store_manifest>(store_manifest::read(dir));
  std::lock_guard<std::mutex> lk(registry_mutex());
  auto& engines = registry();
  for (auto it = engines.begin(); it != engines.end();) {  // forget released engines
    it = it->second.engine.expired() ? engines.erase(it) : std::next(it);
  }
  const registry_key key{store, device, m->content_id};
  registry_entry& e = engines[key];
  if (auto live = e.engine.lock()) {
    *manifest = e.manifest.get();
    return live;
  }
  std::shared_ptr<void> engine;
  try {
    engine = build(*m);
  } catch (...) {
    engines.erase(key);
    throw;
  }
  e.engine = engine;
  e.manifest = m;
  e.address = engine.get();
  *manifest = m.get();
  return engine;
}

}  // namespace detail

std::vector<store_engine_entry> live_store_engines() {
  std::lock_guard<std::mutex> lk(registry_mutex());
  std::vector<store_engine_entry> out;
  for (const auto& [key, e] : registry()) {
    const long users = e.engine.use_count();
    if (users == 0) continue;
    out.push_back(store_engine_entry{std::get<0>(key), std::get<1>(key), std::get<2>(key), e.address, users});
  }
  return out;
}

}  // namespace tiemb
