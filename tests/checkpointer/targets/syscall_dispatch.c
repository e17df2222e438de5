/* Syscall user dispatch (PR_SET_SYSCALL_USER_DISPATCH: Wine's way of catching Windows
 * programs' system calls), kept through a checkpoint: usage `syscall_dispatch OUTFILE`.
 * Most of the time its selector says BLOCK (a spin of ~2 ms), so a freeze finds it so and
 * the checkpointer's own injected calls would be dispatched to the program as SIGSYS
 * unless it turns dispatch off for the stop. Then a getppid() that must come to the
 * SIGSYS handler (which sets the selector to ALLOW, as such handlers do), and the line
 * "<n> <pid> ok"; a getppid() that the kernel ran instead writes BAD and exits. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#define PR_SYS_DISPATCH_ON 1
#define SYSCALL_DISPATCH_FILTER_ALLOW 0
#define SYSCALL_DISPATCH_FILTER_BLOCK 1
#endif

static volatile char selector = SYSCALL_DISPATCH_FILTER_ALLOW;
static volatile unsigned long dispatched;

static void on_sigsys(int sig, siginfo_t *info, void *context) {
    selector = SYSCALL_DISPATCH_FILTER_ALLOW;      /* before anything else: rt_sigreturn is a syscall too */
    if (info->si_syscall == SYS_getppid) dispatched++;
}

int main(int argc, char **argv) {
    int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    struct sigaction sa = {0};
    sa.sa_sigaction = on_sigsys, sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSYS, &sa, NULL);
    if (prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, 0, 0, &selector) != 0) {
        dprintf(out, "BAD prctl %s\n", strerror(errno));
        return 1;
    }
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);          /* the vDSO: no system call */
        selector = SYSCALL_DISPATCH_FILTER_BLOCK;
        do clock_gettime(CLOCK_MONOTONIC, &now);
        while ((now.tv_sec - start.tv_sec) * 1000000000L + now.tv_nsec - start.tv_nsec < 2000000);
        syscall(SYS_getppid);
        if (selector != SYSCALL_DISPATCH_FILTER_ALLOW || dispatched != n) {
            dprintf(out, "BAD getppid was not dispatched (%lu of %lu)\n", dispatched, n);
            return 1;
        }
        dprintf(out, "%lu %d ok\n", n, pid);
        usleep(1000);
    }
}
