/*
 * counter.c — test fixture: a PULL collector with predictable output.
 *
 *   attach  remembers the pid and emits one event "counter.attached"
 *           (severity INFO, pid = target pid) with attributes
 *           "target.pid" (INT) and "target.group" (STRING, target->group).
 *   collect (after sleeping `sleep_ms`, default 0 — for timeout tests) emits
 *           ONE batch holding, for each attached pid:
 *             - counter   "test.collect.count", unit "{collect}",
 *                         value = number of collect calls so far (1, 2, ...)
 *             - histogram "test.latency", unit "s", bounds {0.1, 1},
 *                         bucket_counts {1, 2, 3}, count 6, sum 2.5
 *           both with the STRING attribute "phase" = "collect".
 *           With `attach_sleep_ms`, attach first sleeps that long (for tests of
 *           a detach that arrives while an attach runs).
 *   detach  forgets the pid and emits "counter.detached" (pid = the pid);
 *           FERRET_E_NOT_FOUND for an unknown pid.
 *
 * Config: { "sleep_ms": N, "attach_sleep_ms": N }  (integers >= 0, default 0).
 * Other keys are ignored.
 *
 *   cc -shared -fPIC -I Sources/FerretPluginABI/include -o libcounter.so counter.c
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void ct_sleep_ms(int64_t ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#include "ferret_plugin.h"

/* ---- a minimal, tolerant scanner for the top level of config_json ------ */

typedef struct cfg_scan {
    const char *p;
    const char *end;
} cfg_scan;

static void cfg_ws(cfg_scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

/* Skip a JSON string; its raw (undecoded) content is [*c, *ce). */
static int cfg_string(cfg_scan *s, const char **c, const char **ce) {
    if (s->p >= s->end || *s->p != '"') return -1;
    *c = ++s->p;
    while (s->p < s->end && *s->p != '"') s->p += (*s->p == '\\' && s->p + 1 < s->end) ? 2 : 1;
    if (s->p >= s->end) return -1;
    *ce = s->p++;
    return 0;
}

/* Skip one value; its raw text (trailing blanks trimmed) is [*v, *ve). */
static int cfg_value(cfg_scan *s, const char **v, const char **ve) {
    int depth = 0;
    const char *c, *ce;
    cfg_ws(s);
    *v = s->p;
    while (s->p < s->end) {
        if (*s->p == '"') {
            if (cfg_string(s, &c, &ce) != 0) return -1;
            continue;
        }
        if (*s->p == '{' || *s->p == '[') depth++;
        else if ((*s->p == '}' || *s->p == ']') && depth-- == 0) break;
        else if (*s->p == ',' && depth == 0) break;
        s->p++;
    }
    *ve = s->p;
    while (*ve > *v && ((*ve)[-1] == ' ' || (*ve)[-1] == '\t' || (*ve)[-1] == '\n' || (*ve)[-1] == '\r')) (*ve)--;
    return *ve > *v ? 0 : -1;
}

/* Find top-level `key`: 1 and its raw value text if present, 0 if absent. */
static int cfg_find(ferret_str json, const char *key, const char **v, const char **ve) {
    cfg_scan s;
    size_t klen = strlen(key);
    s.p = json.ptr;
    s.end = json.ptr ? json.ptr + json.len : json.ptr;
    cfg_ws(&s);
    if (s.p >= s.end || *s.p != '{') return 0;
    s.p++;
    for (;;) {
        const char *k, *ke;
        cfg_ws(&s);
        if (cfg_string(&s, &k, &ke) != 0) return 0;
        cfg_ws(&s);
        if (s.p >= s.end || *s.p++ != ':') return 0;
        if (cfg_value(&s, v, ve) != 0) return 0;
        if ((size_t)(ke - k) == klen && memcmp(k, key, klen) == 0) return 1;
        cfg_ws(&s);
        if (s.p >= s.end || *s.p++ != ',') return 0;
    }
}

/* Integer key in [min, max], default `def`. On a bad value fill err (with the
 * key's JSON pointer) and return -1. */
static int cfg_int(ferret_str json, const char *key, int64_t def, int64_t min, int64_t max,
                   int64_t *out, ferret_msg_buf *err) {
    const char *v, *ve, *p;
    int64_t x = 0;
    char path[64];
    *out = def;
    if (!cfg_find(json, key, &v, &ve)) return 0;
    for (p = v; p < ve && *p >= '0' && *p <= '9' && x <= max; p++) x = x * 10 + (*p - '0');
    if (p == v || p != ve || x < min || x > max) {
        ferret_msg_printf(err, "%s must be an integer between %lld and %lld", key, (long long)min, (long long)max);
        snprintf(path, sizeof path, "/%s", key);
        ferret_msg_set_path(err, path);
        return -1;
    }
    *out = x;
    return 0;
}

/* ------------------------------------------------------------ the plugin */

typedef struct ct_target {
    int32_t pid;
    char *group; /* copy of target->group (not NUL-terminated) */
    size_t group_len;
} ct_target;

typedef struct ct_instance {
    const ferret_host_api *api;
    ferret_host_ctx *host;
    int64_t sleep_ms;
    int64_t attach_sleep_ms;
    uint64_t collects;
    ct_target *targets;
    size_t count, cap;
    ferret_metric_point *points; /* 2 * cap scratch points */
} ct_instance;

static const double ct_bounds[2] = {0.1, 1.0};
static const uint64_t ct_buckets[3] = {1, 2, 3};

static int32_t ct_create(const ferret_create_args *args, void **instance, ferret_msg_buf *err) {
    ct_instance *in = calloc(1, sizeof *in);
    if (!in) {
        ferret_msg_printf(err, "counter: out of memory");
        return FERRET_E_FAILED;
    }
    if (cfg_int(args->config_json, "sleep_ms", 0, 0, 3600 * 1000, &in->sleep_ms, err) != 0 ||
        cfg_int(args->config_json, "attach_sleep_ms", 0, 0, 3600 * 1000, &in->attach_sleep_ms, err) != 0) {
        free(in);
        return FERRET_E_INVALID_CONFIG;
    }
    in->api = args->api;
    in->host = args->host;
    *instance = in;
    return FERRET_OK;
}

static int32_t ct_attach(void *instance, const ferret_target *target, ferret_msg_buf *err) {
    ct_instance *in = instance;
    ct_target *t;
    ferret_attr attrs[2];
    ferret_event ev;
    char body[160];
    int blen;
    size_t i;

    if (in->attach_sleep_ms > 0) ct_sleep_ms(in->attach_sleep_ms);
    for (i = 0; i < in->count; i++)
        if (in->targets[i].pid == target->pid) return FERRET_OK;
    if (in->count == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 8;
        void *p = realloc(in->targets, cap * sizeof *in->targets);
        if (!p) goto oom;
        in->targets = p;
        p = realloc(in->points, 2 * cap * sizeof *in->points);
        if (!p) goto oom;
        in->points = p;
        in->cap = cap;
    }
    t = &in->targets[in->count];
    t->pid = target->pid;
    t->group_len = target->group.len;
    t->group = malloc(t->group_len + 1);
    if (!t->group) goto oom;
    if (t->group_len) memcpy(t->group, target->group.ptr, t->group_len);
    t->group[t->group_len] = 0;
    in->count++;

    memset(attrs, 0, sizeof attrs);
    attrs[0].key = ferret_str_c("target.pid");
    attrs[0].type = FERRET_ATTR_INT;
    attrs[0].value.i = target->pid;
    attrs[1].key = ferret_str_c("target.group");
    attrs[1].type = FERRET_ATTR_STRING;
    attrs[1].value.s.ptr = t->group;
    attrs[1].value.s.len = t->group_len;

    blen = snprintf(body, sizeof body, "counter attached to pid %d (group %.*s)", (int)t->pid,
                    (int)(t->group_len > 64 ? 64 : t->group_len), t->group);
    if (blen < 0) blen = 0;
    if ((size_t)blen >= sizeof body) blen = (int)sizeof body - 1;

    FERRET_INIT(ferret_event, &ev);
    ev.pid = target->pid;
    ev.severity = FERRET_SEVERITY_INFO;
    ev.name = ferret_str_c("counter.attached");
    ev.body.ptr = body;
    ev.body.len = (size_t)blen;
    ev.attrs = attrs;
    ev.attr_count = 2;
    in->api->emit_events(in->host, &ev, 1);
    return FERRET_OK;

oom:
    ferret_msg_printf(err, "counter: out of memory");
    return FERRET_E_FAILED;
}

static int32_t ct_detach(void *instance, int32_t pid, ferret_msg_buf *err) {
    ct_instance *in = instance;
    size_t i;
    ferret_event ev;
    for (i = 0; i < in->count; i++) {
        if (in->targets[i].pid == pid) {
            free(in->targets[i].group);
            in->targets[i] = in->targets[--in->count];
            FERRET_INIT(ferret_event, &ev);
            ev.pid = pid;
            ev.severity = FERRET_SEVERITY_INFO;
            ev.name = ferret_str_c("counter.detached");
            in->api->emit_events(in->host, &ev, 1);
            return FERRET_OK;
        }
    }
    ferret_msg_printf(err, "counter: pid %d is not attached", (int)pid);
    return FERRET_E_NOT_FOUND;
}

static int32_t ct_collect(void *instance, uint64_t now_unix_nano, ferret_msg_buf *err) {
    ct_instance *in = instance;
    ferret_attr phase;
    size_t i, n = 0;
    (void)now_unix_nano;
    (void)err;

    if (in->sleep_ms > 0) ct_sleep_ms(in->sleep_ms);
    in->collects++;
    if (in->count == 0) return FERRET_OK;

    memset(&phase, 0, sizeof phase);
    phase.key = ferret_str_c("phase");
    phase.type = FERRET_ATTR_STRING;
    phase.value.s = ferret_str_c("collect");

    for (i = 0; i < in->count; i++) {
        ferret_metric_point *c = &in->points[n++];
        ferret_metric_point *h = &in->points[n++];

        FERRET_INIT(ferret_metric_point, c);
        c->name = ferret_str_c("test.collect.count");
        c->unit = ferret_str_c("{collect}");
        c->kind = FERRET_METRIC_COUNTER;
        c->pid = in->targets[i].pid;
        c->value = (double)in->collects;
        c->attrs = &phase;
        c->attr_count = 1;

        FERRET_INIT(ferret_metric_point, h);
        h->name = ferret_str_c("test.latency");
        h->unit = ferret_str_c("s");
        h->kind = FERRET_METRIC_HISTOGRAM;
        h->pid = in->targets[i].pid;
        h->count = 6;
        h->sum = 2.5;
        h->bounds = ct_bounds;
        h->bound_count = 2;
        h->bucket_counts = ct_buckets;
        h->attrs = &phase;
        h->attr_count = 1;
    }
    in->api->emit_metrics(in->host, in->points, n);
    return FERRET_OK;
}

static void ct_destroy(void *instance) {
    ct_instance *in = instance;
    size_t i;
    if (!in) return;
    for (i = 0; i < in->count; i++) free(in->targets[i].group);
    free(in->targets);
    free(in->points);
    free(in);
}

static const ferret_plugin_descriptor ct_descriptor = {
    .hdr = {FERRET_ABI_MAJOR, FERRET_ABI_MINOR, (uint32_t)sizeof(ferret_plugin_descriptor)},
    .name = {"counter", sizeof "counter" - 1},
    .version = {"1.0.0", sizeof "1.0.0" - 1},
    .description = {"test fixture: predictable pull collector", sizeof "test fixture: predictable pull collector" - 1},
    .kind = FERRET_KIND_COLLECTOR,
    .flags = FERRET_COLLECTOR_PULL,
    .create = ct_create,
    .attach = ct_attach,
    .detach = ct_detach,
    .collect = ct_collect,
    .destroy = ct_destroy,
};

FERRET_EXPORT const ferret_plugin_descriptor *ferret_plugin_entry(
    uint32_t host_abi_major, uint32_t host_abi_minor, const ferret_host_api *host) {
    (void)host_abi_minor;
    if (host_abi_major != FERRET_ABI_MAJOR) {
        if (host && host->log) host->log(NULL, FERRET_LOG_ERROR, ferret_str_c("counter: ABI major mismatch"));
        return NULL;
    }
    return &ct_descriptor;
}
