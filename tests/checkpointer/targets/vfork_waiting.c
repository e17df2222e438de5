/* A parent inside vfork(): its child neither execs nor exits (usage `vfork_waiting
 * OUTFILE [thread]`; the child writes "ready" to OUTFILE, then sleeps until killed).
 * With `thread`, a second thread calls vfork() while the main thread waits for it. */
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

static void *vfork_and_wait(void *path)
{
    if (vfork() == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        write(fd, "ready", 5);
        close(fd);
        for (;;)
            pause();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t thread;

    if (argc == 3 && strcmp(argv[2], "thread") == 0) {
        pthread_create(&thread, NULL, vfork_and_wait, argv[1]);
        pthread_join(thread, NULL);
        return 0;
    }
    if (argc != 2)
        return 2;
    vfork_and_wait(argv[1]);
    return 0;
}
