#include "table_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>

#include "checksum.h"
#include "error.h"

namespace tiemb {
namespace {

constexpr char kMagic[8] = {'T', 'I', 'E', 'M', 'B', 'T', 'B', '1'};
constexpr uint32_t kVersion = 2;
constexpr int kHeaderCrcBytes = 36;  // the header checksum covers bytes [0, 36)

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

}  // namespace

void write_file_atomically(const std::string& path, const std::vector<std::pair<const void*, size_t>>& parts,
                           const std::string& what) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  TIEMB_EXPECT(f != nullptr, what, ": cannot open ", tmp, " for writing: ", std::strerror(errno));
  bool ok = true;
  for (const auto& [data, bytes] : parts) ok = ok && std::fwrite(data, 1, bytes, f) == bytes;
  const bool closed = std::fclose(f) == 0;
  TIEMB_EXPECT(ok && closed, what, ": write failed (disk full?)");
  TIEMB_EXPECT(std::rename(tmp.c_str(), path.c_str()) == 0, what, ": cannot rename ", tmp, ": ",
               std::strerror(errno));
}

uint32_t write_table_file(const std::string& path, dtype type, int64_t rows, int64_t dim,
                          const void* data) {
  TIEMB_EXPECT(type == dtype::float32 || type == dtype::float16,
               "table file ", path, ": dtype must be float32 or float16, got ", to_string(type));
  TIEMB_EXPECT(rows > 0 && dim > 0, "table file ", path, ": rows and dim must be > 0, got ", rows,
               " x ", dim);
  char header[kTableFileHeaderBytes] = {};
  std::memcpy(header, kMagic, 8);
  const uint32_t version = kVersion;
  const auto type_code = static_cast<uint32_t>(type);
  std::memcpy(header + 8, &version, 4);
  std::memcpy(header + 12, &type_code, 4);
  std::memcpy(header + 16, &rows, 8);
  std::memcpy(header + 24, &dim, 8);
  const size_t bytes = static_cast<size_t>(rows * dim * size_of(type));
  const uint32_t checksum = block_crc32c(data, bytes);
  std::memcpy(header + 32, &checksum, 4);
  const uint32_t header_crc = crc32c(header, kHeaderCrcBytes);
  std::memcpy(header + kHeaderCrcBytes, &header_crc, 4);
  write_file_atomically(path, {{header, sizeof header}, {data, bytes}}, "table file " + path);
  return checksum;
}

table_file_reader::table_file_reader(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TIEMB_EXPECT(fd_ >= 0, "table file ", path, ": cannot open: ", std::strerror(errno));
  char header[kTableFileHeaderBytes];
  const ssize_t got = ::pread(fd_, header, sizeof header, 0);
  if (got != static_cast<ssize_t>(sizeof header) || std::memcmp(header, kMagic, 8) != 0) {
    ::close(fd_);
    fd_ = -1;
    TIEMB_EXPECT(false, "table file ", path, ": not a tiemb table file (",
                 got < static_cast<ssize_t>(sizeof header) ? "shorter than its header" : "bad magic", ")");
  }
  uint32_t version, type_code;
  std::memcpy(&version, header + 8, 4);
  std::memcpy(&type_code, header + 12, 4);
  std::memcpy(&header_.rows, header + 16, 8);
  std::memcpy(&header_.dim, header + 24, 8);
  header_.type = static_cast<dtype>(type_code);
  uint32_t header_crc = 0;
  std::memcpy(&header_.checksum, header + 32, 4);
  std::memcpy(&header_crc, header + kHeaderCrcBytes, 4);
  const bool ok_type = header_.type == dtype::float32 || header_.type == dtype::float16;
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  std::string problem;
  if (version == 1) {
    problem = "format version 1 has no checksums and is no longer read; re-optimize the model with this tiemb";
  } else if (version != kVersion) {
    problem = detail::concat("format version ", version, " is not supported (expected ", kVersion, ")");
  } else if (crc32c(header, kHeaderCrcBytes) != header_crc ||
             std::any_of(header + kHeaderCrcBytes + 4, header + kTableFileHeaderBytes, [](char c) { return c != 0; })) {
    // The reserved bytes must be zero: every byte of the file is checked.
    problem = "header checksum mismatch: the file is damaged";
  } else if (!ok_type) {
    problem = detail::concat("unknown dtype code ", type_code);
  } else if (header_.rows <= 0 || header_.dim <= 0) {
    problem = detail::concat("bad shape ", header_.rows, " x ", header_.dim);
  } else if (size != kTableFileHeaderBytes + header_.rows * header_.row_bytes()) {
    problem = detail::concat("size ", size, " bytes does not match its header (", header_.rows, " x ",
                             header_.dim, " ", to_string(header_.type), ")");
  }
  if (!problem.empty()) {
    ::close(fd_);
    fd_ = -1;
    throw error(detail::concat("table file ", path, ": ", problem));
  }
}

table_file_reader::~table_file_reader() {
  if (fd_ >= 0) ::close(fd_);
}

void table_file_reader::read_row(int64_t id, void* dst) const {
  TIEMB_EXPECT(id >= 0 && id < header_.rows, "table file ", path_, ": row ", id,
               " is out of range [0, ", header_.rows, ")");
  const int64_t bytes = header_.row_bytes();
  const ssize_t got = ::pread(fd_, dst, static_cast<size_t>(bytes), kTableFileHeaderBytes + id * bytes);
  TIEMB_EXPECT(got == bytes, "table file ", path_, ": short read of row ", id, ": ",
               got < 0 ? std::strerror(errno) : "file truncated");
}

void table_file_reader::read_all(void* dst) const {
  const int64_t total = header_.rows * header_.row_bytes();
  auto* out = static_cast<char*>(dst);
  int64_t done = 0;
  while (done < total) {
    const ssize_t got = ::pread(fd_, out + done, static_cast<size_t>(total - done), kTableFileHeaderBytes + done);
    TIEMB_EXPECT(got > 0, "table file ", path_, ": short read at byte ", kTableFileHeaderBytes + done, ": ",
                 got < 0 ? std::strerror(errno) : "file truncated");
    done += got;
  }
}

void table_file_reader::verify(const void* rows) const {
  const uint32_t got = block_crc32c(rows, static_cast<size_t>(header_.data_bytes()));
  TIEMB_EXPECT(got == header_.checksum, "table file ", path_, ": checksum mismatch (data CRC32C ", hex32(got),
               ", header says ", hex32(header_.checksum), "): the file is damaged");
}

void table_file_reader::verify_file() const {
  // Chunks of whole checksum blocks: the block CRCs do not depend on chunking.
  const int64_t total = header_.data_bytes();
  const int64_t chunk = 64 * static_cast<int64_t>(kChecksumBlockBytes);
  std::vector<char> buf(static_cast<size_t>(std::min(total, chunk)));
  std::vector<uint32_t> crcs;
  for (int64_t done = 0; done < total;) {
    const int64_t want = std::min(chunk, total - done);
    for (int64_t got_all = 0; got_all < want;) {
      const ssize_t got = ::pread(fd_, buf.data() + got_all, static_cast<size_t>(want - got_all),
                                  kTableFileHeaderBytes + done + got_all);
      TIEMB_EXPECT(got > 0, "table file ", path_, ": short read at byte ", kTableFileHeaderBytes + done + got_all,
                   ": ", got < 0 ? std::strerror(errno) : "file truncated");
      got_all += got;
    }
    for (int64_t off = 0; off < want; off += static_cast<int64_t>(kChecksumBlockBytes)) {
      const size_t n = static_cast<size_t>(std::min<int64_t>(kChecksumBlockBytes, want - off));
      crcs.push_back(crc32c(buf.data() + off, n));
    }
    done += want;
  }
  const uint32_t got = crc32c(crcs.data(), crcs.size() * sizeof(uint32_t));
  TIEMB_EXPECT(got == header_.checksum, "table file ", path_, ": checksum mismatch (data CRC32C ", hex32(got),
               ", header says ", hex32(header_.checksum), "): the file is damaged");
}

}  // namespace tiemb
