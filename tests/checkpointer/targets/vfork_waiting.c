/* A parent inside vfork(): its child neither execs nor exits (usage `vfork_waiting
 * OUTFILE`; the child writes "ready" to OUTFILE, then sleeps until killed). */
#include <fcntl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    if (vfork() == 0) {
        int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        write(fd, "ready", 5);
        close(fd);
        for (;;)
            pause();
    }
    return 0;
}
