/*
 * checkpoint_dir.c: the file-system side of checkpoints: fsync by path,
 * mkdir -p, recursive removal, listing the complete checkpoints of a run
 * directory, removing leftovers of interrupted saves and pruning old ones.
 */
#include "checkpoint_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

chm_status ck_fsync_path(const char *path, chm_err *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot open to sync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* Some file systems cannot fsync a directory (EINVAL): nothing more to do there. */
    if (rc != 0 && e != EINVAL)
        return CHM_ERR(err, CHM_ERR_IO, "%s: fsync failed: %s", path, strerror(e));
    return CHM_OK;
}

bool ck_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

chm_status ck_mkdirs(const char *path, chm_err *err) {
    char buf[CK_PATH];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create the directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot create the directory: %s", buf, strerror(errno));
    return CHM_OK;
}

chm_status ck_remove_tree(const char *path, chm_err *err) {
    struct stat st;
    if (lstat(path, &st) != 0) return CHM_OK;
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0)
            return CHM_ERR(err, CHM_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
        return CHM_OK;
    }
    DIR *d = opendir(path);
    if (!d) return CHM_ERR(err, CHM_ERR_IO, "%s: cannot list: %s", path, strerror(errno));
    chm_status rc = CHM_OK;
    struct dirent *e;
    while (rc == CHM_OK && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[CK_PATH];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        rc = ck_remove_tree(sub, err);
    }
    closedir(d);
    if (rc == CHM_OK && rmdir(path) != 0)
        rc = CHM_ERR(err, CHM_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return rc;
}

/* The step of a "step-XXXXXXXX" name, or -1. */
static int64_t step_of(const char *name) {
    if (strncmp(name, "step-", 5) != 0) return -1;
    const char *s = name + 5;
    if (!*s) return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > INT64_MAX / 10 - 10) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

chm_status ck_list_steps(const char *run_dir, int64_t **steps, int *n, chm_err *err) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(run_dir);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR) return CHM_OK;
        return CHM_ERR(err, CHM_ERR_IO, "%s: cannot list: %s", run_dir, strerror(errno));
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = step_of(e->d_name);
        char state[CK_PATH];
        snprintf(state, sizeof state, "%s/%s/" CK_STATE_FILE, run_dir, e->d_name);
        if (s < 0 || !ck_exists(state)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *p = realloc(*steps, (size_t)cap * sizeof *p);
            if (!p) {
                closedir(d);
                return CHM_ERR(err, CHM_ERR_NOMEM, "no memory listing %s", run_dir);
            }
            *steps = p;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    if (*n) qsort(*steps, (size_t)*n, sizeof **steps, cmp_i64);
    return CHM_OK;
}

chm_status ck_clean_tmp(const char *run_dir, chm_err *err) {
    DIR *d = opendir(run_dir);
    if (!d) return CHM_OK;
    chm_status rc = CHM_OK;
    struct dirent *e;
    while (rc == CHM_OK && (e = readdir(d))) {
        if (strncmp(e->d_name, CK_TMP_PREFIX, strlen(CK_TMP_PREFIX)) != 0) continue;
        char p[CK_PATH];
        snprintf(p, sizeof p, "%s/%s", run_dir, e->d_name);
        rc = ck_remove_tree(p, err);
    }
    closedir(d);
    return rc;
}

chm_status ck_prune(const char *run_dir, int keep, chm_err *err) {
    int64_t *steps;
    int n;
    chm_status rc = ck_list_steps(run_dir, &steps, &n, err);
    for (int i = 0; rc == CHM_OK && i < n - keep; i++) {
        char p[CK_PATH];
        snprintf(p, sizeof p, "%s/step-%08lld", run_dir, (long long)steps[i]);
        rc = ck_remove_tree(p, err);
    }
    free(steps);
    return rc;
}

chm_status chm_checkpoint_latest(const char *run_dir, bool clean, char *path, size_t path_n,
                                 bool *found, chm_err *err) {
    *found = false;
    if (clean) {
        chm_status rc = ck_clean_tmp(run_dir, err);
        if (rc) return rc;
    }
    int64_t *steps;
    int n;
    chm_status rc = ck_list_steps(run_dir, &steps, &n, err);
    if (rc == CHM_OK && n > 0) {
        snprintf(path, path_n, "%s/step-%08lld", run_dir, (long long)steps[n - 1]);
        *found = true;
    }
    free(steps);
    return rc;
}

void ck_param_span(const chm_model *m, bool grads, chm_tensor *view, int64_t *first) {
    chm_tensor pd, gd, pn;
    chm_model_param_region(m, true, &pd, &gd);
    chm_model_param_region(m, false, &pn, NULL);
    int64_t n = chm_tensor_numel(&pd) + chm_tensor_numel(&pn);
    const chm_tensor *base = grads ? &gd : &pd;
    *view = chm_tensor_1d(base->buf, base->offset, base->dtype, n);
    *first = (int64_t)(base->offset / chm_dtype_size(base->dtype));
}
