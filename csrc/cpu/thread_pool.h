// A small persistent thread pool for the CPU lookup path.
//
// Lookups are short (tens of microseconds), so waking threads through the OS
// on every call would cost as much as the work: workers spin for a while
// after each job before they sleep. One job runs at a time; a second caller
// waits for the first. Submitting a job allocates nothing.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace tiemb {

class thread_pool {
 public:
  /// `num_threads` counts the calling thread: 1 means no worker threads.
  explicit thread_pool(int num_threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  /// Calls f(task, thread_index) for every task in [0, num_tasks), spread over
  /// the workers and the calling thread; returns when all tasks are done.
  /// thread_index is in [0, num_threads()). `f` must not throw.
  template <class F>
  void parallel_for(int64_t num_tasks, F& f) {
    run(num_tasks, [](void* ctx, int64_t task, int thread) { (*static_cast<F*>(ctx))(task, thread); },
        &f);
  }

 private:
  using task_fn = void (*)(void*, int64_t, int);
  void run(int64_t num_tasks, task_fn fn, void* ctx);
  void worker_loop(int thread_index);
  void drain(int thread_index);

  std::vector<std::thread> workers_;
  std::mutex job_mutex_;  // one job at a time
  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_task_{0};
  std::atomic<int> workers_done_{0};
  std::atomic<bool> stop_{false};
  task_fn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t num_tasks_ = 0;
};

/// Number of hardware threads, at least 1.
int hardware_threads();

}  // namespace tiemb
