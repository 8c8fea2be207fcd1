/* Sampling perf events for the CPU profiler (PerfSampling): a CPU-clock event
 * per (thread, CPU) with inherit, its mmap'ed ring buffer, and the parser that
 * drains the ring into flat arrays Swift turns into samples.
 *
 * Why per-CPU events and not one per thread on any CPU (cpu = -1): the kernel
 * refuses mmap() of an inherited per-task event (perf_mmap(): "Don't allow
 * mmap() of inherited per-task counters", EINVAL; checked on 6.18), because
 * the inherited children of one such event run on different CPUs at once and
 * a perf ring has one writer per CPU. With cpu = N, every inherited child of
 * the event also runs only on CPU N, and its samples go to the parent's ring
 * (__perf_output_begin() writes through event->parent); that is what
 * `perf record` does. The events of one process on one CPU share one ring via
 * PERF_EVENT_IOC_SET_OUTPUT (allowed between events on the same CPU). */
#define _GNU_SOURCE
#include "ferret_linux.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/perf_event.h>

/* The sample layout the parser expects; fields appear in this order in a
 * PERF_RECORD_SAMPLE (the kernel's fixed order: IP, TID, TIME, PERIOD, CALLCHAIN). */
#define FERRET_SAMPLE_TYPE \
    (PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_PERIOD | PERF_SAMPLE_CALLCHAIN)

/* With a stack copy, PERF_SAMPLE_REGS_USER then PERF_SAMPLE_STACK_USER follow
 * the callchain. The registers come in the order of their bits: BP, SP, IP
 * (arch/x86/include/uapi/asm/perf_regs.h). */
#if defined(__x86_64__)
#define FERRET_REG_BP 6
#define FERRET_REG_SP 7
#define FERRET_REG_IP 8
#define FERRET_REGS_MASK ((1ULL << FERRET_REG_BP) | (1ULL << FERRET_REG_SP) | (1ULL << FERRET_REG_IP))
#endif

int ferret_perf_cpu_clock_open(int32_t tid, int32_t cpu, uint32_t frequency_hz, int include_kernel,
                               uint16_t max_stack, uint32_t wakeup_bytes, uint32_t stack_bytes) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    /* Frequency mode. For the hrtimer-driven cpu-clock the kernel turns the
     * frequency into a fixed period of 1e9/Hz ns of the thread's CPU time. */
    attr.freq = 1;
    attr.sample_freq = frequency_hz;
    attr.sample_type = FERRET_SAMPLE_TYPE;
    if (stack_bytes > 0) {
#if defined(__x86_64__)
        if ((stack_bytes & 7) != 0) return -EINVAL;
        attr.sample_type |= PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER;
        attr.sample_regs_user = FERRET_REGS_MASK;
        attr.sample_stack_user = stack_bytes;
#else
        return -EOPNOTSUPP;
#endif
    }
    attr.sample_max_stack = max_stack;
    /* User callchains always. Time the thread spends in the kernel is sampled
     * either way (like ITIMER_PROF); without include_kernel its samples carry
     * the user stack that made the call and no kernel frames. */
    attr.exclude_callchain_kernel = include_kernel ? 0 : 1;
    attr.exclude_hv = 1;
    attr.inherit = 1;        /* threads this thread creates later get a child event */
    attr.inherit_thread = 1; /* ...but not child processes (Linux >= 5.13) */
    /* Timestamps on CLOCK_MONOTONIC (the default perf clock is sched_clock). */
    attr.use_clockid = 1;
    attr.clockid = CLOCK_MONOTONIC;
    /* Wake pollers when this many bytes are unread (0: every sample). */
    if (wakeup_bytes > 0) {
        attr.watermark = 1;
        attr.wakeup_watermark = wakeup_bytes;
    } else {
        attr.wakeup_events = 1;
    }
    long fd = syscall(SYS_perf_event_open, &attr, (pid_t)tid, (int)cpu, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0) return -errno;
    return (int)fd;
}

int ferret_perf_set_output(int fd, int ring_fd) {
    if (ioctl(fd, PERF_EVENT_IOC_SET_OUTPUT, ring_fd) != 0) return -errno;
    return 0;
}

uint64_t ferret_perf_ring_length(uint32_t data_pages) {
    return (uint64_t)(1 + data_pages) * (uint64_t)sysconf(_SC_PAGESIZE);
}

void *ferret_perf_ring_map(int fd, uint32_t data_pages, int *error) {
    if (data_pages == 0 || (data_pages & (data_pages - 1)) != 0) {
        *error = EINVAL;
        return NULL;
    }
    /* PROT_WRITE: the reader writes data_tail, which also tells the kernel
     * not to overwrite unread data (a read-only map is an overwrite ring). */
    void *p = mmap(NULL, (size_t)ferret_perf_ring_length(data_pages), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        *error = errno;
        return NULL;
    }
    *error = 0;
    return p;
}

void ferret_perf_ring_unmap(void *ring, uint32_t data_pages) {
    if (ring) munmap(ring, (size_t)ferret_perf_ring_length(data_pages));
}

/* The 8-byte word at byte offset `pos` (multiple of 8) of the ring's data area.
 * Records are 8-byte aligned and the data size is a power of two, so a word
 * never straddles the end; a record may, and reading it word by word with the
 * mask handles the wrap without copying. */
static inline uint64_t ring_word(const unsigned char *data, uint64_t mask, uint64_t pos) {
    uint64_t v;
    memcpy(&v, data + (pos & mask), sizeof(v));
    return v;
}

int ferret_perf_ring_drain(void *ring, ferret_perf_drain *d) {
    struct perf_event_mmap_page *pc = ring;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t data_offset = pc->data_offset ? pc->data_offset : (uint64_t)page;
    uint64_t data_size = pc->data_size;
    const unsigned char *data = (const unsigned char *)ring + data_offset;
    if (data_size == 0 || (data_size & (data_size - 1)) != 0) return -EINVAL;
    uint64_t mask = data_size - 1;

    /* Acquire pairs with the kernel's store of data_head after it wrote the
     * records: everything before head is visible once head is. */
    uint64_t head = __atomic_load_n(&pc->data_head, __ATOMIC_ACQUIRE);
    /* Only this reader writes data_tail. */
    uint64_t tail = __atomic_load_n(&pc->data_tail, __ATOMIC_RELAXED);
    int result = 0;

    while (tail < head) {
        uint64_t hdr = ring_word(data, mask, tail);
        uint32_t type = (uint32_t)hdr;
        uint64_t size = hdr >> 48; /* perf_event_header: u32 type, u16 misc, u16 size */
        if (size < 8 || (size & 7) != 0 || size > head - tail) {
            /* Not a record boundary: drop what is there rather than misparse. */
            d->malformed++;
            tail = head;
            result = -EPROTO;
            break;
        }
        uint64_t words = size / 8;
        switch (type) {
        case PERF_RECORD_SAMPLE: {
            /* u64 ip; u32 pid, tid; u64 time; u64 period; u64 nr; u64 ips[nr] */
            if (words < 6) { d->malformed++; break; }
            uint64_t nr = ring_word(data, mask, tail + 40);
            if (nr > words - 6) { d->malformed++; break; }
            if (d->sample_count >= d->sample_capacity ||
                (d->frame_count + nr > d->frame_capacity && d->sample_count > 0) ||
                (d->stack_bytes > 0 && d->stack_count + d->stack_bytes > d->stack_capacity && d->sample_count > 0)) {
                result = 1; /* out of room: leave this record for the next call */
                goto out;
            }
            uint64_t pidtid = ring_word(data, mask, tail + 16);
            ferret_perf_sample *s = &d->samples[d->sample_count++];
            s->pid = (int32_t)(uint32_t)pidtid;
            s->tid = (int32_t)(uint32_t)(pidtid >> 32);
            s->ip = ring_word(data, mask, tail + 8);
            s->time_ns = ring_word(data, mask, tail + 24);
            s->period = ring_word(data, mask, tail + 32);
            s->misc = (uint16_t)(hdr >> 32);
            s->user_start = s->kernel_start = d->frame_count;
            s->user_count = s->kernel_count = 0;
            /* The callchain is sections, each after a PERF_CONTEXT_* marker:
             * kernel frames (leaf first) then user frames (leaf first: the
             * user-mode IP, then return addresses). Markers are dropped, as
             * are hypervisor and guest frames. Kernel frames are stored
             * first, then user frames, each contiguous. */
            uint64_t ctx = 0, kernel_n = 0, user_n = 0;
            uint64_t base = d->frame_count;
            /* Pass 1: kernel frames; pass 2: user frames (callchains are
             * short; two passes keep each kind contiguous). */
            for (int pass = 0; pass < 2; pass++) {
                ctx = 0;
                for (uint64_t i = 0; i < nr; i++) {
                    uint64_t ip = ring_word(data, mask, tail + 48 + 8 * i);
                    if (ip >= PERF_CONTEXT_MAX) {
                        ctx = ip;
                        continue;
                    }
                    if (d->frame_count >= d->frame_capacity) { d->truncated_frames++; continue; }
                    if (pass == 0 && ctx == PERF_CONTEXT_KERNEL) {
                        d->frames[d->frame_count++] = ip;
                        kernel_n++;
                    } else if (pass == 1 && ctx == PERF_CONTEXT_USER) {
                        d->frames[d->frame_count++] = ip;
                        user_n++;
                    }
                }
            }
            s->kernel_start = (uint32_t)base;
            s->kernel_count = (uint32_t)kernel_n;
            s->user_start = (uint32_t)(base + kernel_n);
            s->user_count = (uint32_t)user_n;
            s->user_ip = s->user_sp = s->user_bp = 0;
            s->has_regs = 0;
            s->stack_start = d->stack_count;
            s->stack_len = 0;
            /* A record shorter than its registers and stack say leaves the sample
             * without them (its callchain is whole). */
            if (d->stack_bytes > 0) {
                /* u64 abi; u64 regs[3] (when abi != 0); u64 size; char data[size]; u64 dyn_size (when size != 0) */
                uint64_t w = 6 + nr;
                if (w >= words) { s->has_regs = 0; break; }
                uint64_t abi = ring_word(data, mask, tail + 8 * w++);
                if (abi != 0) {
                    if (w + 3 > words) { s->has_regs = 0; break; }
                    s->user_bp = ring_word(data, mask, tail + 8 * w);
                    s->user_sp = ring_word(data, mask, tail + 8 * w + 8);
                    s->user_ip = ring_word(data, mask, tail + 8 * w + 16);
                    s->has_regs = 1;
                    w += 3;
                }
                if (w >= words) { s->has_regs = 0; break; }
                uint64_t size = ring_word(data, mask, tail + 8 * w++);
                if (size > 0) {
                    if ((size & 7) != 0 || w + size / 8 + 1 > words) { s->has_regs = 0; break; }
                    uint64_t dyn = ring_word(data, mask, tail + 8 * (w + size / 8));
                    if (dyn > size) dyn = size;
                    dyn &= ~(uint64_t)7;
                    if (d->stack && d->stack_count + dyn <= d->stack_capacity) {
                        for (uint64_t k = 0; k < dyn; k += 8) {
                            uint64_t v = ring_word(data, mask, tail + 8 * w + k);
                            memcpy(d->stack + d->stack_count + k, &v, 8);
                        }
                        s->stack_len = (uint32_t)dyn;
                        d->stack_count += (uint32_t)dyn;
                    }
                }
            }
            break;
        }
        case PERF_RECORD_LOST:
            /* u64 id; u64 lost */
            if (words >= 3) d->lost += ring_word(data, mask, tail + 16);
            break;
        case PERF_RECORD_LOST_SAMPLES:
            /* u64 lost */
            if (words >= 2) d->lost += ring_word(data, mask, tail + 8);
            break;
        case PERF_RECORD_THROTTLE:
            d->throttled++;
            break;
        case PERF_RECORD_UNTHROTTLE:
            d->unthrottled++;
            break;
        default:
            /* No task, mmap or comm events are requested; anything else is counted and skipped. */
            d->other_records++;
            break;
        }
        tail += size;
    }
out:
    /* Release: our reads of the records happen before the kernel may reuse the space. */
    __atomic_store_n(&pc->data_tail, tail, __ATOMIC_RELEASE);
    return result;
}

int ferret_pidfd_open(int32_t pid) {
    long fd = syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (fd < 0) return -errno;
    return (int)fd;
}

/* epoll and eventfd for the drain thread (not in Swift's Glibc module). */

int ferret_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int ferret_epoll_add(int epfd, int fd, uint64_t token, int edge_triggered) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (edge_triggered ? EPOLLET : 0);
    ev.data.u64 = token;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

int ferret_epoll_del(int epfd, int fd) {
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) == 0 ? 0 : -errno;
}

int ferret_epoll_wait(int epfd, uint64_t *tokens, int max, int timeout_ms) {
    struct epoll_event evs[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) tokens[i] = evs[i].data.u64;
    return n;
}

int ferret_eventfd_open(void) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

void ferret_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

void ferret_eventfd_clear(int fd) {
    uint64_t v;
    ssize_t n;
    do {
        n = read(fd, &v, sizeof(v));
    } while (n < 0 && errno == EINTR);
}

void ferret_set_thread_name(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}
