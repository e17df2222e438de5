/* A thread almost always inside an rseq critical section: usage `rseq_section OUTFILE`.
 * Forever: enters a critical section of glibc's registered rseq area (rseq_cs set to its
 * descriptor), spins ~10 ms in it, and at its end reads rseq_cs back. A section that ran
 * to its end must still find its descriptor there: the kernel clears the field only when
 * it aborts the section (a preemption, a signal), and then the thread is at the abort
 * handler, not at the end. Each section, ended or aborted, appends "<n> <pid> ok"; one
 * that ended with rseq_cs cleared writes a BAD line and exits 1 (zdtm's transition/rseq01:
 * a stop inside the section must abort it, in the process that goes on and in a restored
 * one). x86-64. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/rseq.h>
#include <unistd.h>

static int section(volatile struct rseq *rs)
{
    uint64_t seen = 0, expected = 0;
    __asm__ __volatile__ goto(
        ".pushsection __rseq_cs, \"aw\"\n\t"
        ".balign 32\n\t"
        "3:\n\t"
        ".long 0, 0\n\t"
        ".quad 1f, (2f-1f), 4f\n\t"
        ".popsection\n\t"
        "leaq 3b(%%rip), %%rax\n\t"
        "1:\n\t"
        "movq %%rax, %[rseq_cs]\n\t"
        "mov $20000000, %%rcx\n\t"
        "5:\n\t"
        "dec %%rcx\n\t"
        "jnz 5b\n\t"
        "movq %%rax, %[expected]\n\t"
        "movq %[rseq_cs], %%rax\n\t"
        "movq %%rax, %[seen]\n\t"
        "2:\n\t"
        ".pushsection __rseq_failure, \"ax\"\n\t"
        ".byte 0x0f, 0xb9, 0x3d\n\t"
        ".long 0x53053053\n\t"
        "4:\n\t"
        "jmp %l[aborted]\n\t"
        ".popsection\n\t"
        :
        : [rseq_cs] "m" (rs->rseq_cs), [seen] "m" (seen), [expected] "m" (expected)
        : "memory", "cc", "rax", "rcx"
        : aborted);
    return seen == expected;
aborted:
    return 1;
}

int main(int argc, char **argv)
{
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || __rseq_size == 0 || RSEQ_SIG != 0x53053053)
        return 2;
    volatile struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    pid_t pid = getpid();
    for (unsigned long n = 1;; n++) {
        char line[64];
        if (!section(rs)) {
            int len = snprintf(line, sizeof line, "BAD section %lu ended with rseq_cs cleared\n", n);
            write(fd, line, len);
            return 1;
        }
        int len = snprintf(line, sizeof line, "%08lu %7d ok\n", n, (int)pid);
        if (write(fd, line, len) != len)
            return 3;
    }
}
