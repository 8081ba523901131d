#include "remote_table.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "../core/error.h"

namespace tiemb {

std::string remote_layout::block_key(int64_t block) const {
  return layers[block_layer[static_cast<size_t>(block)]] + ":b" + std::to_string(block);
}

void remote_layout::block_key_into(int64_t block, std::string& out) const {
  const std::string& layer = layers[block_layer[static_cast<size_t>(block)]];
  char digits[24];
  const auto res = std::to_chars(digits, digits + sizeof digits, block);
  out.assign(layer);
  out.append(":b", 2);
  out.append(digits, static_cast<size_t>(res.ptr - digits));
}

void remote_layout::validate() const {
  TIEMB_EXPECT(type == dtype::float32 || type == dtype::float16, "remote table '", name,
               "': dtype must be float32 or float16, got ", to_string(type));
  TIEMB_EXPECT(rows > 0 && dim > 0 && block_rows > 0, "remote table '", name, "': rows, dim and block_rows must be > 0, got ",
               rows, ", ", dim, ", ", block_rows);
  TIEMB_EXPECT(rows < (int64_t{1} << 31), "remote table '", name, "': at most 2^31 - 1 rows, got ", rows);
  TIEMB_EXPECT(!layers.empty() && layers.size() < 65536, "remote table '", name, "': needs 1 to 65535 layers, got ",
               layers.size());
  TIEMB_EXPECT(static_cast<int64_t>(block_layer.size()) == blocks(), "remote table '", name, "': block_layer has ",
               block_layer.size(), " entries for ", blocks(), " blocks");
  for (uint16_t l : block_layer) {
    TIEMB_EXPECT(l < layers.size(), "remote table '", name, "': block layer ", l, " out of range");
  }
}

void check_block_value(const remote_layout& layout, int64_t block, const std::string& key,
                       const cluster_reply& reply) {
  TIEMB_EXPECT(!reply.nil, "distributed table '", layout.name, "': key '", key,
               "' is missing from the cluster (a wrong namespace or version, the table was never published, or its "
               "keys were evicted under maxmemory: give the cluster maxmemory-policy noeviction and republish)");
  const int64_t rows_in_block = std::min(layout.block_rows, layout.rows - block * layout.block_rows);
  TIEMB_EXPECT(static_cast<int64_t>(reply.value.size()) == rows_in_block * layout.row_bytes(), "distributed table '",
               layout.name, "': key '", key, "' holds ", reply.value.size(), " bytes, expected ",
               rows_in_block * layout.row_bytes(), " (", rows_in_block, " rows of ", layout.row_bytes(),
               " bytes): not this table's block");
}

void remote_table::read_rows(const remote_layout& layout, const std::vector<int64_t>& ids, char* dst) {
  std::unordered_map<int64_t, size_t> block_index;
  std::vector<int64_t> blocks;
  for (int64_t id : ids) {
    const int64_t b = id / layout.block_rows;
    if (block_index.emplace(b, blocks.size()).second) blocks.push_back(b);
  }
  std::vector<std::string> keys;
  keys.reserve(blocks.size());
  for (int64_t b : blocks) keys.push_back(layout.block_key(b));
  std::vector<cluster_reply> replies;
  client_->get_many(keys, &replies);
  for (size_t i = 0; i < blocks.size(); ++i) check_block_value(layout, blocks[i], keys[i], replies[i]);
  const auto rb = static_cast<size_t>(layout.row_bytes());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t b = ids[i] / layout.block_rows;
    const std::string& v = replies[block_index[b]].value;
    std::memcpy(dst + i * rb, v.data() + static_cast<size_t>(ids[i] - b * layout.block_rows) * rb, rb);
  }
}

remote_table::remote_table(std::shared_ptr<cluster_client> client, remote_layout layout,
                           const std::vector<int64_t>& host_ids, const char* host_rows)
    : client_(std::move(client)), layout_(std::move(layout)) {
  layout_.validate();
  TIEMB_EXPECT(static_cast<int64_t>(host_ids.size()) <= layout_.rows, "remote table '", layout_.name, "': ",
               host_ids.size(), " host rows for a table of ", layout_.rows);
  host_slot_.assign(static_cast<size_t>(layout_.rows), -1);
  for (size_t i = 0; i < host_ids.size(); ++i) {
    const int64_t id = host_ids[i];
    TIEMB_EXPECT(id >= 0 && id < layout_.rows, "remote table '", layout_.name, "': host row id ", id,
                 " out of range [0, ", layout_.rows, ")");
    TIEMB_EXPECT(host_slot_[static_cast<size_t>(id)] < 0, "remote table '", layout_.name, "': host row id ", id,
                 " given twice");
    host_slot_[static_cast<size_t>(id)] = static_cast<int32_t>(i);
  }
  host_data_.resize(host_ids.size() * static_cast<size_t>(row_bytes()));
  if (host_rows != nullptr) {
    std::memcpy(host_data_.data(), host_rows, host_data_.size());
    return;
  }
  // In chunks: one huge pipeline would hold every block value at once.
  constexpr size_t kChunk = 4096;
  for (size_t i = 0; i < host_ids.size(); i += kChunk) {
    const size_t n = std::min(kChunk, host_ids.size() - i);
    std::vector<int64_t> part(host_ids.begin() + static_cast<std::ptrdiff_t>(i),
                              host_ids.begin() + static_cast<std::ptrdiff_t>(i + n));
    read_rows(layout_, part, host_data_.data() + i * static_cast<size_t>(row_bytes()));
  }
}

void remote_table::update(remote_layout layout, const std::vector<int64_t>& changed_ids) {
  layout.validate();
  TIEMB_EXPECT(layout.rows == layout_.rows && layout.dim == layout_.dim && layout.type == layout_.type &&
                   layout.block_rows == layout_.block_rows,
               "remote table '", layout_.name, "': an update must keep the table's shape, dtype and block size");
  std::vector<int64_t> resident;
  for (int64_t id : changed_ids) {
    TIEMB_EXPECT(id >= 0 && id < layout_.rows, "remote table '", layout_.name, "': updated id ", id,
                 " out of range [0, ", layout_.rows, ")");
    if (host_slot_[static_cast<size_t>(id)] >= 0) resident.push_back(id);
  }
  std::vector<char> fresh(resident.size() * static_cast<size_t>(row_bytes()));
  if (!resident.empty()) read_rows(layout, resident, fresh.data());
  std::unique_lock<std::shared_mutex> lk(mutex_);
  for (size_t i = 0; i < resident.size(); ++i) {
    char* dst = host_data_.data() + static_cast<size_t>(host_slot_[static_cast<size_t>(resident[i])]) *
                                        static_cast<size_t>(row_bytes());
    std::memcpy(dst, fresh.data() + i * static_cast<size_t>(row_bytes()), static_cast<size_t>(row_bytes()));
  }
  layout_ = std::move(layout);
  // Logged under the same lock as the switch, so a reader of the log never
  // sees a refresh count without its ids.
  change_log_.push_back(changed_ids);
  change_log_ids_ += changed_ids.size();
  while (change_log_.size() > kChangeLogRefreshes ||
         (change_log_.size() > 1 && change_log_ids_ > static_cast<size_t>(layout_.rows))) {
    change_log_ids_ -= change_log_.front().size();
    change_log_.pop_front();
    ++change_log_first_;
  }
  ++refreshes_;
}

bool remote_table::changed_since(int64_t since, std::vector<int64_t>* ids, int64_t* now) const {
  std::shared_lock<std::shared_mutex> lk(mutex_);
  ids->clear();
  *now = refreshes_.load(std::memory_order_relaxed);
  TIEMB_EXPECT(since >= 0 && since <= *now, "remote table '", layout_.name, "': changed_since(", since,
               ") is outside [0, ", *now, "] refreshes");
  if (since == *now) return true;
  // The log holds refreshes change_log_first_ .. now; since + 1 must be among them.
  if (since + 1 < change_log_first_) return false;
  for (auto k = static_cast<size_t>(since + 1 - change_log_first_); k < change_log_.size(); ++k) {
    ids->insert(ids->end(), change_log_[k].begin(), change_log_[k].end());
  }
  std::sort(ids->begin(), ids->end());
  ids->erase(std::unique(ids->begin(), ids->end()), ids->end());
  return true;
}

void remote_table::read_current(const std::vector<int64_t>& ids, char* dst) {
  const auto rb = static_cast<size_t>(row_bytes());
  std::shared_lock<std::shared_mutex> lk(mutex_);
  std::vector<int64_t> remote;
  std::vector<size_t> where;
  for (size_t i = 0; i < ids.size(); ++i) {
    TIEMB_EXPECT(ids[i] >= 0 && ids[i] < layout_.rows, "remote table '", layout_.name, "': row ", ids[i],
                 " out of range [0, ", layout_.rows, ")");
    if (const char* row = host_row(ids[i])) {
      std::memcpy(dst + i * rb, row, rb);
    } else {
      remote.push_back(ids[i]);
      where.push_back(i);
    }
  }
  std::vector<char> rows(remote.size() * rb);
  if (!remote.empty()) read_rows(layout_, remote, rows.data());
  for (size_t k = 0; k < remote.size(); ++k) std::memcpy(dst + where[k] * rb, rows.data() + k * rb, rb);
}

remote_stats remote_table::stats() const {
  remote_stats s;
  s.host_hits = host_hits_;
  s.cluster_rows = cluster_rows_;
  s.cluster_values = cluster_values_;
  s.host_rows = static_cast<int64_t>(host_data_.size() / static_cast<size_t>(row_bytes()));
  s.refreshes = refreshes_;
  return s;
}

}  // namespace tiemb
