/*
 * fdcount.c — an example Ferret collector plugin written in plain C99.
 *
 * For every attached process it reports how many file descriptors the
 * process has open (the number of entries in /proc/PID/fd), and optionally
 * raises an event when that number exceeds a configured limit.
 *
 * Configuration (the plugin's YAML subtree, handed to create() as JSON):
 *
 *     fdcount: { warn_above: 1000 }   # optional; 0 (the default) = no events
 *
 * Build (see Makefile):
 *
 *     cc -shared -fPIC -O2 -Wall -Wextra -Werror \
 *        -I../../Sources/FerretPluginABI/include -o libferret_fdcount.so fdcount.c
 *
 * It needs nothing but ferret_plugin.h and libc.
 */

/* opendir/readdir/snprintf are POSIX; ask for them before any libc header
 * (ferret_plugin.h itself includes <stdio.h> and <string.h>). */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferret_plugin.h"

#define FDC_NAME "fdcount"
#define FDC_VERSION "1.0.0"
#define FDC_DESCRIPTION "Counts the open file descriptors of each attached process"
#define FDC_METRIC "process.open_file_descriptor.count"
#define FDC_UNIT "{file_descriptor}"
#define FDC_EVENT "fdcount.high"
#define FDC_BODY_CAP 160

/* ------------------------------------------------------------ the instance */

/* One attached process. */
typedef struct fdc_target {
    int32_t pid;
    int warned; /* already logged that /proc/PID/fd cannot be read */
} fdc_target;

/* One plugin instance (one per rule using fdcount). Everything the plugin
 * needs lives here, so instances never share mutable state and the host may
 * drive different instances from different threads at once. */
typedef struct fdc_instance {
    const ferret_host_api *api; /* from create args; lives for the process */
    ferret_host_ctx *host;      /* pass back to every host service */
    int64_t warn_above;         /* 0 = off */

    fdc_target *targets;
    size_t count;
    size_t cap;

    /* Scratch space for collect(), grown together with `targets` so that a
     * collect never allocates. Index i belongs to targets[i]. */
    ferret_metric_point *points;
    ferret_event *events;
    ferret_attr *event_attrs;
    char (*bodies)[FDC_BODY_CAP];
} fdc_instance;

/* Log through the host; the host tags the line with the instance name. */
static void fdc_log(const fdc_instance *in, int32_t level, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void fdc_log(const fdc_instance *in, int32_t level, const char *fmt, ...) {
    char line[256];
    va_list ap;
    int n;
    if (!in->api->log) return;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;
    {
        ferret_str msg;
        msg.ptr = line;
        msg.len = (size_t)n;
        in->api->log(in->host, level, msg);
    }
}

/* Grow every per-target array to hold at least `want` entries. */
static int fdc_reserve(fdc_instance *in, size_t want) {
    size_t cap;
    void *p;
    if (want <= in->cap) return 0;
    cap = in->cap ? in->cap * 2 : 8;
    while (cap < want) cap *= 2;

    /* realloc each array separately; on failure the old (smaller) arrays stay
     * valid, and `cap` is only raised once all of them have grown. */
    p = realloc(in->targets, cap * sizeof *in->targets);
    if (!p) return -1;
    in->targets = p;
    p = realloc(in->points, cap * sizeof *in->points);
    if (!p) return -1;
    in->points = p;
    p = realloc(in->events, cap * sizeof *in->events);
    if (!p) return -1;
    in->events = p;
    p = realloc(in->event_attrs, cap * sizeof *in->event_attrs);
    if (!p) return -1;
    in->event_attrs = p;
    p = realloc(in->bodies, cap * sizeof *in->bodies);
    if (!p) return -1;
    in->bodies = p;
    in->cap = cap;
    return 0;
}

static void fdc_free(fdc_instance *in) {
    if (!in) return;
    free(in->targets);
    free(in->points);
    free(in->events);
    free(in->event_attrs);
    free(in->bodies);
    free(in);
}

/* --------------------------------------------------- a tiny JSON scanner
 *
 * The host hands over the plugin's configuration as a JSON object; for
 * fdcount it is "{}" or {"warn_above": N}. This scanner understands exactly
 * enough JSON to walk the top-level object: it reads each key (decoding the
 * common escapes) and returns the raw text of its value, skipping nested
 * objects, arrays and strings. It never reads past config_json.len.
 */
typedef struct fdc_scan {
    const char *p;
    const char *end;
} fdc_scan;

static void scan_ws(fdc_scan *s) {
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* Read a JSON string at s->p into out (truncated to cap-1, NUL-terminated).
 * \uXXXX escapes are kept as '?' — good enough for error messages. */
static int scan_string(fdc_scan *s, char *out, size_t cap) {
    size_t n = 0;
    if (s->p >= s->end || *s->p != '"') return -1;
    s->p++;
    while (s->p < s->end && *s->p != '"') {
        char c = *s->p++;
        if (c == '\\') {
            if (s->p >= s->end) return -1;
            c = *s->p++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u':
                if (s->end - s->p < 4) return -1;
                s->p += 4;
                c = '?';
                break;
            default: break; /* \" \\ \/ */
            }
        }
        if (out && n + 1 < cap) out[n++] = c;
    }
    if (s->p >= s->end) return -1; /* unterminated */
    s->p++;                        /* closing quote */
    if (out && cap) out[n] = 0;
    return 0;
}

/* Skip one JSON value; [*vstart, *vend) is its raw text, without trailing
 * whitespace. Stops at the ',' or '}' that ends it. */
static int scan_value(fdc_scan *s, const char **vstart, const char **vend) {
    int depth = 0;
    scan_ws(s);
    *vstart = s->p;
    while (s->p < s->end) {
        char c = *s->p;
        if (c == '"') {
            if (scan_string(s, NULL, 0) != 0) return -1;
        } else if (c == '{' || c == '[') {
            depth++;
            s->p++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) break;
            depth--;
            s->p++;
        } else if (c == ',' && depth == 0) {
            break;
        } else {
            s->p++;
        }
    }
    if (depth != 0) return -1;
    *vend = s->p;
    while (*vend > *vstart && ((*vend)[-1] == ' ' || (*vend)[-1] == '\t' ||
                               (*vend)[-1] == '\n' || (*vend)[-1] == '\r'))
        (*vend)--;
    return *vend > *vstart ? 0 : -1;
}

/* Parse [v, end) as a non-negative decimal integer that fits in int64. */
static int parse_uint(const char *v, const char *end, int64_t *out) {
    int64_t x = 0;
    if (v >= end) return -1;
    for (; v < end; v++) {
        if (*v < '0' || *v > '9') return -1;
        if (x > (INT64_MAX - (*v - '0')) / 10) return -1;
        x = x * 10 + (*v - '0');
    }
    *out = x;
    return 0;
}

/* Write "/" + key as an RFC 6901 JSON pointer ('~' -> "~0", '/' -> "~1"). */
static void json_pointer(char *out, size_t cap, const char *key) {
    size_t n = 0;
    if (cap < 2) return;
    out[n++] = '/';
    for (; *key && n + 2 < cap; key++) {
        if (*key == '~' || *key == '/') {
            out[n++] = '~';
            out[n++] = *key == '~' ? '0' : '1';
        } else {
            out[n++] = *key;
        }
    }
    out[n] = 0;
}

/* Apply config_json to `in`; on error fill `err` and return INVALID_CONFIG. */
static int32_t fdc_parse_config(fdc_instance *in, ferret_str json, ferret_msg_buf *err) {
    fdc_scan s;
    s.p = json.ptr;
    s.end = json.ptr ? json.ptr + json.len : json.ptr;

    scan_ws(&s);
    if (s.p == s.end) return FERRET_OK; /* empty: treat as {} */
    if (*s.p != '{') {
        ferret_msg_printf(err, "configuration must be a mapping");
        ferret_msg_set_path(err, "");
        return FERRET_E_INVALID_CONFIG;
    }
    s.p++;
    for (;;) {
        char key[128];
        char path[2 * sizeof key + 2];
        const char *v, *vend;

        scan_ws(&s);
        if (s.p < s.end && *s.p == '}') return FERRET_OK;
        if (scan_string(&s, key, sizeof key) != 0) break;
        scan_ws(&s);
        if (s.p >= s.end || *s.p != ':') break;
        s.p++;
        if (scan_value(&s, &v, &vend) != 0) break;

        json_pointer(path, sizeof path, key);
        if (strcmp(key, "warn_above") == 0) {
            if (parse_uint(v, vend, &in->warn_above) != 0) {
                ferret_msg_printf(err, "warn_above must be a non-negative integer, got %.*s",
                                  (int)(vend - v > 64 ? 64 : vend - v), v);
                ferret_msg_set_path(err, path);
                return FERRET_E_INVALID_CONFIG;
            }
        } else {
            ferret_msg_printf(err, "unknown key '%s' (fdcount accepts only warn_above)", key);
            ferret_msg_set_path(err, path);
            return FERRET_E_INVALID_CONFIG;
        }

        scan_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (s.p < s.end && *s.p == '}') return FERRET_OK;
        break;
    }
    ferret_msg_printf(err, "configuration is not valid JSON");
    return FERRET_E_INVALID_CONFIG;
}

/* -------------------------------------------------------- plugin functions */

static int32_t fdc_create(const ferret_create_args *args, void **instance, ferret_msg_buf *err) {
    fdc_instance *in = calloc(1, sizeof *in);
    int32_t rc;
    if (!in) {
        ferret_msg_printf(err, "out of memory");
        return FERRET_E_FAILED;
    }
    in->api = args->api;
    in->host = args->host;
    rc = fdc_parse_config(in, args->config_json, err);
    if (rc != FERRET_OK) {
        fdc_free(in);
        return rc;
    }
    *instance = in;
    return FERRET_OK;
}

/* ABI 1.1: check a configuration without making an instance (`ferret
 * validate` and config reloads call it). The same parser as create, on a
 * scratch instance that owns nothing. */
static int32_t fdc_validate(const ferret_create_args *args, ferret_msg_buf *err) {
    fdc_instance scratch;
    memset(&scratch, 0, sizeof scratch);
    return fdc_parse_config(&scratch, args->config_json, err);
}

static int32_t fdc_attach(void *instance, const ferret_target *target, ferret_msg_buf *err) {
    fdc_instance *in = instance;
    size_t i;
    if (target->pid <= 0) {
        ferret_msg_printf(err, "invalid pid %" PRId32, target->pid);
        return FERRET_E_FAILED;
    }
    for (i = 0; i < in->count; i++)
        if (in->targets[i].pid == target->pid) return FERRET_OK; /* already known */
    if (fdc_reserve(in, in->count + 1) != 0) {
        ferret_msg_printf(err, "out of memory");
        return FERRET_E_FAILED;
    }
    in->targets[in->count].pid = target->pid;
    in->targets[in->count].warned = 0;
    in->count++;
    return FERRET_OK; /* nothing to emit until the first collect */
}

static int32_t fdc_detach(void *instance, int32_t pid, ferret_msg_buf *err) {
    fdc_instance *in = instance;
    size_t i;
    for (i = 0; i < in->count; i++) {
        if (in->targets[i].pid == pid) {
            in->targets[i] = in->targets[--in->count]; /* order does not matter */
            return FERRET_OK;
        }
    }
    ferret_msg_printf(err, "pid %" PRId32 " is not attached", pid);
    return FERRET_E_NOT_FOUND;
}

/* Number of entries in /proc/PID/fd, or -1 with errno set. */
static long count_fds(int32_t pid) {
    char dir[64];
    DIR *d;
    struct dirent *e;
    long n = 0;
    snprintf(dir, sizeof dir, "/proc/%" PRId32 "/fd", pid);
    d = opendir(dir);
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        n++;
    }
    closedir(d);
    return n;
}

static int32_t fdc_collect(void *instance, uint64_t now_unix_nano, ferret_msg_buf *err) {
    fdc_instance *in = instance;
    size_t i, npoints = 0, nevents = 0;
    int32_t rc;
    (void)now_unix_nano; /* time 0 below: the host stamps each point */

    for (i = 0; i < in->count; i++) {
        fdc_target *t = &in->targets[i];
        long fds = count_fds(t->pid);
        ferret_metric_point *pt;

        if (fds < 0) {
            /* Gone (detach will follow) or not ours to read: skip it. Log once
             * per target so a permanent EACCES does not flood the log. */
            if (!t->warned) {
                fdc_log(in, FERRET_LOG_WARN, "cannot read /proc/%" PRId32 "/fd: %s; skipping pid",
                        t->pid, strerror(errno));
                t->warned = 1;
            }
            continue;
        }

        pt = &in->points[npoints++];
        FERRET_INIT(ferret_metric_point, pt);
        pt->name = ferret_str_c(FDC_METRIC);
        pt->unit = ferret_str_c(FDC_UNIT);
        pt->kind = FERRET_METRIC_GAUGE;
        pt->pid = t->pid;
        pt->time_unix_nano = 0;
        pt->value = (double)fds;

        if (in->warn_above > 0 && (int64_t)fds > in->warn_above) {
            ferret_event *ev = &in->events[nevents];
            ferret_attr *a = &in->event_attrs[nevents];
            char *body = in->bodies[nevents];
            int blen = snprintf(body, FDC_BODY_CAP,
                                "pid %" PRId32 " has %ld open file descriptors (limit %" PRId64 ")",
                                t->pid, fds, in->warn_above);
            if (blen < 0) blen = 0;
            if (blen >= FDC_BODY_CAP) blen = FDC_BODY_CAP - 1;

            /* ferret_attr is a frozen value type without a header: zero it. */
            memset(a, 0, sizeof *a);
            a->key = ferret_str_c("fd.count");
            a->type = FERRET_ATTR_INT;
            a->value.i = (int64_t)fds;

            FERRET_INIT(ferret_event, ev);
            ev->pid = t->pid;
            ev->severity = FERRET_SEVERITY_WARN;
            ev->name = ferret_str_c(FDC_EVENT);
            ev->body.ptr = body;
            ev->body.len = (size_t)blen;
            ev->time_unix_nano = 0;
            ev->attrs = a;
            ev->attr_count = 1;
            nevents++;
        }
    }

    /* One batch for all gauges, one for all events. Everything emitted is
     * borrowed by the host for the duration of the call only. */
    if (npoints > 0) {
        rc = in->api->emit_metrics(in->host, in->points, npoints);
        if (rc == FERRET_E_INVALID_ARGUMENT) {
            ferret_msg_printf(err, "host rejected the metric batch as malformed");
            return FERRET_E_FAILED;
        }
        /* FERRET_E_DROPPED: the host's queue was full; it counted the loss.
         * Nothing to do — the next collect measures again. */
    }
    if (nevents > 0) {
        rc = in->api->emit_events(in->host, in->events, nevents);
        if (rc == FERRET_E_INVALID_ARGUMENT) {
            ferret_msg_printf(err, "host rejected the event batch as malformed");
            return FERRET_E_FAILED;
        }
    }
    return FERRET_OK;
}

static void fdc_destroy(void *instance) {
    fdc_free(instance);
}

/* ------------------------------------------------------------------ entry */

/* The descriptor is a read-only static: it must outlive the process, and
 * building it at compile time keeps the entry function free of writes, so it
 * is safe however often and from whichever thread the host calls it.
 * (FERRET_INIT cannot appear in a static initializer; this fills the header
 * with exactly the values FERRET_INIT would.) */
static const ferret_plugin_descriptor fdc_descriptor = {
    .hdr = {FERRET_ABI_MAJOR, FERRET_ABI_MINOR, (uint32_t)sizeof(ferret_plugin_descriptor)},
    .name = {FDC_NAME, sizeof FDC_NAME - 1},
    .version = {FDC_VERSION, sizeof FDC_VERSION - 1},
    .description = {FDC_DESCRIPTION, sizeof FDC_DESCRIPTION - 1},
    .kind = FERRET_KIND_COLLECTOR,
    .flags = FERRET_COLLECTOR_PULL,
    .create = fdc_create,
    .attach = fdc_attach,
    .detach = fdc_detach,
    .collect = fdc_collect,
    .start = NULL, /* a pull collector has no start/stop */
    .stop = NULL,
    .destroy = fdc_destroy,
    .validate = fdc_validate, /* ABI 1.1; a 1.0 host reads only up to destroy */
};

FERRET_EXPORT const ferret_plugin_descriptor *ferret_plugin_entry(
    uint32_t host_abi_major, uint32_t host_abi_minor, const ferret_host_api *host) {
    (void)host_abi_minor; /* every minor of our major is compatible */
    if (!host) return NULL;
    if (host_abi_major != FERRET_ABI_MAJOR) {
        if (host->log) {
            char line[128];
            int n = snprintf(line, sizeof line,
                             FDC_NAME ": built for Ferret plugin ABI %d, host speaks %" PRIu32
                                      "; not loading",
                             FERRET_ABI_MAJOR, host_abi_major);
            ferret_str msg;
            msg.ptr = line;
            msg.len = n < 0 ? 0 : ((size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
            host->log(NULL, FERRET_LOG_ERROR, msg); /* NULL ctx: no instance yet */
        }
        return NULL;
    }
    return &fdc_descriptor;
}
