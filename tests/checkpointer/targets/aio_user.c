/* A program using Linux native AIO (io_setup, as libaio does; raw system calls here):
 * usage `aio_user OUTFILE [direct]`, run in a scratch directory.
 * It makes three contexts and destroys the first, so that the kernel's indexes of the
 * other two (B: 1, C: 2) are not those a fresh process gets. On C it writes and reaps until
 * the ring's head is two slots before its end, then writes three more without reaping them
 * (data 1001..1003): the ring's tail wraps round to 1, behind its head. On B it leaves two
 * writes unreaped (data 7, 8). Each write is one byte at its own offset of aio.data.
 * With `direct` it also opens aio.data again with O_DIRECT.
 * Then it writes "ready <pid>" and waits for a file "read-now" (removes it): it reaps what
 * is left on C and B (it must be exactly those events, in order, each a 1-byte write),
 * writes once more on each context and reaps that, checks aio.data, and writes "read ok".
 * A mismatch writes "BAD ..." and exits 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct ring { unsigned id, nr, head, tail, magic, compat, incompat, header_length; };

static int out, data_fd;

static void bad(const char *what, long a, long b) {
    char line[160];
    int len = snprintf(line, sizeof line, "BAD %s (%ld, %ld)\n", what, a, b);
    write(out, line, len);
    exit(1);
}

static void submit(aio_context_t ctx, unsigned long data, long offset) {
    static char byte = 'a';
    struct iocb cb = {0}, *cbp = &cb;
    cb.aio_data = data, cb.aio_lio_opcode = IOCB_CMD_PWRITE, cb.aio_fildes = data_fd;
    cb.aio_buf = (unsigned long)&byte, cb.aio_nbytes = 1, cb.aio_offset = offset;
    long done = syscall(__NR_io_submit, ctx, 1, &cbp);
    if (done != 1) bad("io_submit", done, data);
}

static void reap(aio_context_t ctx, int count, const unsigned long *expected) {
    struct io_event events[8];
    struct timespec none = {0, 0};
    long got = syscall(__NR_io_getevents, ctx, 0, 8, events, &none);
    if (got != count) bad("number of events", got, count);
    for (int i = 0; i < count; i++) {
        if (events[i].data != expected[i]) bad("event data", (long)events[i].data, (long)expected[i]);
        if (events[i].res != 1) bad("event result", (long)events[i].res, 1);
    }
}

int main(int argc, char **argv) {
    out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    data_fd = open("aio.data", O_RDWR | O_CREAT | O_TRUNC, 0644);
    aio_context_t a = 0, b = 0, c = 0;
    if (syscall(__NR_io_setup, 4, &a) || syscall(__NR_io_setup, 4, &b) || syscall(__NR_io_setup, 64, &c))
        bad("io_setup", 0, 0);
    if (syscall(__NR_io_destroy, a)) bad("io_destroy", 0, 0);
    struct ring *ring = (struct ring *)c;
    if (((struct ring *)b)->id != 1 || ring->id != 2) bad("kernel indexes", ((struct ring *)b)->id, ring->id);
    unsigned long one;
    for (unsigned i = 0; i < ring->nr - 2; i++) {
        one = i;
        submit(c, i, 0);
        reap(c, 1, &one);
    }
    const unsigned long on_c[] = {1001, 1002, 1003}, on_b[] = {7, 8}, last = 2000;
    for (int i = 0; i < 3; i++) submit(c, on_c[i], 1 + i);
    for (int i = 0; i < 2; i++) submit(b, on_b[i], 4 + i);
    if (!(ring->tail < ring->head)) bad("the tail did not wrap", ring->tail, ring->head);
    if (argc > 2 && open("aio.data", O_RDONLY | O_DIRECT) < 0) bad("O_DIRECT open", 0, 0);
    dprintf(out, "ready %d\n", getpid());
    while (access("read-now", F_OK) != 0) {
        struct timespec tick = {0, 5000000};
        nanosleep(&tick, NULL);
    }
    unlink("read-now");
    reap(c, 3, on_c);
    reap(b, 2, on_b);
    submit(c, last, 6);
    reap(c, 1, &last);
    submit(b, last, 7);
    reap(b, 1, &last);
    char written[9] = {0};
    if (pread(data_fd, written, 8, 0) != 8 || strcmp(written, "aaaaaaaa")) bad("aio.data", 0, 0);
    dprintf(out, "read ok\n");
    return 0;
}
