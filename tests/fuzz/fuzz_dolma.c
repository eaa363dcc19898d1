/*
 * fuzz_dolma.c: libFuzzer target for Dolma JSON lines in plain, gzip and
 * zstd files (chm_dolma_open / chm_dolma_next over chm_lines). The first
 * input byte picks the file's name (.jsonl, .jsonl.gz or .jsonl.zst: the
 * name matters only when the magic bytes disagree); the rest is the file.
 * Every document returned must be well formed, the counts must add up, and
 * a failure must name the file.
 */
#include "fuzz_util.h"

#include "chimera/data.h"

static const char *const names[] = {"in.jsonl", "in.jsonl.gz", "in.jsonl.zst"};

/* Read every document; check what the reader promises about each. */
static void read_all(chm_dolma_reader *r, const char *path) {
    chm_dolma_doc doc;
    int got = 1;
    chm_err err = {0};
    int64_t docs = 0;
    while (got) {
        if (chm_dolma_next(r, &doc, &got, &err) != CHM_OK) {
            if (!strstr(err.msg, path)) abort();
            break;
        }
        if (!got) break;
        docs++;
        if (!doc.text || doc.text_len == 0 || !doc.id || !doc.source || doc.line < 1) abort();
        unsigned sum = 0; /* touch the whole text */
        for (size_t i = 0; i < doc.text_len; i++) sum += (unsigned char)doc.text[i];
        sum += (unsigned)strlen(doc.id) + (unsigned)strlen(doc.source);
        (void)sum;
    }
    const chm_dolma_stats *s = chm_dolma_stats_get(r);
    if (getenv("CHIMERA_FUZZ_VERBOSE"))
        fprintf(stderr, "%lld documents, %lld skipped lines, %lld empty%s%s\n", (long long)docs,
                (long long)chm_dolma_stats_skipped(s), (long long)s->empty, err.msg[0] ? "; " : "",
                err.msg);
    if (s->documents != docs || s->lines < s->documents + chm_dolma_stats_skipped(s) + s->empty)
        abort();
    for (int i = 0; i < s->n_samples; i++)
        if (strncmp(s->samples[i], path, strlen(path)) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    char path[512];
    fz_write(names[data[0] % 3], data + 1, size - 1, path, sizeof path);
    chm_dolma_reader *r = NULL;
    chm_err err = {0};
    chm_status rc = chm_dolma_open(path, &r, &err);
    fz_report("dolma open", rc == CHM_OK, err.msg);
    if (rc == CHM_OK) read_all(r, path);
    else if (!strstr(err.msg, path)) abort();
    chm_dolma_close(r);
    unlink(path);
    return 0;
}
