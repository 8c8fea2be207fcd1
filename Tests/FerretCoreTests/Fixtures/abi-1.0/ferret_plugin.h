/*
 * ferret_plugin.h — the Ferret plugin ABI, version 1.
 *
 * This header is the whole contract between the `ferret` host and a plugin
 * library. A plugin needs nothing else: build it with
 *
 *     cc -shared -fPIC -o libmy_plugin.so my_plugin.c -I<dir of this header>
 *
 * RULES THAT KEEP THE ABI STABLE
 *  - One exported symbol per library: FERRET_PLUGIN_ENTRY_SYMBOL.
 *  - Every record struct begins with a ferret_header {abi_major, abi_minor,
 *    struct_size}. Structs only ever grow at the end; a reader never touches a
 *    field that lies beyond the struct_size the writer declared. Use
 *    FERRET_INIT(type, ptr) to zero a struct and fill its header.
 *  - The two value types ferret_str and ferret_attr are frozen forever and
 *    carry no header.
 *  - A NULL function pointer means "not implemented".
 *  - Strings are (pointer, length) UTF-8, never NUL-terminated by contract.
 *  - Errors are a status code plus a message written into a host-owned
 *    buffer. Nothing unwinds across this boundary: no C++ exception, no Swift
 *    error, no Rust panic, no longjmp.
 *  - Arrays of records (points, spans, ...) are laid out with the stride given
 *    by the struct_size of their first element.
 *
 * OWNERSHIP
 *  - Pointers passed INTO a function are borrowed for the duration of that
 *    call only. The receiver copies what it wants to keep.
 *  - The ferret_host_api table passed to the entry function lives for the
 *    whole life of the process.
 *  - The descriptor returned by the entry function is owned by the plugin and
 *    must stay valid for the life of the process (a static is typical).
 *    Libraries are never unloaded (dlclose is never called).
 *
 * THREADING CONTRACT
 *  - The host calls plugins on threads of its own, never from a signal handler
 *    and never from a Swift concurrency pool.
 *  - For ONE instance, calls are serialised: create, attach, detach, collect,
 *    start, stop and destroy never run concurrently with each other, and each
 *    returns before the next begins. A pull collector therefore needs no lock
 *    for state touched only by these calls.
 *  - DIFFERENT instances (even of the same library) may be called concurrently
 *    from different threads. Library-global state must be thread-safe.
 *  - The entry function is called once per library, from one thread, before
 *    any other call into the library.
 *  - The emit_* and log functions of the host API are thread-safe, may be
 *    called from any thread (including a push collector's own threads) from
 *    the moment create is entered until destroy is called, and never block:
 *    when the host's queue is full the batch is dropped, counted, and
 *    FERRET_E_DROPPED is returned. All signal kinds share one queue, so an
 *    important event may be dropped under a metric flood; retry if it matters.
 *    log(NULL, ...) is allowed anywhere, including in the entry function.
 *  - A call should return quickly. The host enforces a per-call timeout;
 *    an instance whose call exceeds it is reported and marked unhealthy, and
 *    receives no further calls until that call returns.
 *  - A push collector's start may spawn threads; stop must join them so that
 *    no emit happens after stop returns.
 *
 * LIFECYCLE
 *     entry -> create -> (start)? -> { attach | detach | collect }* -> (stop)? -> destroy
 *  One instance exists per (rule, plugin) pair of the configuration. attach is
 *  called for every process of that rule's groups, when the agent starts or
 *  when the process appears later; detach when it exits or stops matching.
 *  destroy may be called while processes are still attached (agent shutdown,
 *  config reload): it must free everything.
 */
#ifndef FERRET_PLUGIN_H
#define FERRET_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdarg.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- versions */

/** Incremented when an existing field or function changes meaning; a host
 *  refuses a plugin whose major differs from its own. */
#define FERRET_ABI_MAJOR 1
/** Incremented when fields or functions are appended; compatible both ways. */
#define FERRET_ABI_MINOR 0

/** The one symbol a plugin library exports (see ferret_plugin_entry_fn). */
#define FERRET_PLUGIN_ENTRY_SYMBOL "ferret_plugin_entry"

#if defined(__GNUC__) || defined(__clang__)
#define FERRET_EXPORT __attribute__((visibility("default")))
#else
#define FERRET_EXPORT
#endif

/* ----------------------------------------------------------------- basics */

/** Header that begins every record struct. */
typedef struct ferret_header {
    uint16_t abi_major;   /**< FERRET_ABI_MAJOR the writer was compiled with */
    uint16_t abi_minor;   /**< FERRET_ABI_MINOR the writer was compiled with */
    uint32_t struct_size; /**< sizeof the struct as the writer knows it */
} ferret_header;

/** Zero *ptr and fill its header for `type`. */
#define FERRET_INIT(type, ptr)                                   \
    do {                                                         \
        memset((ptr), 0, sizeof(type));                          \
        (ptr)->hdr.abi_major = FERRET_ABI_MAJOR;                 \
        (ptr)->hdr.abi_minor = FERRET_ABI_MINOR;                 \
        (ptr)->hdr.struct_size = (uint32_t)sizeof(type);         \
    } while (0)

/** True when a struct whose header is `hdr` is large enough to contain
 *  `field` of `type`: use before reading a field added in a later minor. */
#define FERRET_HAS_FIELD(type, hdr, field) \
    ((size_t)(hdr).struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/** A UTF-8 string: `len` bytes at `ptr`, not NUL-terminated by contract.
 *  {NULL, 0} is the empty string. Frozen value type (no header). */
typedef struct ferret_str {
    const char *ptr;
    size_t len;
} ferret_str;

/** Make a ferret_str from a NUL-terminated C string (NULL gives ""). */
static inline ferret_str ferret_str_c(const char *s) {
    ferret_str r;
    r.ptr = s;
    r.len = s ? strlen(s) : 0;
    return r;
}

/** Status codes returned by plugin functions and host services. */
typedef enum ferret_status {
    FERRET_OK = 0,
    FERRET_E_FAILED = 1,          /**< generic failure; see the message */
    FERRET_E_INVALID_CONFIG = 2,  /**< create: the configuration is unusable */
    FERRET_E_UNSUPPORTED = 3,     /**< attach: this target is not for me (not
                                       an error; e.g. a Go-only collector
                                       given a C program) */
    FERRET_E_NOT_FOUND = 4,       /**< detach: unknown pid */
    FERRET_E_DROPPED = 5,         /**< emit: host queue full; batch dropped */
    FERRET_E_INVALID_ARGUMENT = 6 /**< emit: malformed record; batch dropped */
} ferret_status;

/** A host-owned buffer a plugin writes an error message into.
 *  The plugin writes at most `cap` bytes of UTF-8 to `data` and sets `len`.
 *  Optionally it names the configuration key the error is about as a JSON
 *  pointer (RFC 6901, e.g. "/interval" or "/ports/2") in `path`, so that the
 *  host can report the YAML file:line:col of that key. */
typedef struct ferret_msg_buf {
    ferret_header hdr;
    char *data;
    size_t cap;
    size_t len;
    char *path;
    size_t path_cap;
    size_t path_len;
} ferret_msg_buf;

/** printf into a message buffer, truncating to its capacity. NULL-safe. */
static inline void ferret_msg_printf(ferret_msg_buf *buf, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static inline void ferret_msg_printf(ferret_msg_buf *buf, const char *fmt, ...) {
    if (!buf || !buf->data || buf->cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf->data, buf->cap, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    buf->len = (size_t)n < buf->cap ? (size_t)n : buf->cap - 1;
}

/** Set the JSON pointer of the configuration key an error is about. */
static inline void ferret_msg_set_path(ferret_msg_buf *buf, const char *json_pointer) {
    if (!buf || !buf->path || buf->path_cap == 0 || !json_pointer) return;
    size_t n = strlen(json_pointer);
    if (n >= buf->path_cap) n = buf->path_cap - 1;
    memcpy(buf->path, json_pointer, n);
    buf->path[n] = 0;
    buf->path_len = n;
}

/* ------------------------------------------------------------- attributes */

typedef enum ferret_attr_type {
    FERRET_ATTR_STRING = 0,
    FERRET_ATTR_INT = 1,
    FERRET_ATTR_DOUBLE = 2,
    FERRET_ATTR_BOOL = 3
} ferret_attr_type;

/** One key/value attribute. Frozen value type (no header). */
typedef struct ferret_attr {
    ferret_str key;
    uint32_t type;      /**< ferret_attr_type */
    uint32_t reserved;  /**< zero */
    union {
        ferret_str s;
        int64_t i;
        double d;
        int64_t b;      /**< 0 = false, anything else = true */
    } value;
} ferret_attr;

/* ---------------------------------------------------------------- signals */

typedef enum ferret_metric_kind {
    FERRET_METRIC_GAUGE = 0,     /**< a value at a point in time */
    FERRET_METRIC_COUNTER = 1,   /**< monotonic cumulative sum since the
                                      process (or measurement) started */
    FERRET_METRIC_HISTOGRAM = 2  /**< cumulative explicit-bucket histogram */
} ferret_metric_kind;

/** One metric point. `pid` names the attached process it was measured on;
 *  the host stamps that process's resource attributes onto it. pid 0 means
 *  "about the plugin instance itself" (the host's own resource is used). */
typedef struct ferret_metric_point {
    ferret_header hdr;
    ferret_str name;           /**< OpenTelemetry style, e.g. "go.goroutine.count" */
    ferret_str unit;           /**< UCUM, e.g. "s", "By", "{goroutine}"; may be empty */
    uint32_t kind;             /**< ferret_metric_kind */
    int32_t pid;
    uint64_t time_unix_nano;   /**< 0 = let the host stamp "now" */
    double value;              /**< gauge and counter value */
    const ferret_attr *attrs;
    size_t attr_count;
    /* histogram only: */
    uint64_t count;
    double sum;
    const double *bounds;          /**< bound_count upper bounds, ascending */
    size_t bound_count;
    const uint64_t *bucket_counts; /**< bound_count + 1 counts */
} ferret_metric_point;

typedef enum ferret_span_kind {
    FERRET_SPAN_INTERNAL = 0,
    FERRET_SPAN_SERVER = 1,
    FERRET_SPAN_CLIENT = 2,
    FERRET_SPAN_PRODUCER = 3,
    FERRET_SPAN_CONSUMER = 4
} ferret_span_kind;

typedef enum ferret_span_status {
    FERRET_SPAN_STATUS_UNSET = 0,
    FERRET_SPAN_STATUS_OK = 1,
    FERRET_SPAN_STATUS_ERROR = 2
} ferret_span_status;

/** One finished span (W3C trace context ids). */
typedef struct ferret_span {
    ferret_header hdr;
    int32_t pid;
    uint32_t kind;               /**< ferret_span_kind */
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_span_id[8];   /**< all zero = root span */
    ferret_str name;
    uint64_t start_time_unix_nano;
    uint64_t end_time_unix_nano;
    uint32_t status;             /**< ferret_span_status */
    uint32_t reserved;
    ferret_str status_message;
    const ferret_attr *attrs;
    size_t attr_count;
} ferret_span;

/** One profile: gzipped pprof profile.proto bytes for a time window. */
typedef struct ferret_profile {
    ferret_header hdr;
    int32_t pid;
    uint32_t reserved;
    const uint8_t *data;        /**< gzipped profile.proto */
    size_t data_len;
    uint64_t start_time_unix_nano;
    uint64_t duration_nano;
    int64_t sample_count;
    ferret_str profile_type;    /**< e.g. "cpu" */
    const ferret_attr *attrs;
    size_t attr_count;
} ferret_profile;

typedef enum ferret_severity {
    FERRET_SEVERITY_DEBUG = 0,
    FERRET_SEVERITY_INFO = 1,
    FERRET_SEVERITY_WARN = 2,
    FERRET_SEVERITY_ERROR = 3
} ferret_severity;

/** One event: something that happened (a leak, an alert, a lifecycle step). */
typedef struct ferret_event {
    ferret_header hdr;
    int32_t pid;
    uint32_t severity;          /**< ferret_severity */
    ferret_str name;            /**< e.g. "go.goroutine.leak" */
    ferret_str body;            /**< human-readable text */
    uint64_t time_unix_nano;    /**< 0 = let the host stamp "now" */
    const ferret_attr *attrs;
    size_t attr_count;
} ferret_event;

/* ----------------------------------------------------------- host services */

/** Opaque per-instance handle the host gives to create; pass it back to the
 *  host services so the host knows which instance is speaking. */
typedef struct ferret_host_ctx ferret_host_ctx;

typedef enum ferret_log_level {
    FERRET_LOG_DEBUG = 0,
    FERRET_LOG_INFO = 1,
    FERRET_LOG_WARN = 2,
    FERRET_LOG_ERROR = 3
} ferret_log_level;

/** Services the host offers. Every function is thread-safe and non-blocking
 *  (see THREADING CONTRACT). Check FERRET_HAS_FIELD before calling a function
 *  added after minor 0. */
typedef struct ferret_host_api {
    ferret_header hdr;

    /** Emit `count` metric points. The array and everything it points to is
     *  borrowed for the call. Returns FERRET_OK, FERRET_E_DROPPED when the
     *  host's queue is full (the batch is dropped and counted), or
     *  FERRET_E_INVALID_ARGUMENT for a malformed record (whole batch dropped,
     *  reason logged once). */
    int32_t (*emit_metrics)(ferret_host_ctx *ctx, const ferret_metric_point *points, size_t count);
    /** Emit finished spans. Same ownership and returns as emit_metrics. */
    int32_t (*emit_spans)(ferret_host_ctx *ctx, const ferret_span *spans, size_t count);
    /** Emit profiles; the host copies the bytes. Same returns as emit_metrics. */
    int32_t (*emit_profiles)(ferret_host_ctx *ctx, const ferret_profile *profiles, size_t count);
    /** Emit events. Same ownership and returns as emit_metrics. */
    int32_t (*emit_events)(ferret_host_ctx *ctx, const ferret_event *events, size_t count);
    /** Write a line to the agent's log, tagged with the instance name.
     *  `message` is borrowed. Returns nothing. */
    void (*log)(ferret_host_ctx *ctx, int32_t level, ferret_str message);
    /** Wall clock, nanoseconds since the Unix epoch. */
    uint64_t (*now_unix_nano)(ferret_host_ctx *ctx);
    /** Monotonic clock (CLOCK_MONOTONIC), nanoseconds. */
    uint64_t (*monotonic_nano)(ferret_host_ctx *ctx);
} ferret_host_api;

/* ------------------------------------------------------------- plugin side */

typedef enum ferret_plugin_kind {
    FERRET_KIND_COLLECTOR = 0,
    FERRET_KIND_AGGREGATOR = 1, /**< reserved for a later minor */
    FERRET_KIND_SINK = 2        /**< reserved for a later minor */
} ferret_plugin_kind;

/** Descriptor flags. */
#define FERRET_COLLECTOR_PULL 0x1u /**< host calls collect() every interval */
#define FERRET_COLLECTOR_PUSH 0x2u /**< plugin emits from its own threads between start() and stop() */

/** Arguments to create. Everything is borrowed for the call. */
typedef struct ferret_create_args {
    ferret_header hdr;
    ferret_host_ctx *host;      /**< keep it; valid until destroy returns */
    const ferret_host_api *api; /**< same table as given to the entry function */
    ferret_str instance_name;   /**< "<rule>/<plugin>", for logs */
    ferret_str config_json;     /**< the plugin's YAML subtree as JSON; "{}" when empty */
    uint64_t interval_nano;     /**< the collection interval that applies */
} ferret_create_args;

/** Target flags. */
#define FERRET_TARGET_GO 0x1u     /**< the executable carries Go build info */
#define FERRET_TARGET_STATIC 0x2u /**< the executable has no PT_INTERP */

/** A process to monitor. Everything is borrowed for the call. */
typedef struct ferret_target {
    ferret_header hdr;
    int32_t pid;
    uint32_t flags;             /**< FERRET_TARGET_* */
    uint64_t start_time_ticks;  /**< /proc/PID/stat field 22; (pid, start) is unique */
    ferret_str exe_path;        /**< resolved /proc/PID/exe */
    ferret_str comm;
    ferret_str group;           /**< process-group name */
    ferret_str rule;            /**< rule name */
    ferret_str go_version;      /**< e.g. "go1.22.10"; empty if not Go */
} ferret_target;

/** What the entry function returns. Owned by the plugin; must outlive the
 *  process (use a static). */
typedef struct ferret_plugin_descriptor {
    ferret_header hdr;
    ferret_str name;            /**< must equal the manifest's name */
    ferret_str version;         /**< the plugin's own version, e.g. "1.2.0" */
    ferret_str description;     /**< one line */
    uint32_t kind;              /**< ferret_plugin_kind */
    uint32_t flags;             /**< FERRET_COLLECTOR_PULL and/or _PUSH */

    /** Make an instance. On success store it in *instance and return
     *  FERRET_OK. On failure return FERRET_E_INVALID_CONFIG or
     *  FERRET_E_FAILED with a message in *err (and optionally the JSON
     *  pointer of the offending key); *instance is then ignored. */
    int32_t (*create)(const ferret_create_args *args, void **instance, ferret_msg_buf *err);
    /** Start monitoring a process. FERRET_OK, FERRET_E_UNSUPPORTED when the
     *  target is not for this plugin (logged at debug level), or an error
     *  with a message. `target` is borrowed. */
    int32_t (*attach)(void *instance, const ferret_target *target, ferret_msg_buf *err);
    /** Stop monitoring `pid` (it exited or no longer matches). FERRET_OK or
     *  FERRET_E_NOT_FOUND. Must not emit for `pid` after returning. */
    int32_t (*detach)(void *instance, int32_t pid, ferret_msg_buf *err);
    /** Pull collectors: measure every attached process and emit. Called
     *  every interval; `now_unix_nano` is the scheduled time. */
    int32_t (*collect)(void *instance, uint64_t now_unix_nano, ferret_msg_buf *err);
    /** Push collectors: begin producing (spawn threads, open perf/bpf). */
    int32_t (*start)(void *instance, ferret_msg_buf *err);
    /** Push collectors: stop producing and join threads; no emit after return. */
    int32_t (*stop)(void *instance, ferret_msg_buf *err);
    /** Free the instance. Called once, last. Returns nothing. */
    void (*destroy)(void *instance);
} ferret_plugin_descriptor;

/** The entry function every plugin exports as FERRET_PLUGIN_ENTRY_SYMBOL.
 *  `host_abi_major`/`host_abi_minor` are the host's ABI version; `host` is
 *  the service table, valid for the life of the process. Returns the
 *  plugin's descriptor (never freed), or NULL if the plugin cannot work
 *  with this host (it should log why through host->log with a NULL ctx). */
typedef const ferret_plugin_descriptor *(*ferret_plugin_entry_fn)(
    uint32_t host_abi_major, uint32_t host_abi_minor, const ferret_host_api *host);

/** Declaration of the entry symbol, for plugins written in C. */
FERRET_EXPORT const ferret_plugin_descriptor *ferret_plugin_entry(
    uint32_t host_abi_major, uint32_t host_abi_minor, const ferret_host_api *host);

#ifdef __cplusplus
}
#endif

#endif /* FERRET_PLUGIN_H */
