// The CPU engine: tables plus a thread pool, and lookup groups that compute
// TensorFlow's sparse embedding lookups for many slots in one call.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/config.h"
#include "../core/request.h"
#include "../core/table.h"
#include "thread_pool.h"

namespace tiemb {

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

 private:
  engine_config config_;
  table_set tables_;
  thread_pool pool_;
  bool frozen_ = false;
};

/// A fixed set of slots looked up together, with the scratch buffers one call
/// needs, sized from the engine config once. Calls on one group are
/// serialised; use one group per concurrent caller.
class cpu_lookup_group {
 public:
  cpu_lookup_group(cpu_engine& engine, std::vector<slot_config> slots);

  int64_t num_slots() const { return static_cast<int64_t>(slots_.size()); }
  const slot_config& slot(int64_t s) const { return slots_[static_cast<size_t>(s)]; }
  int64_t dim(int64_t s) const;

  /// Runs `prepare_outputs(rows)` after validating the requests, where rows[s]
  /// is slot s's output row count; it must return one output buffer per slot
  /// holding rows[s] * dim(s) elements of the slot's output dtype. Then fills
  /// them. Throws tiemb::error naming the slot on bad input, before anything
  /// is written.
  template <class PrepareOutputs>
  void lookup(const slot_request* requests, int64_t num_requests, PrepareOutputs&& prepare_outputs) {
    std::lock_guard<std::mutex> lk(mutex_);
    plan(requests, num_requests);
    void* const* outputs = prepare_outputs(static_cast<const int64_t*>(rows_.data()));
    execute(requests, outputs);
  }

 private:
  struct task {
    int32_t slot;
    int64_t row_begin;
    int64_t row_end;
  };
  void plan(const slot_request* requests, int64_t num_requests);
  void plan_slot(int64_t s, const slot_request& req);
  void execute(const slot_request* requests, void* const* outputs);

  cpu_engine& engine_;
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
};

}  // namespace tiemb
