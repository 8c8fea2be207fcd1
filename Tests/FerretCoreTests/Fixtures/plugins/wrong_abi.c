/*
 * wrong_abi.c — test fixture: a plugin whose descriptor claims ABI major 99.
 * The host must refuse it (descriptor hdr.abi_major != FERRET_ABI_MAJOR)
 * without calling any of its functions.
 *
 *   cc -shared -fPIC -I Sources/FerretPluginABI/include -o libwrong_abi.so wrong_abi.c
 */
#include "ferret_plugin.h"

static int32_t wa_create(const ferret_create_args *args, void **instance, ferret_msg_buf *err) {
    (void)args;
    ferret_msg_printf(err, "wrong_abi: create must never be called");
    *instance = NULL;
    return FERRET_E_FAILED;
}

static int32_t wa_collect(void *instance, uint64_t now, ferret_msg_buf *err) {
    (void)instance;
    (void)now;
    (void)err;
    return FERRET_OK;
}

static void wa_destroy(void *instance) { (void)instance; }

static ferret_plugin_descriptor wa_descriptor;

FERRET_EXPORT const ferret_plugin_descriptor *ferret_plugin_entry(
    uint32_t host_abi_major, uint32_t host_abi_minor, const ferret_host_api *host) {
    /* Deliberately no version check here: the host's own check is under test. */
    (void)host_abi_major;
    (void)host_abi_minor;
    (void)host;
    FERRET_INIT(ferret_plugin_descriptor, &wa_descriptor);
    wa_descriptor.hdr.abi_major = 99; /* the defect under test */
    wa_descriptor.name = ferret_str_c("wrong_abi");
    wa_descriptor.version = ferret_str_c("1.0.0");
    wa_descriptor.description = ferret_str_c("test fixture: descriptor declares ABI major 99");
    wa_descriptor.kind = FERRET_KIND_COLLECTOR;
    wa_descriptor.flags = FERRET_COLLECTOR_PULL;
    wa_descriptor.create = wa_create;
    wa_descriptor.collect = wa_collect;
    wa_descriptor.destroy = wa_destroy;
    return &wa_descriptor;
}
