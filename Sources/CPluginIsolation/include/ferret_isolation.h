/*
 * ferret_isolation.h — what the agent and its plugin helper processes share
 * (issue #18): the shared-memory record ring, the control protocol over a
 * socketpair, and the crash report the helper writes from its signal handler.
 *
 * Internal to Ferret: plugins never see this header. They keep using
 * ferret_plugin.h unchanged; the helper (`ferret-plugin-host`) loads the same
 * .so and gives it a host table whose emit_* functions write here.
 *
 * THE RING. One per helper: a memfd of one control page and `data_size`
 * (a power of two) bytes of records, mapped by both processes with the data
 * mapped twice back to back, so a record that wraps is still contiguous.
 *  - Producers are the helper's threads (the control thread and a push
 *    plugin's own threads). They reserve space by compare-and-swap on
 *    producer_pos (no lock), write the record header with the BUSY bit, fill
 *    the payload, and clear BUSY with a release store (commit). A full ring
 *    refuses the reservation: the batch is dropped and counted in `dropped`.
 *  - The one consumer (the agent's reader thread for that helper) reads the
 *    header at consumer_pos: zero = nothing yet, BUSY = not committed yet. It
 *    copies a committed record out, zeroes the bytes it consumed (so a header
 *    slot reads zero until its producer writes it) and advances consumer_pos.
 *  - Wakeups: the consumer sets `consumer_waiting` before it sleeps on the
 *    eventfd; a producer that commits while it is set clears it and writes the
 *    eventfd. A burst costs one wakeup, not one per record.
 *  - After the helper died, the consumer drains every committed record and
 *    skips BUSY ones (their length is known); only a producer killed between
 *    its reservation and its header write (a few instructions) stops the drain.
 *
 * RECORD PAYLOADS of the emit kinds are "relocatable" arrays of the ABI's own
 * record structs: u32 count, u32 stride, then `count` structs of the helper's
 * sizeof, then the bytes they point to. Every pointer field holds an offset
 * from the payload's start, or FI_NULL. The agent copies the payload, checks
 * each offset and length against it, turns offsets back into pointers and runs
 * the very conversion in-process emits run: one set of checks in both modes.
 */
#ifndef FERRET_ISOLATION_H
#define FERRET_ISOLATION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FI_RING_MAGIC 0x46525247u /* "FRRG" */
#define FI_RING_VERSION 2u
#define FI_RING_CTL_SIZE 4096u
/** Record headers: 4 bytes length (+ flags), 4 bytes type; 8-byte aligned. */
#define FI_REC_HDR 8u
#define FI_REC_BUSY 0x80000000u
#define FI_REC_LEN_MASK 0x3fffffffu
/** A pointer field that was NULL in the plugin's record. */
#define FI_NULL UINT64_MAX

/** Record types. */
enum {
    FI_REC_METRICS = 1,
    FI_REC_SPANS = 2,
    FI_REC_PROFILES = 3,
    FI_REC_EVENTS = 4,
    FI_REC_LOG = 5,     /**< i32 level, u32 has_ctx, then the message bytes */
    FI_REC_REFUSED = 6, /**< u32 kind (an FI_REC_ emit type), u32 records, then the reason */
    FI_REC_BULK = 7,    /**< u32 kind, u32 zero, u64 length: the payload came as a memfd on the bulk socket */
};

typedef struct fi_ring_ctl {
    uint32_t magic;
    uint32_t version;
    uint64_t data_size;
    uint8_t pad0[48];
    uint64_t producer_pos; /* accessed with __atomic builtins */
    uint8_t pad1[56];
    uint64_t consumer_pos;
    uint8_t pad2[56];
    uint32_t consumer_waiting;
    uint32_t pad3;
    uint64_t dropped_records; /* reservations refused: ring full */
    uint64_t dropped_batches;
    /* CLOCK_MONOTONIC ns until which the agent's pipeline is full: the agent
     * sets it when it had to drop a record it took from the ring, and the
     * producer refuses reservations (returns FERRET_E_DROPPED to the plugin)
     * until then, so a plugin learns of the queue's drops as it does in the
     * agent's own process. 0: never congested. */
    uint64_t congested_until;
} fi_ring_ctl;

typedef struct fi_ring {
    fi_ring_ctl *ctl;
    uint8_t *data; /* data_size bytes, mapped twice back to back */
    uint64_t data_size;
    int eventfd;   /* written to wake the consumer */
} fi_ring;

/** The memfd's size for a ring of `data_size` bytes. */
static inline uint64_t fi_ring_file_size(uint64_t data_size) { return FI_RING_CTL_SIZE + data_size; }

/** Sizes the memfd and writes the control page (the creator calls it once). 0 or -errno. */
int fi_ring_init_file(int memfd, uint64_t data_size);
/** Maps a ring file (data twice). 0 or -errno. */
int fi_ring_map(int memfd, int eventfd, fi_ring *ring);
void fi_ring_unmap(fi_ring *ring);

/* ---- producer (the helper) ---- */
/** Reserves a record of `len` payload bytes; NULL when the ring is full (counted). */
void *fi_ring_reserve(fi_ring *ring, uint32_t type, uint32_t len, uint32_t records);
/** Commits a reserved record and wakes a waiting consumer. */
void fi_ring_commit(fi_ring *ring, void *payload);
/** Largest payload the ring takes inline (a quarter of it); larger goes as a memfd. */
static inline uint32_t fi_ring_max_inline(const fi_ring *ring) { return (uint32_t)(ring->data_size / 4); }

/* ---- consumer (the agent) ---- */
typedef struct fi_record {
    uint32_t type;
    uint32_t len;
    const uint8_t *payload;
    uint64_t total; /* bytes the record occupies, header and padding included */
} fi_record;

/** 1: a committed record is in *rec; 0: the ring is empty; 2: the next record is
 *  not committed yet (BUSY); -1: the ring is corrupt (a length past the producer). */
int fi_ring_peek(fi_ring *ring, fi_record *rec);
/** Consumes the record peek returned (zeroes its bytes, advances consumer_pos). */
void fi_ring_release(fi_ring *ring, const fi_record *rec);
/** Skips a BUSY record (after the producer died). 1 when skipped, 0 if none. */
int fi_ring_skip_busy(fi_ring *ring);
/** Announces the consumer will sleep. Returns 1 when a record arrived meanwhile
 *  (do not sleep; the flag is cleared again). */
int fi_ring_prepare_wait(fi_ring *ring);
void fi_ring_cancel_wait(fi_ring *ring);
uint64_t fi_ring_dropped(const fi_ring *ring);
/** Reserved and consumed positions (for waiting until what was emitted so far is delivered). */
uint64_t fi_ring_producer_pos(const fi_ring *ring);
uint64_t fi_ring_consumer_pos(const fi_ring *ring);
uint64_t fi_ring_dropped_batches(const fi_ring *ring);
/** The agent's pipeline dropped a record: producers refuse for `for_ns` from now. */
void fi_ring_set_congested(fi_ring *ring, uint64_t for_ns);

/* ------------------------------------------------------- control protocol */

/** Requests, agent -> helper, one SOCK_SEQPACKET message each:
 *  u32 op, then the op's fields (u32/u64 little endian, strings as u32 length + bytes).
 *  Every request gets one reply: i32 status, str message, str json_pointer, then
 *  the op's results. */
enum {
    FI_OP_DESCRIBE = 1, /**< -> str name, str version, str description, u32 kind, u32 flags,
                             u32 abi_major, u32 abi_minor, u32 functions (FI_FN_ bits) */
    FI_OP_VALIDATE = 2, /**< str instance, str config_json, u64 interval */
    FI_OP_CREATE = 3,   /**< str instance, str config_json, u64 interval */
    FI_OP_ATTACH = 4,   /**< i32 pid, u32 flags, u64 start_ticks, str exe, str comm, str group, str rule, str go_version */
    FI_OP_DETACH = 5,   /**< i32 pid */
    FI_OP_COLLECT = 6,  /**< u64 now_unix_nano */
    FI_OP_START = 7,
    FI_OP_STOP = 8,
    FI_OP_DESTROY = 9   /**< destroy, then the helper exits 0 */
};
/** Which descriptor functions are present. */
enum { FI_FN_ATTACH = 1, FI_FN_DETACH = 2, FI_FN_COLLECT = 4, FI_FN_START = 8, FI_FN_STOP = 16, FI_FN_VALIDATE = 32 };

/** Largest control message. */
#define FI_CONTROL_MAX (1u << 20)

/** The helper's fixed descriptors (set up by the agent when it spawns it). */
enum { FI_FD_CONTROL = 3, FI_FD_RING = 4, FI_FD_EVENT = 5, FI_FD_CRASH = 6, FI_FD_BULK = 7 };

/* ---- system calls Swift's Glibc module does not show (GNU extensions) ---- */
/** pipe2(O_CLOEXEC), the read end grown to 1 MiB (a crash report never blocks). */
int fi_sys_pipe(int fds[2]);
int fi_sys_memfd(const char *name);
/** A non-blocking, close-on-exec eventfd. */
int fi_sys_eventfd(void);
/** pidfd_open(2); -1 where the kernel has none (before 5.3). */
int fi_sys_pidfd_open(int pid);
int fi_sys_pidfd_kill(int pidfd);

/* ---------------------------------------------------------- crash report
 * Text, written by the helper's handler to the crash pipe, one item a line:
 *   crash <signal number> <signal name> code <si_code> addr 0x<fault address>
 *   exit <status>                      (instead of `crash`: the plugin called exit)
 *   thread <tid> <control|plugin> <thread name>
 *   call <op name> pid <pid>          (the control call in progress, or "call none")
 *   frame 0x<pc>                       (innermost first; the handler's own frames skipped)
 *   maps                               (then /proc/self/maps verbatim, to the end) */

#ifdef __cplusplus
}
#endif

#endif /* FERRET_ISOLATION_H */
