/* Small Linux helpers whose kernel structs are easiest to use from C: the
 * netlink process-events connector (linux/cn_proc.h) for FerretCore, and
 * perf_event_open counting events (linux/perf_event.h) for the scheduler plugin. */
#ifndef FERRET_LINUX_H
#define FERRET_LINUX_H
#include <stdint.h>

/** Kinds of process event we forward. */
enum ferret_proc_event_kind {
    FERRET_PROC_EVENT_FORK = 1,
    FERRET_PROC_EVENT_EXEC = 2,
    FERRET_PROC_EVENT_EXIT = 3,
    FERRET_PROC_EVENT_COMM = 4,
};

typedef struct ferret_proc_event {
    int32_t kind;          /* ferret_proc_event_kind */
    int32_t pid;           /* thread id */
    int32_t tgid;          /* process id */
    int32_t exit_code;     /* EXIT only */
    uint64_t timestamp_ns; /* kernel CLOCK_MONOTONIC of the event */
} ferret_proc_event;

/** Open a netlink connector socket subscribed to process events.
 *  Returns the fd (>= 0) or -errno. Needs CAP_NET_ADMIN. */
int ferret_cn_proc_open(void);

/** Block up to `timeout_ms` (-1 = forever) and read events into `out`.
 *  Returns the number of events (0 on timeout), or -errno.
 *  -ENOBUFS means the kernel dropped events: rescan /proc. */
int ferret_cn_proc_read(int fd, ferret_proc_event *out, int max, int timeout_ms);

/** Unsubscribe and close. */
void ferret_cn_proc_close(int fd);

/** CLOCK_MONOTONIC in ns. */
uint64_t ferret_monotonic_ns(void);

/** Open a counting perf event on tracepoint `tracepoint_id` (the number in
 *  <tracefs>/events/<system>/<name>/id) for thread `tid` on any CPU, with
 *  inherit + inherit_thread: threads `tid` creates later (and their threads)
 *  count into this event, child processes do not. Close-on-exec.
 *  Returns the fd (>= 0) or -errno. */
int ferret_perf_tracepoint_open(int32_t tid, uint64_t tracepoint_id);

/** read() the event's count (its own plus its inherited children's, live and
 *  exited) into `value`. Returns 0 or -errno. */
int ferret_perf_read_count(int fd, uint64_t *value);

/** Close an event fd. */
void ferret_perf_close(int fd);

#endif
