/* The shared-memory record ring of ferret_isolation.h: the helper's producers
 * and the agent's consumer. Lock-free: producers reserve by compare-and-swap,
 * commit by a release store; the consumer owns consumer_pos. */
#define _GNU_SOURCE
#include "ferret_isolation.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define ACQ __ATOMIC_ACQUIRE
#define REL __ATOMIC_RELEASE
#define RLX __ATOMIC_RELAXED
#define SEQ __ATOMIC_SEQ_CST

int fi_ring_init_file(int memfd, uint64_t data_size) {
    if (data_size < 4096 || (data_size & (data_size - 1)) != 0) return -EINVAL;
    if (ftruncate(memfd, (off_t)fi_ring_file_size(data_size)) != 0) return -errno;
    fi_ring_ctl *ctl = mmap(NULL, FI_RING_CTL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (ctl == MAP_FAILED) return -errno;
    memset(ctl, 0, sizeof *ctl);
    ctl->magic = FI_RING_MAGIC;
    ctl->version = FI_RING_VERSION;
    ctl->data_size = data_size;
    munmap(ctl, FI_RING_CTL_SIZE);
    return 0;
}

int fi_ring_map(int memfd, int eventfd, fi_ring *ring) {
    memset(ring, 0, sizeof *ring);
    fi_ring_ctl *ctl = mmap(NULL, FI_RING_CTL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (ctl == MAP_FAILED) return -errno;
    uint64_t size = ctl->data_size;
    if (ctl->magic != FI_RING_MAGIC || ctl->version != FI_RING_VERSION || size < 4096 || (size & (size - 1)) != 0) {
        munmap(ctl, FI_RING_CTL_SIZE);
        return -EPROTO;
    }
    /* Reserve 2 x size of address space, then map the data pages twice into it. */
    uint8_t *area = mmap(NULL, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) { int e = errno; munmap(ctl, FI_RING_CTL_SIZE); return -e; }
    for (int i = 0; i < 2; i++) {
        void *m = mmap(area + i * size, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd, FI_RING_CTL_SIZE);
        if (m == MAP_FAILED) {
            int e = errno;
            munmap(area, 2 * size);
            munmap(ctl, FI_RING_CTL_SIZE);
            return -e;
        }
    }
    ring->ctl = ctl;
    ring->data = area;
    ring->data_size = size;
    ring->eventfd = eventfd;
    return 0;
}

void fi_ring_unmap(fi_ring *ring) {
    if (ring->data) munmap(ring->data, 2 * ring->data_size);
    if (ring->ctl) munmap(ring->ctl, FI_RING_CTL_SIZE);
    memset(ring, 0, sizeof *ring);
}

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t rec_total(uint32_t len) { return (FI_REC_HDR + (uint64_t)len + 7u) & ~(uint64_t)7u; }

void *fi_ring_reserve(fi_ring *ring, uint32_t type, uint32_t len, uint32_t records) {
    if (len > FI_REC_LEN_MASK || len > fi_ring_max_inline(ring)) goto full;
    uint64_t until = __atomic_load_n(&ring->ctl->congested_until, RLX);
    if (until != 0 && monotonic_ns() < until) goto full;
    uint64_t total = rec_total(len);
    uint64_t head = __atomic_load_n(&ring->ctl->producer_pos, RLX);
    for (;;) {
        uint64_t cons = __atomic_load_n(&ring->ctl->consumer_pos, ACQ);
        if (head + total - cons > ring->data_size) goto full;
        if (__atomic_compare_exchange_n(&ring->ctl->producer_pos, &head, head + total, 1, SEQ, RLX)) break;
    }
    uint8_t *rec = ring->data + (head & (ring->data_size - 1));
    __atomic_store_n((uint32_t *)(rec + 4), type, RLX);
    __atomic_store_n((uint32_t *)rec, len | FI_REC_BUSY, REL);
    return rec + FI_REC_HDR;
full:
    __atomic_add_fetch(&ring->ctl->dropped_records, records, RLX);
    __atomic_add_fetch(&ring->ctl->dropped_batches, 1, RLX);
    return NULL;
}

void fi_ring_commit(fi_ring *ring, void *payload) {
    uint32_t *hdr = (uint32_t *)((uint8_t *)payload - FI_REC_HDR);
    uint32_t len = __atomic_load_n(hdr, RLX) & FI_REC_LEN_MASK;
    __atomic_store_n(hdr, len, REL);
    /* Dekker with prepare_wait: our commit store, then their flag. */
    __atomic_thread_fence(SEQ);
    if (__atomic_load_n(&ring->ctl->consumer_waiting, RLX) &&
        __atomic_exchange_n(&ring->ctl->consumer_waiting, 0, SEQ)) {
        uint64_t one = 1;
        ssize_t n = write(ring->eventfd, &one, sizeof one);
        (void)n;
    }
}

int fi_ring_peek(fi_ring *ring, fi_record *rec) {
    uint64_t cons = __atomic_load_n(&ring->ctl->consumer_pos, RLX);
    uint64_t prod = __atomic_load_n(&ring->ctl->producer_pos, ACQ);
    if (cons == prod) return 0;
    uint8_t *p = ring->data + (cons & (ring->data_size - 1));
    uint32_t word = __atomic_load_n((uint32_t *)p, ACQ);
    if (word == 0) return 2; /* reserved, header not written yet */
    uint32_t len = word & FI_REC_LEN_MASK;
    uint64_t total = rec_total(len);
    if (total > prod - cons || len > fi_ring_max_inline(ring)) return -1;
    rec->type = __atomic_load_n((uint32_t *)(p + 4), RLX);
    rec->len = len;
    rec->payload = p + FI_REC_HDR;
    rec->total = total;
    return (word & FI_REC_BUSY) ? 2 : 1;
}

void fi_ring_release(fi_ring *ring, const fi_record *rec) {
    uint64_t cons = __atomic_load_n(&ring->ctl->consumer_pos, RLX);
    memset(ring->data + (cons & (ring->data_size - 1)), 0, rec->total);
    __atomic_store_n(&ring->ctl->consumer_pos, cons + rec->total, REL);
}

int fi_ring_skip_busy(fi_ring *ring) {
    fi_record r;
    if (fi_ring_peek(ring, &r) != 2 || r.total == 0) return 0;
    uint64_t cons = __atomic_load_n(&ring->ctl->consumer_pos, RLX);
    uint8_t *p = ring->data + (cons & (ring->data_size - 1));
    if (__atomic_load_n((uint32_t *)p, ACQ) == 0) return 0;
    fi_ring_release(ring, &r);
    return 1;
}

int fi_ring_prepare_wait(fi_ring *ring) {
    __atomic_store_n(&ring->ctl->consumer_waiting, 1, SEQ);
    __atomic_thread_fence(SEQ);
    fi_record r;
    if (fi_ring_peek(ring, &r) == 1) {
        __atomic_store_n(&ring->ctl->consumer_waiting, 0, RLX);
        return 1;
    }
    return 0;
}

void fi_ring_cancel_wait(fi_ring *ring) { __atomic_store_n(&ring->ctl->consumer_waiting, 0, RLX); }

uint64_t fi_ring_dropped(const fi_ring *ring) { return __atomic_load_n(&ring->ctl->dropped_records, RLX); }
uint64_t fi_ring_dropped_batches(const fi_ring *ring) { return __atomic_load_n(&ring->ctl->dropped_batches, RLX); }

void fi_ring_set_congested(fi_ring *ring, uint64_t for_ns) {
    __atomic_store_n(&ring->ctl->congested_until, monotonic_ns() + for_ns, RLX);
}

uint64_t fi_ring_producer_pos(const fi_ring *ring) { return __atomic_load_n(&ring->ctl->producer_pos, ACQ); }
uint64_t fi_ring_consumer_pos(const fi_ring *ring) { return __atomic_load_n(&ring->ctl->consumer_pos, ACQ); }
