/* An event loop: usage `epoll_timer OUTFILE`. An epoll instance watches a 5 ms
 * interval timerfd (data 7) and an eventfd (data 9). Each timer expiry appends
 * "<n> <pid> ok" and adds 1 to the eventfd; each eventfd wake-up reads it back.
 * A wake-up with unknown data, a silent epoll (2 s) or a lost eventfd count writes BAD. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

static int out;

static void bad(const char *what) {
    char line[128];
    int len = snprintf(line, sizeof line, "BAD %s\n", what);
    write(out, line, len);
    exit(1);
}

int main(int argc, char **argv) {
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int efd = eventfd(0, EFD_NONBLOCK);
    struct itimerspec spec = {{0, 5000000}, {0, 5000000}};
    timerfd_settime(tfd, 0, &spec, NULL);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 7};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    ev.data.u64 = 9;
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    pid_t pid = getpid();
    uint64_t owed = 0;
    for (unsigned long n = 1;;) {
        struct epoll_event got[4];
        int count = epoll_wait(ep, got, 4, 2000);
        if (count == 0) bad("epoll silent for 2 s");
        for (int i = 0; i < count; i++) {
            uint64_t value = 0;
            if (got[i].data.u64 == 7) {
                if (read(tfd, &value, 8) != 8) continue;
                char line[64];
                int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n++, (int)pid);
                if (write(out, line, len) != len) return 3;
                uint64_t one = 1;
                write(efd, &one, 8);
                owed++;
            } else if (got[i].data.u64 == 9) {
                if (read(efd, &value, 8) != 8 || value != owed) bad("eventfd count");
                owed = 0;
            } else {
                bad("unknown epoll data");
            }
        }
    }
}
