#include "table_store.h"

#include <climits>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "table_file.h"

namespace tiemb {
namespace {

std::string manifest_path(const std::string& dir) { return dir + "/manifest.txt"; }

int64_t parse_int(const std::string& text, const std::string& where) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  TIEMB_EXPECT(!text.empty() && end != nullptr && *end == '\0' && errno == 0, where, ": expected an integer, got '",
               text, "'");
  return v;
}

}  // namespace

store_manifest store_manifest::read(const std::string& dir) {
  const std::string path = manifest_path(dir);
  std::FILE* f = std::fopen(path.c_str(), "r");
  TIEMB_EXPECT(f != nullptr, "table store ", dir, ": cannot open manifest.txt: ", std::strerror(errno));
  store_manifest m;
  char buf[4096];
  int line_no = 0;
  bool header = false, have_batch = false, have_slots = false, have_nnz = false;
  std::string problem;
  while (problem.empty() && std::fgets(buf, sizeof buf, f) != nullptr) {
    ++line_no;
    std::string line(buf);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (line.empty()) continue;
    const auto sp = line.find(' ');
    const std::string key = line.substr(0, sp);
    const std::string value = sp == std::string::npos ? "" : line.substr(sp + 1);
    const std::string where = detail::concat(path, ":", line_no);
    try {
      if (!header) {
        TIEMB_EXPECT(key == "tiemb-store" && value == "1", where, ": expected 'tiemb-store 1', got '", line, "'");
        header = true;
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
        TIEMB_EXPECT(!value.empty() && value.find('/') == std::string::npos, where,
                     ": table must be a file name in the store directory, got '", value, "'");
        m.tables.push_back(value);
      } else {
        TIEMB_EXPECT(false, where, ": unknown key '", key, "'");
      }
    } catch (const error& e) {
      problem = e.what();
    }
  }
  std::fclose(f);
  if (!problem.empty()) throw error(problem);
  TIEMB_EXPECT(header, path, ": empty manifest");
  TIEMB_EXPECT(have_batch && have_slots && have_nnz, path, ": needs max_batch_size, slot_num and max_nnz");
  try {
    m.config.validate();
  } catch (const error& e) {
    throw error(detail::concat(path, ": ", e.what()));
  }
  return m;
}

void store_manifest::write(const std::string& dir) const {
  config.validate();
  std::string text = detail::concat("tiemb-store 1\nmax_batch_size ", config.max_batch_size, "\nslot_num ",
                                    config.slot_num, "\nmax_nnz ", config.max_nnz, "\n");
  for (const auto& t : tables) text += "table " + t + "\n";
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
  for (const auto& file : manifest.tables) {
    table_file_reader r(dir + "/" + file);
    const auto& h = r.header();
    rows.resize(static_cast<size_t>(h.rows * h.row_bytes()));
    r.read_all(rows.data());
    add(h, rows.data());
  }
}

}  // namespace tiemb
