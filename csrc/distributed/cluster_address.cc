// Address parsing and key hashing: no hiredis needed, so they are built (and
// tested) everywhere.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../core/error.h"
#include "cluster_client.h"

namespace tiemb {

constexpr int kClusterSlots = 16384;

std::vector<cluster_endpoint> parse_cluster_address(const std::string& address) {
  TIEMB_EXPECT(!address.empty(),
               "tiemb/distributed_address: empty; give host:port[,host:port...] of the cluster's nodes "
               "(or set TIEMB_REDIS_ADDRESS)");
  std::vector<cluster_endpoint> out;
  size_t pos = 0;
  while (pos <= address.size()) {
    size_t comma = address.find(',', pos);
    if (comma == std::string::npos) comma = address.size();
    std::string entry = address.substr(pos, comma - pos);
    pos = comma + 1;
    while (!entry.empty() && entry.front() == ' ') entry.erase(entry.begin());
    while (!entry.empty() && entry.back() == ' ') entry.pop_back();
    const size_t colon = entry.rfind(':');
    bool ok = colon != std::string::npos && colon > 0 && colon + 1 < entry.size() &&
              entry.find_first_of(" /") == std::string::npos;
    long port = 0;
    if (ok) {
      const std::string p = entry.substr(colon + 1);
      char* end = nullptr;
      port = std::strtol(p.c_str(), &end, 10);
      ok = *end == '\0' && port > 0 && port < 65536;
    }
    TIEMB_EXPECT(ok, "tiemb/distributed_address: malformed entry '", entry, "' in '", address,
                 "': expected host:port[,host:port...] with a port in 1..65535");
    out.push_back(cluster_endpoint{entry.substr(0, colon), static_cast<int>(port)});
    if (comma == address.size()) break;
  }
  return out;
}

namespace {

// CRC16/XMODEM (the cluster's key hash), a byte at a time from a table: the
// bitwise form showed up in profiles of calls that route thousands of keys.
struct crc16_table {
  uint16_t v[256];
  constexpr crc16_table() : v{} {
    for (int i = 0; i < 256; ++i) {
      uint16_t crc = static_cast<uint16_t>(i << 8);
      for (int b = 0; b < 8; ++b) crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
      v[i] = crc;
    }
  }
};
constexpr crc16_table kCrc16;

uint16_t crc16(const char* buf, size_t len) {
  uint16_t crc = 0;
  for (size_t i = 0; i < len; ++i) {
    crc = static_cast<uint16_t>((crc << 8) ^ kCrc16.v[((crc >> 8) ^ static_cast<unsigned char>(buf[i])) & 0xff]);
  }
  return crc;
}

}  // namespace

int key_hash_slot(const char* key, size_t len) {
  // Only the part between the first { and the next } hashes, when non-empty.
  for (size_t s = 0; s < len; ++s) {
    if (key[s] == '{') {
      for (size_t e = s + 1; e < len; ++e) {
        if (key[e] == '}') {
          if (e > s + 1) return crc16(key + s + 1, e - s - 1) & (kClusterSlots - 1);
          break;
        }
      }
      break;
    }
  }
  return crc16(key, len) & (kClusterSlots - 1);
}

}  // namespace tiemb
