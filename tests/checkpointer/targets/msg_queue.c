/* A process using a SysV message queue: usage `msg_queue OUTFILE`. Makes a private queue,
 * writes "queue <msqid>" to OUTFILE, then forever sends a numbered message and receives
 * it back, appending "<n> <pid> ok" every 10 ms. (The test removes the queue.) */
#include <stdio.h>
#include <sys/msg.h>
#include <time.h>
#include <unistd.h>

struct message { long type; long n; };

int main(int argc, char **argv) {
    FILE *out = fopen(argv[1], "w");
    int id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (!out || id < 0) return 2;
    fprintf(out, "queue %d\n", id);
    fflush(out);
    for (long n = 1;; n++) {
        struct message m = {1, n};
        if (msgsnd(id, &m, sizeof m.n, 0) || msgrcv(id, &m, sizeof m.n, 0, 0) < 0 || m.n != n) return 1;
        fprintf(out, "%08ld %7d ok\n", n, (int)getpid());
        fflush(out);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
