/* A parent that is inside vfork() most of the time, each time briefly (usage `vfork_loop
 * OUTFILE`): its children wait 2 ms, then exec /bin/true; it writes "ready" to OUTFILE
 * once the loop runs. (A shell script's loop is like this, with shorter waits.) */
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    for (int n = 0;; n++) {
        pid_t child = vfork();
        if (child == 0) {
            struct timespec pause = {0, 2000000};
            nanosleep(&pause, NULL);            /* the parent stays in vfork() meanwhile */
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        waitpid(child, NULL, 0);
        if (n == 10) {
            int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
            write(fd, "ready", 5);
            close(fd);
        }
    }
}
