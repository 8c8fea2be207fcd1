/*
 * faulty.c — test fixture: a collector that fails on demand, for the
 * isolation tests (issue #18). PULL and PUSH at once, so that it can fault in
 * collect or in a thread of its own.
 *
 * Config (all optional):
 *   "fault":  "none" | "segv" | "abort" | "exit" | "hang" | "alloc" | "garbage"
 *   "where":  "collect" (default) | "create" | "attach" | "thread"
 *   "after":  faults on this collect (or thread tick), counting from 1 (default 3)
 *
 * Every collect (and every thread tick, every 100 ms) emits the gauge
 * "faulty.seq" (pid 0, value = 1, 2, 3, ...; attribute "source" = "collect" or
 * "thread") before anything else, the faulting one included, so a test can
 * check that nothing emitted before a fault is lost. "garbage" emits, every
 * collect, one batch per kind of bad record and then one good point
 * "faulty.good"; it never crashes.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferret_plugin.h"

typedef struct faulty {
    ferret_host_ctx *host;
    const ferret_host_api *api;
    char fault[16];
    char where[16];
    int after;
    int seq;
    pthread_t thread;
    int running;
    ferret_attr *many; /* a million attributes, for "garbage" */
} faulty;

static void cfg_str(const char *json, size_t n, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = memmem(json, n, pat, strlen(pat));
    if (!p) return;
    p = memchr(p + strlen(pat), '"', (size_t)(json + n - p - strlen(pat)));
    if (!p) return;
    const char *e = memchr(p + 1, '"', (size_t)(json + n - p - 1));
    if (!e || (size_t)(e - p - 1) >= cap) return;
    memcpy(out, p + 1, (size_t)(e - p - 1));
    out[e - p - 1] = 0;
}

static int cfg_int(const char *json, size_t n, const char *key, int def) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = memmem(json, n, pat, strlen(pat));
    if (!p) return def;
    p += strlen(pat);
    while (p < json + n && (*p == ':' || *p == ' ')) p++;
    return atoi(p);
}

static void emit_seq(faulty *f, const char *source) {
    ferret_metric_point m;
    FERRET_INIT(ferret_metric_point, &m);
    ferret_attr a;
    memset(&a, 0, sizeof a);
    a.key = ferret_str_c("source");
    a.type = FERRET_ATTR_STRING;
    a.value.s = ferret_str_c(source);
    m.name = ferret_str_c("faulty.seq");
    m.kind = FERRET_METRIC_GAUGE;
    m.value = (double)++f->seq;
    m.attrs = &a;
    m.attr_count = 1;
    f->api->emit_metrics(f->host, &m, 1);
}

static void fault_now(faulty *f) {
    if (!strcmp(f->fault, "segv")) {
        volatile int *p = NULL;
        *p = 42;
    } else if (!strcmp(f->fault, "abort")) {
        abort();
    } else if (!strcmp(f->fault, "exit")) {
        exit(3);
    } else if (!strcmp(f->fault, "hang")) {
        for (;;) pause();
    } else if (!strcmp(f->fault, "alloc")) {
        for (;;) {
            char *p = malloc(1 << 20);
            if (!p) continue; /* past an rlimit: keep asking */
            memset(p, 1, 1 << 20);
        }
    }
}

static void emit_garbage(faulty *f) {
    ferret_metric_point m;
    /* 1: struct_size below ABI 1.0 */
    FERRET_INIT(ferret_metric_point, &m);
    m.name = ferret_str_c("faulty.bad_size");
    m.hdr.struct_size = 16;
    f->api->emit_metrics(f->host, &m, 1);
    /* 2: NULL name with a length */
    FERRET_INIT(ferret_metric_point, &m);
    m.name.ptr = NULL;
    m.name.len = 12;
    f->api->emit_metrics(f->host, &m, 1);
    /* 3: a name that is not UTF-8 */
    FERRET_INIT(ferret_metric_point, &m);
    m.name.ptr = "faulty.\xff\xfe";
    m.name.len = 9;
    f->api->emit_metrics(f->host, &m, 1);
    /* 4: NaN */
    FERRET_INIT(ferret_metric_point, &m);
    m.name = ferret_str_c("faulty.nan");
    m.value = 0.0 / 0.0;
    f->api->emit_metrics(f->host, &m, 1);
    /* 5: a million attributes */
    FERRET_INIT(ferret_metric_point, &m);
    m.name = ferret_str_c("faulty.many_attrs");
    m.attrs = f->many;
    m.attr_count = f->many ? 1000000 : 0;
    f->api->emit_metrics(f->host, &m, 1);
    /* 6: an out-of-range kind */
    FERRET_INIT(ferret_metric_point, &m);
    m.name = ferret_str_c("faulty.kind");
    m.kind = 77;
    f->api->emit_metrics(f->host, &m, 1);
    /* 7: an event with an out-of-range severity */
    ferret_event e;
    FERRET_INIT(ferret_event, &e);
    e.name = ferret_str_c("faulty.event");
    e.severity = 42;
    f->api->emit_events(f->host, &e, 1);
    /* and one good point */
    FERRET_INIT(ferret_metric_point, &m);
    m.name = ferret_str_c("faulty.good");
    m.value = 1;
    f->api->emit_metrics(f->host, &m, 1);
}

static void *thread_main(void *arg) {
    faulty *f = arg;
    int ticks = 0;
    while (__atomic_load_n(&f->running, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        emit_seq(f, "thread");
        if (++ticks == f->after) fault_now(f);
    }
    return NULL;
}

static int32_t f_create(const ferret_create_args *args, void **instance, ferret_msg_buf *err) {
    (void)err;
    faulty *f = calloc(1, sizeof *f);
    f->host = args->host;
    f->api = args->api;
    strcpy(f->fault, "none");
    strcpy(f->where, "collect");
    cfg_str(args->config_json.ptr, args->config_json.len, "fault", f->fault, sizeof f->fault);
    cfg_str(args->config_json.ptr, args->config_json.len, "where", f->where, sizeof f->where);
    f->after = cfg_int(args->config_json.ptr, args->config_json.len, "after", 3);
    if (!strcmp(f->fault, "garbage")) f->many = calloc(1000000, sizeof(ferret_attr));
    if (!strcmp(f->where, "create")) fault_now(f);
    *instance = f;
    return FERRET_OK;
}

static int32_t f_attach(void *instance, const ferret_target *t, ferret_msg_buf *err) {
    (void)t;
    (void)err;
    faulty *f = instance;
    if (!strcmp(f->where, "attach")) fault_now(f);
    return FERRET_OK;
}

static int32_t f_detach(void *instance, int32_t pid, ferret_msg_buf *err) {
    (void)instance;
    (void)pid;
    (void)err;
    return FERRET_OK;
}

static int32_t f_collect(void *instance, uint64_t now, ferret_msg_buf *err) {
    (void)now;
    (void)err;
    faulty *f = instance;
    if (!strcmp(f->where, "thread")) return FERRET_OK;
    emit_seq(f, "collect");
    if (!strcmp(f->fault, "garbage")) emit_garbage(f);
    else if (!strcmp(f->where, "collect") && f->seq == f->after) fault_now(f);
    return FERRET_OK;
}

static int32_t f_start(void *instance, ferret_msg_buf *err) {
    (void)err;
    faulty *f = instance;
    if (strcmp(f->where, "thread")) return FERRET_OK;
    f->running = 1;
    pthread_create(&f->thread, NULL, thread_main, f);
    pthread_setname_np(f->thread, "faulty-pusher");
    return FERRET_OK;
}

static int32_t f_stop(void *instance, ferret_msg_buf *err) {
    (void)err;
    faulty *f = instance;
    if (f->running) {
        __atomic_store_n(&f->running, 0, __ATOMIC_RELEASE);
        pthread_join(f->thread, NULL);
    }
    return FERRET_OK;
}

static void f_destroy(void *instance) {
    faulty *f = instance;
    free(f->many);
    free(f);
}

static ferret_plugin_descriptor desc;

FERRET_EXPORT const ferret_plugin_descriptor *ferret_plugin_entry(uint32_t major, uint32_t minor, const ferret_host_api *host) {
    (void)minor;
    (void)host;
    if (major != FERRET_ABI_MAJOR) return NULL;
    FERRET_INIT(ferret_plugin_descriptor, &desc);
    desc.name = ferret_str_c("faulty");
    desc.version = ferret_str_c("1.0.0");
    desc.description = ferret_str_c("fails on demand (isolation tests)");
    desc.kind = FERRET_KIND_COLLECTOR;
    desc.flags = FERRET_COLLECTOR_PULL | FERRET_COLLECTOR_PUSH;
    desc.create = f_create;
    desc.attach = f_attach;
    desc.detach = f_detach;
    desc.collect = f_collect;
    desc.start = f_start;
    desc.stop = f_stop;
    desc.destroy = f_destroy;
    return &desc;
}
