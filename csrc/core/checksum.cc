#include "checksum.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "../cpu/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define TIEMB_CRC_X86 1
#endif

namespace tiemb {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // CRC32C, reflected

// Slicing-by-8 tables for CPUs without the instruction.
struct crc_tables {
  uint32_t t[8][256];
  crc_tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (kPoly & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};

const crc_tables& tables() {
  static const crc_tables t;
  return t;
}

// Raw (pre/post-inverted by the caller) CRC update, portable.
uint32_t update_portable(uint32_t c, const unsigned char* p, size_t n) {
  const auto& t = tables().t;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);  // little-endian hosts only (as the table file format)
    w ^= c;
    c = t[7][w & 0xFF] ^ t[6][(w >> 8) & 0xFF] ^ t[5][(w >> 16) & 0xFF] ^ t[4][(w >> 24) & 0xFF] ^
        t[3][(w >> 32) & 0xFF] ^ t[2][(w >> 40) & 0xFF] ^ t[1][(w >> 48) & 0xFF] ^ t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
  return c;
}

#if TIEMB_CRC_X86
__attribute__((target("sse4.2"))) uint32_t update_hw(uint32_t c, const unsigned char* p, size_t n) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n--) c = _mm_crc32_u8(c, *p++);
  return c;
}

// Three equal-length blocks at once: three independent dependency chains
// keep the crc32 unit busy (one chain waits 3 cycles per 8 bytes).
__attribute__((target("sse4.2"))) void update3_hw(const unsigned char* a, const unsigned char* b,
                                                  const unsigned char* c, size_t n, uint32_t out[3]) {
  uint64_t x = 0xFFFFFFFFu, y = 0xFFFFFFFFu, z = 0xFFFFFFFFu;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t wa, wb, wc;
    std::memcpy(&wa, a + i, 8);
    std::memcpy(&wb, b + i, 8);
    std::memcpy(&wc, c + i, 8);
    x = _mm_crc32_u64(x, wa);
    y = _mm_crc32_u64(y, wb);
    z = _mm_crc32_u64(z, wc);
  }
  out[0] = ~update_hw(static_cast<uint32_t>(x), a + i, n - i);
  out[1] = ~update_hw(static_cast<uint32_t>(y), b + i, n - i);
  out[2] = ~update_hw(static_cast<uint32_t>(z), c + i, n - i);
}

bool have_sse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}
#endif

uint32_t update(uint32_t c, const unsigned char* p, size_t n, bool portable) {
#if TIEMB_CRC_X86
  if (!portable && have_sse42()) return update_hw(c, p, n);
#endif
  return update_portable(c, p, n);
}

}  // namespace

uint32_t crc32c(const void* data, size_t bytes, uint32_t crc, bool portable) {
  return ~update(~crc, static_cast<const unsigned char*>(data), bytes, portable);
}

uint32_t block_crc32c(const void* data, size_t bytes, int threads, bool portable) {
  const auto* p = static_cast<const unsigned char*>(data);
  const size_t blocks = bytes == 0 ? 0 : (bytes + kChecksumBlockBytes - 1) / kChecksumBlockBytes;
  std::vector<uint32_t> crcs(blocks);
  const size_t full = bytes / kChecksumBlockBytes;  // blocks of exactly kChecksumBlockBytes
  // Tasks of three full blocks (one triple-stream pass), then the rest one by one.
  const int64_t triples = static_cast<int64_t>(full / 3);
  const int64_t tasks = triples + static_cast<int64_t>(blocks - 3 * triples);
  auto task = [&](int64_t t, int) {
    if (t < triples) {
      const size_t b = 3 * static_cast<size_t>(t);
      const unsigned char* base = p + b * kChecksumBlockBytes;
#if TIEMB_CRC_X86
      if (!portable && have_sse42()) {
        update3_hw(base, base + kChecksumBlockBytes, base + 2 * kChecksumBlockBytes, kChecksumBlockBytes, &crcs[b]);
        return;
      }
#endif
      for (size_t k = 0; k < 3; ++k) crcs[b + k] = crc32c(base + k * kChecksumBlockBytes, kChecksumBlockBytes, 0, portable);
      return;
    }
    const size_t b = 3 * static_cast<size_t>(triples) + static_cast<size_t>(t - triples);
    const size_t off = b * kChecksumBlockBytes;
    crcs[b] = crc32c(p + off, std::min(kChecksumBlockBytes, bytes - off), 0, portable);
  };
  if (threads <= 0) threads = hardware_threads();
  if (tasks <= 1 || threads == 1) {
    for (int64_t t = 0; t < tasks; ++t) task(t, 0);
  } else {
    thread_pool pool(static_cast<int>(std::min<int64_t>(threads, tasks)));
    pool.parallel_for(tasks, task);
  }
  return crc32c(crcs.data(), crcs.size() * sizeof(uint32_t), 0, portable);
}

}  // namespace tiemb
