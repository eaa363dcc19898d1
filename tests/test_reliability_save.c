/*
 * test_reliability_save.c: failing saves and signals around `chimera train`.
 *   - disk full (RLIMIT_FSIZE in the child, SIGXFSZ ignored, so writes fail
 *     with EFBIG as on a full disk) under train.on_save_error: stop (the
 *     default): a clear error naming the file and the intact previous
 *     checkpoint, exit 1, no partial .tmp-step-* left, the previous
 *     checkpoint still the newest and loadable;
 *   - the same under continue: warnings, training goes on, and once space
 *     returns (the limit raised from outside with prlimit) the next save
 *     succeeds and the run ends normally;
 *   - SIGTERM: the step finishes, a checkpoint is saved, exit 0; a second
 *     SIGTERM during that save: exit at once (128 + 15), the previous
 *     checkpoint intact and resumable, the partial save ignored and cleaned.
 */
#define _GNU_SOURCE /* prlimit */
#include "test_reliability_util.h"

#include <dirent.h>

/* A limit on file size below model.safetensors (~70 KB for the tiny model) and above what the
 * run writes elsewhere (config.yaml, metrics.jsonl: a few KB). */
#define SMALL_FSIZE 32768

/* Count the .tmp-step-* entries of run. */
static int tmp_dirs(const char *run) {
    DIR *d = opendir(run);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += !strncmp(e->d_name, CK_TMP_PREFIX, strlen(CK_TMP_PREFIX));
    if (d) closedir(d);
    return n;
}

/* The newest complete checkpoint of run opens; its step (-1: none). */
static int64_t newest_step(const char *run) {
    char latest[4200];
    bool found;
    chm_err err = {0};
    cr_assert_eq(chm_checkpoint_latest(run, false, latest, sizeof latest, &found, &err), CHM_OK);
    if (!found) return -1;
    chm_checkpoint *c;
    cr_assert_eq(chm_checkpoint_open(latest, &c, &err), CHM_OK, "%s", err.msg);
    int64_t s = chm_checkpoint_get_state(c)->step;
    chm_checkpoint_close(c);
    return s;
}

/* Occurrences of needle in s. */
static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

Test(reliability_save, disk_full_stops_with_the_previous_checkpoint_intact, .timeout = 60) {
    char *dir = make_tmpdir_named("chm-rl-full-"), run[4200];
    snprintf(run, sizeof run, "%s/run", dir);
    int code = rl_chimera(dir, NULL, "train --out run %s --set train.steps=2 --quiet", RL_TINY);
    cr_assert_eq(code, 0, "%s", rl_read(dir, "err.txt"));
    rl_limits full = {.fsize = SMALL_FSIZE};
    code = rl_chimera(dir, &full, "train --out run %s --set train.steps=6 --set train.save_every=2 "
                      "--resume auto --quiet", RL_TINY);
    char *err = rl_read(dir, "err.txt");
    cr_assert_eq(code, 1, "exit %d: %s", code, err);
    cr_assert(strstr(err, "the checkpoint of step 4 was not saved") &&
                  strstr(err, CK_MODEL_FILE) && strstr(err, "File too large") &&
                  strstr(err, "step-00000002 is intact") && strstr(err, "--resume auto"),
              "%s", err);
    free(err);
    cr_assert_eq(tmp_dirs(run), 0, "the failed save left a temporary directory");
    cr_assert_eq(newest_step(run), 2, "the previous checkpoint is the newest");
    /* space is back: the run continues from it */
    code = rl_chimera(dir, NULL, "train --out run %s --set train.steps=4 --resume auto --quiet",
                      RL_TINY);
    cr_assert_eq(code, 0, "%s", rl_read(dir, "err.txt"));
    cr_assert_eq(newest_step(run), 4);
    remove_tmpdir(dir);
}

Test(reliability_save, disk_full_continue_warns_and_saves_when_space_returns, .timeout = 60) {
    char *dir = make_tmpdir_named("chm-rl-cont-"), run[4200];
    snprintf(run, sizeof run, "%s/run", dir);
    /* slow saves (the debug delay also runs in a failing save) so that a few fail before the
     * limit is lifted */
    rl_limits full = {.fsize = SMALL_FSIZE, .env = "CHIMERA_DEBUG_SAVE_DELAY_MS=40"};
    pid_t pid = rl_spawn(dir, &full, "train --out run %s --set train.steps=20 "
                         "--set train.save_every=2 --set train.on_save_error=continue --quiet",
                         RL_TINY);
    bool warned = false;
    for (int i = 0; i < 20000 && !warned; i++) {
        char *err = rl_read(dir, "err.txt");
        warned = strstr(err, "warning:") != NULL;
        free(err);
        if (!warned) rl_sleep_ms(1);
    }
    struct rlimit lifted;
    cr_assert_eq(prlimit(pid, RLIMIT_FSIZE, NULL, &lifted), 0, "prlimit: %s",
                 rl_read(dir, "err.txt"));
    lifted.rlim_cur = lifted.rlim_max;
    cr_assert_eq(prlimit(pid, RLIMIT_FSIZE, &lifted, NULL), 0, "prlimit");
    int code = rl_wait(pid);
    char *err = rl_read(dir, "err.txt");
    cr_assert(warned, "no warning for the failed save: %s", err);
    cr_assert_eq(code, 0, "exit %d: %s", code, err);
    int warnings = count(err, "warning:");
    cr_assert(warnings >= 1 && warnings < 10, "%d warnings: %s", warnings, err);
    cr_assert(strstr(err, "File too large") && strstr(err, "on_save_error: continue"), "%s", err);
    free(err);
    cr_assert_eq(tmp_dirs(run), 0);
    cr_assert_eq(newest_step(run), 20, "the final checkpoint was saved");
    remove_tmpdir(dir);
}

/* Wait (up to ~60 s) until path exists; false when pid ended first. */
static bool wait_for(const char *path, pid_t pid) {
    for (int i = 0; i < 60000; i++) {
        if (ck_exists(path)) return true;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            rl_reap(pid);
            return false;
        }
        rl_sleep_ms(1);
    }
    return false;
}

/* "train" events in run/metrics.jsonl so far. */
static int train_events(const char *run) {
    char *m = rl_read(run, "metrics.jsonl");
    int n = count(m, "\"event\":\"train\"");
    free(m);
    return n;
}

/* Wait (up to ~60 s) until run/metrics.jsonl holds n "train" events (the signal handlers are
 * installed by then). */
static bool wait_for_events(const char *run, int n) {
    for (int i = 0; i < 60000; i++) {
        if (train_events(run) >= n) return true;
        rl_sleep_ms(1);
    }
    return false;
}

/* Wait (up to ~60 s) until run holds a temporary directory of a save. */
static bool wait_for_save(const char *run) {
    for (int i = 0; i < 60000; i++) {
        if (tmp_dirs(run) > 0) return true;
        rl_sleep_ms(1);
    }
    return false;
}

Test(reliability_save, sigterm_saves_and_a_second_one_exits_at_once, .timeout = 120) {
    char *dir = make_tmpdir_named("chm-rl-term-"), run[4200], path[4300];
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(path, sizeof path, "%s/step-00000004/" CK_STATE_FILE, run);
    const char *args = "train --out run %s --set train.steps=1000000 --set train.save_every=4 "
                       "--set train.eval_every=0 --resume auto --quiet";
    /* one SIGTERM: the step finishes, a checkpoint is saved, exit 0 */
    pid_t pid = rl_spawn(dir, NULL, args, RL_TINY);
    cr_assert(wait_for(path, pid), "no checkpoint: %s", rl_read(dir, "err.txt"));
    kill(pid, SIGTERM);
    int code = rl_wait(pid);
    cr_assert_eq(code, 0, "exit %d after SIGTERM: %s", code, rl_read(dir, "err.txt"));
    int64_t saved = newest_step(run);
    cr_assert_geq(saved, 4);
    char *metrics = rl_read(run, "metrics.jsonl");
    cr_assert(strstr(metrics, "\"reason\":\"signal\""), "the end event says why");
    free(metrics);
    /* two SIGTERMs: the second lands inside the (slowed) save the first one started. No
     * periodic saves here: a temporary directory of one could be seen before the first signal
     * is delivered, and two pending SIGTERMs coalesce into one (a graceful stop, exit 0). */
    rl_limits slow = {.env = "CHIMERA_DEBUG_SAVE_DELAY_MS=400"};
    pid = rl_spawn(dir, &slow,
                   "train --out run %s --set train.steps=1000000 --set train.save_every=0 "
                   "--set train.eval_every=0 --resume auto --quiet",
                   RL_TINY);
    cr_assert(wait_for_events(run, train_events(run) + 1), "the resumed run does not train");
    kill(pid, SIGTERM);
    cr_assert(wait_for_save(run), "no save started after SIGTERM");
    kill(pid, SIGTERM);
    code = rl_wait(pid);
    cr_assert_eq(code, 128 + SIGTERM, "exit %d after a second SIGTERM: %s", code,
                 rl_read(dir, "err.txt"));
    cr_assert_geq(tmp_dirs(run), 1, "the interrupted save is left as a temporary directory");
    int64_t now = newest_step(run);
    cr_assert_geq(now, saved, "the previous checkpoint is intact and still the newest");
    /* and it resumes; the leftover is ignored and cleaned */
    code = rl_chimera(dir, NULL, "train --out run %s --set train.steps=%lld --resume auto --quiet",
                      RL_TINY, (long long)now + 2);
    cr_assert_eq(code, 0, "%s", rl_read(dir, "err.txt"));
    cr_assert_eq(tmp_dirs(run), 0);
    cr_assert_eq(newest_step(run), now + 2);
    remove_tmpdir(dir);
}
