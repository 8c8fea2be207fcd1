/*
 * ferret-plugin-host — runs one plugin instance in its own process (issue #18).
 *
 * The agent spawns it with five descriptors (ferret_isolation.h): the control
 * socket (3), the ring memfd (4), the ring's eventfd (5), the crash pipe (6)
 * and the bulk socket (7). It installs its crash handlers, drops privileges
 * (user, capabilities, no_new_privs, memory rlimit), and only then loads the
 * plugin's library, unchanged: same header, same entry symbol, same host
 * table, whose emit_* write into the ring. Then it serves control calls one at
 * a time, in order, as the ABI's threading contract promises the plugin.
 *
 *   ferret-plugin-host --library PATH [--user NAME] [--capabilities a,b]
 *                      [--rlimit-data BYTES] [--parent PID]
 *
 * Written in C, not as a mode of the Swift `ferret` executable: a helper that
 * maps Foundation and the Swift runtime costs about 20 MiB before the plugin
 * does anything; this one is about 1.5 MiB (bench/RESULTS.md, isolation).
 */
#define _GNU_SOURCE
#include "helper.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const ferret_plugin_descriptor *g_desc;
static ferret_plugin_descriptor g_copy;
static void *g_instance;
static char g_load_error[1024];

static char msg_data[4096];
static char msg_path[256];

static void reset_msg(ferret_msg_buf *m) {
    FERRET_INIT(ferret_msg_buf, m);
    m->data = msg_data;
    m->cap = sizeof msg_data;
    m->path = msg_path;
    m->path_cap = sizeof msg_path;
    msg_data[0] = 0;
    msg_path[0] = 0;
}

static void reply(fh_buf *b, int32_t status, const ferret_msg_buf *m) {
    fh_buf_reset(b);
    fh_put_u32(b, (uint32_t)status);
    size_t n = m && m->len < m->cap ? m->len : 0;
    fh_put_str(b, m ? m->data : "", n);
    size_t pn = m && m->path_len < m->path_cap ? m->path_len : 0;
    fh_put_str(b, m ? m->path : "", pn);
}

static void reply_text(fh_buf *b, int32_t status, const char *text) {
    ferret_msg_buf m;
    reset_msg(&m);
    snprintf(msg_data, sizeof msg_data, "%s", text);
    m.len = strlen(msg_data);
    reply(b, status, &m);
}

static void send_reply(fh_buf *b) {
    if (b->failed) return;
    if (send(FI_FD_CONTROL, b->data, b->len, MSG_NOSIGNAL) < 0) _exit(0);
}

static void load(const char *library) {
    void *h = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(g_load_error, sizeof g_load_error, "%s: cannot load library: %s", library, dlerror());
        return;
    }
    void *sym = dlsym(h, FERRET_PLUGIN_ENTRY_SYMBOL);
    if (!sym) {
        snprintf(g_load_error, sizeof g_load_error,
                 "%s: no entry symbol '%s' (is it a Ferret plugin, and is the symbol exported?)", library,
                 FERRET_PLUGIN_ENTRY_SYMBOL);
        return;
    }
    ferret_plugin_entry_fn entry = (ferret_plugin_entry_fn)sym;
    const ferret_plugin_descriptor *d = entry(FERRET_ABI_MAJOR, FERRET_ABI_MINOR, fh_host_table());
    if (!d) {
        snprintf(g_load_error, sizeof g_load_error,
                 "%s: the entry function returned no descriptor (the plugin refused host ABI %d.%d; see its log line)",
                 library, FERRET_ABI_MAJOR, FERRET_ABI_MINOR);
        return;
    }
    ferret_header hd;
    memcpy(&hd, d, sizeof hd);
    if (hd.abi_major != FERRET_ABI_MAJOR) {
        snprintf(g_load_error, sizeof g_load_error,
                 "%s: plugin ABI %u.%u is incompatible with host ABI %d.%d (major versions differ; rebuild the plugin against this ferret_plugin.h)",
                 library, hd.abi_major, hd.abi_minor, FERRET_ABI_MAJOR, FERRET_ABI_MINOR);
        return;
    }
    if (hd.struct_size < FERRET_SIZE_1_0_ferret_plugin_descriptor) {
        snprintf(g_load_error, sizeof g_load_error, "%s: descriptor struct_size %u is smaller than ABI 1.0's %d", library,
                 hd.struct_size, FERRET_SIZE_1_0_ferret_plugin_descriptor);
        return;
    }
    FERRET_COPY(ferret_plugin_descriptor, &g_copy, d);
    g_desc = &g_copy;
}

static const char *g_library;
static int g_loaded;

static void describe(fh_buf *b) {
    /* Loaded at the first describe, not at start: the agent first puts this
     * process into its memory cgroup, so the library's own start-up counts. */
    if (!g_loaded && !g_load_error[0]) {
        g_loaded = 1;
        g_current_op = FI_OP_DESCRIBE;
        load(g_library);
        g_current_op = 0;
    }
    if (!g_desc) { reply_text(b, FERRET_E_FAILED, g_load_error); return; }
    const ferret_plugin_descriptor *d = g_desc;
    ferret_header hd;
    memcpy(&hd, d, sizeof hd);
    reply(b, FERRET_OK, NULL);
    fh_put_str(b, d->name.ptr, d->name.ptr ? d->name.len : 0);
    fh_put_str(b, d->version.ptr, d->version.ptr ? d->version.len : 0);
    fh_put_str(b, d->description.ptr, d->description.ptr ? d->description.len : 0);
    fh_put_u32(b, d->kind);
    fh_put_u32(b, d->flags);
    fh_put_u32(b, hd.abi_major);
    fh_put_u32(b, hd.abi_minor);
    uint32_t fns = (d->attach ? FI_FN_ATTACH : 0) | (d->detach ? FI_FN_DETACH : 0) | (d->collect ? FI_FN_COLLECT : 0) |
                   (d->start ? FI_FN_START : 0) | (d->stop ? FI_FN_STOP : 0) | (d->validate ? FI_FN_VALIDATE : 0) |
                   (d->create ? 64u : 0) | (d->destroy ? 128u : 0);
    fh_put_u32(b, fns);
}

static void create_args(fh_reader *r, ferret_create_args *a, char **name, char **json) {
    size_t n1 = 0, n2 = 0;
    *name = fh_get_str(r, &n1);
    *json = fh_get_str(r, &n2);
    FERRET_INIT(ferret_create_args, a);
    a->host = FH_CTX;
    a->api = fh_host_table();
    a->instance_name = (ferret_str){*name, n1};
    a->config_json = (ferret_str){*json, n2};
    a->interval_nano = fh_get_u64(r);
}

static void serve(fh_reader *r, uint32_t op, fh_buf *b) {
    ferret_msg_buf m;
    reset_msg(&m);
    const ferret_plugin_descriptor *d = g_desc;
    if (op != FI_OP_DESCRIBE && !d) { reply_text(b, FERRET_E_FAILED, g_load_error); return; }
    g_current_op = (sig_atomic_t)op;
    g_current_pid = 0;
    int32_t st = FERRET_E_FAILED;
    switch (op) {
    case FI_OP_DESCRIBE:
        describe(b);
        return;
    case FI_OP_VALIDATE:
    case FI_OP_CREATE: {
        ferret_create_args a;
        char *name = NULL, *json = NULL;
        create_args(r, &a, &name, &json);
        if (r->failed) { st = FERRET_E_FAILED; snprintf(msg_data, sizeof msg_data, "malformed request"); m.len = strlen(msg_data); break; }
        if (op == FI_OP_VALIDATE) {
            a.host = NULL;
            if (!d->validate) { st = FERRET_E_UNSUPPORTED; break; }
            st = d->validate(&a, &m);
        } else if (g_instance) {
            st = FERRET_E_FAILED;
            snprintf(msg_data, sizeof msg_data, "this helper already has an instance");
            m.len = strlen(msg_data);
        } else {
            void *h = NULL;
            g_ctx_live = 1;
            st = d->create(&a, &h, &m);
            if (st == FERRET_OK && !h) {
                st = FERRET_E_FAILED;
                ferret_msg_printf(&m, "create returned FERRET_OK but no instance");
            }
            if (st == FERRET_OK) g_instance = h; else g_ctx_live = 0;
        }
        free(name);
        free(json);
        break;
    }
    case FI_OP_ATTACH: {
        ferret_target t;
        FERRET_INIT(ferret_target, &t);
        t.pid = (int32_t)fh_get_u32(r);
        t.flags = fh_get_u32(r);
        t.start_time_ticks = fh_get_u64(r);
        size_t n[5];
        char *s[5];
        for (int i = 0; i < 5; i++) s[i] = fh_get_str(r, &n[i]);
        t.exe_path = (ferret_str){s[0], n[0]};
        t.comm = (ferret_str){s[1], n[1]};
        t.group = (ferret_str){s[2], n[2]};
        t.rule = (ferret_str){s[3], n[3]};
        t.go_version = (ferret_str){s[4], n[4]};
        g_current_pid = t.pid;
        if (r->failed || !g_instance) st = FERRET_E_FAILED;
        else st = d->attach ? d->attach(g_instance, &t, &m) : FERRET_OK;
        for (int i = 0; i < 5; i++) free(s[i]);
        break;
    }
    case FI_OP_DETACH: {
        int32_t pid = (int32_t)fh_get_u32(r);
        g_current_pid = pid;
        st = (g_instance && d->detach) ? d->detach(g_instance, pid, &m) : FERRET_OK;
        break;
    }
    case FI_OP_COLLECT: {
        uint64_t now = fh_get_u64(r);
        st = (g_instance && d->collect) ? d->collect(g_instance, now, &m) : FERRET_E_FAILED;
        break;
    }
    case FI_OP_START:
        st = (g_instance && d->start) ? d->start(g_instance, &m) : FERRET_E_FAILED;
        break;
    case FI_OP_STOP:
        st = (g_instance && d->stop) ? d->stop(g_instance, &m) : FERRET_OK;
        break;
    case FI_OP_DESTROY:
        if (g_instance && d->destroy) d->destroy(g_instance);
        g_instance = NULL;
        g_ctx_live = 0;
        st = FERRET_OK;
        break;
    default:
        snprintf(msg_data, sizeof msg_data, "unknown control operation %u", op);
        m.len = strlen(msg_data);
        st = FERRET_E_FAILED;
    }
    g_current_op = 0;
    g_current_pid = 0;
    reply(b, st, &m);
}

int main(int argc, char **argv) {
    const char *library = NULL, *user = NULL, *caps = "";
    uint64_t rlimit_data = 0;
    pid_t parent = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--library")) library = argv[i + 1];
        else if (!strcmp(argv[i], "--user")) user = argv[i + 1];
        else if (!strcmp(argv[i], "--capabilities")) caps = argv[i + 1];
        else if (!strcmp(argv[i], "--rlimit-data")) rlimit_data = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--parent")) parent = (pid_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--keep-capabilities")) caps = NULL;
    }
    if (!library) {
        fprintf(stderr, "usage: ferret-plugin-host --library PATH [--user NAME] [--capabilities a,b] [--rlimit-data BYTES]\n"
                        "(started by the ferret agent with its descriptors 3-7; not meant to be run by hand)\n");
        return 2;
    }
    fh_crash_install();
    if (fi_ring_map(FI_FD_RING, FI_FD_EVENT, &g_ring) != 0) {
        fprintf(stderr, "ferret-plugin-host: descriptor %d is not a Ferret ring\n", FI_FD_RING);
        fh_crash_normal_exit();
        return 2;
    }
    g_bulk_fd = FI_FD_BULK;
    g_library = library;
    char err[512];
    if (fh_drop_privileges(user, caps, parent, err, sizeof err) != 0 ||
        (rlimit_data && fh_limit_memory(rlimit_data, err, sizeof err) != 0)) {
        snprintf(g_load_error, sizeof g_load_error, "%s: the helper cannot drop privileges: %s", library, err);
    }
    uint8_t *in = malloc(FI_CONTROL_MAX);
    fh_buf out = {0};
    for (;;) {
        ssize_t n = recv(FI_FD_CONTROL, in, FI_CONTROL_MAX, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* the agent closed the socket (or is gone) */
        fh_reader r = {.p = in, .end = in + n, .failed = 0};
        uint32_t op = fh_get_u32(&r);
        serve(&r, op, &out);
        send_reply(&out);
        if (op == FI_OP_DESTROY) break;
    }
    fh_crash_normal_exit();
    _exit(0);
}
