/* Boehm's GCBench (after John Ellis and Pete Kovac) on Boehm GC: the same algorithm, options
 * and check output as bench/src/bin/gc_gcbench.rs (see there). */
#include "common.h"

#define ARRAY_SIZE 500000
#define MIN_TREE_DEPTH 4
#define NODE_BYTES 24

typedef struct node {
  struct node *left, *right;
  int i, j;
} node;

static node *new_node(node *l, node *r) {
  node *n = GC_MALLOC(sizeof(node));
  if (!n) abort();
  n->left = l;
  n->right = r;
  return n;
}

static size_t tree_size(int depth) { return ((size_t)1 << (depth + 1)) - 1; }

static void populate(int depth, node *n) {
  if (depth <= 0) return;
  n->left = new_node(NULL, NULL);
  n->right = new_node(NULL, NULL);
  populate(depth - 1, n->left);
  populate(depth - 1, n->right);
}

static node *make_tree(int depth) {
  if (depth <= 0) return new_node(NULL, NULL);
  node *l = make_tree(depth - 1);
  return new_node(l, make_tree(depth - 1));
}

static uint64_t count(const node *n) {
  return 1 + (n->left ? count(n->left) : 0) + (n->right ? count(n->right) : 0);
}

static node *live_heap(int mib) {
  size_t nodes = ((size_t)mib << 20) / NODE_BYTES;
  node *spine = NULL;
  for (size_t i = 0; i < (nodes + tree_size(16) - 1) / tree_size(16); i++)
    spine = new_node(make_tree(16), spine);
  return spine;
}

static uint64_t count_live(const node *s) {
  uint64_t n = 0;
  for (; s; s = s->right) n += count(s->left);
  return n;
}

struct job {
  size_t iters;
  int depth;
  uint64_t top, bottom;
};

static void *construct(void *arg) {
  struct job *j = arg;
  for (size_t i = 0; i < j->iters; i++) {
    node *t = new_node(NULL, NULL);
    populate(j->depth, t);
    j->top = count(t);
  }
  for (size_t i = 0; i < j->iters; i++) j->bottom = count(make_tree(j->depth));
  return NULL;
}

static void time_construction(int depth, int stretch, int threads) {
  size_t iters = 2 * tree_size(stretch) / tree_size(depth);
  printf("Creating %zu trees of depth %d\n", iters, depth);
  struct job jobs[threads];
  pthread_t ts[threads];
  for (int t = 0; t < threads; t++) jobs[t] = (struct job){share(iters, threads, t), depth, 0, 0};
  if (threads == 1) {
    construct(&jobs[0]);
  } else {
    for (int t = 0; t < threads; t++) pthread_create(&ts[t], NULL, construct, &jobs[t]);
    for (int t = 0; t < threads; t++) pthread_join(ts[t], NULL);
  }
  uint64_t top = 0, bottom = 0;
  for (int t = 0; t < threads; t++) {
    if (jobs[t].top > top) top = jobs[t].top;
    if (jobs[t].bottom > bottom) bottom = jobs[t].bottom;
  }
  printf("\tTop down construction: last tree has %lu nodes\n", (unsigned long)top);
  printf("\tBottom up construction: last tree has %lu nodes\n", (unsigned long)bottom);
}

/* In its own frame so that nothing keeps the stretch tree once it returns. */
static void __attribute__((noinline)) stretch_memory(int depth) {
  printf("\tstretch tree has %lu nodes\n", (unsigned long)count(make_tree(depth)));
}

int main(int argc, char **argv) {
  struct opts o = parse(argc, argv, "gcbench", 16);
  gc_setup();
  uint64_t t0 = now_ns();
  node *live = live_heap(o.live_mib);
  int long_lived_depth = o.depth, max_depth = o.depth, stretch = o.depth + 2;
  printf("Garbage Collector Test\n");
  printf(" Live storage will peak at %zu bytes.\n\n",
         2 * NODE_BYTES * tree_size(long_lived_depth) + 8 * ARRAY_SIZE);
  printf(" Stretching memory with a binary tree of depth %d\n", stretch);
  stretch_memory(stretch);

  printf(" Creating a long-lived binary tree of depth %d\n", long_lived_depth);
  node *long_lived = new_node(NULL, NULL);
  populate(long_lived_depth, long_lived);

  printf(" Creating a long-lived array of %d doubles\n", ARRAY_SIZE);
  double *array = GC_MALLOC_ATOMIC(sizeof(double) * ARRAY_SIZE);
  if (!array) abort();
  for (int i = 0; i < ARRAY_SIZE / 2; i++) array[i] = 1.0 / i;

  for (int d = MIN_TREE_DEPTH; d <= max_depth; d += 2) time_construction(d, stretch, o.threads);

  if (array[1000] != 1.0 / 1000) {
    printf("Failed: array[1000] = %g\n", array[1000]);
    return 1;
  }
  printf("long-lived tree has %lu nodes\n", (unsigned long)count(long_lived));
  if (o.live_mib > 0)
    printf("live heap of %d MiB\t nodes: %lu\n", o.live_mib, (unsigned long)count_live(live));
  report("gcbench", o, t0);
  return 0;
}
