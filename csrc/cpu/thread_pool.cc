#include "thread_pool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TIEMB_CPU_RELAX() _mm_pause()
#else
#define TIEMB_CPU_RELAX() std::this_thread::yield()
#endif

namespace tiemb {
namespace {
// How long an idle worker spins before it sleeps. Long enough to cover the
// gap between back-to-back lookups of a serving loop, short enough not to
// burn a core when traffic stops.
constexpr auto kSpinTime = std::chrono::microseconds(200);
}  // namespace

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

thread_pool::thread_pool(int num_threads) {
  const int workers = num_threads > 1 ? num_threads - 1 : 0;
  workers_.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i + 1); });
  }
}

thread_pool::~thread_pool() {
  {
    std::lock_guard<std::mutex> lk(wake_mutex_);
    stop_.store(true);
  }
  wake_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void thread_pool::drain(int thread_index) {
  for (;;) {
    const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= num_tasks_) return;
    fn_(ctx_, task, thread_index);
  }
}

void thread_pool::run(int64_t num_tasks, task_fn fn, void* ctx) {
  if (num_tasks <= 0) return;
  if (workers_.empty() || num_tasks == 1) {
    for (int64_t t = 0; t < num_tasks; ++t) fn(ctx, t, 0);
    return;
  }
  std::lock_guard<std::mutex> job(job_mutex_);
  fn_ = fn;
  ctx_ = ctx;
  num_tasks_ = num_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  workers_done_.store(0, std::memory_order_relaxed);
  {
    // Bump the generation under the wake mutex so a worker that is about to
    // sleep cannot miss it.
    std::lock_guard<std::mutex> lk(wake_mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_cv_.notify_all();
  drain(0);
  // Every worker takes part in every job (possibly finding no task left), so
  // the job's state is not reused before all of them have let go of it.
  const int expected = static_cast<int>(workers_.size());
  while (workers_done_.load(std::memory_order_acquire) != expected) TIEMB_CPU_RELAX();
}

void thread_pool::worker_loop(int thread_index) {
  uint64_t seen = 0;
  for (;;) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
    uint64_t gen;
    int spins = 0;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
      if (stop_.load(std::memory_order_relaxed)) return;
      TIEMB_CPU_RELAX();
      // Checking the clock is not free; look only every 64 spins.
      if ((++spins & 63) == 0 && std::chrono::steady_clock::now() > spin_until) {
        std::unique_lock<std::mutex> lk(wake_mutex_);
        wake_cv_.wait(lk, [&] {
          return generation_.load(std::memory_order_acquire) != seen || stop_.load();
        });
      }
    }
    seen = gen;
    drain(thread_index);
    workers_done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

}  // namespace tiemb
