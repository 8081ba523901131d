#include "cpu_engine.h"

#include <algorithm>

#include "../core/error.h"
#include "../core/validate.h"
#include "../distributed/remote_lookup.h"
#include "pooling.h"

namespace tiemb {
namespace {

// A task should carry enough work to amortise its scheduling (an atomic
// increment and a cache line of task state) but leave enough tasks to keep
// every thread busy at batch 512.
constexpr int64_t kTaskGrain = 16 * 1024;  // id x dim multiply-adds
constexpr int64_t kMaxTasksPerSlot = 64;
// Below this much work per call, waking the other threads costs more than it
// saves.
constexpr int64_t kParallelThreshold = 32 * 1024;

}  // namespace

cpu_engine::cpu_engine(const engine_config& config)
    : config_(config),
      pool_((config.validate(), config.num_threads > 0 ? config.num_threads : hardware_threads())) {}

int32_t cpu_engine::add_table(dtype type, int64_t rows, int64_t dim, const void* data) {
  TIEMB_EXPECT(!frozen_, "tables must be added before the first lookup group is created");
  const int32_t id = tables_.add(type, rows, dim, data);
  remote_.resize(static_cast<size_t>(tables_.size()));
  return id;
}

int32_t cpu_engine::add_remote_table(std::shared_ptr<remote_table> remote) {
  TIEMB_EXPECT(!frozen_, "tables must be added before the first lookup group is created");
  TIEMB_EXPECT(remote != nullptr, "add_remote_table: no table");
  const std::vector<char> placeholder(static_cast<size_t>(remote->row_bytes()), 0);
  const int32_t id = tables_.add(remote->type(), 1, remote->dim(), placeholder.data());
  remote_.resize(static_cast<size_t>(tables_.size()));
  remote_[static_cast<size_t>(id)] = std::move(remote);
  return id;
}

const std::shared_ptr<remote_table>& cpu_engine::remote(int32_t id) const {
  tables_.at(id);  // range check
  return remote_[static_cast<size_t>(id)];
}

int64_t cpu_engine::table_rows(int32_t id) const {
  const auto& r = remote(id);
  return r ? r->rows() : tables_.at(id).rows();
}

cpu_lookup_group::cpu_lookup_group(cpu_engine& engine, std::vector<slot_config> slots, int max_threads)
    : engine_(engine),
      pool_runner_(engine.pool()),
      max_threads_(max_threads > 0 ? std::max(max_threads, engine.pool().num_threads()) : engine.pool().num_threads()),
      slots_(std::move(slots)) {
  const engine_config& cfg = engine_.config();
  const int64_t n = num_slots();
  check_slot_configs(cfg, slots_, static_cast<int64_t>(engine_.tables().size()),
                     [&](int32_t t) { return engine_.table_rows(t); });
  for (int64_t s = 0; s < n; ++s) {
    const table& t = engine_.tables().at(slots_[static_cast<size_t>(s)].table);
    tables_.push_back(&t);
    max_dim_ = std::max(max_dim_, t.dim());
  }
  engine_.freeze();
  const auto slots_sz = static_cast<size_t>(n);
  offsets_.resize(slots_sz * static_cast<size_t>(cfg.max_batch_size + 1));
  rows_.resize(slots_sz);
  errors_.resize(slots_sz);
  tasks_.reserve(slots_sz * kMaxTasksPerSlot);
  acc_.resize(static_cast<size_t>(max_threads_) * static_cast<size_t>(max_dim_));
  std::vector<std::shared_ptr<remote_table>> remote(slots_sz);
  bool any_remote = false;
  for (size_t s = 0; s < slots_sz; ++s) {
    remote[s] = engine_.remote(slots_[s].table);
    any_remote = any_remote || remote[s] != nullptr;
  }
  if (any_remote) {
    remote_ = std::make_shared<remote_resolver>(cfg, slots_, std::move(remote));
    staged_requests_.resize(slots_sz);
  }
}

const slot_request* cpu_lookup_group::resolve_remote(const slot_request* requests, int64_t num_requests) {
  remote_->resolve(requests, num_requests);
  for (int64_t s = 0; s < num_requests; ++s) staged_requests_[static_cast<size_t>(s)] = remote_->request(s);
  return staged_requests_.data();
}

int64_t cpu_lookup_group::dim(int64_t s) const { return tables_[static_cast<size_t>(s)]->dim(); }

void cpu_lookup_group::plan_slot(int64_t s, const slot_request& req) {
  const engine_config& cfg = engine_.config();
  const slot_config& sc = slots_[static_cast<size_t>(s)];
  int64_t* offsets = offsets_.data() + s * (cfg.max_batch_size + 1);
  rows_[static_cast<size_t>(s)] =
      check_slot(cfg, sc, engine_.table_rows(sc.table), req, s, offsets);
  TIEMB_EXPECT(req.out_row_stride == 0 || req.out_row_stride >= dim(s), "slot ", s, ": out_row_stride must be 0 or at least the dimension ",
               dim(s), ", got ", req.out_row_stride);
}

namespace {

// A lambda behind parallel_runner's plain function pointer.
template <class F>
void run_parallel(parallel_runner& runner, int64_t num_tasks, F& f) {
  runner.run(num_tasks, [](void* ctx, int64_t task, int thread) { (*static_cast<F*>(ctx))(task, thread); }, &f);
}

}  // namespace

void cpu_lookup_group::plan(const slot_request* requests, int64_t num_requests, parallel_runner& runner) {
  TIEMB_EXPECT(num_requests == num_slots(), "lookup got inputs for ", num_requests,
               " slots but the group has ", num_slots());
  int64_t total_ids = 0;
  for (int64_t s = 0; s < num_requests; ++s) total_ids += requests[s].num_ids;

  auto plan_one = [&](int64_t s, int) {
    try {
      plan_slot(s, requests[s]);
    } catch (const std::exception& e) {
      errors_[static_cast<size_t>(s)] = e.what();
    }
  };
  for (auto& e : errors_) e.clear();
  if (total_ids >= kParallelThreshold) {
    run_parallel(runner, num_requests, plan_one);
  } else {
    for (int64_t s = 0; s < num_requests; ++s) plan_one(s, 0);
  }
  for (const auto& e : errors_) {
    if (!e.empty()) throw error(e);
  }

  // Split each slot into row ranges of roughly kTaskGrain work.
  tasks_.clear();
  for (int64_t s = 0; s < num_requests; ++s) {
    const int64_t rows = rows_[static_cast<size_t>(s)];
    if (rows == 0) continue;
    const int64_t work = (requests[s].num_ids + rows) * dim(s);
    int64_t chunks = std::clamp<int64_t>((work + kTaskGrain - 1) / kTaskGrain, 1,
                                         std::min(rows, kMaxTasksPerSlot));
    // A slot narrower than a cache line that writes its columns of a shared
    // (fused) output shares every output line with its neighbours: two
    // threads on neighbouring slots over the same rows would trade those
    // lines on every row (W&D's 26 wide slots of one float). Split it into
    // one row range per thread instead, taken in order, so that threads
    // working at once work on different rows.
    const int64_t out_bytes = dim(s) * (slots_[static_cast<size_t>(s)].output_dtype == dtype::float16 ? 2 : 4);
    if (requests[s].out_row_stride > dim(s) && out_bytes < 64) {
      chunks = std::max<int64_t>(chunks, std::min<int64_t>(rows, runner.num_threads()));
    }
    for (int64_t c = 0; c < chunks; ++c) {
      tasks_.push_back(task{static_cast<int32_t>(s), rows * c / chunks, rows * (c + 1) / chunks});
    }
  }
}

namespace {

// The rows a task pools: a resident table, or a remote slot's staging rows.
struct table_view {
  dtype type;
  const void* data;
  int64_t rows;
  int64_t dim;
  int64_t default_id;
};

template <class IdT, class TabT, class OutT>
void run_task(const slot_config& sc, const table_view& t, const slot_request& req,
              const int64_t* offsets, void* out, float* acc, int64_t row_begin, int64_t row_end) {
  pooling_args<IdT, TabT, OutT> a{static_cast<const IdT*>(req.ids),
                                  req.id_stride,
                                  sc.wrap_negative,
                                  req.weights,
                                  offsets,
                                  static_cast<const TabT*>(t.data),
                                  t.rows,
                                  t.dim,
                                  sc.comb,
                                  sc.mode == row_mode::safe,
                                  t.default_id,
                                  static_cast<OutT*>(out),
                                  acc,
                                  req.ids_per_row,
                                  req.row_stride,
                                  req.out_row_stride > 0 ? req.out_row_stride : t.dim};
  pool_rows(a, row_begin, row_end);
}

template <class IdT, class TabT>
void dispatch_out(const slot_config& sc, const table_view& t, const slot_request& req,
                  const int64_t* offsets, void* out, float* acc, int64_t b, int64_t e) {
  if (sc.output_dtype == dtype::float32) {
    run_task<IdT, TabT, float>(sc, t, req, offsets, out, acc, b, e);
  } else {
    run_task<IdT, TabT, half_t>(sc, t, req, offsets, out, acc, b, e);
  }
}

template <class IdT>
void dispatch_table(const slot_config& sc, const table_view& t, const slot_request& req,
                    const int64_t* offsets, void* out, float* acc, int64_t b, int64_t e) {
  if (t.type == dtype::float32) {
    dispatch_out<IdT, float>(sc, t, req, offsets, out, acc, b, e);
  } else {
    dispatch_out<IdT, half_t>(sc, t, req, offsets, out, acc, b, e);
  }
}

}  // namespace

void cpu_lookup_group::execute(const slot_request* requests, void* const* outputs, parallel_runner& runner) {
  const int64_t stride = engine_.config().max_batch_size + 1;
  int64_t total_work = 0;
  for (int64_t s = 0; s < num_slots(); ++s) {
    total_work += (requests[s].num_ids + rows_[static_cast<size_t>(s)]) * dim(s);
  }
  auto run_one = [&](int64_t i, int thread) {
    const task& tk = tasks_[static_cast<size_t>(i)];
    const auto s = static_cast<size_t>(tk.slot);
    const slot_request& req = requests[s];
    const int64_t* offsets =
        slots_[static_cast<size_t>(tk.slot)].mode == row_mode::gather ? nullptr : offsets_.data() + tk.slot * stride;
    float* acc = acc_.data() + thread * max_dim_;
    const table& t = *tables_[s];
    const bool staged = remote_ && remote_->remote(tk.slot);
    const table_view v{t.type(), staged ? remote_->data(tk.slot) : t.data(), staged ? remote_->rows(tk.slot) : t.rows(),
                       t.dim(), staged ? remote_->default_id(tk.slot) : slots_[s].default_id};
    if (req.id_type == dtype::int32) {
      dispatch_table<int32_t>(slots_[s], v, req, offsets, outputs[s], acc, tk.row_begin, tk.row_end);
    } else {
      dispatch_table<int64_t>(slots_[s], v, req, offsets, outputs[s], acc, tk.row_begin, tk.row_end);
    }
  };
  const auto num_tasks = static_cast<int64_t>(tasks_.size());
  if (total_work >= kParallelThreshold) {
    run_parallel(runner, num_tasks, run_one);
  } else {
    for (int64_t i = 0; i < num_tasks; ++i) run_one(i, 0);
  }
}

}  // namespace tiemb
