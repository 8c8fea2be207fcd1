// SPDX-License-Identifier: GPL-2.0
// The http_tracer's BPF programs: plain uprobes on the entry and on every RET
// of net/http.serverHandler.ServeHTTP in Go (register ABI, Go 1.17+) programs.
//
// Never uretprobes (golang/go#22008); never writes into the target; reads
// only with bpf_probe_read_user. Built by scripts/build.sh:
//   clang -target bpf -O2 -g -D__TARGET_ARCH_x86 -c http_tracer.bpf.c
//
// The event layout below is mirrored by Sources/HTTPTracing/HTTPEvent.swift;
// keep both in step (HTTPTracingTests checks the size).
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define METHOD_MAX 16
#define PATH_MAX_ 128
#define HOST_MAX 64
#define INFLIGHT_MAX 32768

// Go register ABI (amd64): integer args in RAX, RBX, RCX, RDI, RSI, R8, R9,
// R10, R11; the current goroutine (g) in R14.
//   serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request)
//   sh = {srv *Server} → RAX; rw = interface {itab, data} → RBX, RCX; req → RDI.
#define GO_ARG_RW_DATA(ctx) ((ctx)->rcx)
#define GO_ARG_REQ(ctx) ((ctx)->rdi)
#define GO_G(ctx) ((ctx)->r14)

// Field offsets of one traced process, written by user space at attach from the
// binary's DWARF or the per-version layout table.
struct proc_info {
    __u64 req_method;   // net/http.Request.Method (string)
    __u64 req_url;      // net/http.Request.URL (*url.URL)
    __u64 req_host;     // net/http.Request.Host (string)
    __u64 url_path;     // net/url.URL.Path (string)
    __u64 resp_status;  // net/http.response.status (int)
};

struct inflight_key {
    __u32 pid;
    __u32 pad;
    __u64 goroutine;
};

struct inflight {
    __u64 start_ns;
    __u64 resp;
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

#define EVENT_SERVER 1

// One finished request: 304 bytes.
struct http_event {
    __u32 kind;
    __u32 pid;
    __u64 goroutine;
    __u64 start_ns;     // CLOCK_MONOTONIC (bpf_ktime_get_ns)
    __u64 end_ns;
    __s64 status;
    struct inflight req; // the entry's record (start_ns, ids, strings)
};

// Counters (index → meaning), read by user space and reported as self-metrics.
enum counter {
    C_INFLIGHT_FULL = 0,  // entry dropped: the in-flight map was full
    C_RINGBUF_FULL = 1,   // event dropped: the ring buffer was full
    C_UNMATCHED_RET = 2,  // a RET with no entry (attached mid-request)
    C_READ_ERROR = 3,     // a user read failed (field left empty)
    C_ENTRIES = 4,        // entries recorded
    C_EVENTS = 5,         // events submitted
    C_MAX = 8,
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
    __type(key, struct inflight_key);
    __type(value, struct inflight);
} inflight SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct inflight);
} scratch SEC(".maps");

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

SEC("uprobe")
int server_entry(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct proc_info *p = bpf_map_lookup_elem(&procs, &pid);
    if (!p)
        return 0;
    __u32 zero = 0;
    struct inflight *f = bpf_map_lookup_elem(&scratch, &zero);
    if (!f)
        return 0;
    __u64 req = GO_ARG_REQ(ctx);
    f->start_ns = bpf_ktime_get_ns();
    f->resp = GO_ARG_RW_DATA(ctx);
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

    struct inflight_key k = { .pid = pid, .goroutine = GO_G(ctx) };
    // BPF_ANY: a request whose handler panicked never reached a RET; the next
    // request on the same goroutine replaces its stale entry.
    if (bpf_map_update_elem(&inflight, &k, f, BPF_ANY) != 0) {
        count(C_INFLIGHT_FULL);
        return 0;
    }
    count(C_ENTRIES);
    return 0;
}

SEC("uprobe")
int server_return(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct proc_info *p = bpf_map_lookup_elem(&procs, &pid);
    if (!p)
        return 0;
    struct inflight_key k = { .pid = pid, .goroutine = GO_G(ctx) };
    struct inflight *f = bpf_map_lookup_elem(&inflight, &k);
    if (!f) {
        count(C_UNMATCHED_RET);
        return 0;
    }
    struct http_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        count(C_RINGBUF_FULL);
        bpf_map_delete_elem(&inflight, &k);
        return 0;
    }
    e->kind = EVENT_SERVER;
    e->pid = pid;
    e->goroutine = k.goroutine;
    e->start_ns = f->start_ns;
    e->end_ns = bpf_ktime_get_ns();
    __builtin_memcpy(&e->req, f, sizeof(*f));
    __s64 status = 0;
    if (f->resp && bpf_probe_read_user(&status, sizeof(status), (void *)(f->resp + p->resp_status)) != 0) {
        count(C_READ_ERROR);
        status = 0;
    }
    e->status = status;
    bpf_map_delete_elem(&inflight, &k);
    bpf_ringbuf_submit(e, 0);
    count(C_EVENTS);
    return 0;
}
