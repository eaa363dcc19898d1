/*
 * test_reliability_util.h: what the reliability tests (tests/test_reliability_*.c)
 * share: running the `chimera` binary (CHIMERA_BINARY) as a child process with
 * its output in files, waiting for it or killing it, reading files back, the
 * tiny model's command-line overrides, and rewriting a checkpoint's
 * trainer_state.json so that a deliberately damaged file passes the checksum
 * and reaches the parser under test.
 */
#ifndef CHIMERA_TEST_RELIABILITY_UTIL_H
#define CHIMERA_TEST_RELIABILITY_UTIL_H

#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/sha256.h"
#include "train_fixture.h"

/* The trainer tests' corpus cache: the built-in corpus is tokenized there once. */
#define RL_CACHE_HOME "/tmp/chimera-tests-cache"
#define RL_CACHE RL_CACHE_HOME "/chimera"

/* TINY of train_fixture.h as command-line overrides (with the cpu backend, one thread). */
#define RL_TINY                                                                                   \
    "--set model.d_model=16 --set model.n_layers=2 --set model.pattern=MA --set model.heads=2 "   \
    "--set model.kv_heads=1 --set model.mamba.d_state=4 --set model.moe.hidden=16 "              \
    "--set model.ffn.hidden=32 --set model.mod.layers=[1] --set train.micro_batch=2 "            \
    "--set train.seq_len=16 --set train.warmup=2 --set train.eval_batches=2 --backend cpu "      \
    "--threads 1 --peak-tflops 1"

/* How a child ended: its exit code, or -N when signal N killed it. */
static inline int rl_status(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st); }

/* Limits a child sets on itself before exec (0: none). */
typedef struct rl_limits {
    long fsize;       /* RLIMIT_FSIZE in bytes; SIGXFSZ is ignored so writes fail with EFBIG */
    const char *env;  /* one extra "NAME=VALUE" for the child, or NULL */
} rl_limits;

/*
 * Start `chimera ARGS` in dir (ARGS split at spaces: no quoting), stdout into
 * dir/out.txt and stderr into dir/err.txt; returns the child's pid.
 */
static inline pid_t rl_spawn(const char *dir, const rl_limits *lim, const char *fmt, ...) {
    char args[8192], *argv[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int n = 0;
    argv[n++] = (char *)CHIMERA_BINARY;
    for (char *tok = strtok(args, " "); tok && n < 255; tok = strtok(NULL, " ")) argv[n++] = tok;
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid) return pid;
    if (chdir(dir) != 0 || !freopen("out.txt", "w", stdout) || !freopen("err.txt", "w", stderr))
        _exit(127);
    setenv("XDG_CACHE_HOME", RL_CACHE_HOME, 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OMP_WAIT_POLICY", "passive", 1);
    const char *eq = lim && lim->env ? strchr(lim->env, '=') : NULL;
    if (eq) {
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - lim->env), lim->env);
        setenv(name, eq + 1, 1);
    }
    if (lim && lim->fsize > 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl;
        getrlimit(RLIMIT_FSIZE, &rl);
        rl.rlim_cur = (rlim_t)lim->fsize; /* soft only: the test may lift it again */
        setrlimit(RLIMIT_FSIZE, &rl);
    }
    execv(CHIMERA_BINARY, argv);
    _exit(127);
}

/* After a child ended: remove the registration file that LLVM's OpenMP runtime (clang
 * builds) keeps in /dev/shm per process and cannot remove itself after SIGKILL or _exit. */
static inline void rl_reap(pid_t pid) {
    char shm[96];
    snprintf(shm, sizeof shm, "/dev/shm/__KMP_REGISTERED_LIB_%d_%d", (int)pid, (int)getuid());
    unlink(shm);
}

/* Wait for a child started by rl_spawn; rl_status of it. */
static inline int rl_wait(pid_t pid) {
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    rl_reap(pid);
    return rl_status(st);
}

/* Run `chimera ARGS` in dir to the end; its rl_status. */
#define rl_chimera(dir, lim, ...) rl_wait(rl_spawn((dir), (lim), __VA_ARGS__))

/* The whole content of dir/name (malloc'd, NUL-terminated; "" when missing). */
static inline char *rl_read(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_not_null(s);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

/* Sleep ms milliseconds. */
static inline void rl_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Copy file a to b (whole). */
static inline void rl_copy(const char *a, const char *b) {
    FILE *in = fopen(a, "rb"), *out = fopen(b, "wb");
    cr_assert(in && out, "cannot copy %s to %s", a, b);
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    cr_assert_eq(fclose(out), 0);
}

/* Copy checkpoint directory src (its three files) into a new directory dst. */
static inline void rl_copy_checkpoint(const char *src, const char *dst) {
    const char *files[] = {CK_MODEL_FILE, CK_OPTIM_FILE, CK_STATE_FILE};
    cr_assert_eq(mkdir(dst, 0777), 0, "mkdir %s", dst);
    for (int i = 0; i < 3; i++) {
        char a[4200], b[4200];
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", dst, files[i]);
        rl_copy(a, b);
    }
}

/* Record the current size and sha256 of ckpt/name in ckpt/trainer_state.json. */
static inline void rl_restamp(const char *ckpt, const char *name) {
    char path[4200], state[4200], hex[65];
    int64_t size;
    snprintf(path, sizeof path, "%s/%s", ckpt, name);
    snprintf(state, sizeof state, "%s/" CK_STATE_FILE, ckpt);
    cr_assert_eq(chm_sha256_file(path, hex, &size, NULL), CHM_OK);
    json_error_t je;
    json_t *root = json_load_file(state, 0, &je);
    cr_assert_not_null(root, "%s: %s", state, je.text);
    json_t *e = json_object_get(json_object_get(root, "files"), name);
    cr_assert_not_null(e, "%s lists no %s", state, name);
    json_object_set_new(e, "sha256", json_string(hex));
    json_object_set_new(e, "bytes", json_integer(size));
    cr_assert_eq(json_dump_file(root, state, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
    json_decref(root);
}

#endif
