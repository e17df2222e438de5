/* A target for the history core test: usage `deep_sleeper`. Counts in a global from a
 * few nested functions with recognisable names, sleeping 2 ms per step. */
#include <time.h>

volatile long steps = 0;

void innermost_wait(long n) {
    for (;;) {
        steps = n++;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, 0);
    }
}

void middle_layer(long n) { innermost_wait(n + 1); }

int main(void) {
    middle_layer(41);
    return 0;
}
