/*
 * fuzz_manifest.c: libFuzzer target for manifest.json of a token-shard
 * directory, as the loader reads it (chm_manifest_files_read with sha256
 * verification, then each listed shard opened with its announced count) and
 * as `chimera tokenize` reads an earlier run's (chm_manifest_load_prev). The
 * directory holds two fixed shards (and sidecars) whose sizes and sha256 the seeds list. A
 * manifest must never make the reader open a file outside its directory.
 */
#include "fuzz_util.h"

#include <jansson.h>
#include <sys/stat.h>

#include "chimera/data.h"
#include "data/loader.h"
#include "data/shard.h"

/* Two shards of uint16 tokens: 0..7 and 8..11 (little-endian). */
static const unsigned char SHARD0[16] = {0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0};
static const unsigned char SHARD1[8] = {8, 0, 9, 0, 10, 0, 11, 0};
/* Their sidecars (only hashed by the readers). */
static const char SIDE0[] = "0,5,in.jsonl,a\n5,8,in.jsonl,b\n";
static const char SIDE1[] = "0,4,in.jsonl,c\n";

/* Every listed path must stay below dir; each shard must open as announced or be refused. */
static void open_shards(const char *dir, const chm_manifest_files *m) {
    size_t n = strlen(dir);
    for (int i = 0; i < m->n; i++) {
        const char *p = m->paths[i];
        if (strncmp(p, dir, n) != 0 || p[n] != '/' || strstr(p + n, "/../") ||
            (strlen(p) >= 3 && !strcmp(p + strlen(p) - 3, "/..")))
            abort();
        chm_tok_file f;
        chm_err err = {0};
        if (chm_tok_file_open(p, m->dtype, m->counts[i], &f, &err) == CHM_OK &&
            f.count != m->counts[i])
            abort();
        chm_tok_file_close(&f);
    }
}

/* What a tokenize rerun reads: the earlier manifest against some settings. */
static void load_prev(const char *dir) {
    json_t *settings = json_pack("{s:s, s:i, s:i, s:s, s:i}", "tokenizer", "byte", "vocab_size", 257,
                                 "eos", 256, "dtype", "uint16", "shard_tokens", 8);
    chm_manifest_prev prev;
    chm_err err = {0};
    if (chm_manifest_load_prev(dir, settings, &prev, &err) == CHM_OK) {
        if (prev.n_valid < 0 || prev.n_valid > prev.n_listed) abort();
        if (getenv("CHIMERA_FUZZ_VERBOSE"))
            fprintf(stderr, "earlier run: same settings %d, %d of %d shards verify\n",
                    prev.same_settings, prev.n_valid, prev.n_listed);
    }
    free(prev.shards);
    json_decref(settings);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/shards", fz_dir());
    mkdir(dir, 0777);
    fz_write("shards/part-00000.npy", SHARD0, sizeof SHARD0, path, sizeof path);
    fz_write("shards/part-00001.npy", SHARD1, sizeof SHARD1, path, sizeof path);
    fz_write("shards/part-00000.csv.gz", SIDE0, sizeof SIDE0 - 1, path, sizeof path);
    fz_write("shards/part-00001.csv.gz", SIDE1, sizeof SIDE1 - 1, path, sizeof path);
    fz_write("shards/manifest.json", data, size, path, sizeof path);
    chm_manifest_files m;
    chm_err err = {0};
    chm_status rc = chm_manifest_files_read(dir, 1, &m, &err);
    fz_report("manifest", rc == CHM_OK, err.msg);
    if (rc == CHM_OK) {
        open_shards(dir, &m);
        chm_manifest_files_free(&m);
    } else if (!strstr(err.msg, dir)) {
        fprintf(stderr, "a refusal must name the file: %s\n", err.msg);
        abort();
    }
    load_prev(dir);
    chm_err ignore;
    ck_remove_tree(dir, &ignore);
    return 0;
}
