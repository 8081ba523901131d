// CRC32C (Castagnoli) checksums of table files.
//
// A table file's checksum is the "block CRC": the CRC32C of every 1 MiB
// block of its data (the last block may be shorter), then the CRC32C of those
// block CRCs as little-endian uint32s. Blocks make the checksum parallel
// (threads take blocks) and give one thread three independent CRC streams
// (the crc32 instruction has a latency of 3 cycles and a throughput of 1)
// without the CRC-combination algebra.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tiemb {

constexpr size_t kChecksumBlockBytes = size_t{1} << 20;

/// CRC32C of `bytes` bytes at `data`, continuing from `crc` (0 to start).
/// Uses the SSE4.2 instruction where the CPU has it; `portable` forces the
/// table-driven code (for tests comparing the two).
uint32_t crc32c(const void* data, size_t bytes, uint32_t crc = 0, bool portable = false);

/// The block CRC of `bytes` bytes at `data` (see above), computed on up to
/// `threads` threads (0: every hardware thread; small inputs use one).
uint32_t block_crc32c(const void* data, size_t bytes, int threads = 0, bool portable = false);

}  // namespace tiemb
