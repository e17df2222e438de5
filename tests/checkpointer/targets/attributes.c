/* A process whose less common attributes must survive checkpoint/restore (cases found
 * by running CRIU's zdtm tests against slsfs): usage `attributes OUTFILE`.
 * It sets them up, writes "ready", then at each SIGUSR1 checks them all and writes one
 * line per attribute, "ok NAME" or "BAD NAME: detail", then "done".
 *   pipe-flags: one pipe, its write end reopened through /proc/self/fd (a second open
 *     file description) and only the first made O_NONBLOCK: the flags are per description.
 *   epoll-closed-fd: an epoll watch added through a dup of a pipe's read end, that dup
 *     then closed (the watch lives on under its old fd number): data in the pipe must
 *     wake epoll_wait with the watch's data.
 *   unlinked-file: a file owned by 1:1 with an old mtime, unlinked, held by two open file
 *     descriptions (the second opened through /proc/self/fd, read-only): still one file
 *     (same inode, its bytes read through the second), owner, mtime and access modes as
 *     they were.
 *   credentials: fsuid 9 and fsgid 8 (uid and gid stay 0), CAP_SYS_BOOT out of the
 *     bounding set, CAP_NET_RAW out of the effective set, CAP_NET_BIND_SERVICE inheritable
 *     and ambient.
 *   scheduling: SCHED_BATCH with nice 7.
 *   killed-zombie: a child killed by SIGKILL, not yet waited for.
 *   orphaned-session: a daemon's double fork (a child calls setsid() and forks, then
 *     exits); its child, re-parented to us (a subreaper), is in the session and group of
 *     the exited one.
 *   orphaned-group: a group leader's child, the leader exited: the child stays in it.
 *   left-session: a child forks, then calls setsid(): its own child stays in our
 *     session (and dies with it: parent-death signal SIGKILL).
 *   queued-messages: a datagram and a seqpacket socketpair with messages waiting (one
 *     of them empty): same messages, same order, same boundaries.
 *   pidfd: a pidfd of a child (the orphaned-group one) names that child.
 *   exited-pidfds: two pidfds of a child that has exited (reaped), one of another: the
 *     first two share their inode (pidfs), the third's differs.
 *   socket-options: a TCP socket with a receive timeout, linger, priority and keepalive
 *     idle time set.
 *   parent-death-signal: PR_SET_PDEATHSIG SIGUSR2 (credentials changes clear it).
 *   shutdown: a stream socketpair whose one end shut down writing: the other reads EOF.
 *   memfd-seals: a memfd (mode 0642) sealed against shrinking, growing and writing, and
 *     one sealed against future writes whose shared writable mapping (made before) still
 *     writes: same seals, mode, bytes.
 *   mapping-may-write: a file opened read-write, mapped shared read-only, its fd closed:
 *     mprotect(PROT_WRITE) still allowed.
 *   child-subreaper: PR_SET_CHILD_SUBREAPER (the orphans above are ours by it).
 *   oom-score-adj: 123 in /proc/self/oom_score_adj.
 *   loginuid: 4242 in /proc/self/loginuid (the audit login uid a login sets; the kernel
 *     takes it only from the process itself).
 *   seccomp: a filter (installed last, without no_new_privs) failing getitimer and
 *     get_robust_list with EPERM, calls a checkpointer might inject: still in force.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int out;
static volatile sig_atomic_t asked;
static int pipe_ends[2], pipe_reopened;
static int epoll_fd, epoll_pipe[2];
static int ghost, ghost_reader, holes;
static int dgram[2], seqpacket[2], child_pidfd, tcp, half_closed[2], exited_pidfds[3];
static const char *const queued[] = {"first", "", "third message"};
static pid_t killed, session_member, session_id, grouped_child, group_id, new_leader, left_behind;

static void report(int good, const char *name, const char *format, ...)
{
    char line[256], detail[200] = "";
    va_list args;
    va_start(args, format);
    vsnprintf(detail, sizeof detail, format, args);
    va_end(args);
    int len = good ? snprintf(line, sizeof line, "ok %s\n", name)
                   : snprintf(line, sizeof line, "BAD %s: %s\n", name, detail);
    write(out, line, len);
}

/* A grandchild left to us (a subreaper) by a child that made a new session (`session`) or
 * process group, forked it and exited; the child's pid goes to *leader. */
static pid_t orphan(int session, pid_t *leader)
{
    int ids[2];
    pid_t member;
    pipe(ids);
    if ((*leader = fork()) == 0) {
        if (session)
            setsid();
        else
            setpgid(0, 0);
        if ((member = fork()) == 0)
            for (;;) pause();
        write(ids[1], &member, sizeof member);
        _exit(0);
    }
    read(ids[0], &member, sizeof member);
    waitpid(*leader, NULL, 0);
    close(ids[0]);
    close(ids[1]);
    return member;
}

/* A child that forks, then makes a new session: its child stays in ours. Asked over
 * `ask_leader`, the leader answers over `leader_answer` whether that child is still its. */
static int ask_leader, leader_answer;
static int sealed, future_sealed;
static char *future_map, *read_only_map;

static void leave_session(void)
{
    int ids[2], ask[2], answer[2];
    pipe(ids);
    pipe(ask);
    pipe(answer);
    if ((new_leader = fork()) == 0) {
        pid_t child = fork();
        if (child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            for (;;) pause();
        }
        setsid();
        write(ids[1], &child, sizeof child);
        char question;
        while (read(ask[0], &question, 1) == 1) {
            siginfo_t info;
            int mine = waitid(P_PID, child, &info, WEXITED | WNOHANG | WNOWAIT) == 0;
            write(answer[1], &mine, sizeof mine);
        }
        _exit(0);
    }
    read(ids[0], &left_behind, sizeof left_behind);
    close(ids[0]);
    close(ids[1]);
    ask_leader = ask[1];
    leader_answer = answer[0];
}

static int leader_has_its_child(void)
{
    int mine = 0;
    write(ask_leader, "?", 1);
    read(leader_answer, &mine, sizeof mine);
    return mine;
}

static void setup(void)
{
    char path[64];
    int adj = open("/proc/self/oom_score_adj", O_WRONLY);     /* before fsuid 9 */
    write(adj, "123", 3);
    close(adj);
    int login = open("/proc/self/loginuid", O_WRONLY);        /* as root: before fsuid 9 */
    write(login, "4242", 4);
    close(login);
    int mapped = open("mapped", O_RDWR | O_CREAT | O_TRUNC, 0644);
    ftruncate(mapped, 4096);
    read_only_map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, mapped, 0);
    close(mapped);
    if (pipe(pipe_ends) != 0)
        exit(2);
    snprintf(path, sizeof path, "/proc/self/fd/%d", pipe_ends[1]);
    pipe_reopened = open(path, O_WRONLY);
    fcntl(pipe_ends[1], F_SETFL, fcntl(pipe_ends[1], F_GETFL) | O_NONBLOCK);

    struct epoll_event event = {.events = EPOLLIN, .data.u64 = 0x5eed};
    if (pipe(epoll_pipe) != 0 || (epoll_fd = epoll_create1(0)) < 0)
        exit(2);
    int dup_fd = dup2(epoll_pipe[0], 900);
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, dup_fd, &event);
    close(dup_fd);

    ghost = open("unlinked", O_RDWR | O_CREAT | O_TRUNC, 0640);
    write(ghost, "before", 6);
    fchown(ghost, 1, 1);
    struct timespec times[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1234567890}};
    futimens(ghost, times);
    snprintf(path, sizeof path, "/proc/self/fd/%d", ghost);
    ghost_reader = open(path, O_RDONLY);
    unlink("unlinked");

    char block[4096];
    memset(block, 'h', sizeof block);
    holes = open("holes", O_RDWR | O_CREAT | O_TRUNC, 0600);    /* data, hole, data, hole to 64 KiB */
    pwrite(holes, block, sizeof block, 0);
    pwrite(holes, block, sizeof block, 8192);
    ftruncate(holes, 65536);
    unlink("holes");

    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    syscall(SYS_capget, &header, caps);
    caps[0].effective &= ~(1u << CAP_NET_RAW);
    caps[0].inheritable |= 1u << CAP_NET_BIND_SERVICE;
    syscall(SYS_capset, &header, caps);
    prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0);
    setfsgid(8);
    setfsuid(9);
    prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0);

    struct sched_param param = {0};
    sched_setscheduler(0, SCHED_BATCH, &param);
    setpriority(PRIO_PROCESS, 0, 7);

    if ((killed = fork()) == 0) {
        kill(getpid(), SIGKILL);
        _exit(1);
    }
    siginfo_t info;
    waitid(P_PID, killed, &info, WEXITED | WNOWAIT);

    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    sealed = memfd_create("sealed", MFD_ALLOW_SEALING);
    write(sealed, "sealed", 6);
    fchmod(sealed, 0642);
    fcntl(sealed, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    future_sealed = memfd_create("future", MFD_ALLOW_SEALING);
    ftruncate(future_sealed, 4096);
    future_map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, future_sealed, 0);
    fcntl(future_sealed, F_ADD_SEALS, F_SEAL_FUTURE_WRITE);
    session_member = orphan(1, &session_id);   /* a daemon's double fork */
    grouped_child = orphan(0, &group_id);      /* a group leader that exits before its child */
    leave_session();

    child_pidfd = syscall(SYS_pidfd_open, grouped_child, 0);
    for (int i = 0; i < 2; i++) {
        pid_t exiting = fork();
        if (exiting == 0)
            _exit(0);
        exited_pidfds[i * 2] = syscall(SYS_pidfd_open, exiting, 0);
        if (i == 0)
            exited_pidfds[1] = syscall(SYS_pidfd_open, exiting, 0);
        waitpid(exiting, NULL, 0);
    }

    tcp = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval timeout = {3, 500000};
    struct linger linger = {1, 9};
    int priority = 5, idle = 77;
    setsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(tcp, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
    setsockopt(tcp, SOL_SOCKET, SO_PRIORITY, &priority, sizeof priority);
    setsockopt(tcp, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);

    socketpair(AF_UNIX, SOCK_STREAM, 0, half_closed);
    shutdown(half_closed[0], SHUT_WR);
    socketpair(AF_UNIX, SOCK_DGRAM, 0, dgram);
    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, seqpacket);
    for (int i = 0; i < 3; i++) {
        send(dgram[0], queued[i], strlen(queued[i]), 0);
        send(seqpacket[1], queued[i], strlen(queued[i]), 0);
    }

    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getitimer, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_get_robust_list, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0)
        exit(3);
}

/* The queued messages of `receiver` as expected? Sent again by `sender` for the next round. */
static int queue_holds(int receiver, int sender)
{
    int good = 1;
    for (int i = 0; i < 3; i++) {
        char buffer[64];
        ssize_t got = recv(receiver, buffer, sizeof buffer, MSG_DONTWAIT);
        good &= got == (ssize_t)strlen(queued[i]) && memcmp(buffer, queued[i], got) == 0;
    }
    char extra;
    good &= recv(receiver, &extra, 1, MSG_DONTWAIT) < 0;
    for (int i = 0; i < 3; i++)
        send(sender, queued[i], strlen(queued[i]), 0);
    return good;
}

static void check(void)
{
    int first = fcntl(pipe_ends[1], F_GETFL), second = fcntl(pipe_reopened, F_GETFL);
    report((first & O_NONBLOCK) && !(second & O_NONBLOCK), "pipe-flags",
           "write end flags %#x, reopened write end flags %#x", first, second);

    struct epoll_event event = {0};
    char byte = 'x';
    write(epoll_pipe[1], &byte, 1);
    int woke = epoll_wait(epoll_fd, &event, 1, 10000);
    read(epoll_pipe[0], &byte, 1);
    report(woke == 1 && event.data.u64 == 0x5eed, "epoll-closed-fd", "epoll_wait gave %d, data %#llx",
           woke, (unsigned long long)event.data.u64);

    struct stat one, two;
    char seen[7] = "";
    fstat(ghost, &one);
    fstat(ghost_reader, &two);
    pread(ghost_reader, seen, 6, 0);
    report(one.st_ino == two.st_ino && one.st_uid == 1 && one.st_gid == 1 && one.st_mtime == 1234567890
           && (one.st_mode & 07777) == 0640 && strcmp(seen, "before") == 0
           && (fcntl(ghost_reader, F_GETFL) & O_ACCMODE) == O_RDONLY, "unlinked-file",
           "inodes %lu/%lu, owner %d:%d, mtime %ld, mode %o, read back %s, reader flags %#x",
           (unsigned long)one.st_ino, (unsigned long)two.st_ino, one.st_uid, one.st_gid, (long)one.st_mtime,
           one.st_mode & 07777, seen, fcntl(ghost_reader, F_GETFL));

    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    syscall(SYS_capget, &header, caps);
    int fsuid = setfsuid(-1), fsgid = setfsgid(-1);    /* -1: no change, the current value back */
    int bounded = prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0);
    int ambient = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0);
    report(fsuid == 9 && fsgid == 8 && getuid() == 0 && getgid() == 0 && bounded == 0 && ambient == 1
           && !(caps[0].effective & (1u << CAP_NET_RAW)) && (caps[0].permitted & (1u << CAP_NET_RAW))
           && (caps[0].effective & (1u << CAP_SYS_ADMIN)), "credentials",
           "fsuid %d fsgid %d uid %d gid %d, CAP_SYS_BOOT bounding %d, ambient %d, effective %#x permitted %#x",
           fsuid, fsgid, getuid(), getgid(), bounded, ambient, caps[0].effective, caps[0].permitted);

    errno = 0;
    int policy = sched_getscheduler(0), nice = getpriority(PRIO_PROCESS, 0);
    report(policy == SCHED_BATCH && nice == 7, "scheduling", "policy %d nice %d", policy, nice);

    siginfo_t info = {0};
    int waited = waitid(P_PID, killed, &info, WEXITED | WNOWAIT | WNOHANG);
    report(waited == 0 && info.si_pid == killed && info.si_code == CLD_KILLED && info.si_status == SIGKILL,
           "killed-zombie", "waitid %d, pid %d code %d status %d", waited, info.si_pid, info.si_code, info.si_status);

    report(getsid(session_member) == session_id && getpgid(session_member) == session_id
           && getppid() != session_id, "orphaned-session", "member %d: session %d group %d, expected %d",
           session_member, getsid(session_member), getpgid(session_member), session_id);
    report(getpgid(grouped_child) == group_id && getsid(grouped_child) == getsid(0), "orphaned-group",
           "member %d: group %d session %d, expected %d in session %d",
           grouped_child, getpgid(grouped_child), getsid(grouped_child), group_id, getsid(0));

    int mine = leader_has_its_child();
    report(getsid(new_leader) == new_leader && getsid(left_behind) == getsid(0) && mine, "left-session",
           "leader %d in session %d; its child %d in session %d (expected %d), %s", new_leader,
           getsid(new_leader), left_behind, getsid(left_behind), getsid(0), mine ? "its child" : "not its child");

    int dgram_good = queue_holds(dgram[1], dgram[0]), seqpacket_good = queue_holds(seqpacket[0], seqpacket[1]);
    report(dgram_good && seqpacket_good, "queued-messages", "datagram pair %s, seqpacket pair %s",
           dgram_good ? "right" : "wrong", seqpacket_good ? "right" : "wrong");

    char path[64], fdinfo_text[512] = "";
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", child_pidfd);
    int fdinfo = open(path, O_RDONLY);
    read(fdinfo, fdinfo_text, sizeof fdinfo_text - 1);
    close(fdinfo);
    char *nspid = strstr(fdinfo_text, "NSpid:"), *last = nspid ? strrchr(strtok(nspid, "\n"), '\t') : NULL;
    int named = last ? atoi(last + 1) : -1;
    report(named == grouped_child, "pidfd", "the pidfd names process %d, not %d", named, grouped_child);

    struct stat exited[3];
    for (int i = 0; i < 3; i++)
        fstat(exited_pidfds[i], &exited[i]);
    report(exited[0].st_ino == exited[1].st_ino && exited[0].st_ino != exited[2].st_ino, "exited-pidfds",
           "inodes %lu %lu %lu", (unsigned long)exited[0].st_ino, (unsigned long)exited[1].st_ino,
           (unsigned long)exited[2].st_ino);

    struct timeval timeout = {0};
    struct linger linger = {0};
    int priority = 0, idle = 0;
    socklen_t size = sizeof timeout;
    getsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &timeout, &size);
    size = sizeof linger;
    getsockopt(tcp, SOL_SOCKET, SO_LINGER, &linger, &size);
    size = sizeof priority;
    getsockopt(tcp, SOL_SOCKET, SO_PRIORITY, &priority, &size);
    getsockopt(tcp, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &size);
    report(timeout.tv_sec == 3 && timeout.tv_usec == 500000 && linger.l_onoff && linger.l_linger == 9
           && priority == 5 && idle == 77, "socket-options", "timeout %ld.%06ld, linger %d/%d, priority %d, idle %d",
           (long)timeout.tv_sec, (long)timeout.tv_usec, linger.l_onoff, linger.l_linger, priority, idle);

    int pdeath = 0;
    prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0);
    report(pdeath == SIGUSR2, "parent-death-signal", "%d", pdeath);
    off_t hole = lseek(holes, 0, SEEK_HOLE), data = lseek(holes, 4096, SEEK_DATA),
          last_hole = lseek(holes, 8192, SEEK_HOLE), end = lseek(holes, 0, SEEK_END);
    report(hole == 4096 && data == 8192 && last_hole == 12288 && end == 65536, "unlinked-file-holes",
           "hole at %lld, data at %lld, hole at %lld, size %lld", (long long)hole, (long long)data,
           (long long)last_hole, (long long)end);

    char none;
    ssize_t eof = recv(half_closed[1], &none, 1, MSG_DONTWAIT), sent = send(half_closed[0], "x", 1, MSG_NOSIGNAL);
    report(eof == 0 && sent == -1 && errno == EPIPE, "shutdown", "recv gave %zd, send %zd", eof, sent);

    char bytes[8] = "";
    struct stat st;
    fstat(sealed, &st);
    pread(sealed, bytes, 6, 0);
    int seals = fcntl(sealed, F_GET_SEALS), future_seals = fcntl(future_sealed, F_GET_SEALS);
    strcpy(future_map, "still writes");
    report(seals == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) && (st.st_mode & 07777) == 0642
           && !strcmp(bytes, "sealed") && future_seals == F_SEAL_FUTURE_WRITE && pwrite(future_sealed, "x", 1, 0) < 0,
           "memfd-seals", "seals %#x mode %o bytes '%s'; future-write seals %#x", seals, st.st_mode & 07777, bytes,
           future_seals);

    int writable = mprotect(read_only_map, 4096, PROT_READ | PROT_WRITE), why_not = errno;
    mprotect(read_only_map, 4096, PROT_READ);
    report(writable == 0, "mapping-may-write", "mprotect gave errno %d", why_not);

    int subreaper = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0);
    report(subreaper == 1, "child-subreaper", "%d", subreaper);

    char score[16] = "";
    int adj = open("/proc/self/oom_score_adj", O_RDONLY);
    read(adj, score, sizeof score - 1);
    close(adj);
    report(atoi(score) == 123, "oom-score-adj", "%s", score);

    char uid[16] = "";
    int login = open("/proc/self/loginuid", O_RDONLY);
    read(login, uid, sizeof uid - 1);
    close(login);
    report(strcmp(uid, "4242") == 0, "loginuid", "%s", uid);

    struct itimerval timer;
    errno = 0;
    int got = getitimer(ITIMER_REAL, &timer), why = errno;
    report(got == -1 && why == EPERM, "seccomp", "getitimer gave %d (errno %d)", got, why);
}

static void on_usr1(int signo)
{
    (void)signo;
    asked = 1;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
    setup();
    sigset_t usr1, waiting;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &waiting);    /* taken only inside sigsuspend: none lost */
    signal(SIGUSR1, on_usr1);
    write(out, "ready\n", 6);
    for (;;) {
        sigsuspend(&waiting);
        if (asked) {
            asked = 0;
            check();
            write(out, "done\n", 5);
        }
    }
}
