// malloc(64) + free in a loop, for counting instructions of the C entry points (ci/fastpath.sh).
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 64;
    for (long i = 0; i < n; i++) {
        void *volatile p = malloc(size);
        free(p);
    }
    return 0;
}
