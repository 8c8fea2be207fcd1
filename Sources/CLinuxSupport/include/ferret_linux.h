/* Small Linux helpers whose kernel structs are easiest to use from C: the
 * netlink process-events connector (linux/cn_proc.h) for FerretCore,
 * perf_event_open counting events (linux/perf_event.h) for the scheduler plugin,
 * and sampling events with their ring buffers for PerfSampling. */
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
    int32_t parent_tgid;   /* FORK only: the parent's process id */
    int32_t reserved;
} ferret_proc_event;

/** Open a netlink connector socket subscribed to process events.
 *  Returns the fd (>= 0) or -errno. Needs CAP_NET_ADMIN. */
int ferret_cn_proc_open(void);

/** Block up to `timeout_ms` (-1 = forever) and read events into `out`: every
 *  message already queued, up to `max` (one wakeup per burst, not per event).
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

/* ---- Sampling (perf_sampling.c) ---- */

/** Open a sampling event: the CPU clock (PERF_COUNT_SW_CPU_CLOCK) of thread
 *  `tid` while it runs on CPU `cpu`, at `frequency_hz` samples per second of
 *  the thread's CPU time, recording IP, pid/tid, time (CLOCK_MONOTONIC),
 *  period (ns) and the callchain (user frames always, at most `max_stack`
 *  frames; kernel frames only with `include_kernel`). Inherit + inherit_thread:
 *  threads `tid` creates later (and their threads) sample into this event's
 *  ring; child processes do not. Pollers wake once `wakeup_bytes` are unread
 *  (0: every sample). With `stack_bytes` > 0 (a multiple of 8; x86-64 only,
 *  -EOPNOTSUPP elsewhere) each sample also carries the user registers IP, SP
 *  and BP and a copy of the top `stack_bytes` of the user stack (from SP up),
 *  for unwinding what the frame-pointer callchain misses. Close-on-exec.
 *  Returns the fd (>= 0) or -errno. */
int ferret_perf_cpu_clock_open(int32_t tid, int32_t cpu, uint32_t frequency_hz, int include_kernel,
                               uint16_t max_stack, uint32_t wakeup_bytes, uint32_t stack_bytes);

/** Send `fd`'s records to the ring of `ring_fd` (same CPU). Returns 0 or -errno. */
int ferret_perf_set_output(int fd, int ring_fd);

/** Bytes mapped for a ring of `data_pages` data pages (plus the control page). */
uint64_t ferret_perf_ring_length(uint32_t data_pages);

/** mmap the ring of `fd`: one control page and `data_pages` (a power of two)
 *  data pages, read-write (the reader owns data_tail). Returns the mapping,
 *  or NULL with `*error` set to the errno. */
void *ferret_perf_ring_map(int fd, uint32_t data_pages, int *error);

/** munmap a ring mapped with `data_pages`. */
void ferret_perf_ring_unmap(void *ring, uint32_t data_pages);

/** One PERF_RECORD_SAMPLE. Its frames are in the drain's `frames`: kernel
 *  frames at [kernel_start, +kernel_count), user frames at [user_start,
 *  +user_count), each leaf first (the user section starts with the user-mode
 *  IP); PERF_CONTEXT_* markers removed. */
typedef struct ferret_perf_sample {
    int32_t pid;
    int32_t tid;
    uint64_t ip;      /* the sample IP (a kernel address when it hit in the kernel) */
    uint64_t time_ns; /* CLOCK_MONOTONIC */
    uint64_t period;  /* ns of CPU time this sample stands for */
    uint16_t misc;    /* perf_event_header.misc (PERF_RECORD_MISC_USER / _KERNEL) */
    uint32_t kernel_start, kernel_count;
    uint32_t user_start, user_count;
    /* With a stack copy (stack_bytes > 0): the user registers at the sample
     * (or at kernel entry), valid when `has_regs`, and the copied bytes of
     * the user stack from `user_sp` up, at [stack_start, +stack_len) of the
     * drain's `stack`. */
    uint64_t user_ip, user_sp, user_bp;
    uint32_t has_regs;
    uint32_t stack_start, stack_len;
} ferret_perf_sample;

/** Output of ferret_perf_ring_drain. The caller provides the arrays and
 *  capacities and resets the counts; the drain appends and adds. */
typedef struct ferret_perf_drain {
    ferret_perf_sample *samples;
    uint32_t sample_capacity;
    uint32_t sample_count;
    uint64_t *frames;
    uint32_t frame_capacity;
    uint32_t frame_count;
    uint64_t lost;             /* samples the kernel dropped (PERF_RECORD_LOST, _LOST_SAMPLES) */
    uint64_t throttled;        /* PERF_RECORD_THROTTLE */
    uint64_t unthrottled;      /* PERF_RECORD_UNTHROTTLE */
    uint64_t other_records;    /* any other record type (skipped) */
    uint64_t malformed;        /* records that did not parse (skipped) */
    uint64_t truncated_frames; /* frames dropped for want of room in `frames` */
    /* The ring's events were opened with this stack_bytes (0: no registers
     * and no stack copy in the records); set by the caller. */
    uint32_t stack_bytes;
    unsigned char *stack;      /* the stack copies; NULL when stack_bytes is 0 */
    uint32_t stack_capacity;
    uint32_t stack_count;
} ferret_perf_drain;

/** Parse the records between data_tail and data_head of a ring mapped with
 *  ferret_perf_ring_map into `d` (records that wrap around the ring's end
 *  included), then advance data_tail past them (acquire load of data_head,
 *  release store of data_tail). Returns 0 when the ring is empty, 1 when
 *  `d`'s arrays filled first (call again after emptying them), or -errno
 *  (-EPROTO: a corrupt header; everything up to data_head was dropped). */
int ferret_perf_ring_drain(void *ring, ferret_perf_drain *d);

/** pidfd_open(pid, 0): a descriptor that polls readable once the whole
 *  process has exited (zombie or reaped). Close-on-exec. Returns the fd or -errno. */
int ferret_pidfd_open(int32_t pid);

/** epoll_create1(EPOLL_CLOEXEC): the fd or -errno. */
int ferret_epoll_create(void);
/** Watch `fd` for EPOLLIN (plus EPOLLET if `edge_triggered`), reported as `token`. 0 or -errno. */
int ferret_epoll_add(int epfd, int fd, uint64_t token, int edge_triggered);
/** Stop watching `fd`. 0 or -errno. */
int ferret_epoll_del(int epfd, int fd);
/** Wait up to `timeout_ms` (-1: forever); the tokens of up to `max` (<= 64)
 *  ready fds go to `tokens`. Returns their number (0 on timeout) or -errno. */
int ferret_epoll_wait(int epfd, uint64_t *tokens, int max, int timeout_ms);
/** A non-blocking close-on-exec eventfd, or -errno. */
int ferret_eventfd_open(void);
/** Add 1 to the eventfd (wakes its pollers). */
void ferret_eventfd_signal(int fd);
/** Reset the eventfd's count. */
void ferret_eventfd_clear(int fd);
/** Name the calling thread (PR_SET_NAME; the kernel keeps 15 characters). */
void ferret_set_thread_name(const char *name);

#endif
