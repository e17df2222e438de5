/* A self-checking process with a bit of everything: usage `misc_state OUTFILE` (run in
 * a scratch directory). It holds: a SIGUSR1 handler on a sigaltstack, SIGUSR2 queued
 * (value 42) while blocked, SIGPWR pending for a signalfd, a 10 ms ITIMER_REAL with a
 * SIGALRM handler, a SIGTRAP handler (restore's call batches force SIGTRAPs through), an
 * unlinked open file, a MAP_SHARED file mapping, shared anonymous memory, an eventfd, umask 027, RLIMIT_NOFILE 777 and a seccomp filter (with
 * no_new_privs) that makes getppid() fail with EPERM. Every 5 ms it checks them all
 * and appends "<n> <pid> ok". After a SIGUSR1 it consumes SIGUSR2 (must carry 42) and
 * SIGPWR (through the signalfd) and appends "usr1 ok". A mismatch writes BAD, exits 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int out;
static volatile sig_atomic_t usr1_seen, usr1_on_altstack = 1;
static volatile unsigned long ticks;
static char altstack[65536];

static void bad(const char *what) {
    char line[128];
    int len = snprintf(line, sizeof line, "BAD %s\n", what);
    write(out, line, len);
    exit(1);
}

static void on_usr1(int sig) {
    char here;
    if (!(&here >= altstack && &here < altstack + sizeof altstack)) usr1_on_altstack = 0;
    usr1_seen = 1;
}

static void on_alarm(int sig) { ticks++; }

static void on_trap(int sig) {}

int main(int argc, char **argv) {
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1, sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_alarm, sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_trap, sa.sa_flags = 0;   /* restore's batches force SIGTRAPs: it must stay */
    sigaction(SIGTRAP, &sa, NULL);
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR2);
    sigaddset(&blocked, SIGPWR);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    union sigval value = {.sival_int = 42};
    sigqueue(getpid(), SIGUSR2, value);
    kill(getpid(), SIGPWR);
    sigset_t pwr;
    sigemptyset(&pwr);
    sigaddset(&pwr, SIGPWR);
    int sfd = signalfd(-1, &pwr, SFD_NONBLOCK);
    struct itimerval timer = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_REAL, &timer, NULL);

    int unlinked = open("unlinked.tmp", O_RDWR | O_CREAT | O_TRUNC, 0600);
    write(unlinked, "kept after unlink", 17);
    unlink("unlinked.tmp");
    int mapped = open("shared.map", O_RDWR | O_CREAT | O_TRUNC, 0644);
    ftruncate(mapped, 4096);
    volatile uint64_t *shared_file = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mapped, 0);
    volatile uint64_t *shared_anon = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int efd = eventfd(0, 0);
    umask(027);
    struct rlimit nofile = {777, 1024};
    setrlimit(RLIMIT_NOFILE, &nofile);
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = 4, .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
        bad("seccomp");
    if (sfd < 0 || unlinked < 0 || shared_file == MAP_FAILED || shared_anon == MAP_FAILED || efd < 0)
        bad("setup");

    pid_t pid = getpid();
    unsigned long last_ticks = 0;
    for (unsigned long n = 1;; n++) {
        char buf[32] = {0};
        if (pread(unlinked, buf, 17, 0) != 17 || memcmp(buf, "kept after unlink", 17)) bad("unlinked file");
        uint64_t on_disk = 0;
        if (n > 1 && (pread(mapped, &on_disk, 8, 0) != 8 || shared_file[0] != on_disk))
            bad("shared file mapping");
        if (n > 1 && (shared_anon[0] != n - 1 || shared_anon[512] != 2 * (n - 1))) bad("shared anon memory");
        shared_file[0] = n, shared_anon[0] = n, shared_anon[512] = 2 * n;
        uint64_t one = 1, count = 0;
        write(efd, &one, 8);
        if (n % 50 == 0 && (read(efd, &count, 8) != 8 || count != 50)) bad("eventfd count");
        errno = 0;
        if (syscall(SYS_getppid) != -1 || errno != EPERM) bad("seccomp filter lost");
        mode_t mask = umask(027);
        if (mask != 027) bad("umask");
        struct rlimit now;
        getrlimit(RLIMIT_NOFILE, &now);
        if (now.rlim_cur != 777 || now.rlim_max != 1024) bad("rlimit");
        sigset_t pending;
        sigpending(&pending);
        if (!sigismember(&pending, SIGUSR2) && !usr1_seen) bad("pending SIGUSR2 lost");
        struct sigaction trap;
        if (sigaction(SIGTRAP, NULL, &trap) || trap.sa_handler != on_trap) bad("SIGTRAP handler lost");
        if (n % 100 == 0) {
            if (ticks == last_ticks) bad("interval timer stopped");
            last_ticks = ticks;
        }
        if (usr1_seen == 1) {
            siginfo_t info;
            struct timespec zero = {0, 0};
            if (sigtimedwait(&blocked, &info, &zero) != SIGUSR2 || info.si_value.sival_int != 42 ||
                info.si_code != SI_QUEUE)
                bad("queued SIGUSR2 value");
            struct signalfd_siginfo fdinfo;
            if (read(sfd, &fdinfo, sizeof fdinfo) != sizeof fdinfo || fdinfo.ssi_signo != SIGPWR)
                bad("signalfd");
            if (!usr1_on_altstack) bad("handler not on the altstack");
            write(out, "usr1 ok\n", 8);
            usr1_seen = 2;
        }
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(out, line, len) != len) return 3;
        struct timespec ts = {0, 5 * 1000 * 1000};
        while (nanosleep(&ts, &ts) != 0) {}
    }
}
