/* Least privilege for the helper (issue #18): before the plugin's library is
 * loaded, switch to the manifest's user, keep only the capabilities it names
 * (libcap), drop the rest from the bounding set, and set no_new_privs. */
#define _GNU_SOURCE
#include "helper.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

int fh_drop_privileges(const char *user, const char *caps, pid_t parent, char *err, size_t errlen) {
    if (!caps) { /* --keep-capabilities: no_new_privs and the parent-death signal only */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
            snprintf(err, errlen, "cannot set no_new_privs: %s", strerror(errno));
            return -1;
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (parent > 0 && getppid() != parent) _exit(0);
        return 0;
    }
    cap_value_t wanted[64];
    int nwanted = 0;
    /* Names first: a typo is an error before anything changes. */
    char *list = strdup(caps ? caps : "");
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        cap_value_t v;
        if (cap_from_name(tok, &v) != 0) {
            snprintf(err, errlen, "unknown capability '%s'", tok);
            free(list);
            return -1;
        }
        if (nwanted < 64) wanted[nwanted++] = v;
    }
    free(list);
    /* The bounding set first, while CAP_SETPCAP is still effective: nothing
     * outside `wanted` can ever come back. */
    int last = (int)cap_max_bits();
    for (int c = 0; c < last; c++) {
        int keep = 0;
        for (int i = 0; i < nwanted; i++) keep |= wanted[i] == c;
        if (!keep && CAP_IS_SUPPORTED(c) && cap_get_bound(c) == 1 && cap_drop_bound(c) != 0 && errno != EINVAL) {
            /* Without CAP_SETPCAP the bound cannot shrink; the sets below still do. */
            if (errno != EPERM) {
                snprintf(err, errlen, "cannot drop capability %d from the bounding set: %s", c, strerror(errno));
                return -1;
            }
        }
    }
    if (user && *user) {
        errno = 0;
        struct passwd *pw = getpwnam(user);
        if (!pw) {
            snprintf(err, errlen, "unknown user '%s'%s%s", user, errno ? ": " : "", errno ? strerror(errno) : "");
            return -1;
        }
        if (pw->pw_uid != geteuid()) {
            /* Keep the permitted set across the uid change, then set it below. */
            if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 || initgroups(pw->pw_name, pw->pw_gid) != 0 ||
                setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) != 0 || setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) != 0) {
                snprintf(err, errlen, "cannot become user '%s' (uid %u): %s", user, (unsigned)pw->pw_uid, strerror(errno));
                return -1;
            }
        }
    }
    cap_t set = cap_init();
    if (nwanted > 0) {
        cap_set_flag(set, CAP_PERMITTED, nwanted, wanted, CAP_SET);
        cap_set_flag(set, CAP_EFFECTIVE, nwanted, wanted, CAP_SET);
    }
    if (cap_set_proc(set) != 0) {
        snprintf(err, errlen, "cannot set capabilities '%s': %s (the agent lacks one of them?)", caps ? caps : "", strerror(errno));
        cap_free(set);
        return -1;
    }
    cap_free(set);
    cap_reset_ambient();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(err, errlen, "cannot set no_new_privs: %s", strerror(errno));
        return -1;
    }
    /* Die with the agent. A credential change cleared any earlier setting. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (parent > 0 && getppid() != parent) _exit(0);
    return 0;
}

int fh_limit_memory(uint64_t bytes, char *err, size_t errlen) {
    struct rlimit rl = {.rlim_cur = bytes, .rlim_max = bytes};
    if (setrlimit(RLIMIT_DATA, &rl) != 0) {
        snprintf(err, errlen, "cannot set RLIMIT_DATA to %llu bytes: %s", (unsigned long long)bytes, strerror(errno));
        return -1;
    }
    return 0;
}
