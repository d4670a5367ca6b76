/*
 * The one test double of TESTING.md: a stand-in for libkrun.so.1.
 *
 * Exports the krun_* functions vmm_ffi calls, records each call and its arguments as one JSON
 * line in the file named by $KRUN_DOUBLE_LOG (read at the first call, re-read when it changes),
 * and in krun_start_enter runs the configured program in the configured root (chroot; the
 * launcher is root in its own user namespace), in the configured workdir, with exactly the
 * configured argv/envp and rlimits, stdout/stderr appended to the console output file, and
 * exits with its status as a VM would.
 *
 * $KRUN_DOUBLE_FAIL="krun_set_root:-2" makes that call return that (negative) value.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ITEMS 256

static FILE *call_log;
static char *call_log_path;
static char *root_path, *workdir_path, *exec_path, *console_path;
static char *exec_argv[MAX_ITEMS + 2];
static char *exec_envp[MAX_ITEMS + 1];
static char *rlimits[MAX_ITEMS + 1];
static pid_t child_pid;

/* Opened at the first call; reopened if the variable changes (tests load us in-process). */
static void open_log(void) {
    const char *path = getenv("KRUN_DOUBLE_LOG");
    if (call_log != NULL && path != NULL && call_log_path != NULL
            && strcmp(path, call_log_path) == 0) {
        return;
    }
    if (call_log != NULL) { fclose(call_log); call_log = NULL; }
    free(call_log_path);
    call_log_path = NULL;
    if (path != NULL) {
        call_log = fopen(path, "a");
        call_log_path = strdup(path);
    }
}

static void json_string(const char *s) {
    if (s == NULL) { fputs("null", call_log); return; }
    fputc('"', call_log);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(call_log, "\\%c", c);
        else if (c < 0x20) fprintf(call_log, "\\u%04x", c);
        else fputc(c, call_log);
    }
    fputc('"', call_log);
}

static void json_array(const char *const items[]) {
    if (items == NULL) { fputs("null", call_log); return; }
    fputc('[', call_log);
    for (int i = 0; items[i] != NULL; i++) {
        if (i) fputc(',', call_log);
        json_string(items[i]);
    }
    fputc(']', call_log);
}

/* Starts a record: {"call":"name"; the caller adds fields and calls end_record. */
static int begin_record(const char *name) {
    open_log();
    if (call_log == NULL) return 0;
    fputs("{\"call\":", call_log);
    json_string(name);
    return 1;
}

static int32_t end_record(const char *name) {
    int32_t result = 0;
    const char *fail = getenv("KRUN_DOUBLE_FAIL");
    size_t n = strlen(name);
    if (fail != NULL && strncmp(fail, name, n) == 0 && fail[n] == ':') {
        result = (int32_t)atoi(fail + n + 1);
    }
    if (call_log != NULL) {
        fprintf(call_log, ",\"result\":%d}\n", result);
        fflush(call_log);
    }
    return result;
}

static void copy_array(char *dst[], const char *const src[], int cap) {
    int i = 0;
    for (; src != NULL && src[i] != NULL && i < cap; i++) dst[i] = strdup(src[i]);
    dst[i] = NULL;
}

int32_t krun_set_log_level(uint32_t level) {
    if (begin_record("krun_set_log_level")) fprintf(call_log, ",\"level\":%u", level);
    return end_record("krun_set_log_level");
}

int32_t krun_create_ctx(void) {
    begin_record("krun_create_ctx");
    int32_t r = end_record("krun_create_ctx");
    return r < 0 ? r : 7; /* a recognisable context id */
}

int32_t krun_free_ctx(uint32_t ctx) {
    if (begin_record("krun_free_ctx")) fprintf(call_log, ",\"ctx\":%u", ctx);
    return end_record("krun_free_ctx");
}

int32_t krun_set_vm_config(uint32_t ctx, uint8_t num_vcpus, uint32_t ram_mib) {
    if (begin_record("krun_set_vm_config"))
        fprintf(call_log, ",\"ctx\":%u,\"num_vcpus\":%u,\"ram_mib\":%u", ctx, num_vcpus, ram_mib);
    return end_record("krun_set_vm_config");
}

int32_t krun_set_root(uint32_t ctx, const char *path) {
    if (begin_record("krun_set_root")) {
        fprintf(call_log, ",\"ctx\":%u,\"root_path\":", ctx);
        json_string(path);
    }
    root_path = path ? strdup(path) : NULL;
    return end_record("krun_set_root");
}

int32_t krun_set_workdir(uint32_t ctx, const char *path) {
    if (begin_record("krun_set_workdir")) {
        fprintf(call_log, ",\"ctx\":%u,\"workdir_path\":", ctx);
        json_string(path);
    }
    workdir_path = path ? strdup(path) : NULL;
    return end_record("krun_set_workdir");
}

int32_t krun_set_exec(uint32_t ctx, const char *path, const char *const argv[],
                      const char *const envp[]) {
    if (begin_record("krun_set_exec")) {
        fprintf(call_log, ",\"ctx\":%u,\"exec_path\":", ctx);
        json_string(path);
        fputs(",\"argv\":", call_log);
        json_array(argv);
        fputs(",\"envp\":", call_log);
        json_array(envp);
    }
    exec_path = path ? strdup(path) : NULL;
    exec_argv[0] = exec_path;
    copy_array(exec_argv + 1, argv, MAX_ITEMS);
    copy_array(exec_envp, envp, MAX_ITEMS);
    return end_record("krun_set_exec");
}

int32_t krun_set_port_map(uint32_t ctx, const char *const port_map[]) {
    if (begin_record("krun_set_port_map")) {
        fprintf(call_log, ",\"ctx\":%u,\"port_map\":", ctx);
        json_array(port_map);
    }
    return end_record("krun_set_port_map");
}

int32_t krun_set_rlimits(uint32_t ctx, const char *const limits[]) {
    if (begin_record("krun_set_rlimits")) {
        fprintf(call_log, ",\"ctx\":%u,\"rlimits\":", ctx);
        json_array(limits);
    }
    copy_array(rlimits, limits, MAX_ITEMS);
    return end_record("krun_set_rlimits");
}

int32_t krun_set_console_output(uint32_t ctx, const char *path) {
    if (begin_record("krun_set_console_output")) {
        fprintf(call_log, ",\"ctx\":%u,\"c_filepath\":", ctx);
        json_string(path);
    }
    console_path = path ? strdup(path) : NULL;
    return end_record("krun_set_console_output");
}

static void forward(int sig) {
    if (child_pid > 0) kill(child_pid, sig);
}

static void apply_rlimits(void) {
    for (int i = 0; rlimits[i] != NULL; i++) {
        unsigned long long id, cur, max;
        if (sscanf(rlimits[i], "%llu=%llu:%llu", &id, &cur, &max) == 3) {
            struct rlimit rl = {.rlim_cur = cur, .rlim_max = max};
            setrlimit((int)id, &rl);
        }
    }
}

/* The "guest": chroot, workdir, rlimits, console, exact env, exec. */
static void run_guest(void) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    if (console_path != NULL) {
        int fd = open(console_path, O_WRONLY | O_APPEND | O_CREAT, 0640);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
    }
    apply_rlimits();
    if (root_path == NULL || chroot(root_path) != 0 || chdir("/") != 0) {
        fprintf(stderr, "libkrun double: chroot %s: %s\n", root_path, strerror(errno));
        _exit(125);
    }
    if (workdir_path != NULL && chdir(workdir_path) != 0) {
        fprintf(stderr, "libkrun double: chdir %s: %s\n", workdir_path, strerror(errno));
        _exit(125);
    }
    clearenv();
    for (int i = 0; exec_envp[i] != NULL; i++) putenv(exec_envp[i]);
    execvp(exec_path, exec_argv);
    fprintf(stderr, "libkrun double: exec %s: %s\n", exec_path, strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
}

int32_t krun_start_enter(uint32_t ctx) {
    if (begin_record("krun_start_enter")) fprintf(call_log, ",\"ctx\":%u", ctx);
    int32_t r = end_record("krun_start_enter");
    if (r < 0) return r;
    if (exec_path == NULL) return -EINVAL;
    /* Handlers go in before the fork, with the signals blocked across it: a SIGTERM that
     * arrives once the guest runs must reach the guest, never kill this process instead. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    signal(SIGTERM, forward);
    signal(SIGINT, forward);
    child_pid = fork();
    if (child_pid < 0) return -errno;
    if (child_pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        run_guest();
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    int status;
    while (waitpid(child_pid, &status, 0) < 0 && errno == EINTR) {}
    exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}
