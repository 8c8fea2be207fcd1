// A process for ProcessMemoryTests to read from outside. Compiled by the test with
// /usr/bin/cc (as PIE and as non-PIE). It fills a global array with a known pattern,
// makes a mapping with an unmapped hole in the middle, starts extra threads, prints
// what the test needs on stdout ("key value" lines, then "ready"), and sleeps until
// killed (or 120 s, so a crashed test leaves nothing behind).
//
// Usage: memtarget [THREADS]   (extra threads besides the main one; default 3)

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PATTERN_WORDS 4096 /* 32 KiB: spans several pages */

/* .bss, filled at run time: word i = (i + 1) * golden ratio constant. */
__attribute__((used)) uint64_t memtarget_pattern[PATTERN_WORDS];
/* .data, initialized in the file. */
__attribute__((used)) uint64_t memtarget_initialized = 0x1122334455667788ULL;
/* .rodata. */
__attribute__((used)) const char memtarget_marker[] = "ferret-memtarget-marker-v1";

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 3;
    alarm(120);

    for (uint64_t i = 0; i < PATTERN_WORDS; i++) memtarget_pattern[i] = (i + 1) * 0x9E3779B97F4A7C15ULL;

    /* Three pages; the middle one is unmapped: [base, base+page) and [base+2page, base+3page) are readable. */
    long page = sysconf(_SC_PAGESIZE);
    unsigned char *region = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) { perror("mmap"); return 1; }
    for (long i = 0; i < 3 * page; i++) region[i] = (unsigned char)(i * 7 + 3);
    if (munmap(region + page, page) != 0) { perror("munmap"); return 1; }

    for (int t = 0; t < threads; t++) {
        pthread_t th;
        if (pthread_create(&th, NULL, sleeper, NULL) != 0) { perror("pthread_create"); return 1; }
    }

    printf("pid %d\n", (int)getpid());
    printf("pattern %p\n", (void *)memtarget_pattern);
    printf("initialized %p\n", (void *)&memtarget_initialized);
    printf("marker %p\n", (void *)memtarget_marker);
    printf("region %p\n", (void *)region);
    printf("page %ld\n", page);
    printf("threads %d\n", threads + 1);
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
