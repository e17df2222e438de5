/* A process that unmapped its [vdso] (and [vvar], [vvar_vclock]), as a program run on a
 * kernel booted with vdso=0 has none: usage `vdso_unmapped OUTFILE`. Then forever: appends
 * "<n> <pid> ok" to OUTFILE (a "BAD ..." line, and exit, if a [vdso] is mapped again) and
 * sleeps 5 ms (nanosleep: a system call; nothing here calls into the vdso). The checkpoint
 * must inject its calls elsewhere than in a [vdso]; the restore must not give it one. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int specials_mapped(int unmap) {
    char buf[512];
    int found = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    unsigned long start[8], end[8];
    if (!maps) return -1;
    while (fgets(buf, sizeof buf, maps) && found < 8)
        if (strstr(buf, "[vdso]") || strstr(buf, "[vvar]") || strstr(buf, "[vvar_vclock]"))
            if (sscanf(buf, "%lx-%lx", &start[found], &end[found]) == 2) found++;
    fclose(maps);
    for (int i = 0; unmap && i < found; i++)
        if (munmap((void *)start[i], end[i] - start[i])) return -1;
    return found;
}

int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || specials_mapped(1) <= 0 || specials_mapped(0) != 0) return 2;
    pid_t pid = getpid();
    struct timespec pause = {0, 5000000};
    for (unsigned long n = 1;; n++) {
        char line[64];
        if (specials_mapped(0) != 0) {
            write(fd, "BAD vdso mapped again\n", 22);
            return 1;
        }
        int len = snprintf(line, sizeof line, "%lu %d ok\n", n, (int)pid);
        write(fd, line, len);
        nanosleep(&pause, NULL);
    }
}
