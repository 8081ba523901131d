#include "../gpu_engine.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "../../core/validate.h"
#include "cuda_check.h"
#include "device_buffer.h"
#include "gpu_table.h"
#include "lookup_kernel.cuh"

namespace tiemb {

using gpu::device_buffer;
using gpu::gpu_table;
using gpu::device_guard;
using gpu::pinned_buffer;

// ---- engine --------------------------------------------------------------------

gpu_engine::gpu_engine(const engine_config& config, int device) : config_(config), device_(device) {
  config_.validate();
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    count = 0;
  }
  TIEMB_EXPECT(count > 0, "no CUDA GPU is visible (driver missing, or CUDA_VISIBLE_DEVICES empty)");
  TIEMB_EXPECT(device >= 0 && device < count, "device ", device, " does not exist (", count,
               " CUDA devices visible)");
}

gpu_engine::~gpu_engine() = default;

int32_t gpu_engine::add_table(dtype type, int64_t rows, int64_t dim, const void* host_data,
                              const tier_config& tiers, const int64_t* profile_ids, int64_t num_profile) {
  TIEMB_EXPECT(!frozen_, "tables must be added before the first lookup group is created");
  device_guard g(device_);
  tables_.push_back(std::make_unique<gpu_table>(device_, type, rows, dim, host_data, tiers, profile_ids,
                                                 num_profile));
  return static_cast<int32_t>(tables_.size() - 1);
}

int32_t gpu_engine::add_remote_table(std::shared_ptr<remote_table> remote, const tier_config& tiers,
                                     const int64_t* profile_ids, int64_t num_profile) {
  TIEMB_EXPECT(!frozen_, "tables must be added before the first lookup group is created");
  TIEMB_EXPECT(remote != nullptr, "add_remote_table: remote must be a RemoteTable, got None");
  device_guard g(device_);
  tables_.push_back(std::make_unique<gpu_table>(device_, std::move(remote), tiers, profile_ids, num_profile));
  return static_cast<int32_t>(tables_.size() - 1);
}

gpu_table& gpu_engine::table(int32_t id) {
  TIEMB_EXPECT(id >= 0 && id < num_tables(), "table id ", id, " does not exist (engine has ",
               num_tables(), " tables)");
  return *tables_[static_cast<size_t>(id)];
}

table_stats gpu_engine::stats(int32_t id) {
  device_guard g(device_);
  return table(id).stats();
}

table_file_header gpu_engine::shape(int32_t id) {
  gpu_table& t = table(id);
  return table_file_header{t.type(), t.rows(), t.dim()};
}

// ---- lookup group -------------------------------------------------------------

namespace {

int pow2_at_least(int64_t v) {
  int p = 1;
  while (p < v && p < 32) p <<= 1;
  return p;
}

// Element layout of a slot's rows and the lanes that reduce one bag.
void choose_layout(dtype type, int64_t dim, int32_t* layout, int32_t* group) {
  int64_t lanes;
  if (type == dtype::float32) {
    *layout = dim % 4 == 0 ? gpu::kLayoutF32Vec4 : gpu::kLayoutF32Vec1;
    lanes = dim % 4 == 0 ? dim / 4 : dim;
  } else if (dim % 8 == 0) {
    *layout = gpu::kLayoutF16Vec8;
    lanes = dim / 8;
  } else if (dim % 2 == 0) {
    *layout = gpu::kLayoutF16Vec2;
    lanes = dim / 2;
  } else {
    *layout = gpu::kLayoutF16Vec1;
    lanes = dim;
  }
  *group = pow2_at_least(lanes);
}

constexpr size_t kAlign = 256;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

}  // namespace

struct gpu_lookup_group::impl {
  std::vector<gpu_table*> tables;
  std::vector<int32_t> layout, lanes;
  cudaStream_t stream = nullptr;  // for host inputs
  // Data errors, sticky on the device until check() reports them.
  device_buffer err_dev;
  pinned_buffer err_host;
  cudaEvent_t err_event = nullptr;
  bool launched = false;
  bool captured = false;  // a launch was captured in a CUDA graph: replays latch errors with no event
  cudaStream_t last_stream = nullptr;  // the last launch's stream (err_event marks its end)
  // Plain-mode row counts of device inputs.
  device_buffer rows_dev;
  pinned_buffer rows_host;
  // Host inputs: packed, staged, copied in one transfer each way.
  pinned_buffer in_host, out_host;
  device_buffer in_dev, out_dev;
  std::vector<int64_t> host_rows;
  std::vector<slot_request> staged;
  std::vector<void*> out_ptrs;
  std::vector<size_t> out_offsets;
  // Safe-mode default rows.
  device_buffer defaults;
  int64_t default_stride = 0;
  // Tiered tables: their batched scratch, one id index per slot.
  std::unique_ptr<gpu::tiered_batch> tiered;
  std::vector<int32_t> tiered_index;  // per slot: index in `tiered`, -1 when resident
  std::vector<device_buffer> unique_index;
  std::vector<gpu::dedup_view> views;
  // prefetch(): a tiered_batch of its own over the same tables (made at the
  // first prefetch), and the sizes and variants to make it with (the
  // variants as the environment was when the group was built).
  std::vector<gpu_table*> tiered_tables;
  std::vector<int64_t> tiered_ids;
  gpu::tiered_variants variants;
  std::unique_ptr<gpu::tiered_batch> prefetcher;
  std::vector<gpu::dedup_view> prefetch_views;
  // Segment ids -> offsets, per slot (max_batch_size + 1 entries).
  device_buffer offsets;
  int64_t offsets_stride = 0;
  // Resident tables over a remote table (cache_percentage 1), sorted by
  // address: followed and held shared at each launch (remote_resident_hold).
  std::vector<gpu_table*> remote_resident;
  // Per slot: its table's followed_refreshes() when `defaults` got its row;
  // a safe slot's default row over a remote table is re-read when it moves.
  std::vector<int64_t> default_followed;

  ~impl() {
    if (err_event) cudaEventDestroy(err_event);
    if (stream) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
  }
};

namespace {
// Clears the device error (and points it at its host mirror) and the mirror.
template <class Impl>
void reset_error(Impl& m) {
  gpu::lookup_error e{};
  e.mirror = m.err_host.template device<gpu::lookup_error>();
  std::memset(m.err_host.get(), 0, sizeof(gpu::lookup_error));
  TIEMB_CUDA_CHECK(cudaMemcpy(m.err_dev.get(), &e, sizeof e, cudaMemcpyHostToDevice));
}
}  // namespace

gpu_lookup_group::gpu_lookup_group(gpu_engine& engine, std::vector<slot_config> slots)
    : engine_(engine), slots_(std::move(slots)), impl_(std::make_unique<impl>()) {
  device_guard g(engine_.device());
  const engine_config& cfg = engine_.config();
  const int64_t n = num_slots();
  check_slot_configs(cfg, slots_, engine_.num_tables(), [&](int32_t t) { return engine_.table(t).rows(); });
  int64_t max_row_bytes = 0;
  for (int64_t s = 0; s < n; ++s) {
    gpu_table& t = engine_.table(slots_[static_cast<size_t>(s)].table);
    int32_t layout, lanes;
    choose_layout(t.type(), t.dim(), &layout, &lanes);
    impl_->tables.push_back(&t);
    impl_->layout.push_back(layout);
    impl_->lanes.push_back(lanes);
    max_row_bytes = std::max(max_row_bytes, t.row_bytes());
  }
  engine_.freeze();
  auto& m = *impl_;
  TIEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  m.err_dev = device_buffer(sizeof(gpu::lookup_error));
  m.err_host = pinned_buffer(sizeof(gpu::lookup_error), /*mapped=*/true);
  reset_error(m);
  TIEMB_CUDA_CHECK(cudaEventCreateWithFlags(&m.err_event, cudaEventDisableTiming));
  m.rows_dev = device_buffer(static_cast<size_t>(n) * 8);
  m.rows_host = pinned_buffer(static_cast<size_t>(n) * 8);
  m.host_rows.resize(static_cast<size_t>(n));
  m.staged.resize(static_cast<size_t>(n));
  m.out_ptrs.resize(static_cast<size_t>(n));
  m.out_offsets.resize(static_cast<size_t>(n));

  // Host staging, sized for the largest call the config allows.
  const int64_t max_ids = cfg.max_ids_per_slot();
  size_t in_bytes = 0, out_bytes = 0;
  for (int64_t s = 0; s < n; ++s) {
    in_bytes += align_up(static_cast<size_t>(max_ids) * 8) +
                align_up(static_cast<size_t>(std::max(max_ids, cfg.max_batch_size + 1)) * 8) +
                align_up(static_cast<size_t>(max_ids) * 4);
    // A gather slot has one output row per id.
    const int64_t out_rows = slots_[static_cast<size_t>(s)].mode == row_mode::gather ? max_ids : cfg.max_batch_size;
    out_bytes += align_up(static_cast<size_t>(out_rows * dim(s)) * 4);
  }
  m.in_host = pinned_buffer(in_bytes);
  m.in_dev = device_buffer(in_bytes);
  m.out_host = pinned_buffer(out_bytes);
  m.out_dev = device_buffer(out_bytes);

  // Default rows, read once from whichever tier holds them.
  m.default_stride = static_cast<int64_t>(align_up(static_cast<size_t>(max_row_bytes)));
  m.defaults = device_buffer(static_cast<size_t>(n * m.default_stride));
  std::vector<char> row(static_cast<size_t>(max_row_bytes));
  m.default_followed.resize(static_cast<size_t>(n));
  for (size_t s = 0; s < m.tables.size(); ++s) m.default_followed[s] = m.tables[s]->followed_refreshes();
  for (int64_t s = 0; s < n; ++s) {
    const slot_config& sc = slots_[static_cast<size_t>(s)];
    if (sc.mode != row_mode::safe || sc.default_id < 0) continue;
    m.tables[static_cast<size_t>(s)]->read_row_host(sc.default_id, row.data());
    TIEMB_CUDA_CHECK(cudaMemcpy(m.defaults.get<char>() + s * m.default_stride, row.data(),
                                static_cast<size_t>(m.tables[static_cast<size_t>(s)]->row_bytes()),
                                cudaMemcpyHostToDevice));
  }

  // Tiered tables: scratch sized for all slots that use each one.
  std::vector<gpu_table*> tiered_tables;
  std::vector<int64_t> tiered_ids;
  m.unique_index.resize(static_cast<size_t>(n));
  m.tiered_index.assign(static_cast<size_t>(n), -1);
  for (int64_t s = 0; s < n; ++s) {
    gpu_table* t = m.tables[static_cast<size_t>(s)];
    if (t->resident()) continue;
    auto it = std::find(tiered_tables.begin(), tiered_tables.end(), t);
    if (it == tiered_tables.end()) {
      tiered_tables.push_back(t);
      tiered_ids.push_back(0);
      it = tiered_tables.end() - 1;
    }
    const auto i = static_cast<size_t>(it - tiered_tables.begin());
    tiered_ids[i] += max_ids;
    m.tiered_index[static_cast<size_t>(s)] = static_cast<int32_t>(i);
    m.unique_index[static_cast<size_t>(s)] = device_buffer(static_cast<size_t>(std::max<int64_t>(max_ids, 1)) * 4);
  }
  if (!tiered_tables.empty()) {
    int sms = 1;
    TIEMB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, engine_.device()));
    m.variants = gpu::tiered_variants::from_env();
    m.tiered = std::make_unique<gpu::tiered_batch>(tiered_tables, tiered_ids, sms, m.variants);
  }
  m.tiered_tables = tiered_tables;
  m.tiered_ids = tiered_ids;
  for (gpu_table* t : m.tables) {
    if (t->resident() && t->remote()) m.remote_resident.push_back(t);
  }
  std::sort(m.remote_resident.begin(), m.remote_resident.end());
  m.remote_resident.erase(std::unique(m.remote_resident.begin(), m.remote_resident.end()), m.remote_resident.end());
  m.views.reserve(static_cast<size_t>(n));
  m.offsets_stride = cfg.max_batch_size + 1;
  m.offsets = device_buffer(static_cast<size_t>(n * m.offsets_stride) * 8);
}

gpu_lookup_group::~gpu_lookup_group() = default;

int64_t gpu_lookup_group::dim(int64_t s) const { return impl_->tables[static_cast<size_t>(s)]->dim(); }

namespace {

gpu::slot_desc describe(const slot_config& sc, const gpu_table& t, const slot_request& r, int64_t rows,
                        void* out, int32_t layout, int32_t lanes, const void* default_row,
                        const int32_t* unique_index, const void* staging) {
  gpu::slot_desc d{};
  d.ids = r.ids;
  d.segments = r.segments;
  d.weights = r.weights;
  d.out = out;
  d.table = t.resident() ? t.device_rows() : nullptr;
  d.default_row = default_row;
  d.unique_index = unique_index;
  d.staging = staging;
  d.num_ids = r.num_ids;
  d.num_offsets = r.segments_are_offsets ? r.num_segments : 0;
  d.rows = rows;
  d.table_rows = t.rows();
  d.default_id = sc.mode == row_mode::safe ? sc.default_id : -1;
  d.row_bytes = t.row_bytes();
  d.dim = static_cast<int32_t>(t.dim());
  TIEMB_EXPECT(r.out_row_stride == 0 || r.out_row_stride >= t.dim(), "out_row_stride must be 0 or at least the ",
               "dimension ", t.dim(), ", got ", r.out_row_stride);
  d.out_stride = r.out_row_stride > 0 ? r.out_row_stride : t.dim();
  // Vector stores need an aligned output (every row of it: a strided output
  // row starts out_stride elements after the last); fall back to scalar otherwise.
  const auto addr = reinterpret_cast<uintptr_t>(out);
  const int64_t stride_bytes = d.out_stride * (sc.output_dtype == dtype::float16 ? 2 : 4);
  if ((layout == gpu::kLayoutF32Vec4 && (addr % 16 != 0 || stride_bytes % 16 != 0)) ||
      (layout == gpu::kLayoutF16Vec8 && (addr % 16 != 0 || stride_bytes % 16 != 0)) ||
      (layout == gpu::kLayoutF16Vec2 && (addr % 4 != 0 || stride_bytes % 4 != 0))) {
    layout = t.type() == dtype::float32 ? gpu::kLayoutF32Vec1 : gpu::kLayoutF16Vec1;
    lanes = pow2_at_least(t.dim());
  }
  d.layout = layout;
  d.group = lanes;
  d.comb = sc.comb;
  d.safe = sc.mode == row_mode::safe;
  d.id_is_64 = r.id_type == dtype::int64;
  d.seg_is_64 = r.segment_type == dtype::int64;
  d.segments_are_offsets = r.segments_are_offsets;
  d.out_half = sc.output_dtype == dtype::float16;
  d.id_stride = r.id_stride;
  d.seg_stride = r.segment_stride;
  d.ids_per_row = r.ids_per_row;
  d.id_row_stride = r.row_stride > 0 ? r.row_stride : r.ids_per_row * r.id_stride;
  d.gather = sc.mode == row_mode::gather;
  d.wrap_negative = sc.wrap_negative;
  return d;
}

// Resident tables over a remote table: each follows its remote's version
// switches, then is held (follow_mutex shared) until this call's kernels are
// queued, so no follow rewrites rows a queued kernel may still read. Locks
// are taken in address order and a follow holds only its own table's, so
// holders never wait on each other in a cycle.
class remote_resident_hold {
 public:
  remote_resident_hold(const std::vector<gpu_table*>& tables, cudaStream_t stream) : tables_(tables) {
    for (gpu_table* t : tables_) t->follow_remote(stream);
    for (gpu_table* t : tables_) {
      t->follow_mutex().lock_shared();
      ++held_;
    }
  }
  ~remote_resident_hold() {
    for (size_t i = 0; i < held_; ++i) tables_[i]->follow_mutex().unlock_shared();
  }
  remote_resident_hold(const remote_resident_hold&) = delete;
  remote_resident_hold& operator=(const remote_resident_hold&) = delete;

 private:
  const std::vector<gpu_table*>& tables_;
  size_t held_ = 0;
};

// Safe slots' default rows over remote tables, after their tables followed
// this call's version switches: re-read where the table followed a switch
// since the row was read (an update is rare; this waits for the stream).
void refresh_default_rows(const std::vector<slot_config>& slots, const std::vector<gpu_table*>& tables,
                          const device_buffer& defaults, int64_t stride, std::vector<int64_t>& followed,
                          cudaStream_t stream) {
  for (size_t s = 0; s < slots.size(); ++s) {
    gpu_table& t = *tables[s];
    const int64_t now = t.followed_refreshes();
    if (!t.remote() || followed[s] == now) continue;
    if (slots[s].mode == row_mode::safe && slots[s].default_id >= 0) {
      std::vector<char> row(static_cast<size_t>(t.row_bytes()));
      t.read_row_host(slots[s].default_id, row.data());
      TIEMB_CUDA_CHECK(cudaMemcpyAsync(defaults.get<char>() + static_cast<int64_t>(s) * stride, row.data(), row.size(),
                                       cudaMemcpyHostToDevice, stream));
      TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    followed[s] = now;
  }
}

// Output rows of a slot whose row count needs no data on the device: gather
// (one per id) and safe mode (given); -1 for plain mode.
int64_t known_rows(const slot_config& sc, const slot_request& r) {
  if (sc.mode == row_mode::gather) return r.num_ids;
  if (sc.mode == row_mode::safe) return r.segments_are_offsets ? r.num_segments - 1 : r.num_rows;
  return -1;
}

}  // namespace

void gpu_lookup_group::launch(const slot_request* reqs, int64_t n, const int64_t* rows, void* const* outputs,
                              void* stream_ptr) {
  device_guard g(engine_.device());
  auto& m = *impl_;
  check_launch(reqs, n, rows);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TIEMB_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  const bool capturing = capture != cudaStreamCaptureStatusNone;
  TIEMB_EXPECT(!capturing || !m.tiered,
               "a lookup over tiered tables cannot be captured in a CUDA graph (its misses may need the host "
               "and its inserts run on another stream); capture groups of GPU-resident tables only");
  // Tiered tables over a remote table follow it in gather_tiered_rows.
  const remote_resident_hold hold(m.remote_resident, stream);
  // Calls share the group's scratch (segment offsets; the tiered hash set,
  // lists and staging): a call on another stream than the last one starts
  // after it. Overlapping calls would race there, and with the listed probe
  // leave keys in the hash set for good (clear_listed_kernel clears only
  // the last call's). Free while the stream stays the same.
  if (!capturing && m.launched && stream != m.last_stream) {
    TIEMB_CUDA_CHECK(cudaStreamWaitEvent(stream, m.err_event, 0));
  }
  launch_offsets_pass(reqs, n, rows, stream_ptr);
  gather_tiered_rows(reqs, n, stream_ptr);
  refresh_default_rows(slots_, m.tables, m.defaults, m.default_stride, m.default_followed, stream);
  launch_fused_lookups(reqs, n, rows, outputs, stream_ptr);
  if (m.tiered) m.tiered->insert(stream);

  // Errors reach the host mirror from the kernels themselves (a replayed
  // graph too); the event that says when it is current stays out of captures.
  if (!capturing) {
    TIEMB_CUDA_CHECK(cudaEventRecord(m.err_event, stream));
    m.launched = true;
    m.last_stream = stream;
  } else {
    m.captured = true;
  }
}

std::string gpu_lookup_group::capture_blocker() const {
  for (int64_t s = 0; s < num_slots(); ++s) {
    const gpu_table& t = *impl_->tables[static_cast<size_t>(s)];
    const int32_t tid = slots_[static_cast<size_t>(s)].table;
    if (!t.resident()) {
      return detail::concat("slot ", s, ": table ", tid, " is tiered (GPU cache below the whole table): its misses "
                            "need the host and its inserts run on another stream");
    }
    if (t.remote()) {
      return detail::concat("slot ", s, ": table ", tid, " is a remote table: its version is checked on the host "
                            "at every call, which a replayed graph would skip");
    }
  }
  return "";
}

// The checks of a device launch that need no data: shapes, limits, row counts.
void gpu_lookup_group::check_launch(const slot_request* reqs, int64_t n, const int64_t* rows) const {
  const engine_config& cfg = engine_.config();
  TIEMB_EXPECT(n == num_slots(), "lookup got inputs for ", n, " slots but the group has ", num_slots());
  for (int64_t s = 0; s < n; ++s) {
    const slot_config& sc = slots_[static_cast<size_t>(s)];
    check_slot_shape(cfg, sc, reqs[s], s);
    // A gather slot's rows are its ids, checked as samples x ids per sample.
    TIEMB_EXPECT(rows[s] >= 0 && (rows[s] <= cfg.max_batch_size || sc.mode == row_mode::gather), "slot ", s, ": ",
                 rows[s], " output rows exceed max_batch_size = ", cfg.max_batch_size);
    TIEMB_EXPECT(sc.mode != row_mode::gather || rows[s] == reqs[s].num_ids, "slot ", s, ": a gather slot has one "
                 "output row per id (", reqs[s].num_ids, "), got ", rows[s]);
  }
}

// Segment ids become row offsets first: one pass over the ids that also
// checks their order, instead of a search per output row (large slots only).
void gpu_lookup_group::launch_offsets_pass(const slot_request* reqs, int64_t n, const int64_t* rows,
                                           void* stream_ptr) {
  auto& m = *impl_;
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  for (int64_t base = 0; base < n; base += gpu::kMaxSlotsPerLaunch) {
    gpu::launch_params p{};
    p.slot_base = static_cast<int32_t>(base);
    p.err = m.err_dev.get<gpu::lookup_error>();
    int64_t threads = 0;
    for (int64_t s = base; s < std::min<int64_t>(n, base + gpu::kMaxSlotsPerLaunch); ++s) {
      const slot_config& sc = slots_[static_cast<size_t>(s)];
      if (sc.mode == row_mode::gather || reqs[s].ids_per_row > 0 || reqs[s].segments_are_offsets ||
          rows[s] <= gpu::kSearchMaxRows) {
        continue;
      }
      const auto su = static_cast<size_t>(s);
      gpu::slot_desc d = describe(slots_[su], *m.tables[su], reqs[s], rows[s], nullptr, m.layout[su], m.lanes[su],
                                  nullptr, nullptr, nullptr);
      d.id_begin = threads;
      d.offsets_out = m.offsets.get<int64_t>() + s * m.offsets_stride;
      threads += std::max<int64_t>(reqs[s].num_ids, 1);
      d.slot_index = static_cast<int32_t>(s);
      p.slots[p.num_slots++] = d;
    }
    if (p.num_slots == 0) continue;
    p.total_warps = threads;
    const int64_t blocks = std::min<int64_t>((threads + gpu::kThreadsPerBlock - 1) / gpu::kThreadsPerBlock, 65535);
    gpu::segments_to_offsets_kernel<<<static_cast<unsigned>(blocks), gpu::kThreadsPerBlock, 0, stream>>>(p);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
}

// Tiered tables: this call's rows gathered into staging before the lookup.
void gpu_lookup_group::gather_tiered_rows(const slot_request* reqs, int64_t n, void* stream_ptr) {
  auto& m = *impl_;
  if (!m.tiered) return;
  m.views.clear();
  for (int64_t s = 0; s < n; ++s) {
    const int32_t ti = m.tiered_index[static_cast<size_t>(s)];
    if (ti < 0) continue;
    gpu::dedup_view v{};
    v.ids = reqs[s].ids;
    v.unique_index = m.unique_index[static_cast<size_t>(s)].get<int32_t>();
    v.n = reqs[s].num_ids;
    v.call = ti;
    v.is64 = reqs[s].id_type == dtype::int64;
    v.id_stride = reqs[s].id_stride;
    v.ids_per_row = reqs[s].ids_per_row;
    v.row_stride = reqs[s].row_stride > 0 ? reqs[s].row_stride : reqs[s].ids_per_row * reqs[s].id_stride;
    v.wrap_negative = slots_[static_cast<size_t>(s)].wrap_negative;
    m.views.push_back(v);
  }
  m.tiered->gather(m.views.data(), static_cast<int>(m.views.size()), static_cast<cudaStream_t>(stream_ptr));
}

// The fused lookup: every slot's bags in one launch (per kMaxSlotsPerLaunch).
void gpu_lookup_group::launch_fused_lookups(const slot_request* reqs, int64_t n, const int64_t* rows,
                                            void* const* outputs, void* stream_ptr) {
  auto& m = *impl_;
  const engine_config& cfg = engine_.config();
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  for (int64_t base = 0; base < n; base += gpu::kMaxSlotsPerLaunch) {
    gpu::launch_params p{};
    p.num_slots = static_cast<int32_t>(std::min<int64_t>(gpu::kMaxSlotsPerLaunch, n - base));
    p.slot_base = static_cast<int32_t>(base);
    p.err = m.err_dev.get<gpu::lookup_error>();
    int64_t warps = 0;
    for (int32_t i = 0; i < p.num_slots; ++i) {
      const int64_t s = base + i;
      const auto su = static_cast<size_t>(s);
      const slot_config& sc = slots_[su];
      gpu_table& t = *m.tables[su];
      const void* staging = nullptr;
      const int32_t* uidx = nullptr;
      if (m.tiered_index[su] >= 0) {
        staging = m.tiered->staging(m.tiered_index[su]);
        uidx = m.unique_index[su].get<int32_t>();
      }
      gpu::slot_desc d = describe(sc, t, reqs[s], rows[s], outputs[s], m.layout[su], m.lanes[su],
                                  m.defaults.get<char>() + s * m.default_stride, uidx, staging);
      if (sc.mode != row_mode::gather && reqs[s].ids_per_row == 0 && !reqs[s].segments_are_offsets &&
          rows[s] > gpu::kSearchMaxRows) {  // the pre-pass turned its segment ids into offsets
        d.segments = m.offsets.get<int64_t>() + s * m.offsets_stride;
        d.seg_is_64 = true;
        d.seg_stride = 1;
        d.segments_are_offsets = true;
        d.offsets_checked = true;
      }
      d.slot_index = static_cast<int32_t>(s);
      d.max_nnz = cfg.max_nnz;
      d.warp_begin = warps;
      warps += (rows[s] + (32 / d.group) - 1) / (32 / d.group);
      p.slots[i] = d;
    }
    p.total_warps = warps;
    if (warps == 0) continue;
    const int64_t blocks = (warps * 32 + gpu::kThreadsPerBlock - 1) / gpu::kThreadsPerBlock;
    gpu::fused_lookup_kernel<<<static_cast<unsigned>(blocks), gpu::kThreadsPerBlock, 0, stream>>>(p);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
}

void gpu_lookup_group::device_rows(const slot_request* reqs, int64_t n, int64_t* rows, void* stream_ptr) {
  device_guard g(engine_.device());
  auto& m = *impl_;
  const engine_config& cfg = engine_.config();
  TIEMB_EXPECT(n == num_slots(), "lookup got inputs for ", n, " slots but the group has ", num_slots());
  bool need_device = false;
  for (int64_t s = 0; s < n; ++s) {
    const slot_config& sc = slots_[static_cast<size_t>(s)];
    check_slot_shape(cfg, sc, reqs[s], s);
    rows[s] = known_rows(sc, reqs[s]);
    need_device = need_device || rows[s] < 0;
  }
  if (!need_device) return;
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  for (int64_t base = 0; base < n; base += gpu::kMaxSlotsPerLaunch) {
    gpu::launch_params p{};
    p.num_slots = static_cast<int32_t>(std::min<int64_t>(gpu::kMaxSlotsPerLaunch, n - base));
    p.slot_base = static_cast<int32_t>(base);
    for (int32_t i = 0; i < p.num_slots; ++i) {
      const auto su = static_cast<size_t>(base + i);
      p.slots[i] = describe(slots_[su], *m.tables[su], reqs[base + i], 0, nullptr, m.layout[su], m.lanes[su],
                            nullptr, nullptr, nullptr);
      p.slots[i].slot_index = static_cast<int32_t>(base + i);
    }
    gpu::plain_rows_kernel<<<1, gpu::kMaxSlotsPerLaunch, 0, stream>>>(p, m.rows_dev.get<int64_t>());
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
  TIEMB_CUDA_CHECK(cudaMemcpyAsync(m.rows_host.get(), m.rows_dev.get(), static_cast<size_t>(n) * 8,
                                   cudaMemcpyDeviceToHost, stream));
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (int64_t s = 0; s < n; ++s) {
    if (slots_[static_cast<size_t>(s)].mode != row_mode::plain) continue;
    const int64_t r = m.rows_host.get<int64_t>()[s];
    TIEMB_EXPECT(r >= 0, "slot ", s, ": the last segment id is negative (", r - 1, ")");
    TIEMB_EXPECT(r <= cfg.max_batch_size, "slot ", s, ": ", r, " output rows exceed max_batch_size = ",
                 cfg.max_batch_size);
    rows[s] = r;
  }
}

const int64_t* gpu_lookup_group::prepare_host(const slot_request* reqs, int64_t n) {
  auto& m = *impl_;
  TIEMB_EXPECT(n == num_slots(), "lookup got inputs for ", n, " slots but the group has ", num_slots());
  for (int64_t s = 0; s < n; ++s) {
    check_slot_shape(engine_.config(), slots_[static_cast<size_t>(s)], reqs[s], s);
    m.host_rows[static_cast<size_t>(s)] =
        check_slot(engine_.config(), slots_[static_cast<size_t>(s)], m.tables[static_cast<size_t>(s)]->rows(),
                   reqs[s], s, nullptr);
  }
  return m.host_rows.data();
}

void gpu_lookup_group::run_host(const slot_request* reqs, int64_t n, void* const* outputs) {
  device_guard g(engine_.device());
  auto& m = *impl_;
  // Pack every input into one pinned buffer: one transfer up.
  char* in_h = m.in_host.get<char>();
  char* in_d = m.in_dev.get<char>();
  size_t off = 0;
  // Strided views (a column of an id matrix, column 0 of sp_ids.indices, a
  // dense id matrix with a row stride) are packed: what goes up is contiguous.
  auto stage = [&](const void* src, int64_t count, int64_t elem, auto&& offset_of) -> const void* {
    if (src == nullptr) return nullptr;
    const auto* from = static_cast<const char*>(src);
    for (int64_t k = 0; k < count; ++k) {
      std::memcpy(in_h + off + static_cast<size_t>(k * elem), from + offset_of(k) * elem, static_cast<size_t>(elem));
    }
    const void* dev = in_d + off;
    off += align_up(static_cast<size_t>(count * elem));
    return dev;
  };
  for (int64_t s = 0; s < n; ++s) {
    const slot_request& r = reqs[s];
    slot_request& d = m.staged[static_cast<size_t>(s)];
    d = r;
    const int64_t row_stride = r.row_stride > 0 ? r.row_stride : r.ids_per_row * r.id_stride;
    d.ids = stage(r.ids, r.num_ids, size_of(r.id_type),
                  [&](int64_t k) { return gpu::id_offset(k, r.id_stride, r.ids_per_row, row_stride); });
    d.segments = stage(r.segments, r.num_segments, size_of(r.segment_type),
                       [&](int64_t k) { return k * r.segment_stride; });
    d.id_stride = 1;
    d.segment_stride = 1;
    d.row_stride = r.ids_per_row;
    d.weights = static_cast<const float*>(stage(r.weights, r.num_weights, 4, [](int64_t k) { return k; }));
    // Empty arrays still need a valid (unused) address; gather slots and
    // dense id matrices have no segments at all.
    if (d.ids == nullptr) d.ids = in_d;
    if (d.segments == nullptr && r.ids_per_row == 0 && slots_[static_cast<size_t>(s)].mode != row_mode::gather) {
      d.segments = in_d;
    }
  }
  const size_t in_used = off;
  // Outputs packed the same way: one transfer down.
  std::vector<void*>& out_dev = m.out_ptrs;
  std::vector<size_t>& out_off = m.out_offsets;
  off = 0;
  for (int64_t s = 0; s < n; ++s) {
    out_off[static_cast<size_t>(s)] = off;
    out_dev[static_cast<size_t>(s)] = m.out_dev.get<char>() + off;
    const int64_t elem = slots_[static_cast<size_t>(s)].output_dtype == dtype::float16 ? 2 : 4;
    off += align_up(static_cast<size_t>(m.host_rows[static_cast<size_t>(s)] * dim(s) * elem));
  }
  const size_t out_used = off;
  TIEMB_CUDA_CHECK(cudaMemcpyAsync(in_d, in_h, in_used, cudaMemcpyHostToDevice, m.stream));
  launch(m.staged.data(), n, m.host_rows.data(), out_dev.data(), m.stream);
  TIEMB_CUDA_CHECK(cudaMemcpyAsync(m.out_host.get(), m.out_dev.get(), out_used, cudaMemcpyDeviceToHost, m.stream));
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  check(true);
  for (int64_t s = 0; s < n; ++s) {
    const int64_t elem = slots_[static_cast<size_t>(s)].output_dtype == dtype::float16 ? 2 : 4;
    std::memcpy(outputs[s], m.out_host.get<char>() + out_off[static_cast<size_t>(s)],
                static_cast<size_t>(m.host_rows[static_cast<size_t>(s)] * dim(s) * elem));
  }
}

void gpu_lookup_group::check(bool wait) {
  auto& m = *impl_;
  if (!m.launched && !m.captured) return;
  device_guard g(engine_.device());
  if (wait) {
    // A replayed graph records no event: wait for the device instead (only
    // where the caller asked to wait, e.g. for host arrays).
    TIEMB_CUDA_CHECK(m.captured ? cudaDeviceSynchronize() : cudaEventSynchronize(m.err_event));
  } else if (!m.captured) {
    const cudaError_t q = cudaEventQuery(m.err_event);
    if (q == cudaErrorNotReady) {
      (void)cudaGetLastError();
      return;
    }
    TIEMB_CUDA_CHECK(q);
  }
  volatile auto* mirror = m.err_host.get<gpu::lookup_error>();
  if (mirror->code == gpu::kErrNone) return;
  gpu::lookup_error e{};
  e.code = mirror->code;
  e.slot = mirror->slot;
  e.index = mirror->index;
  e.value = mirror->value;
  // Clear before throwing so the group stays usable.
  TIEMB_CUDA_CHECK(cudaDeviceSynchronize());
  reset_error(m);
  const auto s = static_cast<size_t>(e.slot);
  const int32_t tid = slots_[s].table;
  switch (e.code) {
    case gpu::kErrIdRange:
      throw error(detail::concat("slot ", e.slot, ": ids[", e.index, "] = ", e.value, " is out of range [",
                                 slots_[s].wrap_negative ? -m.tables[s]->rows() : 0, ", ", m.tables[s]->rows(),
                                 ") of table ", tid));
    case gpu::kErrSegmentOrder:
      if (e.value < 0) throw error(detail::concat("slot ", e.slot, ": segment_ids[", e.index, "] = ", e.value, " is negative"));
      throw error(detail::concat("slot ", e.slot, ": segment_ids must be sorted, but segment_ids[", e.index,
                                 "] = ", e.value, " is out of order"));
    case gpu::kErrSegmentRange:
      throw error(detail::concat("slot ", e.slot, ": segment_ids[", e.index, "] = ", e.value,
                                 " is out of range for the slot's row count"));
    case gpu::kErrOffsetsDecreasing:
      throw error(detail::concat("slot ", e.slot, ": row_offsets must be non-decreasing, but row_offsets[",
                                 e.index, "] = ", e.value, " is below its predecessor"));
    case gpu::kErrOffsetsStart:
      throw error(detail::concat("slot ", e.slot, ": row_offsets[0] must be 0, got ", e.value));
    case gpu::kErrNnz:
      throw error(detail::concat("slot ", e.slot, ": sample ", e.index, " has ", e.value,
                                 " ids, more than max_nnz = ", engine_.config().max_nnz));
    case gpu::kErrOffsetsEnd:
      throw error(detail::concat("slot ", e.slot, ": row_offsets ends at ", e.value,
                                 " but ids has a different number of entries"));
    default:
      throw device_error(detail::concat("slot ", e.slot, ": lookup failed on the GPU (error code ", e.code, ")"),
                         false);
  }
}

void gpu_lookup_group::prefetch(const slot_request* reqs, int64_t n, void* stream) {
  device_guard g(engine_.device());
  auto& m = *impl_;
  const int64_t max_ids = engine_.config().max_ids_per_slot();
  TIEMB_EXPECT(n == num_slots(), "prefetch got ids for ", n, " slots but the group has ", num_slots());
  for (int64_t s = 0; s < n; ++s) {
    TIEMB_EXPECT(reqs[s].id_type == dtype::int32 || reqs[s].id_type == dtype::int64, "prefetch: slot ", s,
                 ": ids must be int32 or int64, got ", to_string(reqs[s].id_type));
    TIEMB_EXPECT(reqs[s].num_ids >= 0 && reqs[s].num_ids <= max_ids, "prefetch: slot ", s, ": ", reqs[s].num_ids,
                 " ids exceed max_batch_size * max_nnz = ", max_ids);
    TIEMB_EXPECT(reqs[s].num_ids == 0 || reqs[s].ids != nullptr, "prefetch: slot ", s, ": ids have no address");
  }
  if (m.tiered_tables.empty()) return;
  // Under capture the event below would pull the prefetcher's stream into the
  // caller's graph (its memsets, host waits and first-call allocations are
  // not capturable, and the stream would stay in the failed capture).
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TIEMB_CUDA_CHECK(cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &capture));
  TIEMB_EXPECT(capture == cudaStreamCaptureStatusNone,
               "prefetch cannot be captured in a CUDA graph (its misses may need the host and it runs on a "
               "stream of its own); call it outside the capture");
  if (!m.prefetcher) {
    int sms = 1;
    TIEMB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, engine_.device()));
    m.prefetcher = std::make_unique<gpu::tiered_batch>(m.tiered_tables, m.tiered_ids, sms, m.variants);
  }
  m.prefetch_views.clear();
  for (int64_t s = 0; s < n; ++s) {
    const int32_t ti = m.tiered_index[static_cast<size_t>(s)];
    if (ti < 0 || reqs[s].num_ids == 0) continue;
    gpu::dedup_view v{};
    v.ids = reqs[s].ids;
    v.unique_index = nullptr;  // the lookup's index buffers may be in use
    v.n = reqs[s].num_ids;
    v.call = ti;
    v.is64 = reqs[s].id_type == dtype::int64;
    v.id_stride = reqs[s].id_stride > 0 ? reqs[s].id_stride : 1;
    v.ids_per_row = reqs[s].ids_per_row;
    v.row_stride = reqs[s].row_stride > 0 ? reqs[s].row_stride : reqs[s].ids_per_row * v.id_stride;
    v.wrap_negative = slots_[static_cast<size_t>(s)].wrap_negative;
    m.prefetch_views.push_back(v);
  }
  m.prefetcher->prefetch(m.prefetch_views.data(), static_cast<int>(m.prefetch_views.size()),
                         static_cast<cudaStream_t>(stream));
}

void gpu_lookup_group::wait_prefetch() {
  device_guard g(engine_.device());
  if (impl_->prefetcher) impl_->prefetcher->wait_prefetch();
}

}  // namespace tiemb
