// SPDX-License-Identifier: GPL-2.0
// The http_tracer's BPF programs: plain uprobes on the entry and on every RET
// of three functions of Go (register ABI, Go 1.17+) programs:
//   net/http.serverHandler.ServeHTTP  server spans
//   net/http.(*Transport).roundTrip   client spans
//   runtime.newproc1                  which goroutine started which, so a
//                                     client call made from a goroutine a
//                                     handler spawned finds its server span
//                                     (Go 1.19, or when configured: from Go
//                                     1.21 runtime.g.parentGoid says it, and
//                                     costs no probe; net/http starts a
//                                     goroutine per request, so newproc1's
//                                     two probe hits per request matter)
//
// Never uretprobes (golang/go#22008: they corrupt Go stacks); never writes
// into the target; reads only with bpf_probe_read_user. Built by
// scripts/build.sh:
//   clang -target bpf -O2 -g -D__TARGET_ARCH_x86 -c http_tracer.bpf.c
//
// The event layout below is mirrored by Sources/HTTPTracing/HTTPEvent.swift,
// and struct proc_info by ProcOffsets in ProbePlan.swift; keep them in step
// (HTTPTracingTests checks the sizes).
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define METHOD_MAX 16
#define PATH_MAX_ 128
#define HOST_MAX 64
#define ROUTE_MAX 64
#define INFLIGHT_MAX 32768
#define GOROUTINE_CTX_MAX 65536
// Wake the reader only once this much is waiting: one wakeup per event costs
// the traced program a context switch per request (measured: a no-op handler
// lost three quarters of its throughput). The reader also polls on a timer.
#define WAKEUP_BYTES (256 * 1024)

// Go register ABI (amd64): integer args and results in RAX, RBX, RCX, RDI,
// RSI, R8, R9, R10, R11; the current goroutine (g) in R14.
//   serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request)
//     sh = {srv *Server} → RAX; rw = {itab, data} → RBX, RCX; req → RDI.
//   (*Transport).roundTrip(t *Transport, req *Request) (*Response, error)
//     t → RAX, req → RBX; results: *Response → RAX, error {itab, data} → RBX, RCX.
//   newproc1(fn *funcval, callergp *g, callerpc uintptr, ...) *g
//     callergp → RBX; result: the new g → RAX. Runs on the system stack, so
//     its entry and RETs happen on one thread with no goroutine switch between.
#define GO_PARAM1(ctx) ((ctx)->rax)
#define GO_PARAM2(ctx) ((ctx)->rbx)
#define GO_PARAM3(ctx) ((ctx)->rcx)
#define GO_PARAM4(ctx) ((ctx)->rdi)
#define GO_G(ctx) ((ctx)->r14)

// Header map layouts.
#define MAP_HMAP 1   // Go ≤ 1.23: runtime.hmap, buckets of 8
#define MAP_SWISS 2  // Go ≥ 1.24: internal/runtime/maps, swiss tables, groups of 8
// map[string][]string: a string key is 16 bytes, a []string value 24.
//   hmap bucket: tophash[8], keys[8], values[8], overflow *bmap = 336 bytes.
//   swiss group: ctrl word (8 bytes), slots[8] of {key, value} = 328 bytes.
#define HMAP_BUCKET 336
#define HMAP_VALUES 136
#define HMAP_OVERFLOW 328
#define SWISS_GROUP 328
#define SWISS_SLOT 40
#define MIN_TOPHASH 5     // hmap: tophash below this marks an empty or moved slot
#define MAX_GROUPS 16     // groups or buckets read per header lookup
#define MAX_DIR 4         // swiss directory entries read per lookup

// Field offsets of one traced process, written by user space at attach from
// the binary's DWARF or the per-version layout table. 0 means "absent" for
// req_pattern (Request.Method is the only field at offset 0).
struct proc_info {
    __u64 req_method;        // net/http.Request.Method (string)
    __u64 req_url;           // net/http.Request.URL (*url.URL)
    __u64 req_host;          // net/http.Request.Host (string)
    __u64 url_path;          // net/url.URL.Path (string)
    __u64 resp_status;       // net/http.response.status (int)
    __u64 resp_req;          // net/http.response.req (*Request): checks rw is an *http.response
    __u64 req_header;        // net/http.Request.Header (map)
    __u64 req_pattern;       // net/http.Request.Pattern (string, Go 1.23+), 0 = none
    __u64 url_host;          // net/url.URL.Host (string)
    __u64 response_code;     // net/http.Response.StatusCode (int)
    __u64 map_kind;          // MAP_HMAP or MAP_SWISS
    // hmap: B (uint8), buckets, oldbuckets. Swiss: Map.used, Map.dirPtr,
    // Map.dirLen, table.groups.data, table.groups.lengthMask.
    __u64 hmap_b;
    __u64 hmap_buckets;
    __u64 hmap_oldbuckets;
    __u64 swiss_used;
    __u64 swiss_dir_ptr;
    __u64 swiss_dir_len;
    __u64 table_groups;
    __u64 table_mask;
    __u64 g_goid;            // runtime.g.goid
    __u64 g_parent_goid;     // runtime.g.parentGoid (Go 1.21+), 0 = not used
};

struct gkey {
    __u32 pid;
    __u32 pad;
    __u64 goroutine;
};

// Flags of a request record and its event.
#define F_TP_FOUND 1        // an incoming traceparent set the trace and parent
#define F_TP_INVALID 2      // a traceparent header was there but malformed
#define F_TP_MISS 4         // the header map could not be read (counted)
#define F_STATUS_UNKNOWN 8  // the status could not be read
#define F_LOCAL_PARENT 16   // client span parented to a server span of this process
#define F_CLIENT_ERROR 32   // roundTrip returned an error

struct inflight {
    __u64 start_ns;
    __u64 resp;         // server: the *http.response; client: unused
    __u64 req;          // the *http.Request
    __u8 trace_id[16];
    __u8 span_id[8];
    __u8 parent_span_id[8];
    __u16 method_len;
    __u16 path_len;
    __u16 host_len;
    __u16 flags;
    char method[METHOD_MAX];
    char path[PATH_MAX_];
    char host[HOST_MAX];
};

// A goroutine's trace context: the span its work belongs to.
struct span_ctx {
    __u8 trace_id[16];
    __u8 span_id[8];
};

#define EVENT_SERVER 1
#define EVENT_CLIENT 2

// One finished request: 384 bytes.
struct http_event {
    __u32 kind;
    __u32 pid;
    __u64 goroutine;
    __u64 start_ns;     // CLOCK_MONOTONIC (bpf_ktime_get_ns)
    __u64 end_ns;
    __s64 status;
    __u16 route_len;
    __u16 pad16;
    __u32 pad32;
    char route[ROUTE_MAX];
    struct inflight req; // the entry's record (start_ns, ids, strings, flags)
};

_Static_assert(sizeof(struct inflight) == 272, "struct inflight: HTTPEvent.swift expects 272 bytes");
_Static_assert(sizeof(struct http_event) == 384, "struct http_event: HTTPEvent.swift expects 384 bytes");
_Static_assert(sizeof(struct proc_info) == 21 * 8, "struct proc_info: ProcOffsets expects 21 u64");

// Counters (index → meaning), read by user space and reported as self-metrics.
enum counter {
    C_INFLIGHT_FULL = 0,  // entry dropped: the in-flight map was full
    C_RINGBUF_FULL = 1,   // event dropped: the ring buffer was full
    C_UNMATCHED_RET = 2,  // a RET with no entry (attached mid-request)
    C_READ_ERROR = 3,     // a user read failed (field left empty)
    C_ENTRIES = 4,        // server and client entries recorded
    C_EVENTS = 5,         // events submitted
    C_REENTRY = 6,        // an entry re-run after runtime.morestack (kept the first)
    C_HEADER_MISS = 7,    // the header map could not be searched (too big, growing)
    C_STATUS_UNKNOWN = 8, // rw was not an *http.response (HTTP/2, wrapped): no status
    C_GOROUTINE_CTX = 9,  // goroutines that inherited a span context
    C_MAX = 16,
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct proc_info);
} procs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, INFLIGHT_MAX);
    __type(key, struct gkey);
    __type(value, struct inflight);
} inflight SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, INFLIGHT_MAX);
    __type(key, struct gkey);
    __type(value, struct inflight);
} client_inflight SEC(".maps");

// Goroutine → the span context it inherited from the goroutine that started
// it. LRU: goroutines that exit are not seen; their g is reused by a later
// goroutine, whose newproc1 overwrites or removes the entry.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, GOROUTINE_CTX_MAX);
    __type(key, struct gkey);
    __type(value, struct span_ctx);
} goroutine_ctx SEC(".maps");

// {pid, goid} → the server span a goroutine is serving, for the goroutines it
// starts (found through their runtime.g.parentGoid). Filled only when
// proc_info.g_parent_goid is set.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, INFLIGHT_MAX);
    __type(key, struct gkey);
    __type(value, struct span_ctx);
} server_by_goid SEC(".maps");

// Thread id → the context newproc1's caller had, between newproc1's entry and RET.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, __u64);
    __type(value, struct span_ctx);
} spawning SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct inflight);
} scratch SEC(".maps");

// A header bucket or group as read from the target, and the traceparent text.
struct lookup_buf {
    __u8 group[HMAP_BUCKET];
    char text[56];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct lookup_buf);
} lookup SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, C_MAX);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 24);
} events SEC(".maps");

static __always_inline void count(__u32 which)
{
    __u64 *c = bpf_map_lookup_elem(&counters, &which);
    // Atomic: two probe runs can interleave on one CPU (preemption), and a
    // plain += would then lose counts.
    if (c)
        __sync_fetch_and_add(c, 1);
}

static __always_inline __u64 read_u64(__u64 at)
{
    __u64 v = 0;
    if (!at || bpf_probe_read_user(&v, sizeof(v), (void *)at) != 0)
        return 0;
    return v;
}

// Reads the Go string whose header {ptr, len} is at `at` into dst (max bytes);
// returns the length read.
static __always_inline __u16 read_go_string(char *dst, __u32 max, __u64 at)
{
    struct { __u64 ptr; __s64 len; } s = {};
    if (!at || bpf_probe_read_user(&s, sizeof(s), (void *)at) != 0) {
        count(C_READ_ERROR);
        return 0;
    }
    if (s.len <= 0 || !s.ptr)
        return 0;
    __u32 n = s.len > max ? max : (__u32)s.len;
    if (n > max)
        return 0;
    if (bpf_probe_read_user(dst, n, (void *)s.ptr) != 0) {
        count(C_READ_ERROR);
        return 0;
    }
    return (__u16)n;
}

static __always_inline void random_bytes(__u8 *dst, int n)
{
    for (int i = 0; i < n; i += 4) {
        __u32 r = bpf_get_prandom_u32();
        __builtin_memcpy(dst + i, &r, 4);
    }
}

static __always_inline int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

// Parses a W3C traceparent ("00-<32 hex trace id>-<16 hex span id>-<2 hex
// flags>", lowercase) into the record's trace id and parent span id. Returns
// 1 when valid (ids not all zero, version not ff), else 0 and leaves f alone.
static __always_inline int parse_traceparent(const char *t, __u32 len, struct inflight *f)
{
    if (len < 55 || t[2] != '-' || t[35] != '-' || t[52] != '-')
        return 0;
    if (hex_digit(t[0]) < 0 || hex_digit(t[1]) < 0 || (t[0] == 'f' && t[1] == 'f'))
        return 0;
    if (hex_digit(t[53]) < 0 || hex_digit(t[54]) < 0)
        return 0;
    if (len > 55 && t[55] != '-')  // a future version may append "-..."; 00 must not
        return 0;
    __u8 ids[24];
    __u8 any_trace = 0, any_span = 0;
    for (int i = 0; i < 24; i++) {
        int pos = i < 16 ? 3 + 2 * i : 36 + 2 * (i - 16);
        int hi = hex_digit(t[pos]), lo = hex_digit(t[pos + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        ids[i] = (__u8)(hi << 4 | lo);
        if (i < 16)
            any_trace |= ids[i];
        else
            any_span |= ids[i];
    }
    if (!any_trace || !any_span)
        return 0;
    __builtin_memcpy(f->trace_id, ids, 16);
    __builtin_memcpy(f->parent_span_id, ids + 16, 8);
    return 1;
}

// Reads the traceparent value of the []string at `slice` (the first element)
// and applies it to f. Sets F_TP_FOUND or F_TP_INVALID.
static __always_inline void apply_traceparent(__u64 slice, struct inflight *f, struct lookup_buf *b)
{
    struct { __u64 ptr; __s64 len; __s64 cap; } vals = {};
    struct { __u64 ptr; __s64 len; } s = {};
    if (bpf_probe_read_user(&vals, sizeof(vals), (void *)slice) != 0 || vals.len < 1 ||
        bpf_probe_read_user(&s, sizeof(s), (void *)vals.ptr) != 0 || s.len < 55) {
        f->flags |= F_TP_INVALID;
        return;
    }
    __u32 n = s.len > 56 ? 56 : (__u32)s.len;
    if (bpf_probe_read_user(b->text, 56, (void *)s.ptr) != 0) {
        // The value may end less than 56 bytes before a page end: read 55.
        if (bpf_probe_read_user(b->text, 55, (void *)s.ptr) != 0) {
            f->flags |= F_TP_INVALID;
            return;
        }
        n = 55;
    }
    if (parse_traceparent(b->text, n, f))
        f->flags |= F_TP_FOUND;
    else
        f->flags |= F_TP_INVALID;
}

// Searches one hmap bucket or swiss group at `addr` for the key
// "Traceparent" (the canonical form net/textproto gives it). Returns 1 when
// found (and applied), 0 when not there, -1 when the group can't be read.
// Leaves the bytes read in b->group (the caller takes hmap's overflow pointer).
// A global function: the verifier checks it once, not once per call site and
// loop iteration of its callers.
__noinline int scan_group(__u64 addr, __u32 swiss, struct inflight *f, struct lookup_buf *b)
{
    if (!f || !b)
        return -1;
    __u32 size = swiss ? SWISS_GROUP : HMAP_BUCKET;
    if (bpf_probe_read_user(b->group, size, (void *)addr) != 0)
        return -1;
    for (int j = 0; j < 8; j++) {
        __u8 ctrl = b->group[j];
        __u32 key_off, val_off;
        if (swiss) {
            if (ctrl & 0x80)  // empty or deleted
                continue;
            key_off = 8 + SWISS_SLOT * j;
            val_off = key_off + 16;
        } else {
            if (ctrl < MIN_TOPHASH)
                continue;
            key_off = 8 + 16 * j;
            val_off = HMAP_VALUES + 24 * j;
        }
        if (key_off > HMAP_BUCKET - 16 || val_off > HMAP_BUCKET - 24)
            return 0;
        __u64 kptr = *(__u64 *)(b->group + key_off);
        __s64 klen = *(__s64 *)(b->group + key_off + 8);
        if (klen != 11)
            continue;
        char k[11];
        if (bpf_probe_read_user(k, sizeof(k), (void *)kptr) != 0)
            continue;
        if (k[0] != 'T' || k[1] != 'r' || k[2] != 'a' || k[3] != 'c' || k[4] != 'e' || k[5] != 'p' ||
            k[6] != 'a' || k[7] != 'r' || k[8] != 'e' || k[9] != 'n' || k[10] != 't')
            continue;
        // The value's slice header lives in the group at val_off.
        apply_traceparent(addr + val_off, f, b);
        return 1;
    }
    return 0;
}

// Looks up "Traceparent" in the request's header map (both layouts). On a map
// it cannot search within its bounds it sets F_TP_MISS and counts it: the
// span is then emitted without the incoming context.
static __always_inline void find_traceparent(__u64 req, struct proc_info *p, struct inflight *f)
{
    __u32 zero = 0;
    struct lookup_buf *b = bpf_map_lookup_elem(&lookup, &zero);
    if (!b)
        return;
    __u64 m = read_u64(req + p->req_header);
    if (!m)
        return;  // no headers
    int budget = MAX_GROUPS;
    if (p->map_kind == MAP_SWISS) {
        if (read_u64(m + p->swiss_used) == 0)
            return;
        __u64 dir = read_u64(m + p->swiss_dir_ptr);
        __s64 dir_len = (__s64)read_u64(m + p->swiss_dir_len);
        if (!dir)
            goto miss;
        if (dir_len == 0) {  // a small map: dirPtr is its one group
            int r = scan_group(dir, 1, f, b);
            if (r < 0)
                goto miss;
            return;
        }
        if (dir_len > MAX_DIR)
            goto miss;
        __u64 prev = 0;
        for (int d = 0; d < MAX_DIR; d++) {
            if (d >= dir_len)
                break;
            __u64 t = read_u64(dir + 8 * d);
            if (!t)
                goto miss;
            if (t == prev)  // directory entries share a table below global depth
                continue;
            prev = t;
            __u64 groups = read_u64(t + p->table_groups);
            __u64 mask = read_u64(t + p->table_mask);
            if (!groups || mask + 1 > (__u64)budget)
                goto miss;
            for (int g = 0; g < MAX_GROUPS; g++) {
                if (g > mask)
                    break;
                budget--;
                int r = scan_group(groups + (__u64)g * SWISS_GROUP, 1, f, b);
                if (r < 0)
                    goto miss;
                if (r > 0)
                    return;
            }
        }
        return;
    }
    if (p->map_kind != MAP_HMAP)
        goto miss;
    {
        __u8 bshift = 0;
        if (bpf_probe_read_user(&bshift, 1, (void *)(m + p->hmap_b)) != 0)
            goto miss;
        __u64 buckets = read_u64(m + p->hmap_buckets);
        if (!buckets)
            return;  // empty map
        if (read_u64(m + p->hmap_oldbuckets) != 0 || bshift > 4)
            goto miss;  // growing, or too big to search here
        __u64 next = buckets;
        int bucket = 0;
        for (int i = 0; i < MAX_GROUPS; i++) {
            int r = scan_group(next, 0, f, b);
            if (r < 0)
                goto miss;
            if (r > 0)
                return;
            __u64 overflow = *(__u64 *)(b->group + HMAP_OVERFLOW);
            if (overflow) {
                next = overflow;
                continue;
            }
            bucket++;
            if (bucket >= (1 << bshift))
                return;
            next = buckets + (__u64)bucket * HMAP_BUCKET;
        }
        goto miss;  // more buckets and overflows than the budget
    }
miss:
    f->flags |= F_TP_MISS;
    count(C_HEADER_MISS);
}

SEC("uprobe")
int server_entry(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct proc_info *p = bpf_map_lookup_elem(&procs, &pid);
    if (!p)
        return 0;
    __u64 req = GO_PARAM4(ctx);
    struct gkey k = { .pid = pid, .goroutine = GO_G(ctx) };
    // ServeHTTP's prologue calls runtime.morestack when the goroutine's stack
    // is too small, and morestack re-runs the function from its entry: the
    // same call passes here twice. Keep the first record (its start time).
    struct inflight *old = bpf_map_lookup_elem(&inflight, &k);
    if (old && old->req == req) {
        count(C_REENTRY);
        return 0;
    }
    __u32 zero = 0;
    struct inflight *f = bpf_map_lookup_elem(&scratch, &zero);
    if (!f)
        return 0;
    f->start_ns = bpf_ktime_get_ns();
    f->resp = GO_PARAM3(ctx);
    f->req = req;
    f->flags = 0;
    random_bytes(f->trace_id, 16);
    random_bytes(f->span_id, 8);
    __builtin_memset(f->parent_span_id, 0, 8);
    f->method_len = read_go_string(f->method, METHOD_MAX, req + p->req_method);
    f->host_len = read_go_string(f->host, HOST_MAX, req + p->req_host);
    __u64 url = 0;
    f->path_len = 0;
    if (bpf_probe_read_user(&url, sizeof(url), (void *)(req + p->req_url)) == 0 && url)
        f->path_len = read_go_string(f->path, PATH_MAX_, url + p->url_path);
    else
        count(C_READ_ERROR);
    find_traceparent(req, p, f);

    // BPF_ANY: a request whose handler panicked never reached a RET; the next
    // request on the same goroutine replaces its stale entry.
    if (bpf_map_update_elem(&inflight, &k, f, BPF_ANY) != 0) {
        count(C_INFLIGHT_FULL);
        return 0;
    }
    if (p->g_parent_goid) {
        struct gkey gk = { .pid = pid, .goroutine = read_u64(k.goroutine + p->g_goid) };
        struct span_ctx c;
        __builtin_memcpy(c.trace_id, f->trace_id, 16);
        __builtin_memcpy(c.span_id, f->span_id, 8);
        if (gk.goroutine)
            bpf_map_update_elem(&server_by_goid, &gk, &c, BPF_ANY);
    }
    count(C_ENTRIES);
    return 0;
}

// Reserves the event of a finished request and fills what server and client
// events share; NULL (counted) when the ring buffer is full.
static __always_inline struct http_event *new_event(__u32 kind, struct gkey *k, struct inflight *f)
{
    struct http_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        count(C_RINGBUF_FULL);
        return 0;
    }
    e->kind = kind;
    e->pid = k->pid;
    e->goroutine = k->goroutine;
    e->start_ns = f->start_ns;
    e->end_ns = bpf_ktime_get_ns();
    e->route_len = 0;
    e->pad16 = 0;
    e->pad32 = 0;
    __builtin_memcpy(&e->req, f, sizeof(*f));
    return e;
}

static __always_inline void submit(struct http_event *e)
{
    long avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
    bpf_ringbuf_submit(e, avail >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
    count(C_EVENTS);
}

SEC("uprobe")
int server_return(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct proc_info *p = bpf_map_lookup_elem(&procs, &pid);
    if (!p)
        return 0;
    struct gkey k = { .pid = pid, .goroutine = GO_G(ctx) };
    struct inflight *f = bpf_map_lookup_elem(&inflight, &k);
    if (!f) {
        count(C_UNMATCHED_RET);
        return 0;
    }
    struct http_event *e = new_event(EVENT_SERVER, &k, f);
    if (!e) {
        bpf_map_delete_elem(&inflight, &k);
        return 0;
    }
    // rw is an *http.response when its req field is this request; otherwise
    // (HTTP/2's responseWriter, a hijacked or foreign writer) its status is
    // somewhere else, so none is reported.
    __s64 status = 0;
    __u64 resp = f->resp;
    if (!resp || read_u64(resp + p->resp_req) != f->req) {
        e->req.flags |= F_STATUS_UNKNOWN;
        count(C_STATUS_UNKNOWN);
    } else if (bpf_probe_read_user(&status, sizeof(status), (void *)(resp + p->resp_status)) != 0) {
        count(C_READ_ERROR);
        e->req.flags |= F_STATUS_UNKNOWN;
        status = 0;
    }
    e->status = status;
    // The ServeMux pattern that matched (Go 1.23+), set while the handler ran.
    if (p->req_pattern)
        e->route_len = read_go_string(e->route, ROUTE_MAX, f->req + p->req_pattern);
    bpf_map_delete_elem(&inflight, &k);
    if (p->g_parent_goid) {
        struct gkey gk = { .pid = pid, .goroutine = read_u64(k.goroutine + p->g_goid) };
        bpf_map_delete_elem(&server_by_goid, &gk);
    }
    submit(e);
    return 0;
}

// The span context of goroutine g: the request it is serving, else what it
// inherited from the goroutine that started it (newproc1), else the request
// its parent goroutine is serving (parentGoid). Returns 1 when found.
static __always_inline int context_of(__u32 pid, struct proc_info *p, __u64 g, struct span_ctx *out)
{
    struct gkey k = { .pid = pid, .goroutine = g };
    struct inflight *s = bpf_map_lookup_elem(&inflight, &k);
    if (s) {
        __builtin_memcpy(out->trace_id, s->trace_id, 16);
        __builtin_memcpy(out->span_id, s->span_id, 8);
        return 1;
    }
    struct span_ctx *c = bpf_map_lookup_elem(&goroutine_ctx, &k);
    if (c) {
        __builtin_memcpy(out, c, sizeof(*out));
        return 1;
    }
    if (p->g_parent_goid) {
        struct gkey gk = { .pid = pid, .goroutine = read_u64(g + p->g_parent_goid) };
        c = gk.goroutine ? bpf_map_lookup_elem(&server_by_goid, &gk) : 0;
        if (c) {
            __builtin_memcpy(out, c, sizeof(*out));
            return 1;
        }
    }
    return 0;
}

SEC("uprobe")
int client_entry(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct proc_info *p = bpf_map_lookup_elem(&procs, &pid);
    if (!p)
        return 0;
    __u64 req = GO_PARAM2(ctx);
    struct gkey k = { .pid = pid, .goroutine = GO_G(ctx) };
    struct inflight *old = bpf_map_lookup_elem(&client_inflight, &k);
    if (old && old->req == req) {  // morestack re-entry, as for the server
        count(C_REENTRY);
        return 0;
    }
    __u32 zero = 0;
    struct inflight *f = bpf_map_lookup_elem(&scratch, &zero);
    if (!f)
        return 0;
    f->start_ns = bpf_ktime_get_ns();
    f->resp = 0;
    f->req = req;
    f->flags = 0;
    struct span_ctx parent = {};
    if (context_of(pid, p, k.goroutine, &parent)) {
        __builtin_memcpy(f->trace_id, parent.trace_id, 16);
        __builtin_memcpy(f->parent_span_id, parent.span_id, 8);
        f->flags |= F_LOCAL_PARENT;
    } else {
        random_bytes(f->trace_id, 16);
        __builtin_memset(f->parent_span_id, 0, 8);
    }
    random_bytes(f->span_id, 8);
    f->method_len = read_go_string(f->method, METHOD_MAX, req + p->req_method);
    __u64 url = 0;
    f->path_len = 0;
    f->host_len = 0;
    if (bpf_probe_read_user(&url, sizeof(url), (void *)(req + p->req_url)) == 0 && url) {
        f->path_len = read_go_string(f->path, PATH_MAX_, url + p->url_path);
        f->host_len = read_go_string(f->host, HOST_MAX, url + p->url_host);
    } else {
        count(C_READ_ERROR);
    }
    if (bpf_map_update_elem(&client_inflight, &k, f, BPF_ANY) != 0) {
        count(C_INFLIGHT_FULL);
        return 0;
    }
    count(C_ENTRIES);
    return 0;
}

SEC("uprobe")
int client_return(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct proc_info *p = bpf_map_lookup_elem(&procs, &pid);
    if (!p)
        return 0;
    struct gkey k = { .pid = pid, .goroutine = GO_G(ctx) };
    struct inflight *f = bpf_map_lookup_elem(&client_inflight, &k);
    if (!f) {
        count(C_UNMATCHED_RET);
        return 0;
    }
    struct http_event *e = new_event(EVENT_CLIENT, &k, f);
    if (!e) {
        bpf_map_delete_elem(&client_inflight, &k);
        return 0;
    }
    __u64 response = GO_PARAM1(ctx);
    __s64 status = 0;
    if (response) {
        if (bpf_probe_read_user(&status, sizeof(status), (void *)(response + p->response_code)) != 0) {
            count(C_READ_ERROR);
            e->req.flags |= F_STATUS_UNKNOWN;
            status = 0;
        }
    } else {
        e->req.flags |= F_CLIENT_ERROR;
    }
    e->status = status;
    bpf_map_delete_elem(&client_inflight, &k);
    submit(e);
    return 0;
}

SEC("uprobe")
int newproc_entry(struct pt_regs *ctx)
{
    __u64 tid = bpf_get_current_pid_tgid();
    __u32 pid = tid >> 32;
    struct proc_info *p = bpf_map_lookup_elem(&procs, &pid);
    if (!p)
        return 0;
    struct span_ctx c = {};
    if (context_of(pid, p, GO_PARAM2(ctx), &c))
        bpf_map_update_elem(&spawning, &tid, &c, BPF_ANY);
    return 0;
}

SEC("uprobe")
int newproc_return(struct pt_regs *ctx)
{
    __u64 tid = bpf_get_current_pid_tgid();
    __u32 pid = tid >> 32;
    if (!bpf_map_lookup_elem(&procs, &pid))
        return 0;
    struct gkey k = { .pid = pid, .goroutine = GO_PARAM1(ctx) };
    struct span_ctx *c = bpf_map_lookup_elem(&spawning, &tid);
    if (c) {
        bpf_map_update_elem(&goroutine_ctx, &k, c, BPF_ANY);
        bpf_map_delete_elem(&spawning, &tid);
        count(C_GOROUTINE_CTX);
    } else {
        // The g may be a reused one that carried an older context.
        bpf_map_delete_elem(&goroutine_ctx, &k);
    }
    return 0;
}
