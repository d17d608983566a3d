// Threads hammer malloc/free while the main thread forks repeatedly; each child allocates,
// frees and execs a program. A deadlock in the child (a lock held across fork) hangs here.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *hammer(void *arg) {
    unsigned long x = (unsigned long)arg * 2654435761u + 1;
    void *slots[256] = {0};
    while (!atomic_load(&stop)) {
        x = x * 6364136223846793005ULL + 1;
        int i = (x >> 40) % 256;
        free(slots[i]);
        size_t n = (x >> 20) % 3 == 0 ? (x >> 8) % 200000 : (x >> 8) % 512;
        slots[i] = malloc(n + 1);
        memset(slots[i], 7, n + 1);
    }
    for (int i = 0; i < 256; i++) free(slots[i]);
    return NULL;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 200;
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer, (void *)(i + 1));
    int ok = 0;
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid == 0) {
            char *p = malloc(1000), *q = malloc(100000);
            memset(p, 1, 1000);
            memset(q, 2, 100000);
            free(p);
            free(q);
            if (f % 2 == 0) {
                execl("/bin/true", "true", (char *)NULL);
                _exit(127);
            }
            _exit(0);
        }
        int st;
        if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0) ok++;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("forks=%d ok=%d\n", forks, ok);
    return ok == forks ? 0 : 1;
}
