/* Tries, from inside a sandbox, each call the seccomp filter must refuse; one line per call:
 * "<name> ok" or "<name> <ERRNO>", then "alive" (a SIGSYS-killed probe never prints it).
 * Built static by tests/support/syscall_probe.py so it runs on any image (busybox too). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc < 0)
        printf("%s %s\n", name, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    else
        printf("%s ok\n", name);
    fflush(stdout);
}

#ifdef __x86_64__
/* The i386 ABI from a 64-bit program (int $0x80): the filter must cover it too, not SIGSYS. */
static long syscall_i386(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    if (ret < 0 && ret > -4096) { errno = (int)-ret; return -1; }
    return ret;
}
#endif

int main(void) {
    struct perf_event_attr attr;
    char handle[64];
    long rc;
    int fd;

    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    report("init_module", syscall(SYS_init_module, "", 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, NULL, 0));
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    report("add_key", syscall(SYS_add_key, "user", "iii", "x", 1, -3));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_mount", unshare(CLONE_NEWNS));
    /* clone(2) with a namespace flag, through the raw syscall: glibc's clone3 path is ENOSYS. */
    rc = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
    if (rc == 0) _exit(0);
    if (rc > 0) waitpid((pid_t)rc, NULL, 0);
    report("clone_newuser", rc);
    mkdir("/tmp/proc2", 0755);
    report("mount_proc", mount("proc", "/tmp/proc2", "proc", 0, NULL));
    report("mount_tmpfs", mount("tmpfs", "/tmp/proc2", "tmpfs", 0, NULL));
    report("umount_proc", umount2("/proc", MNT_DETACH));
    fd = open("/proc/sys/kernel/domainname", O_WRONLY);
    report("write_sysctl", fd < 0 ? -1 : write(fd, "x\n", 2));
    if (fd >= 0) close(fd);
    rc = ptrace(PTRACE_SEIZE, 1, NULL, NULL);
    report("ptrace_init", rc);
    if (rc == 0) ptrace(PTRACE_DETACH, 1, NULL, NULL);
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.exclude_kernel = 1;
    fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    report("perf_event_open", fd);
    if (fd >= 0) close(fd);
    fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
    report("userfaultfd", fd);
    if (fd >= 0) close(fd);
    memset(handle, 0, sizeof handle);
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, handle, O_RDONLY));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
#ifdef __x86_64__
    report("i386_getpid", syscall_i386(20, 0, 0, 0));
    report("i386_keyctl", syscall_i386(288, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
#endif
    /* What must keep working: a child through fork (glibc: clone3, then clone on ENOSYS). */
    rc = fork();
    if (rc == 0) _exit(7);
    if (rc > 0) {
        int status = 0;
        waitpid((pid_t)rc, &status, 0);
        rc = WEXITSTATUS(status) == 7 ? 0 : -1;
    }
    report("fork", rc);
    printf("alive\n");
    return 0;
}
