/* The Benchmarks Game's binary-trees on Boehm GC (GC_MALLOC, never freed by hand): the same
 * algorithm, options and output as bench/src/bin/gc_binarytrees.rs (see there). */
#include "common.h"

typedef struct node {
  struct node *left, *right;
} node;

static node *bottom_up(int depth) {
  node *n = GC_MALLOC(sizeof(node));
  if (!n) abort();
  if (depth > 0) {
    n->left = bottom_up(depth - 1);
    n->right = bottom_up(depth - 1);
  }
  return n;
}

static uint64_t check(const node *n) {
  return n->left ? 1 + check(n->left) + check(n->right) : 1;
}

static node *live_heap(int mib) {
  size_t nodes = ((size_t)mib << 20) >> 4, per_tree = ((size_t)1 << 17) - 1;
  node *spine = NULL;
  for (size_t i = 0; i < (nodes + per_tree - 1) / per_tree; i++) {
    node *s = GC_MALLOC(sizeof(node));
    if (!s) abort();
    s->left = bottom_up(16);
    s->right = spine;
    spine = s;
  }
  return spine;
}

static uint64_t count_live(const node *s) {
  uint64_t n = 0;
  for (; s; s = s->right) n += check(s->left);
  return n;
}

struct job {
  size_t iterations;
  int depth;
  uint64_t sum;
};

static void *work(void *arg) {
  struct job *j = arg;
  for (size_t i = 0; i < j->iterations; i++) j->sum += check(bottom_up(j->depth));
  return NULL;
}

static uint64_t short_lived(size_t iterations, int d, int threads) {
  struct job jobs[threads];
  pthread_t ts[threads];
  uint64_t sum = 0;
  for (int t = 0; t < threads; t++) jobs[t] = (struct job){share(iterations, threads, t), d, 0};
  if (threads == 1) {
    work(&jobs[0]);
    return jobs[0].sum;
  }
  for (int t = 0; t < threads; t++) pthread_create(&ts[t], NULL, work, &jobs[t]);
  for (int t = 0; t < threads; t++) {
    pthread_join(ts[t], NULL);
    sum += jobs[t].sum;
  }
  return sum;
}

int main(int argc, char **argv) {
  struct opts o = parse(argc, argv, "binarytrees", 16);
  gc_setup();
  uint64_t t0 = now_ns();
  node *live = live_heap(o.live_mib);
  int min_depth = 4, max_depth = o.depth > min_depth + 2 ? o.depth : min_depth + 2;
  int stretch = max_depth + 1;
  printf("stretch tree of depth %d\t check: %lu\n", stretch, (unsigned long)check(bottom_up(stretch)));
  node *long_lived = bottom_up(max_depth);
  for (int d = min_depth; d <= max_depth; d += 2) {
    size_t iterations = (size_t)1 << (max_depth - d + min_depth);
    uint64_t sum = short_lived(iterations, d, o.threads);
    printf("%zu\t trees of depth %d\t check: %lu\n", iterations, d, (unsigned long)sum);
  }
  printf("long lived tree of depth %d\t check: %lu\n", max_depth, (unsigned long)check(long_lived));
  if (o.live_mib > 0)
    printf("live heap of %d MiB\t nodes: %lu\n", o.live_mib, (unsigned long)count_live(live));
  report("binarytrees", o, t0);
  return 0;
}
