/* A SysV segment mapped in pieces: usage shm_pieces OUT DETACH.
   A 4-page segment is attached, its first page made read-only (mprotect splits the
   attachment in two mappings) and its last page unmapped (the attachment no longer covers
   the whole segment). The program counts in page 1, checks the patterns of pages 0 and 2
   at every step, and prints "<count>" lines; once the file DETACH exists it shmdt()s the
   attachment and prints "detached <SysV mappings left in /proc/self/maps>". */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

static int sysv_mappings(void) {
    char line[512];
    int n = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, maps))
        n += strstr(line, "/SYSV") != NULL;
    fclose(maps);
    return n;
}

int main(int argc, char **argv) {
    FILE *out = fopen(argv[1], "w");
    setvbuf(out, NULL, _IONBF, 0);
    long page = sysconf(_SC_PAGESIZE);
    int id = shmget(IPC_PRIVATE, 4 * page, IPC_CREAT | 0600);
    unsigned char *base = shmat(id, NULL, 0);
    if (id < 0 || base == (void *)-1) { fprintf(out, "BAD shmget/shmat\n"); return 1; }
    shmctl(id, IPC_RMID, NULL);         /* gone with its last attachment */
    memset(base, 0xA0, page);
    memset(base + 2 * page, 0xC2, page);
    if (mprotect(base, page, PROT_READ) || munmap(base + 3 * page, page)) { fprintf(out, "BAD split\n"); return 1; }
    volatile unsigned long *counter = (unsigned long *)(base + page);
    fprintf(out, "ready %d\n", sysv_mappings());
    for (;;) {
        for (long i = 0; i < page; i++)
            if (base[i] != 0xA0 || base[2 * page + i] != 0xC2) { fprintf(out, "BAD pattern at %ld\n", i); return 1; }
        ++*counter;
        fprintf(out, "%lu\n", *counter);
        if (access(argv[2], F_OK) == 0) {
            if (shmdt(base)) { fprintf(out, "BAD shmdt\n"); return 1; }
            fprintf(out, "detached %d\n", sysv_mappings());
            pause();
        }
        usleep(5000);
    }
}
