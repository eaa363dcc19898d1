/*
 * rendezvous.c: how the ranks of a group started by hand (--rank/--world-size,
 * no MPI) learn rank 0's NCCL id: through a file on a filesystem they share.
 *
 * Rank 0 removes an old file, writes the new one under a temporary name and
 * renames it into place, so a reader sees the whole file or none. The file is
 * text: "chimera-rendezvous 1", "world N", then the bytes in hex, one line
 * each. Readers poll for a file of their world size and take it; rank 0
 * removes it once everyone is connected. A file left by a run that died
 * before that is ignored when older than CHM_RENDEZVOUS_STALE_S, and fails
 * NCCL's connection (with a message naming the file) when newer.
 */
#include "comm_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RDV_MAGIC "chimera-rendezvous 1"

/* mkdir -p of the folder that holds path. */
static chm_status make_parent(const char *path, chm_err *err) {
    char dir[COMM_PATH];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return CHM_OK;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(dir, 0777) != 0 && errno != EEXIST) break;
        *p = '/';
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return CHM_ERR(err, CHM_ERR_IO, "rendezvous: cannot create %s: %s", dir, strerror(errno));
    return CHM_OK;
}

static chm_status write_file(const char *path, int world, const unsigned char *b, size_t n,
                             chm_err *err) {
    char tmp[COMM_PATH + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    chm_status rc = make_parent(path, err);
    if (rc) return rc;
    unlink(path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return CHM_ERR(err, CHM_ERR_IO, "rendezvous: cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, RDV_MAGIC "\nworld %d\n", world);
    for (size_t i = 0; i < n; i++) fprintf(f, "%02x", b[i]);
    fputc('\n', f);
    bool bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad = fclose(f) != 0 || bad;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return CHM_ERR(err, CHM_ERR_IO, "rendezvous: cannot write %s: %s", path, strerror(errno));
    }
    return CHM_OK;
}

/* Parse a complete file for this world size into b; false when it is not one. */
static bool read_file(const char *path, int world, unsigned char *b, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char line[64];
    int w = -1;
    bool ok = fgets(line, sizeof line, f) && !strncmp(line, RDV_MAGIC "\n", sizeof RDV_MAGIC) &&
              fscanf(f, "world %d ", &w) == 1 && w == world;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned v;
        ok = fscanf(f, "%2x", &v) == 1;
        b[i] = (unsigned char)v;
    }
    fclose(f);
    return ok;
}

/* The file exists and is younger than CHM_RENDEZVOUS_STALE_S. */
static bool fresh(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return false;
    return difftime(time(NULL), st.st_mtime) < CHM_RENDEZVOUS_STALE_S;
}

chm_status chm_comm_rendezvous(const char *path, int rank, int world, void *bytes, size_t n,
                               double timeout_s, chm_err *err) {
    if (!path || !*path)
        return CHM_ERR(err, CHM_ERR_INVALID_ARG, "rendezvous: no file given");
    if (rank == 0) return write_file(path, world, bytes, n, err);
    double t0 = chm_comm_now();
    while (!(fresh(path) && read_file(path, world, bytes, n))) {
        if (chm_comm_now() - t0 > timeout_s)
            return CHM_ERR(
                err, CHM_ERR_IO,
                "rendezvous: rank %d waited %.0f s for %s, which rank 0 writes: is rank 0 "
                "running with the same --rendezvous and --world-size %d?",
                rank, timeout_s, path, world);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return CHM_OK;
}

void chm_comm_rendezvous_done(const char *path, int rank) {
    if (rank == 0 && path && *path) unlink(path);
}
