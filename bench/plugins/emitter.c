/*
 * emitter.c — the isolation benchmark's producer (bench/Sources/IsolationBench):
 * a push collector whose thread emits `total` gauge points in batches of 1,000
 * (one string attribute each, as PipelineBench's), re-sending a batch the host
 * refuses as full after 50 µs. Config: {"total": N}.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferret_plugin.h"

typedef struct em {
    ferret_host_ctx *host;
    const ferret_host_api *api;
    long total;
    pthread_t thread;
} em;

static void *run(void *arg) {
    em *e = arg;
    enum { B = 1000 };
    static ferret_metric_point batch[B];
    ferret_attr a;
    memset(&a, 0, sizeof a);
    a.key = ferret_str_c("go.state");
    a.type = FERRET_ATTR_STRING;
    a.value.s = ferret_str_c("running");
    for (int i = 0; i < B; i++) {
        FERRET_INIT(ferret_metric_point, &batch[i]);
        batch[i].name = ferret_str_c("go.goroutine.count");
        batch[i].unit = ferret_str_c("{goroutine}");
        batch[i].value = i;
        batch[i].time_unix_nano = 1700000000000000000ull;
        batch[i].attrs = &a;
        batch[i].attr_count = 1;
    }
    for (long sent = 0; sent < e->total;) {
        if (e->api->emit_metrics(e->host, batch, B) == FERRET_OK) sent += B;
        else usleep(50);
    }
    return NULL;
}

static int32_t c_create(const ferret_create_args *args, void **inst, ferret_msg_buf *err) {
    (void)err;
    em *e = calloc(1, sizeof *e);
    e->host = args->host;
    e->api = args->api;
    const char *p = strstr(args->config_json.ptr, "\"total\"");
    e->total = p ? atol(strchr(p, ':') + 1) : 1000000;
    *inst = e;
    return FERRET_OK;
}
static int32_t c_start(void *inst, ferret_msg_buf *err) { (void)err; em *e = inst; return pthread_create(&e->thread, NULL, run, e) ? FERRET_E_FAILED : FERRET_OK; }
static int32_t c_stop(void *inst, ferret_msg_buf *err) { (void)err; em *e = inst; pthread_join(e->thread, NULL); return FERRET_OK; }
static void c_destroy(void *inst) { free(inst); }

static ferret_plugin_descriptor d;
FERRET_EXPORT const ferret_plugin_descriptor *ferret_plugin_entry(uint32_t major, uint32_t minor, const ferret_host_api *host) {
    (void)minor; (void)host;
    if (major != FERRET_ABI_MAJOR) return NULL;
    FERRET_INIT(ferret_plugin_descriptor, &d);
    d.name = ferret_str_c("emitter");
    d.version = ferret_str_c("1.0.0");
    d.kind = FERRET_KIND_COLLECTOR;
    d.flags = FERRET_COLLECTOR_PUSH;
    d.create = c_create;
    d.start = c_start;
    d.stop = c_stop;
    d.destroy = c_destroy;
    return &d;
}
