#define _GNU_SOURCE
#include "ferret_linux.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/perf_event.h>

int ferret_perf_tracepoint_open(int32_t tid, uint64_t tracepoint_id) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.config = tracepoint_id;
    /* Counting mode: no sample period, no ring buffer, read_format 0. */
    attr.inherit = 1;        /* threads this thread creates later count into this event */
    attr.inherit_thread = 1; /* ...but not child processes (Linux >= 5.13) */
    attr.exclude_hv = 1;
    /* exclude_kernel stays 0: a tracepoint fires in kernel context, and with
     * exclude_kernel=1 it counts nothing. */
    long fd = syscall(SYS_perf_event_open, &attr, (pid_t)tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0) return -errno;
    return (int)fd;
}

int ferret_perf_read_count(int fd, uint64_t *value) {
    uint64_t v = 0;
    ssize_t n;
    do {
        n = read(fd, &v, sizeof(v));
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n != (ssize_t)sizeof(v)) return -EIO;
    *value = v;
    return 0;
}

void ferret_perf_close(int fd) {
    if (fd >= 0) close(fd);
}
