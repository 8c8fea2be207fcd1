/* ferret-plugin-host: the helper process that runs one plugin instance out of
 * the agent (issue #18). Internal declarations shared by its files. */
#ifndef FERRET_PLUGIN_HOST_H
#define FERRET_PLUGIN_HOST_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>

#include "ferret_isolation.h"
#include "ferret_plugin.h"

/* ---- the ring and the host table (host_api.c) ---- */
extern fi_ring g_ring;
extern int g_bulk_fd;
/** The one ctx handle this helper gives its instance; emits with another are refused. */
#define FH_CTX ((ferret_host_ctx *)(uintptr_t)0x46525254u)
/** 0 before create and after destroy: emits are refused then. */
extern volatile int g_ctx_live;
const ferret_host_api *fh_host_table(void);
void fh_log(int32_t level, const char *text);

/* ---- crash reporting (crash.c) ---- */
/** The control call in progress (an FI_OP_, 0 for none) and its pid, for the report. */
extern volatile sig_atomic_t g_current_op;
extern volatile int32_t g_current_pid;
void fh_crash_install(void);
/** Our own exit is not a plugin's exit(): no report. */
void fh_crash_normal_exit(void);
const char *fh_op_name(int op);

/* ---- least privilege (privileges.c) ---- */
/** Switches to `user` (NULL: keep), keeps only the capabilities named in the
 *  comma-separated `caps` ("" = none), sets no_new_privs and the parent-death
 *  signal. 0, or -1 with a message in err. */
int fh_drop_privileges(const char *user, const char *caps, pid_t parent, char *err, size_t errlen);
/** RLIMIT_DATA, the memory limit where the agent could not make a cgroup. */
int fh_limit_memory(uint64_t bytes, char *err, size_t errlen);

/* ---- wire encoding (wire.c) ---- */
typedef struct fh_buf {
    uint8_t *data;
    size_t len, cap;
    int failed;
} fh_buf;
void fh_buf_reset(fh_buf *b);
void *fh_buf_grow(fh_buf *b, size_t n);
void fh_put_u32(fh_buf *b, uint32_t v);
void fh_put_u64(fh_buf *b, uint64_t v);
void fh_put_str(fh_buf *b, const char *p, size_t n);

typedef struct fh_reader {
    const uint8_t *p, *end;
    int failed;
} fh_reader;
uint32_t fh_get_u32(fh_reader *r);
uint64_t fh_get_u64(fh_reader *r);
/** A string of the message, NUL-terminated in a copy owned by the caller (free). */
char *fh_get_str(fh_reader *r, size_t *len);

#endif
