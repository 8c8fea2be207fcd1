/* The host table inside the helper (issue #18): emit_* serialize the plugin's
 * records into the shared ring as relocatable arrays (ferret_isolation.h), log
 * goes the same way, the clocks are answered here.
 *
 * Each emit first serializes into a per-thread scratch buffer (reading the
 * plugin's memory: a wild pointer faults here, before any ring space is held),
 * then reserves ring space, copies and commits. The structural checks that
 * walking the plugin's arrays needs (struct_size, abi_major, counts, NULL
 * arrays, lengths) are made here with the messages the agent's conversion
 * uses; everything else (names, UTF-8, kinds, NaN, ids) is checked by the
 * agent, by the same code that checks in-process emits. */
#define _GNU_SOURCE
#include "helper.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

fi_ring g_ring;
int g_bulk_fd = -1;
volatile int g_ctx_live;
static pthread_mutex_t bulk_lock = PTHREAD_MUTEX_INITIALIZER;

/* Limits shared with the agent's conversion (HostServices). */
#define MAX_ATTRS 1024
#define MAX_BOUNDS 4096
#define MAX_STRING (16u << 20)
#define MAX_PROFILE (256u << 20)

static __thread fh_buf scratch;
static __thread char why[320];

static uint64_t clock_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- relocation ---- */

typedef struct enc { fh_buf *b; const char *err; } enc;

static void align8(fh_buf *b) {
    size_t pad = (8 - (b->len & 7)) & 7;
    if (pad) { void *p = fh_buf_grow(b, pad); if (p) memset(p, 0, pad); }
}

/* Appends `n` bytes at `p` and returns their offset (FI_NULL for NULL or none). */
static uint64_t put_bytes(enc *e, const void *p, size_t n, size_t limit, const char *what) {
    if (!p || n == 0) return FI_NULL;
    if (n > limit) {
        if (!e->err) { snprintf(why, sizeof why, "%s of %zu bytes is over the %zu-byte limit", what, n, limit); e->err = why; }
        return FI_NULL;
    }
    align8(e->b);
    uint64_t off = e->b->len;
    void *d = fh_buf_grow(e->b, n);
    if (!d) { e->err = "out of memory serializing the batch"; return FI_NULL; }
    memcpy(d, p, n);
    return off;
}

#define REL_STR(e, s, what) ((s).ptr = (const char *)(uintptr_t)put_bytes((e), (s).ptr, (s).len, MAX_STRING, (what)))

/* The attribute array of a record at `*attrs`/`count`, relocated in place. */
static void put_attrs(enc *e, const ferret_attr **attrs, size_t count) {
    if (count == 0 || *attrs == NULL) { *attrs = (const ferret_attr *)(uintptr_t)FI_NULL; return; }
    if (count > MAX_ATTRS) {
        if (!e->err) { snprintf(why, sizeof why, "too many attributes (%zu)", count); e->err = why; }
        return;
    }
    uint64_t off = put_bytes(e, *attrs, count * sizeof(ferret_attr), SIZE_MAX, "attributes");
    if (e->err) return;
    for (size_t i = 0; i < count; i++) {
        ferret_attr *a = (ferret_attr *)(e->b->data + off) + i;
        ferret_str key = a->key;
        uint64_t k = put_bytes(e, key.ptr, key.len, MAX_STRING, "an attribute key");
        a = (ferret_attr *)(e->b->data + off) + i; /* the buffer may have moved */
        a->key.ptr = (const char *)(uintptr_t)k;
        if (a->type == FERRET_ATTR_STRING) {
            ferret_str s = a->value.s;
            uint64_t v = put_bytes(e, s.ptr, s.len, MAX_STRING, "an attribute value");
            a = (ferret_attr *)(e->b->data + off) + i;
            a->value.s.ptr = (const char *)(uintptr_t)v;
        }
    }
    *attrs = (const ferret_attr *)(uintptr_t)off;
}

/* Walks a plugin's record array: the stride is the first record's struct_size. */
static const char *check_array(const void *base, size_t count, uint32_t minimum, const char *what, size_t *stride) {
    if (!base) { snprintf(why, sizeof why, "%s is NULL", what); return why; }
    ferret_header first, h;
    memcpy(&first, base, sizeof first);
    if (first.struct_size < minimum) {
        snprintf(why, sizeof why, "struct_size %u is smaller than the ABI 1.0 size %u", first.struct_size, minimum);
        return why;
    }
    for (size_t i = 0; i < count; i++) {
        memcpy(&h, (const uint8_t *)base + i * first.struct_size, sizeof h);
        if (h.abi_major != FERRET_ABI_MAJOR) { snprintf(why, sizeof why, "record %zu has abi_major %u", i, h.abi_major); return why; }
        if (h.struct_size != first.struct_size) {
            snprintf(why, sizeof why, "record %zu has struct_size %u, the first has %u", i, h.struct_size, first.struct_size);
            return why;
        }
    }
    *stride = first.struct_size;
    return NULL;
}

/* ---- records to the ring ---- */

/* A small record: two 32-bit words, then `n` bytes (refusals and log lines). */
static void put_words_text(uint32_t type, uint32_t w0, uint32_t w1, const char *text, size_t n) {
    uint8_t *p = fi_ring_reserve(&g_ring, type, (uint32_t)(8 + n), 0);
    if (!p) return;
    memcpy(p, &w0, 4);
    memcpy(p + 4, &w1, 4);
    if (n && text) memcpy(p + 8, text, n);
    fi_ring_commit(&g_ring, p);
}

static int32_t refuse(uint32_t kind, size_t count, const char *reason) {
    size_t n = strlen(reason);
    put_words_text(FI_REC_REFUSED, kind, (uint32_t)count, reason, n > 1024 ? 1024 : n);
    return FERRET_E_INVALID_ARGUMENT;
}

/* A payload larger than the ring takes goes as a sealed memfd on the bulk
 * socket; its ring record keeps its place in the order. */
static int32_t send_bulk(uint32_t kind, const uint8_t *data, size_t len, size_t records) {
    int32_t status = FERRET_E_DROPPED;
    pthread_mutex_lock(&bulk_lock);
    uint8_t *rec = fi_ring_reserve(&g_ring, FI_REC_BULK, 16, (uint32_t)records);
    if (!rec) { pthread_mutex_unlock(&bulk_lock); return FERRET_E_DROPPED; }
    uint64_t sent = 0;
    int fd = memfd_create("ferret-bulk", MFD_CLOEXEC);
    if (fd >= 0) {
        size_t off = 0;
        while (off < len) {
            ssize_t w = write(fd, data + off, len - off);
            if (w <= 0) break;
            off += (size_t)w;
        }
        if (off == len) {
            char control[CMSG_SPACE(sizeof(int))];
            memset(control, 0, sizeof control);
            uint64_t tag = len;
            struct iovec iov = {.iov_base = &tag, .iov_len = sizeof tag};
            struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fd, sizeof fd);
            if (sendmsg(g_bulk_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof tag) { sent = len; status = FERRET_OK; }
        }
        close(fd);
    }
    uint32_t k = kind, zero = 0;
    memcpy(rec, &k, 4);
    memcpy(rec + 4, &zero, 4);
    memcpy(rec + 8, &sent, 8); /* 0: nothing was sent, the agent counts a drop */
    fi_ring_commit(&g_ring, rec);
    pthread_mutex_unlock(&bulk_lock);
    return status;
}

static int32_t publish(uint32_t kind, enc *e, size_t count) {
    if (e->err) return refuse(kind, count, e->err);
    if (e->b->failed) return refuse(kind, count, "out of memory serializing the batch");
    if (e->b->len > fi_ring_max_inline(&g_ring)) return send_bulk(kind, e->b->data, e->b->len, count);
    uint8_t *p = fi_ring_reserve(&g_ring, kind, (uint32_t)e->b->len, (uint32_t)count);
    if (!p) return FERRET_E_DROPPED;
    memcpy(p, e->b->data, e->b->len);
    fi_ring_commit(&g_ring, p);
    return FERRET_OK;
}

/* The frame every emit shares: the array header, then `count` host-size structs. */
#define BEGIN(type, minimum, what)                                                          \
    if (ctx != FH_CTX || !g_ctx_live) return FERRET_E_INVALID_ARGUMENT;                     \
    if (count == 0) return FERRET_OK;                                                       \
    size_t stride = 0;                                                                      \
    const char *bad = check_array(items, count, (minimum), (what), &stride);                \
    if (bad) return refuse(kind, count, bad);                                               \
    enc e = {.b = &scratch, .err = NULL};                                                   \
    fh_buf_reset(e.b);                                                                      \
    fh_put_u32(e.b, (uint32_t)count);                                                       \
    fh_put_u32(e.b, (uint32_t)sizeof(type));                                                \
    size_t first = e.b->len;                                                                \
    if (!fh_buf_grow(e.b, count * sizeof(type))) return refuse(kind, count, "out of memory"); \
    for (size_t i = 0; i < count && !e.err; i++) {                                          \
        type r;                                                                             \
        ferret_copy(&r, sizeof r, (const uint8_t *)items + i * stride);

#define END(type)                                                                           \
        memcpy(e.b->data + first + i * sizeof(type), &r, sizeof r);                         \
    }                                                                                       \
    return publish(kind, &e, count);

static int32_t emit_metrics(ferret_host_ctx *ctx, const ferret_metric_point *items, size_t count) {
    const uint32_t kind = FI_REC_METRICS;
    uint64_t now = clock_ns(CLOCK_REALTIME);
    BEGIN(ferret_metric_point, FERRET_SIZE_1_0_ferret_metric_point, "points")
    if (r.time_unix_nano == 0) r.time_unix_nano = now; /* stamped at the emit, as in the agent */
    REL_STR(&e, r.name, "a metric name");
    REL_STR(&e, r.unit, "a unit");
    put_attrs(&e, &r.attrs, r.attr_count);
    if (r.kind == FERRET_METRIC_HISTOGRAM && r.bound_count <= MAX_BOUNDS) {
        r.bounds = (const double *)(uintptr_t)put_bytes(&e, r.bounds, r.bound_count * sizeof(double), SIZE_MAX, "bounds");
        if (r.bucket_counts) r.bucket_counts = (const uint64_t *)(uintptr_t)put_bytes(&e, r.bucket_counts, (r.bound_count + 1) * sizeof(uint64_t), SIZE_MAX, "bucket counts");
        else r.bucket_counts = (const uint64_t *)(uintptr_t)FI_NULL;
    } else {
        /* Not read for gauges and counters; too many bounds is refused by the agent. */
        r.bounds = (const double *)(uintptr_t)FI_NULL;
        r.bucket_counts = (const uint64_t *)(uintptr_t)FI_NULL;
    }
    END(ferret_metric_point)
}

static int32_t emit_spans(ferret_host_ctx *ctx, const ferret_span *items, size_t count) {
    const uint32_t kind = FI_REC_SPANS;
    BEGIN(ferret_span, FERRET_SIZE_1_0_ferret_span, "spans")
    REL_STR(&e, r.name, "a span name");
    REL_STR(&e, r.status_message, "a status message");
    put_attrs(&e, &r.attrs, r.attr_count);
    END(ferret_span)
}

static int32_t emit_profiles(ferret_host_ctx *ctx, const ferret_profile *items, size_t count) {
    const uint32_t kind = FI_REC_PROFILES;
    BEGIN(ferret_profile, FERRET_SIZE_1_0_ferret_profile, "profiles")
    if (r.data_len > MAX_PROFILE) {
        snprintf(why, sizeof why, "profile of %zu bytes is over 256 MiB", r.data_len);
        e.err = why;
        break;
    }
    r.data = (const uint8_t *)(uintptr_t)put_bytes(&e, r.data, r.data_len, MAX_PROFILE, "profile data");
    REL_STR(&e, r.profile_type, "a profile type");
    put_attrs(&e, &r.attrs, r.attr_count);
    END(ferret_profile)
}

static int32_t emit_events(ferret_host_ctx *ctx, const ferret_event *items, size_t count) {
    const uint32_t kind = FI_REC_EVENTS;
    uint64_t now = clock_ns(CLOCK_REALTIME);
    BEGIN(ferret_event, FERRET_SIZE_1_0_ferret_event, "events")
    if (r.time_unix_nano == 0) r.time_unix_nano = now;
    REL_STR(&e, r.name, "an event name");
    REL_STR(&e, r.body, "an event body");
    put_attrs(&e, &r.attrs, r.attr_count);
    END(ferret_event)
}

static void log_record(int has_ctx, int32_t level, const char *p, size_t n) {
    put_words_text(FI_REC_LOG, (uint32_t)level, (uint32_t)has_ctx, p, n > 65536 ? 65536 : n);
}

static void host_log(ferret_host_ctx *ctx, int32_t level, ferret_str message) {
    log_record(ctx == FH_CTX, level, message.ptr, message.ptr ? message.len : 0);
}

void fh_log(int32_t level, const char *text) { log_record(0, level, text, strlen(text)); }

static uint64_t now_unix(ferret_host_ctx *ctx) { (void)ctx; return clock_ns(CLOCK_REALTIME); }
static uint64_t now_mono(ferret_host_ctx *ctx) { (void)ctx; return clock_ns(CLOCK_MONOTONIC); }

const ferret_host_api *fh_host_table(void) {
    static ferret_host_api api;
    FERRET_INIT(ferret_host_api, &api);
    api.emit_metrics = emit_metrics;
    api.emit_spans = emit_spans;
    api.emit_profiles = emit_profiles;
    api.emit_events = emit_events;
    api.log = host_log;
    api.now_unix_nano = now_unix;
    api.monotonic_nano = now_mono;
    return &api;
}
