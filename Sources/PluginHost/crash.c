/* The helper's crash report (issue #18): a fatal signal or a plugin's exit()
 * is written to the crash pipe as text (format in ferret_isolation.h) from the
 * handler itself, with async-signal-safe calls only: write, open, read,
 * gettid, and glibc's backtrace() (warmed up at start so that it loads
 * libgcc_s before any crash). The agent symbolizes the frames with the maps
 * that follow them. */
#define _GNU_SOURCE
#include "helper.h"

#include <execinfo.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

volatile sig_atomic_t g_current_op;
volatile int32_t g_current_pid;
static pid_t control_tid;
static int reported;
static int normal_exit;
static char altstack[1 << 16];

const char *fh_op_name(int op) {
    switch (op) {
    case FI_OP_DESCRIBE: return "load";
    case FI_OP_VALIDATE: return "validate";
    case FI_OP_CREATE: return "create";
    case FI_OP_ATTACH: return "attach";
    case FI_OP_DETACH: return "detach";
    case FI_OP_COLLECT: return "collect";
    case FI_OP_START: return "start";
    case FI_OP_STOP: return "stop";
    case FI_OP_DESTROY: return "destroy";
    default: return "none";
    }
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    case SIGTRAP: return "SIGTRAP";
    case SIGSYS: return "SIGSYS";
    default: return "SIG?";
    }
}

/* A line buffer filled without stdio. */
typedef struct line { char b[512]; size_t n; } line;
static void put(line *l, const char *s) { while (*s && l->n < sizeof l->b - 1) l->b[l->n++] = *s++; }
static void put_dec(line *l, long long v) {
    char t[24]; int i = 0;
    unsigned long long u = v < 0 ? (unsigned long long)(-v) : (unsigned long long)v;
    do { t[i++] = (char)('0' + u % 10); u /= 10; } while (u && i < 23);
    if (v < 0) put(l, "-");
    while (i && l->n < sizeof l->b - 1) l->b[l->n++] = t[--i];
}
static void put_hex(line *l, uint64_t v) {
    char t[17]; int i = 0;
    do { t[i++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v && i < 16);
    put(l, "0x");
    while (i && l->n < sizeof l->b - 1) l->b[l->n++] = t[--i];
}
static void flush(line *l) {
    l->b[l->n++] = '\n';
    size_t off = 0;
    while (off < l->n) {
        ssize_t w = write(FI_FD_CRASH, l->b + off, l->n - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    l->n = 0;
}

static void copy_file(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if (write(FI_FD_CRASH, buf, (size_t)n) != n) break;
    }
    close(fd);
}

/* thread, call, frames and maps: the part a crash and an exit share. */
static void report_context(uint64_t fault_pc) {
    line l = {.n = 0};
    pid_t tid = (pid_t)syscall(SYS_gettid);
    put(&l, "thread "); put_dec(&l, tid); put(&l, tid == control_tid ? " control " : " plugin ");
    char name[32] = {0};
    int fd = open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        for (ssize_t i = 0; i < n; i++) if (name[i] == '\n') name[i] = 0;
    }
    put(&l, name[0] ? name : "?");
    flush(&l);
    /* A push plugin's own thread is in no control call. */
    put(&l, "call ");
    put(&l, tid == control_tid ? fh_op_name(g_current_op) : "none");
    put(&l, " pid "); put_dec(&l, tid == control_tid ? g_current_pid : 0);
    flush(&l);
    void *pcs[64];
    int n = backtrace(pcs, 64);
    int first = 0;
    /* Skip this handler's own frames: start at the interrupted instruction. */
    if (fault_pc) {
        for (int i = 0; i < n; i++) if ((uint64_t)(uintptr_t)pcs[i] == fault_pc) { first = i; break; }
    }
    for (int i = first; i < n; i++) {
        put(&l, "frame "); put_hex(&l, (uint64_t)(uintptr_t)pcs[i]); flush(&l);
    }
    put(&l, "maps"); flush(&l);
    copy_file("/proc/self/maps");
}

static void on_fatal(int sig, siginfo_t *si, void *uctx) {
    if (__atomic_exchange_n(&reported, 1, __ATOMIC_SEQ_CST)) {
        for (;;) pause(); /* another thread is reporting; the process dies with it */
    }
    uint64_t pc = 0;
#if defined(__x86_64__)
    if (uctx) pc = (uint64_t)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RIP];
#endif
    line l = {.n = 0};
    put(&l, "crash "); put_dec(&l, sig); put(&l, " "); put(&l, signal_name(sig));
    put(&l, " code "); put_dec(&l, si ? si->si_code : 0);
    put(&l, " addr "); put_hex(&l, si ? (uint64_t)(uintptr_t)si->si_addr : 0);
    flush(&l);
    report_context(pc);
    /* SA_RESETHAND restored the default action; die of the same signal. */
    raise(sig);
    _exit(128 + sig);
}

static void on_exit_call(void) {
    if (normal_exit || __atomic_exchange_n(&reported, 1, __ATOMIC_SEQ_CST)) return;
    line l = {.n = 0};
    put(&l, "exit");
    flush(&l);
    report_context(0);
}

void fh_crash_normal_exit(void) { normal_exit = 1; }

void fh_crash_install(void) {
    void *warm[4];
    (void)backtrace(warm, 4); /* loads libgcc_s now, not in a handler */
    control_tid = (pid_t)syscall(SYS_gettid);
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fatal;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
    atexit(on_exit_call);
}
