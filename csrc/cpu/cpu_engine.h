// The CPU engine: tables plus a thread pool, and lookup groups that compute
// TensorFlow's sparse embedding lookups for many slots in one call.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../core/config.h"
#include "../core/error.h"
#include "../core/request.h"
#include "../core/table.h"
#include "thread_pool.h"

namespace tiemb {

class remote_table;     // csrc/distributed: a table in a Redis Cluster
class remote_resolver;

/// Owns the tables and the worker threads. Add every table before creating
/// the first lookup group; after that the engine is read-only and may be
/// shared by any number of groups and threads.
class cpu_engine {
 public:
  explicit cpu_engine(const engine_config& config);

  /// Copies a rows x dim table of float32 or float16 and returns its id.
  int32_t add_table(dtype type, int64_t rows, int64_t dim, const void* data);

  const engine_config& config() const { return config_; }
  const table_set& tables() const { return tables_; }
  thread_pool& pool() { return pool_; }
  void freeze() { frozen_ = true; }

  /// Adds a table whose rows live in a Redis Cluster (tiemb/enable_distributed)
  /// and returns its id; lookups stage its rows per call (remote_lookup.h).
  int32_t add_remote_table(std::shared_ptr<remote_table> remote);
  /// The remote table behind `id`, or null for a resident table.
  const std::shared_ptr<remote_table>& remote(int32_t id) const;
  /// Rows of table `id`, resident or remote.
  int64_t table_rows(int32_t id) const;
  /// Keeps `thing` alive as long as the engine (a remote tables' refresher).
  void attach(std::shared_ptr<void> thing) { attached_.push_back(std::move(thing)); }

 private:
  engine_config config_;
  table_set tables_;
  thread_pool pool_;
  bool frozen_ = false;
  // Appended for distributed tables: per table id, its remote table or null
  // (a remote table's entry in tables_ is a one-row placeholder of its dtype
  // and dim).
  std::vector<std::shared_ptr<remote_table>> remote_;
  std::vector<std::shared_ptr<void>> attached_;
};

/// A parallel loop supplied by the caller, so that a lookup can run on the
/// caller's threads (TensorFlow's CPU worker threads inside the op) instead
/// of the engine's own pool: one set of threads for the cores, no handoff.
class parallel_runner {
 public:
  using task_fn = void (*)(void* ctx, int64_t task, int thread);
  virtual ~parallel_runner() = default;
  /// Bound on the `thread` indices `run` passes: they are in [0, num_threads()),
  /// and two tasks running at the same time never share one.
  virtual int num_threads() const = 0;
  /// Calls fn(ctx, task, thread) for every task in [0, num_tasks) and returns
  /// when all are done. `fn` does not throw.
  virtual void run(int64_t num_tasks, task_fn fn, void* ctx) = 0;
};

/// A fixed set of slots looked up together, with the scratch buffers one call
/// needs, sized from the engine config once. Calls on one group are
/// serialised; use one group per concurrent caller.
class cpu_lookup_group {
 public:
  /// `max_threads`: the most threads a parallel_runner given to lookup may
  /// use (scratch is sized for them); 0 = the engine pool's thread count.
  cpu_lookup_group(cpu_engine& engine, std::vector<slot_config> slots, int max_threads = 0);

  int64_t num_slots() const { return static_cast<int64_t>(slots_.size()); }
  const slot_config& slot(int64_t s) const { return slots_[static_cast<size_t>(s)]; }
  int64_t dim(int64_t s) const;

  /// Runs `prepare_outputs(rows)` after validating the requests, where rows[s]
  /// is slot s's output row count; it must return one output buffer per slot
  /// holding rows[s] * dim(s) elements of the slot's output dtype. Then fills
  /// them. Throws tiemb::error naming the slot on bad input, before anything
  /// is written.
  ///
  /// A request's out_row_stride (elements between output rows, 0 = dim)
  /// lets several slots write their columns of one wider buffer.
  template <class PrepareOutputs>
  void lookup(const slot_request* requests, int64_t num_requests, PrepareOutputs&& prepare_outputs) {
    lookup(requests, num_requests, std::forward<PrepareOutputs>(prepare_outputs), pool_runner_);
  }

  /// As above, with the parallel parts run by `runner` (whose num_threads()
  /// must not exceed the group's max_threads).
  template <class PrepareOutputs>
  void lookup(const slot_request* requests, int64_t num_requests, PrepareOutputs&& prepare_outputs,
              parallel_runner& runner) {
    std::lock_guard<std::mutex> lk(mutex_);
    TIEMB_EXPECT(runner.num_threads() <= max_threads_, "the lookup runner has ", runner.num_threads(),
                 " threads but the group's scratch was sized for ", max_threads_);
    plan(requests, num_requests, runner);
    if (remote_) requests = resolve_remote(requests, num_requests);
    void* const* outputs = prepare_outputs(static_cast<const int64_t*>(rows_.data()));
    execute(requests, outputs, runner);
  }

 private:
  struct task {
    int32_t slot;
    int64_t row_begin;
    int64_t row_end;
  };
  // The engine's own pool as a parallel_runner (Python callers).
  class engine_pool_runner : public parallel_runner {
   public:
    explicit engine_pool_runner(thread_pool& pool) : pool_(pool) {}
    int num_threads() const override { return pool_.num_threads(); }
    void run(int64_t num_tasks, task_fn fn, void* ctx) override {
      auto body = [&](int64_t task, int thread) { fn(ctx, task, thread); };
      pool_.parallel_for(num_tasks, body);
    }

   private:
    thread_pool& pool_;
  };

  void plan(const slot_request* requests, int64_t num_requests, parallel_runner& runner);
  void plan_slot(int64_t s, const slot_request& req);
  void execute(const slot_request* requests, void* const* outputs, parallel_runner& runner);
  // Distributed tables: stages remote rows, returns the requests to pool.
  const slot_request* resolve_remote(const slot_request* requests, int64_t num_requests);

  cpu_engine& engine_;
  engine_pool_runner pool_runner_;
  int max_threads_ = 1;
  std::vector<slot_config> slots_;
  std::vector<const table*> tables_;
  std::mutex mutex_;
  // Scratch, sized once from the engine config.
  std::vector<int64_t> offsets_;  // slots * (max_batch_size + 1)
  std::vector<int64_t> rows_;
  std::vector<std::string> errors_;  // only a failing slot allocates
  std::vector<task> tasks_;
  std::vector<float> acc_;  // one accumulator row per thread
  int64_t max_dim_ = 0;
  // Appended for distributed tables: set when a slot reads a remote table.
  std::shared_ptr<remote_resolver> remote_;
  std::vector<slot_request> staged_requests_;
};

}  // namespace tiemb
