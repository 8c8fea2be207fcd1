/*
 * flood.c — test fixture: a PUSH collector that emits as fast as it can, to
 * exercise the host's bounded queue and its drop accounting.
 *
 * It uses a thread, so it must be linked with -pthread:
 *
 *   cc -shared -fPIC -pthread -I Sources/FerretPluginABI/include -o libflood.so flood.c
 *
 * (On glibc >= 2.34 pthreads live in libc and the plain command line of the
 * test suite, without -pthread, links as well.)
 *
 * Config (all optional; unknown keys are ignored):
 *   "points_per_batch": int >= 1, default 1000
 *   "batches":          int >= 0, default 1000
 *   "name":             string, default "flood.value" (the metric name)
 *
 * start() spawns one thread that calls emit_metrics `batches` times, each
 * with `points_per_batch` gauge points (pid 0, value = running sequence number
 * 0, 1, 2, ... across all batches, one STRING attribute "k" = "v"), and counts
 * the calls that returned FERRET_E_DROPPED. When done it emits one event
 * "flood.done" (pid 0, severity INFO) with INT attributes
 *   "sent"    = number of batches handed to emit_metrics (== batches unless
 *               stop() cut the run short),
 *   "dropped" = how many of those returned FERRET_E_DROPPED.
 * If the event itself is dropped it is retried every millisecond (for up to
 * 10 s, or until stop() is called). stop() joins the thread; attach and
 * detach are no-ops returning FERRET_OK.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

typedef struct fl_instance {
    const ferret_host_api *api;
    ferret_host_ctx *host;
    int64_t points_per_batch;
    int64_t batches;
    char *name;
    size_t name_len;
    ferret_metric_point *points; /* points_per_batch, reused for every batch */

    pthread_t thread;
    int running;              /* a thread was started and not yet joined */
    pthread_mutex_t mu;       /* guards `stopping` */
    int stopping;
} fl_instance;

static int fl_stopping(fl_instance *in) {
    int s;
    pthread_mutex_lock(&in->mu);
    s = in->stopping;
    pthread_mutex_unlock(&in->mu);
    return s;
}

static void *fl_run(void *arg) {
    fl_instance *in = arg;
    ferret_attr kv, done_attrs[2];
    ferret_event done;
    int64_t b, i, sent = 0, dropped = 0;
    double seq = 0;
    int tries;

    memset(&kv, 0, sizeof kv);
    kv.key = ferret_str_c("k");
    kv.type = FERRET_ATTR_STRING;
    kv.value.s = ferret_str_c("v");

    for (i = 0; i < in->points_per_batch; i++) {
        ferret_metric_point *p = &in->points[i];
        FERRET_INIT(ferret_metric_point, p);
        p->name.ptr = in->name;
        p->name.len = in->name_len;
        p->kind = FERRET_METRIC_GAUGE;
        p->pid = 0;
        p->attrs = &kv;
        p->attr_count = 1;
    }

    for (b = 0; b < in->batches && !fl_stopping(in); b++) {
        for (i = 0; i < in->points_per_batch; i++) in->points[i].value = seq++;
        if (in->api->emit_metrics(in->host, in->points, (size_t)in->points_per_batch) == FERRET_E_DROPPED)
            dropped++;
        sent++;
    }

    memset(done_attrs, 0, sizeof done_attrs);
    done_attrs[0].key = ferret_str_c("sent");
    done_attrs[0].type = FERRET_ATTR_INT;
    done_attrs[0].value.i = sent;
    done_attrs[1].key = ferret_str_c("dropped");
    done_attrs[1].type = FERRET_ATTR_INT;
    done_attrs[1].value.i = dropped;

    FERRET_INIT(ferret_event, &done);
    done.pid = 0;
    done.severity = FERRET_SEVERITY_INFO;
    done.name = ferret_str_c("flood.done");
    done.body = ferret_str_c("flood finished");
    done.attrs = done_attrs;
    done.attr_count = 2;
    for (tries = 0; tries < 10000; tries++) {
        struct timespec ms;
        if (in->api->emit_events(in->host, &done, 1) != FERRET_E_DROPPED) break;
        if (fl_stopping(in)) break;
        ms.tv_sec = 0;
        ms.tv_nsec = 1000000L;
        nanosleep(&ms, NULL);
    }
    return NULL;
}

static void fl_free(fl_instance *in) {
    pthread_mutex_destroy(&in->mu);
    free(in->points);
    free(in->name);
    free(in);
}

static int32_t fl_create(const ferret_create_args *args, void **instance, ferret_msg_buf *err) {
    fl_instance *in = calloc(1, sizeof *in);
    const char *v, *ve, *c, *ce;
    if (!in) {
        ferret_msg_printf(err, "flood: out of memory");
        return FERRET_E_FAILED;
    }
    if (pthread_mutex_init(&in->mu, NULL) != 0) {
        free(in);
        ferret_msg_printf(err, "flood: pthread_mutex_init failed");
        return FERRET_E_FAILED;
    }
    in->api = args->api;
    in->host = args->host;
    if (cfg_int(args->config_json, "points_per_batch", 1000, 1, 1000000, &in->points_per_batch, err) != 0 ||
        cfg_int(args->config_json, "batches", 1000, 0, 1000000000, &in->batches, err) != 0) {
        fl_free(in);
        return FERRET_E_INVALID_CONFIG;
    }
    c = "flood.value";
    ce = c + strlen(c);
    if (cfg_find(args->config_json, "name", &v, &ve)) {
        cfg_scan s;
        s.p = v;
        s.end = ve;
        if (cfg_string(&s, &c, &ce) != 0 || s.p != ve || ce == c) {
            ferret_msg_printf(err, "name must be a non-empty string");
            ferret_msg_set_path(err, "/name");
            fl_free(in);
            return FERRET_E_INVALID_CONFIG;
        }
        /* escapes are kept as written; fine for a fixture */
    }
    in->name_len = (size_t)(ce - c);
    in->name = malloc(in->name_len + 1);
    in->points = malloc((size_t)in->points_per_batch * sizeof *in->points);
    if (!in->name || !in->points) {
        fl_free(in);
        ferret_msg_printf(err, "flood: out of memory");
        return FERRET_E_FAILED;
    }
    memcpy(in->name, c, in->name_len);
    in->name[in->name_len] = 0;
    *instance = in;
    return FERRET_OK;
}

static int32_t fl_attach(void *instance, const ferret_target *target, ferret_msg_buf *err) {
    (void)instance;
    (void)target;
    (void)err;
    return FERRET_OK;
}

static int32_t fl_detach(void *instance, int32_t pid, ferret_msg_buf *err) {
    (void)instance;
    (void)pid;
    (void)err;
    return FERRET_OK;
}

static int32_t fl_start(void *instance, ferret_msg_buf *err) {
    fl_instance *in = instance;
    int rc;
    if (in->running) {
        ferret_msg_printf(err, "flood: already started");
        return FERRET_E_FAILED;
    }
    pthread_mutex_lock(&in->mu);
    in->stopping = 0;
    pthread_mutex_unlock(&in->mu);
    rc = pthread_create(&in->thread, NULL, fl_run, in);
    if (rc != 0) {
        ferret_msg_printf(err, "flood: pthread_create: %s", strerror(rc));
        return FERRET_E_FAILED;
    }
    in->running = 1;
    return FERRET_OK;
}

static int32_t fl_stop(void *instance, ferret_msg_buf *err) {
    fl_instance *in = instance;
    (void)err;
    if (!in->running) return FERRET_OK;
    pthread_mutex_lock(&in->mu);
    in->stopping = 1;
    pthread_mutex_unlock(&in->mu);
    pthread_join(in->thread, NULL); /* no emit after this returns */
    in->running = 0;
    return FERRET_OK;
}

static void fl_destroy(void *instance) {
    fl_instance *in = instance;
    if (!in) return;
    fl_stop(in, NULL); /* in case the host never called stop */
    fl_free(in);
}

static const ferret_plugin_descriptor fl_descriptor = {
    .hdr = {FERRET_ABI_MAJOR, FERRET_ABI_MINOR, (uint32_t)sizeof(ferret_plugin_descriptor)},
    .name = {"flood", sizeof "flood" - 1},
    .version = {"1.0.0", sizeof "1.0.0" - 1},
    .description = {"test fixture: push collector that floods the host",
                    sizeof "test fixture: push collector that floods the host" - 1},
    .kind = FERRET_KIND_COLLECTOR,
    .flags = FERRET_COLLECTOR_PUSH,
    .create = fl_create,
    .attach = fl_attach,
    .detach = fl_detach,
    .start = fl_start,
    .stop = fl_stop,
    .destroy = fl_destroy,
};

FERRET_EXPORT const ferret_plugin_descriptor *ferret_plugin_entry(
    uint32_t host_abi_major, uint32_t host_abi_minor, const ferret_host_api *host) {
    (void)host_abi_minor;
    if (host_abi_major != FERRET_ABI_MAJOR) {
        if (host && host->log) host->log(NULL, FERRET_LOG_ERROR, ferret_str_c("flood: ABI major mismatch"));
        return NULL;
    }
    return &fl_descriptor;
}
