/* SysV semaphores and a message queue whose state the program also keeps in its memory:
 * usage `sysv_state OUTFILE KEY WAKEFILE`. Makes a set of 3 semaphores (key KEY) and a
 * message queue (key KEY+1), writes "ids SEMID MSQID", and forks a child that blocks in
 * semop on semaphore 2 (again after an EINTR) and exits 7 once it gets it.
 * The parent, every 2 ms: moves semaphores 0 and 1 by semop; sends a message (type 1..5,
 * 1 to 1500 bytes, byte j of message n being (n + j) & 0xff); once 8 are queued, receives
 * one, the oldest on even steps, the oldest of one type on odd steps (expecting ENOMSG if
 * it keeps none of that type). After each step it compares the semaphores' values (GETALL)
 * and the queue's message count and bytes (IPC_STAT) with its memory, and every message
 * received with the one it expects: any difference is written "BAD ..." and ends it (1).
 * A shared memory segment (key KEY+2) is attached only every 50 steps, to compare the
 * number it holds with the one written there last and write the step's.
 * Every 50 steps: "step N sem0 sem1 queued". Once WAKEFILE exists: waits until the child
 * waits on semaphore 2 (GETNCNT), posts it, reaps the child, writes "woken STATUS". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEEP 8
#define MAXLEN 1500

struct queued { long type; int size; unsigned n; };
static struct queued model[64];
static int queued, sem_model[2];
static unsigned long queued_bytes;
static FILE *out;

static void bad(const char *what, long a, long b) {
    fprintf(out, "BAD %s: %ld, expected %ld\n", what, a, b);
    exit(1);
}

static void fill(char *text, unsigned n, int size) {
    for (int j = 0; j < size; j++) text[j] = (char)((n + j) & 0xff);
}

static void sem_move(int semid, int which, int by) {
    struct sembuf op = {(unsigned short)which, (short)by, 0};
    while (semop(semid, &op, 1) != 0)
        if (errno != EINTR) bad("semop", errno, 0);
    sem_model[which] += by;
}

static void receive(int msqid, long type) {
    static struct { long type; char text[MAXLEN]; } m;
    int at = -1;
    for (int i = 0; i < queued && at < 0; i++)
        if (type == 0 || model[i].type == type) at = i;
    ssize_t got;
    while ((got = msgrcv(msqid, &m, MAXLEN, type, IPC_NOWAIT)) < 0 && errno == EINTR) {}
    if (at < 0) {
        if (got >= 0 || errno != ENOMSG) bad("a message of a type none was queued of", type, -1);
        return;
    }
    if (got < 0) bad("msgrcv", errno, 0);
    struct queued want = model[at];
    char text[MAXLEN];
    fill(text, want.n, want.size);
    if (m.type != want.type) bad("message type", m.type, want.type);
    if (got != want.size) bad("message size", got, want.size);
    if (memcmp(m.text, text, got)) bad("message bytes of message", want.n, want.n);
    memmove(model + at, model + at + 1, (queued - at - 1) * sizeof *model);
    queued--;
    queued_bytes -= want.size;
}

static void compare(int semid, int msqid) {
    unsigned short values[3];
    struct msqid_ds ds;
    if (semctl(semid, 0, GETALL, values) != 0) bad("semctl GETALL", errno, 0);
    for (int i = 0; i < 2; i++)
        if (values[i] != sem_model[i]) bad(i ? "semaphore 1" : "semaphore 0", values[i], sem_model[i]);
    if (msgctl(msqid, IPC_STAT, &ds) != 0) bad("msgctl IPC_STAT", errno, 0);
    if ((long)ds.msg_qnum != queued) bad("messages queued", ds.msg_qnum, queued);
    if (ds.__msg_cbytes != queued_bytes) bad("bytes queued", ds.__msg_cbytes, queued_bytes);
}

int main(int argc, char **argv) {
    out = fopen(argv[1], "w");
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    int semid = semget(key, 3, IPC_CREAT | IPC_EXCL | 0640);
    int msqid = msgget(key + 1, IPC_CREAT | IPC_EXCL | 0620);
    int shmid = shmget(key + 2, 8192, IPC_CREAT | IPC_EXCL | 0600);
    if (!out || semid < 0 || msqid < 0 || shmid < 0) return 2;
    setvbuf(out, NULL, _IONBF, 0);
    fprintf(out, "ids %d %d %d\n", semid, msqid, shmid);
    unsigned long written = 0;
    pid_t child = fork();
    if (child == 0) {
        struct sembuf wait_for = {2, -1, 0};
        while (semop(semid, &wait_for, 1) != 0)
            if (errno != EINTR) _exit(3);
        _exit(7);
    }
    int woken = 0;
    for (unsigned n = 1;; n++) {
        sem_move(semid, 0, sem_model[0] < 99 && n % 4 != 3 ? 1 : (sem_model[0] ? -1 : 1));
        sem_move(semid, 1, sem_model[1] < 60 ? 3 : -sem_model[1]);
        static struct { long type; char text[MAXLEN]; } m;
        m.type = 1 + n % 5;
        int size = 1 + (n * 37) % MAXLEN;
        fill(m.text, n, size);
        while (msgsnd(msqid, &m, size, 0) != 0)
            if (errno != EINTR) bad("msgsnd", errno, 0);
        model[queued++] = (struct queued){m.type, size, n};
        queued_bytes += size;
        if (queued > KEEP) receive(msqid, n % 2 ? 1 + (n / 2) % 5 : 0);
        while (queued > KEEP) receive(msqid, 0);     /* (none of that type was queued) */
        compare(semid, msqid);
        if (n % 50 == 0) {
            volatile unsigned long *word = shmat(shmid, NULL, 0);
            if (word == (void *)-1) bad("shmat", errno, 0);
            if (word[1000] != written) bad("the segment's number", word[1000], written);
            word[1000] = written = n;
            shmdt((void *)word);
        }
        if (n % 50 == 0) fprintf(out, "step %u %d %d %d\n", n, sem_model[0], sem_model[1], queued);
        if (!woken && access(argv[3], F_OK) == 0) {
            while (semctl(semid, 2, GETNCNT) != 1) usleep(1000);
            struct sembuf post = {2, 1, 0};
            int status;
            if (semop(semid, &post, 1) != 0 || waitpid(child, &status, 0) != child) bad("waking the child", errno, 0);
            fprintf(out, "woken %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            woken = 1;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
