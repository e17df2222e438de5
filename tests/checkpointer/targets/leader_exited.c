/* A process whose main thread has exited (pthread_exit) while another thread runs:
 * usage `leader_exited OUTFILE`; the thread writes "ready" to OUTFILE, then sleeps. */
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

static const char *out;

static void *worker(void *unused)
{
    (void)unused;
    sleep(1);                   /* the main thread is gone by then */
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write(fd, "ready", 5);
    close(fd);
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t thread;
    if (argc != 2)
        return 2;
    out = argv[1];
    pthread_create(&thread, NULL, worker, NULL);
    pthread_exit(NULL);
}
