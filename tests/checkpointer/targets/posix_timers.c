/* POSIX timers: usage `posix_timers OUTFILE`.
 * Three timers: a 5 ms periodic CLOCK_MONOTONIC timer signalling SIGRTMIN to the process
 * (sigev value 42, checked in the handler), a 7 ms periodic timer signalling SIGRTMIN+1
 * to one thread (SIGEV_THREAD_ID) that waits for it with sigwaitinfo, and a 1000 s
 * one-shot CLOCK_REALTIME timer with SIGEV_NONE whose time left must only go down.
 * Every 10 ms it appends "<n> <pid> ok"; every 50 lines both periodic timers must have
 * ticked (their ids must still work). On any mismatch: a BAD line, exit 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks, bad_value, thread_ticks;
static volatile pid_t worker_tid;
static int fd;

static void bad(const char *why) {
    char line[128];
    int len = snprintf(line, sizeof line, "BAD %s\n", why);
    write(fd, line, len);
    _exit(1);
}

static void on_tick(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)ctx;
    if (info->si_code != SI_TIMER || info->si_value.sival_int != 42) bad_value = 1;
    ticks++;
}

static void *worker(void *arg) {
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    worker_tid = syscall(SYS_gettid);
    for (;;) {
        siginfo_t info;
        if (sigwaitinfo(&set, &info) == SIGRTMIN + 1) {
            if (info.si_code != SI_TIMER || info.si_value.sival_int != 7) bad_value = 2;
            thread_ticks++;
        }
    }
    return NULL;
}

static timer_t make_timer(clockid_t clock, int notify, int signo, int value, pid_t tid, long interval_ns,
                          long first_s, long first_ns) {
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = notify;
    ev.sigev_signo = signo;
    ev.sigev_value.sival_int = value;
    ev._sigev_un._tid = tid;
    timer_t t;
    if (timer_create(clock, &ev, &t)) bad("timer_create");
    struct itimerspec its = {{0, interval_ns}, {first_s, first_ns}};
    if (timer_settime(t, 0, &its, NULL)) bad("timer_settime");
    return t;
}

int main(int argc, char **argv) {
    (void)argc;
    fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);
    pthread_t thread;
    pthread_create(&thread, NULL, worker, NULL);
    while (!worker_tid) usleep(1000);
    timer_t periodic = make_timer(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN, 42, 0, 5000000, 0, 5000000);
    timer_t to_thread = make_timer(CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIGRTMIN + 1, 7, worker_tid, 7000000, 0, 7000000);
    timer_t one_shot = make_timer(CLOCK_REALTIME, SIGEV_NONE, 0, 0, 0, 0, 1000, 0);
    pid_t pid = getpid();
    long last_left = 1001, last_ticks = -1, last_thread_ticks = -1;
    for (unsigned long n = 1;; n++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        while (nanosleep(&ts, &ts)) {}
        struct itimerspec its;
        if (timer_gettime(one_shot, &its) || its.it_interval.tv_sec || its.it_value.tv_sec > last_left ||
            its.it_value.tv_sec < 900)
            bad("one-shot timer lost or moved");
        last_left = its.it_value.tv_sec;
        if (timer_gettime(periodic, &its) || its.it_interval.tv_nsec != 5000000) bad("periodic timer lost");
        if (timer_gettime(to_thread, &its) || its.it_interval.tv_nsec != 7000000) bad("thread timer lost");
        if (bad_value) bad(bad_value == 1 ? "wrong siginfo for the process timer" : "wrong siginfo in the thread");
        if (n % 50 == 0) {
            if (ticks == last_ticks) bad("the process timer stopped");
            if (thread_ticks == last_thread_ticks) bad("the thread timer stopped");
            last_ticks = ticks;
            last_thread_ticks = thread_ticks;
        }
        if (getpid() != pid) bad("pid");
        char line[64];
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(fd, line, len) != len) return 3;
    }
}
