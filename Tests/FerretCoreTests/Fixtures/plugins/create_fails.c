/*
 * create_fails.c — test fixture: loads fine, but create always fails with
 * FERRET_E_INVALID_CONFIG, message "create_fails: refusing on purpose" and
 * JSON pointer "/reason" (so the host can point at the YAML key).
 *
 *   cc -shared -fPIC -I Sources/FerretPluginABI/include -o libcreate_fails.so create_fails.c
 */
#include "ferret_plugin.h"

static int32_t cf_create(const ferret_create_args *args, void **instance, ferret_msg_buf *err) {
    (void)args;
    (void)instance;
    ferret_msg_printf(err, "create_fails: refusing on purpose");
    ferret_msg_set_path(err, "/reason");
    return FERRET_E_INVALID_CONFIG;
}

/* The rest is a complete, harmless pull collector, so that create is the
 * only thing that can fail. None of it should ever run. */
static int32_t cf_attach(void *instance, const ferret_target *target, ferret_msg_buf *err) {
    (void)instance;
    (void)target;
    (void)err;
    return FERRET_OK;
}

static int32_t cf_detach(void *instance, int32_t pid, ferret_msg_buf *err) {
    (void)instance;
    (void)pid;
    (void)err;
    return FERRET_OK;
}

static int32_t cf_collect(void *instance, uint64_t now, ferret_msg_buf *err) {
    (void)instance;
    (void)now;
    (void)err;
    return FERRET_OK;
}

static void cf_destroy(void *instance) { (void)instance; }

static const ferret_plugin_descriptor cf_descriptor = {
    .hdr = {FERRET_ABI_MAJOR, FERRET_ABI_MINOR, (uint32_t)sizeof(ferret_plugin_descriptor)},
    .name = {"create_fails", sizeof "create_fails" - 1},
    .version = {"1.0.0", sizeof "1.0.0" - 1},
    .description = {"test fixture: create always fails", sizeof "test fixture: create always fails" - 1},
    .kind = FERRET_KIND_COLLECTOR,
    .flags = FERRET_COLLECTOR_PULL,
    .create = cf_create,
    .attach = cf_attach,
    .detach = cf_detach,
    .collect = cf_collect,
    .destroy = cf_destroy,
};

FERRET_EXPORT const ferret_plugin_descriptor *ferret_plugin_entry(
    uint32_t host_abi_major, uint32_t host_abi_minor, const ferret_host_api *host) {
    (void)host_abi_minor;
    if (host_abi_major != FERRET_ABI_MAJOR) {
        if (host && host->log) host->log(NULL, FERRET_LOG_ERROR, ferret_str_c("create_fails: ABI major mismatch"));
        return NULL;
    }
    return &cf_descriptor;
}
