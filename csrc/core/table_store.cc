#include "table_store.h"

#include <climits>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "checksum.h"
#include "error.h"
#include "table_file.h"

namespace tiemb {
namespace {

std::string manifest_path(const std::string& dir) { return dir + "/manifest.txt"; }

std::string printable(const std::string& text);

int64_t parse_int(const std::string& text, const std::string& where) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  TIEMB_EXPECT(!text.empty() && end != nullptr && *end == '\0' && errno == 0, where, ": expected an integer, got '",
               printable(text), "'");
  return v;
}

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

uint32_t parse_hex32(const std::string& text, const std::string& where) {
  TIEMB_EXPECT(text.size() == 8 && text.find_first_not_of("0123456789abcdef") == std::string::npos, where,
               ": expected a checksum of 8 hex digits, got '", printable(text), "'");
  return static_cast<uint32_t>(std::strtoul(text.c_str(), nullptr, 16));
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

}  // namespace

store_manifest store_manifest::read(const std::string& dir) {
  const std::string path = manifest_path(dir);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  TIEMB_EXPECT(f != nullptr, "table store ", dir, ": cannot open manifest.txt: ", std::strerror(errno));
  std::string text;
  char buf[4096];
  for (size_t got; (got = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < (1u << 24);) text.append(buf, got);
  std::fclose(f);
  store_manifest m;
  int line_no = 0;
  bool header = false, have_batch = false, have_slots = false, have_nnz = false, have_checksum = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t line_start = pos;
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    pos = eol + 1;
    ++line_no;
    std::string line = text.substr(line_start, eol - line_start);
    while (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto sp = line.find(' ');
    const std::string key = line.substr(0, sp);
    const std::string value = sp == std::string::npos ? "" : line.substr(sp + 1);
    const std::string where = detail::concat(path, ":", line_no);
    TIEMB_EXPECT(!have_checksum, where, ": nothing may follow the checksum line, got '", printable(line), "'");
    if (!header) {
      TIEMB_EXPECT(key != "tiemb-store" || value != "1", path,
                   ": store format 1 has no checksums and is no longer read; re-optimize the model with this tiemb");
      TIEMB_EXPECT(key == "tiemb-store" && value == "2", where, ": expected 'tiemb-store 2', got '", printable(line),
                   "'");
      header = true;
    } else if (key == "content_id") {
      TIEMB_EXPECT(value.size() == 32 && value.find_first_not_of("0123456789abcdef") == std::string::npos, where,
                   ": content_id must be 32 hex digits, got '", printable(value), "'");
      m.content_id = value;
    } else if (key == "max_batch_size") {
      m.config.max_batch_size = parse_int(value, where);
      have_batch = true;
    } else if (key == "slot_num") {
      m.config.slot_num = parse_int(value, where);
      have_slots = true;
    } else if (key == "max_nnz") {
      m.config.max_nnz = parse_int(value, where);
      have_nnz = true;
    } else if (key == "table") {
      // <file name> <checksum> <bytes>
      const auto a = value.find(' ');
      const auto b = a == std::string::npos ? a : value.find(' ', a + 1);
      TIEMB_EXPECT(b != std::string::npos, where, ": expected 'table <file> <checksum> <bytes>', got '",
                   printable(line), "'");
      const std::string name = value.substr(0, a);
      TIEMB_EXPECT(!name.empty() && name.find('/') == std::string::npos, where,
                   ": table must be a file name in the store directory, got '", printable(name), "'");
      m.tables.push_back(name);
      m.checksums.push_back(parse_hex32(value.substr(a + 1, b - a - 1), where));
      m.file_bytes.push_back(parse_int(value.substr(b + 1), where));
    } else if (key == "checksum") {
      const uint32_t want = parse_hex32(value, where);
      const uint32_t got = crc32c(text.data(), line_start);
      TIEMB_EXPECT(got == want, path, ": checksum mismatch (CRC32C ", hex32(got), ", its checksum line says ",
                   hex32(want), "): the manifest is damaged");
      have_checksum = true;
    } else {
      TIEMB_EXPECT(false, where, ": unknown key '", printable(key), "'");
    }
  }
  TIEMB_EXPECT(header, path, ": empty manifest");
  TIEMB_EXPECT(have_batch && have_slots && have_nnz && !m.content_id.empty(), path,
               ": needs content_id, max_batch_size, slot_num and max_nnz");
  TIEMB_EXPECT(have_checksum, path, ": has no checksum line (the manifest is truncated or damaged)");
  try {
    m.config.validate();
  } catch (const error& e) {
    throw error(detail::concat(path, ": ", e.what()));
  }
  return m;
}

void store_manifest::write(const std::string& dir) const {
  config.validate();
  TIEMB_EXPECT(content_id.size() == 32 && content_id.find_first_not_of("0123456789abcdef") == std::string::npos,
               "table store ", dir, ": content_id must be 32 hex digits, got '", printable(content_id), "'");
  TIEMB_EXPECT(checksums.size() == tables.size() && file_bytes.size() == tables.size(), "table store ", dir,
               ": need one checksum and one size per table");
  std::string text = detail::concat("tiemb-store 2\ncontent_id ", content_id, "\nmax_batch_size ",
                                    config.max_batch_size, "\nslot_num ", config.slot_num, "\nmax_nnz ",
                                    config.max_nnz, "\n");
  for (size_t i = 0; i < tables.size(); ++i) {
    text += detail::concat("table ", tables[i], " ", hex32(checksums[i]), " ", file_bytes[i], "\n");
  }
  text += "checksum " + hex32(crc32c(text.data(), text.size())) + "\n";
  write_file_atomically(manifest_path(dir), {{text.data(), text.size()}}, "table store " + dir);
}

int32_t store_manifest::table_id(const std::string& file, const std::string& dir) const {
  for (size_t i = 0; i < tables.size(); ++i) {
    if (tables[i] == file) return static_cast<int32_t>(i);
  }
  throw error(detail::concat("table store ", dir, " has no table '", file, "'"));
}

std::string store_key(const std::string& dir) {
  char resolved[PATH_MAX];
  return ::realpath(dir.c_str(), resolved) != nullptr ? std::string(resolved) : dir;
}

void for_each_store_table(const std::string& dir, const store_manifest& manifest,
                          const std::function<void(const table_file_header&, const void*)>& add) {
  std::vector<char> rows;
  for (size_t i = 0; i < manifest.tables.size(); ++i) {
    const std::string path = dir + "/" + manifest.tables[i];
    table_file_reader r(path);
    const auto& h = r.header();
    TIEMB_EXPECT(kTableFileHeaderBytes + h.data_bytes() == manifest.file_bytes[i] && h.checksum == manifest.checksums[i],
                 "table file ", path, ": does not match the store's manifest (", kTableFileHeaderBytes + h.data_bytes(),
                 " bytes, checksum ", hex32(h.checksum), "; the manifest says ", manifest.file_bytes[i], " bytes, ",
                 hex32(manifest.checksums[i]), "): the file is damaged or from another store");
    rows.resize(static_cast<size_t>(h.data_bytes()));
    r.read_all(rows.data());
    r.verify(rows.data());
    add(h, rows.data());
  }
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
    const std::string path = dir + "/" + m.tables[i];
    try {
      table_file_reader r(path);
      const auto& h = r.header();
      TIEMB_EXPECT(kTableFileHeaderBytes + h.data_bytes() == m.file_bytes[i] && h.checksum == m.checksums[i],
                   "table file ", path, ": does not match the store's manifest (", kTableFileHeaderBytes + h.data_bytes(),
                   " bytes, checksum ", hex32(h.checksum), "; the manifest says ", m.file_bytes[i], " bytes, ",
                   hex32(m.checksums[i]), "): the file is damaged or from another store");
      r.verify_file();
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
