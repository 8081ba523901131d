/* Counts malloc/calloc/realloc calls of a process, for benchmarks that show
 * what a hot path allocates (benchmarks/distributed_bench.py --mallocs).
 *
 *   cc -O2 -shared -fPIC -o /tmp/malloc_count.so benchmarks/tools/malloc_count.c -ldl
 *   LD_PRELOAD=/tmp/malloc_count.so python benchmarks/distributed_bench.py --mallocs
 *
 * tiemb_malloc_count() is read through ctypes; counting is one relaxed atomic
 * add per call, so the timings stay comparable. calloc is counted but not
 * forwarded through dlsym (dlsym itself may calloc before it is resolved). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

static unsigned long long count;
static void* (*real_malloc)(size_t);
static void* (*real_realloc)(void*, size_t);

unsigned long long tiemb_malloc_count(void) { return __atomic_load_n(&count, __ATOMIC_RELAXED); }

void* malloc(size_t n) {
  if (!real_malloc) real_malloc = (void* (*)(size_t))dlsym(RTLD_NEXT, "malloc");
  __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
  return real_malloc(n);
}

void* realloc(void* p, size_t n) {
  if (!real_realloc) real_realloc = (void* (*)(void*, size_t))dlsym(RTLD_NEXT, "realloc");
  __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
  return real_realloc(p, n);
}

void* calloc(size_t k, size_t n) {
  __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
  void* p = malloc(k * n);  /* counted twice: subtract below */
  __atomic_sub_fetch(&count, 1, __ATOMIC_RELAXED);
  if (p) memset(p, 0, k * n);
  return p;
}
