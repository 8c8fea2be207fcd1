/*
 * syscaller.c — test fixture: a process that makes a known number of system
 * calls when told to, from its main thread or from threads it starts then.
 *
 * One command per line on stdin, one reply line on stdout when it is done:
 *   calls N   the main thread makes N getppid() calls                -> "ok"
 *   thread N  a new thread makes N getppid() calls and exits, while
 *             the main thread waits in pthread_join                  -> "ok"
 *   nested N  a new thread starts a second thread and exits; then the
 *             second thread (whose creator is gone) makes N calls     -> "ok"
 *   park      a new thread starts and blocks on a pipe                -> "ok TID"
 *   wake N    the parked thread makes N getppid() calls               -> "ok"
 * EOF on stdin: exit 0. Between commands the process only blocks in read(),
 * and each command costs the main thread a handful of calls besides the N.
 *
 *   cc -std=c99 -Wall -Wextra -Werror -pthread -o syscaller syscaller.c
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void calls(long n) {
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
}

static void reply(const char *s) {
    size_t len = strlen(s);
    if (write(1, s, len) != (ssize_t)len) _exit(3);
}

static void *burst(void *arg) {
    calls((long)arg);
    return NULL;
}

/* nested: the grandchild waits until its creator has exited, then bursts. */
static int nested_go[2], nested_done[2];
static void *grandchild(void *arg) {
    char c;
    if (read(nested_go[0], &c, 1) != 1) _exit(4);
    calls((long)arg);
    if (write(nested_done[1], "d", 1) != 1) _exit(4);
    return NULL;
}
static void *creator(void *arg) {
    pthread_t t;
    if (pthread_create(&t, NULL, grandchild, arg) != 0) _exit(5);
    pthread_detach(t);
    return NULL;
}

/* park / wake */
static int park_cmd[2], park_done[2];
static volatile pid_t parked_tid;
static void *parked(void *arg) {
    (void)arg;
    parked_tid = (pid_t)syscall(SYS_gettid);
    if (write(park_done[1], "p", 1) != 1) _exit(6);
    long n;
    while (read(park_cmd[0], &n, sizeof(n)) == (ssize_t)sizeof(n)) {
        calls(n);
        if (write(park_done[1], "w", 1) != 1) _exit(6);
    }
    return NULL;
}

int main(void) {
    if (pipe(nested_go) || pipe(nested_done) || pipe(park_cmd) || pipe(park_done)) return 2;
    char buf[256];
    size_t have = 0;
    for (;;) {
        char *nl = memchr(buf, '\n', have);
        if (!nl) {
            if (have == sizeof(buf)) return 2;
            ssize_t r = read(0, buf + have, sizeof(buf) - have);
            if (r <= 0) return 0;
            have += (size_t)r;
            continue;
        }
        *nl = 0;
        char cmd[16] = {0};
        long n = 0;
        sscanf(buf, "%15s %ld", cmd, &n);
        char c;
        pthread_t t;
        if (strcmp(cmd, "calls") == 0) {
            calls(n);
            reply("ok\n");
        } else if (strcmp(cmd, "thread") == 0) {
            if (pthread_create(&t, NULL, burst, (void *)n) != 0) return 5;
            pthread_join(t, NULL);
            reply("ok\n");
        } else if (strcmp(cmd, "nested") == 0) {
            if (pthread_create(&t, NULL, creator, (void *)n) != 0) return 5;
            pthread_join(t, NULL); /* the creator has exited */
            if (write(nested_go[1], "g", 1) != 1 || read(nested_done[0], &c, 1) != 1) return 4;
            reply("ok\n");
        } else if (strcmp(cmd, "park") == 0) {
            if (pthread_create(&t, NULL, parked, NULL) != 0) return 5;
            pthread_detach(t);
            if (read(park_done[0], &c, 1) != 1) return 6;
            char out[32];
            snprintf(out, sizeof(out), "ok %d\n", (int)parked_tid);
            reply(out);
        } else if (strcmp(cmd, "wake") == 0) {
            if (write(park_cmd[1], &n, sizeof(n)) != (ssize_t)sizeof(n) || read(park_done[0], &c, 1) != 1) return 6;
            reply("ok\n");
        } else {
            reply("unknown\n");
        }
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, buf + used, have - used);
        have -= used;
    }
}
