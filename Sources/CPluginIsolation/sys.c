/* System calls for the agent's side of plugin isolation that Swift's Glibc
 * module hides behind _GNU_SOURCE. */
#define _GNU_SOURCE
#include "ferret_isolation.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int fi_sys_pipe(int fds[2]) {
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    (void)fcntl(fds[0], F_SETPIPE_SZ, 1 << 20);
    return 0;
}

int fi_sys_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int fi_sys_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int fi_sys_pidfd_open(int pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

int fi_sys_pidfd_kill(int pidfd) {
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
#else
    (void)pidfd;
    return -1;
#endif
}
