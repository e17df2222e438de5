/* Makes threads all the time, each gone a few microseconds later: a freeze must stop every
 * thread, those made while it lists and stops the others too. argv[1]: a file it writes
 * "ok N" to once every thousand threads. */
#include <pthread.h>
#include <stdio.h>

static void *brief(void *arg) {
    for (volatile int i = 0; i < 2000; i++)
        ;
    return arg;
}

int main(int argc, char **argv) {
    FILE *out = fopen(argv[1], "w");
    if (!out)
        return 1;
    for (unsigned long made = 1;; made++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, brief, NULL) == 0)
            pthread_detach(thread);
        if (made % 1000 == 0) {
            fprintf(out, "ok %lu\n", made);
            fflush(out);
        }
    }
}
