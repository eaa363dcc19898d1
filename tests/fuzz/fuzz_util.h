/*
 * fuzz_util.h: what the libFuzzer targets of tests/fuzz share: a scratch
 * directory per fuzzing process (in /dev/shm when there is one, so that the
 * file-based parsers read from memory) and writing an input into it.
 *
 * Each target defines LLVMFuzzerTestOneInput only (libFuzzer brings main).
 * A target must not leak: libFuzzer's leak check runs after every input.
 */
#ifndef CHIMERA_FUZZ_UTIL_H
#define CHIMERA_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/checkpoint_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fz_dir_path[256];

static inline void fz_cleanup(void) {
    chm_err err;
    if (fz_dir_path[0]) ck_remove_tree(fz_dir_path, &err);
}

/* The scratch directory of this process (made on first use, removed at exit). */
static inline const char *fz_dir(void) {
    if (fz_dir_path[0]) return fz_dir_path;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fz_dir_path, sizeof fz_dir_path, "%s/chimera-fuzz-XXXXXX", base);
    if (!mkdtemp(fz_dir_path)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fz_cleanup);
    return fz_dir_path;
}

/* Write n bytes to fz_dir()/name; the path into out. Aborts when the file system fails. */
static inline void fz_write(const char *name, const void *data, size_t n, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", fz_dir(), name);
    FILE *f = fopen(out, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        perror("fuzz: cannot write the input");
        abort();
    }
}

/* With CHIMERA_FUZZ_VERBOSE set: print whether the parser took the input, and its message. */
static inline void fz_report(const char *what, int accepted, const char *msg) {
    if (getenv("CHIMERA_FUZZ_VERBOSE"))
        fprintf(stderr, "%s: %s%s%s\n", what, accepted ? "accepted" : "refused", accepted ? "" : ": ",
                accepted ? "" : msg);
}

/* A NUL-terminated copy of the input (the caller frees it). */
static inline char *fz_string(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
