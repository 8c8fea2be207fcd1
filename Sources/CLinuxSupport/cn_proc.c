#define _GNU_SOURCE
#include "ferret_linux.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>

/* Message layout: nlmsghdr | cn_msg | payload (an enum op or a proc_event). */
static int cn_send_op(int fd, enum proc_cn_mcast_op op) {
    char buf[NLMSG_SPACE(sizeof(struct cn_msg) + sizeof(enum proc_cn_mcast_op))]
        __attribute__((aligned(NLMSG_ALIGNTO)));
    memset(buf, 0, sizeof(buf));
    struct nlmsghdr *nl = (struct nlmsghdr *)buf;
    struct cn_msg *cn = (struct cn_msg *)NLMSG_DATA(nl);
    nl->nlmsg_len = NLMSG_LENGTH(sizeof(struct cn_msg) + sizeof(op));
    nl->nlmsg_type = NLMSG_DONE;
    nl->nlmsg_pid = 0;
    cn->id.idx = CN_IDX_PROC;
    cn->id.val = CN_VAL_PROC;
    cn->len = sizeof(op);
    memcpy(cn->data, &op, sizeof(op));
    if (send(fd, buf, nl->nlmsg_len, 0) < 0) return -errno;
    return 0;
}

int ferret_cn_proc_open(void) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (fd < 0) return -errno;
    struct sockaddr_nl sa;
    memset(&sa, 0, sizeof(sa));
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = CN_IDX_PROC;
    sa.nl_pid = 0; /* let the kernel pick a unique port id */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int rcvbuf = 4 << 20; /* bursts of fork/exec must not overflow */
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
    int r = cn_send_op(fd, PROC_CN_MCAST_LISTEN);
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

int ferret_cn_proc_read(int fd, ferret_proc_event *out, int max, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, timeout_ms);
    if (pr < 0) return errno == EINTR ? 0 : -errno;
    if (pr == 0) return 0;
    char buf[16384] __attribute__((aligned(NLMSG_ALIGNTO)));
    int count = 0;
    /* Drain what is queued: under an exec storm many events wait by now. */
    while (count < max) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return count > 0 && errno != ENOBUFS ? count : -errno;
        }
        for (struct nlmsghdr *nl = (struct nlmsghdr *)buf; NLMSG_OK(nl, (unsigned)n) && count < max;
             nl = NLMSG_NEXT(nl, n)) {
            if (nl->nlmsg_type == NLMSG_ERROR || nl->nlmsg_type == NLMSG_NOOP) continue;
            struct cn_msg *cn = (struct cn_msg *)NLMSG_DATA(nl);
            if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC) continue;
            if (cn->len < sizeof(struct proc_event) - sizeof(((struct proc_event *)0)->event_data))
                continue;
            struct proc_event *ev = (struct proc_event *)cn->data;
            ferret_proc_event *o = &out[count];
            memset(o, 0, sizeof(*o));
            o->timestamp_ns = ev->timestamp_ns;
            switch (ev->what) {
            case PROC_EVENT_FORK:
                o->kind = FERRET_PROC_EVENT_FORK;
                o->pid = ev->event_data.fork.child_pid;
                o->tgid = ev->event_data.fork.child_tgid;
                o->parent_tgid = ev->event_data.fork.parent_tgid;
                break;
            case PROC_EVENT_EXEC:
                o->kind = FERRET_PROC_EVENT_EXEC;
                o->pid = ev->event_data.exec.process_pid;
                o->tgid = ev->event_data.exec.process_tgid;
                break;
            case PROC_EVENT_EXIT:
                o->kind = FERRET_PROC_EVENT_EXIT;
                o->pid = ev->event_data.exit.process_pid;
                o->tgid = ev->event_data.exit.process_tgid;
                o->exit_code = (int32_t)ev->event_data.exit.exit_code;
                break;
            case PROC_EVENT_COMM:
                o->kind = FERRET_PROC_EVENT_COMM;
                o->pid = ev->event_data.comm.process_pid;
                o->tgid = ev->event_data.comm.process_tgid;
                break;
            default:
                continue;
            }
            count++;
        }
    }
    return count;
}

void ferret_cn_proc_close(int fd) {
    if (fd < 0) return;
    (void)cn_send_op(fd, PROC_CN_MCAST_IGNORE);
    close(fd);
}

uint64_t ferret_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
