/* Shared by binarytrees.c and gcbench.c (Boehm GC): options, pause recording, the RESULT line.
 * Same output contract as bench/src/gcprog.rs (see there). Pauses: the time from
 * GC_EVENT_PRE_STOP_WORLD to GC_EVENT_POST_START_WORLD of each collection (the world is stopped
 * for the whole mark in Boehm's default, non-incremental mode), taken with GC_set_on_collection_event. */
#define GC_THREADS
#include <gc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

struct opts {
  int depth, threads, live_mib;
};

static void usage(const char *prog) {
  fprintf(stderr, "usage: %s [--depth N] [--threads N] [--live-mib L]\n", prog);
  exit(2);
}

static struct opts parse(int argc, char **argv, const char *prog, int default_depth) {
  struct opts o = {default_depth, 1, 0};
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc) usage(prog);
    int v = atoi(argv[i + 1]);
    if (!strcmp(argv[i], "--depth")) o.depth = v;
    else if (!strcmp(argv[i], "--threads")) o.threads = v < 1 ? 1 : v;
    else if (!strcmp(argv[i], "--live-mib")) o.live_mib = v;
    else usage(prog);
  }
  return o;
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Every pause (GC_gcollect and automatic cycles alike); the collector holds its lock while it
 * calls the callback, so no locking here. */
#define MAX_PAUSES (1 << 20)
static uint64_t pauses[MAX_PAUSES];
static size_t npauses;
static uint64_t pause_start, pause_total;

static void on_event(GC_EventType e) {
  if (e == GC_EVENT_PRE_STOP_WORLD) {
    pause_start = now_ns();
  } else if (e == GC_EVENT_POST_START_WORLD && pause_start) {
    uint64_t p = now_ns() - pause_start;
    pause_start = 0;
    pause_total += p;
    if (npauses < MAX_PAUSES) pauses[npauses++] = p;
  }
}

static void gc_setup(void) {
  GC_INIT();
  GC_set_on_collection_event(on_event);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest rank, as gcprog::percentile. */
static uint64_t percentile(const uint64_t *sorted, size_t n, uint64_t p) {
  if (n == 0) return 0;
  uint64_t rank = (p * n + 99) / 100;
  if (rank < 1) rank = 1;
  return sorted[rank - 1];
}

static size_t share(size_t n, size_t threads, size_t t) { return n / threads + (t < n % threads); }

static void report(const char *prog, struct opts o, uint64_t t0) {
  double wall_ms = (now_ns() - t0) / 1e6;
  /* The most recent 256 pauses, as Go's and gomalloc's buffers keep. */
  size_t n = npauses < 256 ? npauses : 256;
  uint64_t recent[256];
  memcpy(recent, pauses + (npauses - n), n * sizeof(uint64_t));
  qsort(recent, n, sizeof(uint64_t), cmp_u64);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("RESULT impl=boehm prog=%s depth=%d threads=%d live_mib=%d scan_malloc=1 wall_ms=%.1f "
         "num_gc=%lu pause_max_us=%.1f pause_median_us=%.1f pause_p99_us=%.1f "
         "pause_total_ms=%.1f peak_rss_kib=%ld\n",
         prog, o.depth, o.threads, o.live_mib, wall_ms, (unsigned long)GC_get_gc_no(),
         n ? recent[n - 1] / 1e3 : 0.0, percentile(recent, n, 50) / 1e3,
         percentile(recent, n, 99) / 1e3, pause_total / 1e6, ru.ru_maxrss);
}
