/*
 * test_tokenizer.c: the tokenizer (suite `tokenizer`): the byte tokenizer, tokenizer.json
 * BPE ids against Hugging Face fixtures (tools/tokenizer_fixtures.py wrote them), the
 * shared Dolma documents, decode round trips, hostile tokenizer.json files, the CLI, the
 * trainer and encoding from several threads.
 *
 * Tests that need the shared GPT-NeoX-20B tokenizer or Dolma files skip when
 * CHIMERA_SOURCE_DIR/../shared/data is absent; the trained*.json fixtures are committed.
 */
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utf8proc.h>
#include <zlib.h>

#include "chimera/tokenizer.h"
#include "data/sha256.h"
#include "testutil.h"

#define FIXTURES CHIMERA_SOURCE_DIR "/tests/data/tokenizer/"
#define SHARED CHIMERA_SOURCE_DIR "/../shared/data/"
#define NEOX SHARED "tokenizers/gpt-neox-20b.json"

/* ---- helpers ------------------------------------------------------------------------ */

static bool have_file(const char *path) { return access(path, R_OK) == 0; }

static chm_tokenizer *load_ok(const char *path) {
    chm_tokenizer *t = NULL;
    chm_err err = {0};
    chm_status rc = chm_tokenizer_load(path, &t, &err);
    cr_assert_eq(rc, CHM_OK, "loading %s failed: %s", path, err.msg);
    return t;
}

/* The GPT-NeoX-20B tokenizer from shared data, or NULL when shared data is absent. */
static chm_tokenizer *load_neox(void) { return have_file(NEOX) ? load_ok(NEOX) : NULL; }

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    cr_assert(j, "cannot read fixture %s: %s (run tools/tokenizer_fixtures.py)", path, je.text);
    return j;
}

/* Bytes of a hex string (malloc'd, *n set). */
static char *unhex(const char *h, size_t *n) {
    size_t len = strlen(h) / 2;
    char *b = malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        b[i] = (char)v;
    }
    b[len] = 0;
    *n = len;
    return b;
}

static void encode_ok(const chm_tokenizer *t, const char *s, size_t n, chm_ids *ids) {
    chm_err err = {0};
    ids->n = 0;
    cr_assert_eq(chm_tokenizer_encode(t, s, n, ids, &err), CHM_OK, "encode failed: %s", err.msg);
}

/* Assert ids equal the JSON array want, naming the case on failure. */
static void assert_ids(const chm_ids *got, json_t *want, const char *what) {
    size_t n = json_array_size(want), k = 0;
    while (k < n && k < got->n && got->ids[k] == json_integer_value(json_array_get(want, k))) k++;
    cr_assert(k == n && got->n == n,
              "%s: %zu ids, want %zu; first difference at %zu (got %d, want %d)", what, got->n, n,
              k, k < got->n ? got->ids[k] : -1,
              k < n ? (int)json_integer_value(json_array_get(want, k)) : -1);
}

/* Check every {"hex", "ids"} case of a fixture array against tokenizer t. */
static void check_cases(const chm_tokenizer *t, json_t *cases, const char *label) {
    chm_ids ids = {0};
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        size_t n;
        char *s = unhex(json_string_value(json_object_get(c, "hex")), &n);
        encode_ok(t, s, n, &ids);
        char what[160];
        const char *name = json_string_value(json_object_get(c, "name"));
        snprintf(what, sizeof what, "%s case %zu (%s)", label, i, name ? name : "");
        assert_ids(&ids, json_object_get(c, "ids"), what);
        free(s);
    }
    chm_ids_free(&ids);
}

/* A fresh temporary directory; remove it with rm_dir. */
static void make_dir(char dir[64]) {
    strcpy(dir, "/tmp/chm_tok_XXXXXX");
    cr_assert(mkdtemp(dir), "mkdtemp failed");
}

static void rm_dir(const char *dir) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* NFC with utf8proc, independently of the tokenizer's own path. */
static char *nfc(const char *s, size_t n, size_t *out_n) {
    utf8proc_uint8_t *d = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &d,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    cr_assert(m >= 0, "utf8proc NFC failed");
    *out_n = (size_t)m;
    return (char *)d;
}

/* Run a shell command; returns its exit code and its stdout (malloc'd) in *out. */
static int run(const char *cmd, char **out, size_t *out_n) {
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen failed: %s", cmd);
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0)
        if ((n += got) + 1 >= cap) buf = realloc(buf, cap *= 2);
    buf[n] = 0;
    int st = pclose(p);
    *out = buf;
    if (out_n) *out_n = n;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the byte tokenizer ----------------------------------------------------------------- */

Test(tokenizer, byte_round_trip) {
    chm_tokenizer *t = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_tokenizer_byte(&t, &err), CHM_OK);
    cr_assert_eq(chm_tokenizer_vocab_size(t), CHM_BYTE_VOCAB);
    cr_assert_eq(chm_tokenizer_eos(t), CHM_BYTE_EOS);
    const char s[] = "h\xc3\xa9llo\0\xf0\x9f\x98\x80 end";
    chm_ids ids = {0};
    encode_ok(t, s, sizeof s - 1, &ids);
    cr_assert_eq(ids.n, sizeof s - 1);
    for (size_t i = 0; i < ids.n; i++) cr_assert_eq(ids.ids[i], (unsigned char)s[i]);
    cr_assert_eq(chm_ids_push(&ids, CHM_BYTE_EOS), CHM_OK); /* specials decode to nothing */
    char *text;
    size_t len;
    cr_assert_eq(chm_tokenizer_decode(t, ids.ids, ids.n, &text, &len, &err), CHM_OK);
    cr_assert_eq(len, sizeof s - 1);
    cr_assert_eq(memcmp(text, s, len), 0);
    free(text);
    encode_ok(t, "a\xff", 2, &ids); /* invalid UTF-8 becomes U+FFFD = EF BF BD */
    cr_assert_eq(ids.n, 4);
    cr_assert(ids.ids[1] == 0xEF && ids.ids[2] == 0xBF && ids.ids[3] == 0xBD);
    int32_t bad = 260;
    cr_assert_eq(chm_tokenizer_decode(t, &bad, 1, &text, &len, &err), CHM_ERR_INVALID_ARG);
    chm_ids_free(&ids);
    chm_tokenizer_free(t);
}

/* ---- Hugging Face fixtures ---------------------------------------------------------------- */

Test(tokenizer, neox_adversarial_matches_hf) {
    chm_tokenizer *t = load_neox();
    if (!t) cr_skip("shared data absent (%s): GPT-NeoX-20B fixtures not checked", NEOX);
    cr_assert_eq(chm_tokenizer_vocab_size(t), 50280);
    cr_assert_eq(chm_tokenizer_eos(t), 50279);
    json_t *j = load_json(FIXTURES "neox_adversarial.json");
    check_cases(t, json_object_get(j, "cases"), "gpt-neox-20b");
    json_decref(j);
    chm_tokenizer_free(t);
}

Test(tokenizer, trained_variants_match_hf) {
    json_t *j = load_json(FIXTURES "trained_expected.json");
    const char *name;
    json_t *cases;
    int n = 0;
    json_object_foreach(j, name, cases) {
        char path[512];
        snprintf(path, sizeof path, FIXTURES "%s", name);
        chm_tokenizer *t = load_ok(path);
        check_cases(t, cases, name);
        chm_tokenizer_free(t);
        n++;
    }
    cr_assert_geq(n, 4, "trained_expected.json covers %d tokenizers", n);
    json_decref(j);
}

/* Read one line of any length from a gz stream (malloc'd; NULL at the end). */
static char *gz_line(gzFile f) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (gzgets(f, buf + n, (int)(cap - n))) {
        n += strlen(buf + n);
        if (n && buf[n - 1] == '\n') return buf;
        buf = realloc(buf, cap *= 2);
    }
    if (n) return buf;
    free(buf);
    return NULL;
}

/* sha256 of ids as little-endian uint32, in hex. */
static void ids_sha256(const chm_ids *ids, char hex[65]) {
    chm_sha256 h;
    chm_sha256_init(&h);
    for (size_t i = 0; i < ids->n; i++) {
        uint32_t v = (uint32_t)ids->ids[i];
        unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                              (unsigned char)(v >> 24)};
        chm_sha256_update(&h, b, 4);
    }
    chm_sha256_hex(&h, hex);
}

/* Check every document of one shared Dolma file against the fixture entries for it. */
static int check_dolma_file(const chm_tokenizer *t, const char *file, json_t *docs) {
    char path[512];
    snprintf(path, sizeof path, SHARED "dolma/%s", file);
    gzFile f = gzopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    chm_ids ids = {0};
    int line = 0, checked = 0;
    char *l;
    while ((l = gz_line(f))) {
        line++;
        json_t *doc = json_loads(l, 0, NULL), *want = NULL, *d;
        size_t i;
        json_array_foreach(docs, i,
                           d) if (!strcmp(json_string_value(json_object_get(d, "file")), file) &&
                                  json_integer_value(json_object_get(d, "line")) == line) want = d;
        cr_assert(doc && want, "%s:%d: unparsable or missing from neox_dolma.json", file, line);
        cr_assert_str_eq(json_string_value(json_object_get(doc, "id")),
                         json_string_value(json_object_get(want, "id")));
        json_t *text = json_object_get(doc, "text");
        encode_ok(t, json_string_value(text), json_string_length(text), &ids);
        char hex[65], what[600];
        ids_sha256(&ids, hex);
        snprintf(what, sizeof what, "%s:%d (%s)", file, line,
                 json_string_value(json_object_get(want, "id")));
        cr_assert_eq((json_int_t)ids.n, json_integer_value(json_object_get(want, "n_ids")),
                     "%s: id count", what);
        ids.n = ids.n < 16 ? ids.n : 16;
        assert_ids(&ids, json_object_get(want, "first_ids"), what);
        cr_assert_str_eq(hex, json_string_value(json_object_get(want, "sha256")),
                         "%s: sha256 of the ids", what);
        json_decref(doc);
        free(l);
        checked++;
    }
    gzclose(f);
    chm_ids_free(&ids);
    return checked;
}

Test(tokenizer, dolma_documents_match_hf) {
    chm_tokenizer *t = load_neox();
    if (!t) cr_skip("shared data absent (%s): Dolma documents not checked", SHARED);
    json_t *j = load_json(FIXTURES "neox_dolma.json"), *docs = json_object_get(j, "docs");
    int n = check_dolma_file(t, "cc_en_head-0091.jsonl.gz", docs);
    n += check_dolma_file(t, "cc_en_head-0174.jsonl.gz", docs);
    cr_assert_eq((size_t)n, json_array_size(docs), "checked %d documents of %zu", n,
                 json_array_size(docs));
    json_decref(j);
    chm_tokenizer_free(t);
}

/* ---- decode round trips ---------------------------------------------------------------- */

/* A random valid UTF-8 string from a pool that mixes scripts, spaces and combining marks. */
static size_t random_text(tt_rng *r, char *buf) {
    static const uint32_t pool[] = {
        'a',   'b',    'e',    'z',    'A',    'Q',      ' ',    ' ',    ' ',     '\n',   '\t',
        '0',   '7',    '\'',   's',    '.',    ',',      '!',    '<',    '|',     0xE9,   0x301,
        0x308, 0x323,  0x1100, 0x1161, 0x11A8, 0x212B,   0x4E2D, 0x65E5, 0x1F600, 0x200D, 0x1F3FD,
        0xA0,  0x3000, 0x645,  0x5D0,  0xFFFD, 0x10FFFF, 0x7F,   0x1};
    size_t n = 0, k = 1 + tt_next(r) % 40;
    for (size_t i = 0; i < k; i++) {
        uint32_t c = pool[tt_next(r) % (sizeof pool / sizeof *pool)];
        n += (size_t)utf8proc_encode_char((utf8proc_int32_t)c, (utf8proc_uint8_t *)buf + n);
    }
    buf[n] = 0;
    return n;
}

/* decode(encode(s)) == NFC(s) (or s itself when the tokenizer does not normalise). */
static void check_round_trip(const chm_tokenizer *t, const char *s, size_t n, bool normalizes) {
    chm_ids ids = {0};
    chm_err err = {0};
    encode_ok(t, s, n, &ids);
    char *text, *want = NULL;
    size_t len, wn = n;
    cr_assert_eq(chm_tokenizer_decode(t, ids.ids, ids.n, &text, &len, &err), CHM_OK, "%s", err.msg);
    if (normalizes) want = nfc(s, n, &wn);
    cr_assert(len == wn && memcmp(text, want ? want : s, len) == 0,
              "round trip of \"%s\" gave \"%s\"", s, text);
    free(text), free(want);
    chm_ids_free(&ids);
}

Test(tokenizer, decode_encode_is_nfc) {
    chm_tokenizer *plain = load_ok(FIXTURES "trained.json"), *neox = load_neox();
    tt_rng r = tt_rng_make(7);
    char buf[256];
    for (int i = 0; i < 300; i++) {
        size_t n = random_text(&r, buf);
        check_round_trip(plain, buf, n, false);
        if (neox) check_round_trip(neox, buf, n, true);
    }
    if (neox) {
        json_t *j = load_json(FIXTURES "neox_adversarial.json"), *c;
        size_t i;
        json_array_foreach(json_object_get(j, "cases"), i, c) {
            size_t n;
            char *s = unhex(json_string_value(json_object_get(c, "hex")), &n);
            if (n && strncmp(json_string_value(json_object_get(c, "name")), "invalid", 7) != 0)
                check_round_trip(neox, s, n, true);
            free(s);
        }
        json_decref(j);
    }
    chm_tokenizer_free(plain), chm_tokenizer_free(neox);
}

Test(tokenizer, decode_rejects_unknown_ids) {
    chm_tokenizer *t = load_ok(FIXTURES "trained.json");
    chm_err err = {0};
    char *text;
    size_t len;
    int32_t ids[3] = {65, chm_tokenizer_vocab_size(t), 66};
    cr_assert_eq(chm_tokenizer_decode(t, ids, 3, &text, &len, &err), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "position 1"), "%s", err.msg);
    ids[1] = -5;
    cr_assert_eq(chm_tokenizer_decode(t, ids, 3, &text, &len, &err), CHM_ERR_INVALID_ARG);
    ids[1] = chm_tokenizer_eos(t); /* the special token decodes to its text */
    cr_assert_eq(chm_tokenizer_decode(t, ids, 3, &text, &len, &err), CHM_OK);
    cr_assert_str_eq(text, "A<|endoftext|>B");
    free(text);
    chm_ids out = {0};
    cr_assert_eq(chm_tokenizer_encode(t, NULL, 3, &out, &err), CHM_ERR_INVALID_ARG);
    cr_assert_eq(chm_tokenizer_encode(t, "", 0, &out, &err), CHM_OK);
    cr_assert_eq(out.n, 0);
    chm_tokenizer_free(t);
}

/* ---- hostile tokenizer.json files --------------------------------------------------------- */

#define T_PRE "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}"
#define T_DEC "{\"type\":\"ByteLevel\"}"
#define T_MODEL(vocab, merges) "{\"type\":\"BPE\",\"vocab\":" vocab ",\"merges\":" merges "}"
#define T_FILE(top, added, norm, pre, dec, model)                                                  \
    "{\"version\":\"1.0\"," top "\"added_tokens\":" added ",\"normalizer\":" norm                  \
    ",\"pre_tokenizer\":" pre ",\"post_processor\":null,\"decoder\":" dec ",\"model\":" model "}"
#define T_OK_MODEL T_MODEL("{\"a\":0,\"b\":1,\"ab\":2}", "[\"a b\"]")
#define T_SIMPLE(model) T_FILE("", "[]", "null", T_PRE, T_DEC, model)

typedef struct bad_case {
    const char *json;
    chm_status code;
    const char *says;
} bad_case;

static const bad_case bad_cases[] = {
    {"{\"model\": ", CHM_ERR_PARSE, "not valid JSON"},
    {"", CHM_ERR_PARSE, "not valid JSON"},
    {"[1, 2]", CHM_ERR_PARSE, "top level"},
    {"{\"version\":\"1.0\"}", CHM_ERR_PARSE, "no \"model\""},
    {T_SIMPLE("{\"type\":\"WordPiece\",\"vocab\":{}}"), CHM_ERR_UNSUPPORTED, "WordPiece"},
    {T_SIMPLE(T_MODEL("[1]", "[]")), CHM_ERR_PARSE, "model.vocab"},
    {T_SIMPLE(T_MODEL("{\"a\":-1}", "[]")), CHM_ERR_PARSE, "not an id"},
    {T_SIMPLE(T_MODEL("{\"a\":99999999999}", "[]")), CHM_ERR_PARSE, "not an id"},
    {T_SIMPLE(T_MODEL("{\"a\":\"x\"}", "[]")), CHM_ERR_PARSE, "not an id"},
    {T_SIMPLE(T_MODEL("{\"a\":0,\"b\":0}", "[]")), CHM_ERR_PARSE, "two tokens"},
    {T_SIMPLE(T_MODEL("{\"a\":0,\"a\":1}", "[]")), CHM_ERR_PARSE, "duplicate"},
    {T_SIMPLE(T_MODEL("{\"a\":0,\"b\":1}", "[\"a c\"]")), CHM_ERR_PARSE,
     "\"c\", which is not in model.vocab"},
    {T_SIMPLE(T_MODEL("{\"a\":0,\"b\":1}", "[\"a b\"]")), CHM_ERR_PARSE, "makes \"ab\""},
    {T_SIMPLE(T_MODEL("{\"a\":0,\"b\":1}", "[\"a b c\"]")), CHM_ERR_PARSE, "neither"},
    {T_SIMPLE(T_MODEL("{\"a\":0,\"b\":1}", "[[1, 2]]")), CHM_ERR_PARSE, "neither"},
    {T_SIMPLE(T_MODEL("{\"a\":0,\"b\":1}", "[\"ab\"]")), CHM_ERR_PARSE, "neither"},
    {T_SIMPLE("{\"type\":\"BPE\",\"vocab\":{\"a\":0}}"), CHM_ERR_PARSE, "model.merges"},
    {T_SIMPLE("{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}"), CHM_ERR_PARSE, "empty"},
    {T_SIMPLE("{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{\"a\":0},\"merges\":[]}"),
     CHM_ERR_UNSUPPORTED, "dropout"},
    {T_SIMPLE("{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0},\"merges\":[]}"),
     CHM_ERR_UNSUPPORTED, "byte_fallback"},
    {T_SIMPLE("{\"type\":\"BPE\",\"unk_token\":\"?\",\"vocab\":{\"a\":0},\"merges\":[]}"),
     CHM_ERR_PARSE, "unk_token"},
    {T_FILE("", "[{\"id\":7,\"content\":\"<x>\"}]", "null", T_PRE, T_DEC, T_OK_MODEL),
     CHM_ERR_PARSE, "would give it id 3"},
    {T_FILE("", "[{\"id\":3,\"content\":\"\"}]", "null", T_PRE, T_DEC, T_OK_MODEL), CHM_ERR_PARSE,
     "non-empty"},
    {T_FILE("", "[{\"id\":0,\"content\":\"a\"},{\"id\":0,\"content\":\"a\"}]", "null", T_PRE, T_DEC,
            T_OK_MODEL),
     CHM_ERR_PARSE, "twice"},
    {T_FILE("", "[{\"id\":3,\"content\":\"x\",\"special\":3}]", "null", T_PRE, T_DEC, T_OK_MODEL),
     CHM_ERR_PARSE, "special"},
    {T_FILE("", "{}", "null", T_PRE, T_DEC, T_OK_MODEL), CHM_ERR_PARSE, "added_tokens"},
    {T_FILE("", "[]", "{\"type\":\"Lowercase\"}", T_PRE, T_DEC, T_OK_MODEL), CHM_ERR_UNSUPPORTED,
     "normalizer \"Lowercase\""},
    {T_FILE("", "[]", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"}]}", T_PRE, T_DEC,
            T_OK_MODEL),
     CHM_ERR_UNSUPPORTED, "normalizer"},
    {T_FILE("", "[]", "null", "{\"type\":\"Whitespace\"}", T_DEC, T_OK_MODEL), CHM_ERR_UNSUPPORTED,
     "Whitespace"},
    {T_FILE("", "[]", "null", "null", T_DEC, T_OK_MODEL), CHM_ERR_UNSUPPORTED, "pre_tokenizer"},
    {T_FILE("", "[]", "null",
            "{\"type\":\"Sequence\",\"pretokenizers\":[" T_PRE ",{\"type\":\"Split\"}]}", T_DEC,
            T_OK_MODEL),
     CHM_ERR_UNSUPPORTED, "step 0"},
    {T_FILE("", "[]", "null",
            "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
            "\"(\"},\"behavior\":\"Isolated\"}," T_PRE "]}",
            T_DEC, T_OK_MODEL),
     CHM_ERR_PARSE, "bad Split pattern"},
    {T_FILE("", "[]", "null",
            "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
            "\"a\"},\"behavior\":\"Sideways\"}," T_PRE "]}",
            T_DEC, T_OK_MODEL),
     CHM_ERR_PARSE, "unknown behavior"},
    {T_FILE("", "[]", "null",
            "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":7,"
            "\"behavior\":\"Isolated\"}," T_PRE "]}",
            T_DEC, T_OK_MODEL),
     CHM_ERR_PARSE, "pattern"},
    {T_FILE("", "[]", "null", T_PRE, "null", T_OK_MODEL), CHM_ERR_UNSUPPORTED, "decoder"},
    {T_FILE("", "[]", "null", T_PRE, "{\"type\":\"WordPiece\"}", T_OK_MODEL), CHM_ERR_UNSUPPORTED,
     "decoder"},
    {T_FILE("\"truncation\":{\"max_length\":5},", "[]", "null", T_PRE, T_DEC, T_OK_MODEL),
     CHM_ERR_UNSUPPORTED, "truncation"},
    {"{\"version\":\"2.0\",\"model\":" T_OK_MODEL "}", CHM_ERR_UNSUPPORTED, "version"},
    {"{\"post_processor\":{\"type\":\"TemplateProcessing\"},\"pre_tokenizer\":" T_PRE
     ",\"decoder\":" T_DEC ",\"model\":" T_OK_MODEL "}",
     CHM_ERR_UNSUPPORTED, "TemplateProcessing"},
};

Test(tokenizer, minimal_file_loads_and_merges) {
    char dir[64], path[128];
    make_dir(dir);
    snprintf(path, sizeof path, "%s/ok.json", dir);
    const char *json = T_FILE("", "[{\"id\":3,\"content\":\"<x>\",\"special\":true}]", "null",
                              T_PRE, T_DEC, T_OK_MODEL);
    write_file(path, json, strlen(json));
    chm_tokenizer *t = load_ok(path);
    cr_assert_eq(chm_tokenizer_vocab_size(t), 4);
    cr_assert_eq(chm_tokenizer_eos(t), -1);
    chm_ids ids = {0};
    encode_ok(t, "ab ba<x>c", 9, &ids); /* "ab" merges; ' ' and 'c' have no token: dropped as HF */
    int32_t want[] = {2, 1, 0, 3};
    cr_assert_eq(ids.n, 4);
    cr_assert_eq(memcmp(ids.ids, want, sizeof want), 0);
    chm_ids_free(&ids);
    chm_tokenizer_free(t);
    rm_dir(dir);
}

Test(tokenizer, corrupt_files_give_clear_errors) {
    char dir[64], path[128];
    make_dir(dir);
    snprintf(path, sizeof path, "%s/bad.json", dir);
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case *c = &bad_cases[i];
        write_file(path, c->json, strlen(c->json));
        chm_tokenizer *t = (chm_tokenizer *)&t; /* must be reset to NULL on failure */
        chm_err err = {0};
        chm_status rc = chm_tokenizer_load(path, &t, &err);
        cr_assert_eq(rc, c->code, "case %zu: status %s, want %s (%s)", i, chm_status_name(rc),
                     chm_status_name(c->code), err.msg);
        cr_assert_null(t, "case %zu: *out not NULL after an error", i);
        cr_assert(strstr(err.msg, path) && strstr(err.msg, c->says),
                  "case %zu: message \"%s\" should name "
                  "the file and say \"%s\"",
                  i, err.msg, c->says);
    }
    chm_tokenizer *t;
    chm_err err = {0};
    cr_assert_eq(chm_tokenizer_load("/nonexistent/tokenizer.json", &t, &err), CHM_ERR_IO);
    cr_assert(strstr(err.msg, "/nonexistent/tokenizer.json"), "%s", err.msg);
    rm_dir(dir);
}

/* Random damage to a real tokenizer.json: loading may fail, but never crash or leak. */
Test(tokenizer, mutated_files_never_crash) {
    FILE *f = fopen(FIXTURES "trained_split1.json", "rb");
    cr_assert(f);
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *orig = malloc(n), *buf = malloc(n), dir[64], path[128];
    cr_assert_eq(fread(orig, 1, n, f), n);
    fclose(f);
    make_dir(dir);
    snprintf(path, sizeof path, "%s/m.json", dir);
    tt_rng r = tt_rng_make(11);
    static const char junk[] = "{}[]\":,0123456789-e \\u\xc3\xff";
    int loaded = 0;
    for (int it = 0; it < 80; it++) {
        memcpy(buf, orig, n);
        size_t len = it % 4 == 0 ? tt_next(&r) % n : n;
        for (int k = 0; k < 1 + it % 3; k++)
            buf[tt_next(&r) % len] = junk[tt_next(&r) % (sizeof junk - 1)];
        write_file(path, buf, len);
        chm_tokenizer *t = NULL;
        chm_err err = {0};
        if (chm_tokenizer_load(path, &t, &err) == CHM_OK) {
            loaded++;
            chm_ids ids = {0};
            chm_tokenizer_encode(t, "some text, 123 <mask> caf\xc3\xa9", 27, &ids, &err);
            chm_ids_free(&ids);
            chm_tokenizer_free(t);
        } else {
            cr_assert(strstr(err.msg, path), "error without the file name: %s", err.msg);
        }
    }
    cr_assert_lt(loaded, 80, "no mutation was refused");
    free(orig), free(buf);
    rm_dir(dir);
}

/* ---- the command line ------------------------------------------------------------------- */

#define BIN "'" CHIMERA_BINARY "' tokenizer "
#define TRAINED "'" FIXTURES "trained.json'"

/* The ids a library encode gives, as the CLI prints them. */
static char *ids_line(const chm_tokenizer *t, const char *s) {
    chm_ids ids = {0};
    encode_ok(t, s, strlen(s), &ids);
    char *line = malloc(12 * ids.n + 2);
    size_t k = 0;
    for (size_t i = 0; i < ids.n; i++)
        k += (size_t)sprintf(line + k, i ? " %d" : "%d", (int)ids.ids[i]);
    strcpy(line + k, "\n");
    chm_ids_free(&ids);
    return line;
}

Test(tokenizer, cli_encode_decode) {
    chm_tokenizer *t = load_ok(FIXTURES "trained.json");
    const char *text = "Hello wor\xc3\xb6ld <|endoftext|> it is 42!"; /* no ' (shell quoting) */
    char *want = ids_line(t, text), *out, cmd[1024], dir[64], path[128];
    snprintf(cmd, sizeof cmd, BIN "encode --tokenizer " TRAINED " --text '%s'", text);
    cr_assert_eq(run(cmd, &out, NULL), 0);
    cr_assert_str_eq(out, want);
    free(out);
    make_dir(dir);
    snprintf(path, sizeof path, "%s/in.txt", dir);
    write_file(path, text, strlen(text));
    snprintf(cmd, sizeof cmd, BIN "encode --tokenizer " TRAINED " < '%s'", path);
    cr_assert_eq(run(cmd, &out, NULL), 0);
    cr_assert_str_eq(out, want);
    free(out);
    snprintf(cmd, sizeof cmd, BIN "decode --tokenizer " TRAINED " --ids '%s'", want);
    cr_assert_eq(run(cmd, &out, NULL), 0);
    cr_assert_str_eq(out, text);
    free(out);
    for (char *p = want; *p; p++)
        if (*p == ' ') *p = (p - want) % 2 ? ',' : '\n';
    write_file(path, want, strlen(want));
    snprintf(cmd, sizeof cmd, BIN "decode --tokenizer " TRAINED " < '%s'", path);
    cr_assert_eq(run(cmd, &out, NULL), 0);
    cr_assert_str_eq(out, text);
    free(out), free(want);
    cr_assert_eq(run(BIN "encode --tokenizer byte --text hi", &out, NULL), 0);
    cr_assert_str_eq(out, "104 105\n");
    free(out);
    rm_dir(dir);
    chm_tokenizer_free(t);
}

Test(tokenizer, cli_errors_and_help) {
    static const struct {
        const char *args;
        int code;
        const char *says;
    } cases[] = {
        {"encode --text x 2>&1", 2, "--tokenizer is required"},
        {"encode --tokenizer /nonexistent.json --text x 2>&1", 2, "/nonexistent.json"},
        {"encode --tokenizer " TRAINED " --bogus 2>&1", 2, "unknown argument"},
        {"encode --tokenizer 2>&1", 2, "needs a value"},
        {"decode --tokenizer " TRAINED " --ids '1 x' 2>&1", 2, "not a token id"},
        {"decode --tokenizer " TRAINED " --ids '99999' 2>&1", 2, "not a token"},
        {"frobnicate 2>&1", 2, "unknown tokenizer command"},
        {"train --out /tmp/x.json 2>&1", 2, "--vocab-size"},
        {"train --vocab-size 10 --out /tmp/chm_never.json " TRAINED " 2>&1", 2, "257"},
        {"--help", 0, "encode"},
        {"encode --help", 0, "--text"},
        {"decode --help", 0, "--ids"},
        {"train --help", 0, "--vocab-size"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char cmd[1024], *out;
        snprintf(cmd, sizeof cmd, BIN "%s", cases[i].args);
        int code = run(cmd, &out, NULL);
        cr_assert_eq(code, cases[i].code, "`%s` exited %d, want %d: %s", cmd, code, cases[i].code,
                     out);
        cr_assert(strstr(out, cases[i].says), "`%s` should say \"%s\": %s", cmd, cases[i].says,
                  out);
        free(out);
    }
}

/* ---- training -------------------------------------------------------------------------- */

/* Write a plain text file and a Dolma-style JSONL file of generated sentences into dir. */
static void write_training_files(const char *dir, char txt[128], char jsonl[128]) {
    static const char *words[] = {"the",
                                  "cat",
                                  "sat",
                                  "on",
                                  "mat",
                                  "token",
                                  "merge",
                                  "byte",
                                  "pair",
                                  "caf\xc3\xa9",
                                  "\xe6\x97\xa5\xe6\x9c\xac",
                                  "don't",
                                  "it's",
                                  "42",
                                  "1999"};
    tt_rng r = tt_rng_make(3);
    snprintf(txt, 128, "%s/a.txt", dir);
    snprintf(jsonl, 128, "%s/b.jsonl", dir);
    FILE *ft = fopen(txt, "w"), *fj = fopen(jsonl, "w");
    cr_assert(ft && fj);
    for (int line = 0; line < 300; line++) {
        char s[512];
        size_t n = 0;
        for (int w = 0; w < 3 + (int)(tt_next(&r) % 10); w++)
            n += (size_t)sprintf(s + n, "%s%s", w ? " " : "", words[tt_next(&r) % 15]);
        fprintf(ft, "%s.\n", s);
        if (line % 3 == 0)
            fprintf(fj, "{\"id\": \"d%d\", \"text\": \"%s!\\n\\nMore: %s\"}\n", line, s, s);
    }
    fclose(ft), fclose(fj);
}

Test(tokenizer, train_writes_a_loadable_tokenizer) {
    char dir[64], txt[128], jsonl[128], out[160];
    make_dir(dir);
    write_training_files(dir, txt, jsonl);
    snprintf(out, sizeof out, "%s/tok.json", dir);
    const char *inputs[2] = {txt, jsonl};
    int32_t n_ids = 0;
    chm_err err = {0};
    cr_assert_eq(chm_tokenizer_train(inputs, 2, 400, out, &n_ids, &err), CHM_OK, "%s", err.msg);
    cr_assert(n_ids > 300 && n_ids <= 400, "%d ids", n_ids);
    chm_tokenizer *t = load_ok(out);
    cr_assert_eq(chm_tokenizer_vocab_size(t), n_ids);
    cr_assert_eq(chm_tokenizer_eos(t), n_ids - 1);
    const char *s =
        "the cat sat on the mat<|endoftext|>caf\xc3\xa9 \xf0\x9f\x98\x80 unseen QZX\n\n 42";
    chm_ids ids = {0};
    encode_ok(t, s, strlen(s), &ids);
    cr_assert_lt(ids.n, strlen(s) / 2, "trained merges should compress known words (%zu ids)",
                 ids.n);
    check_round_trip(t, s, strlen(s), false);
    chm_ids_free(&ids);
    chm_tokenizer_free(t);
    cr_assert_eq(chm_tokenizer_train(inputs, 2, 100, out, NULL, &err), CHM_ERR_INVALID_ARG);
    const char *missing[1] = {"/nonexistent/corpus.txt"};
    cr_assert_neq(chm_tokenizer_train(missing, 1, 300, out, NULL, &err), CHM_OK);
    cr_assert(strstr(err.msg, "/nonexistent/corpus.txt"), "%s", err.msg);
    rm_dir(dir);
}

Test(tokenizer, cli_train) {
    char dir[64], txt[128], jsonl[128], cmd[1024], *out;
    make_dir(dir);
    write_training_files(dir, txt, jsonl);
    snprintf(cmd, sizeof cmd, BIN "train --vocab-size 300 --out '%s/t.json' '%s' '%s'", dir, txt,
             jsonl);
    cr_assert_eq(run(cmd, &out, NULL), 0, "%s", out);
    cr_assert(strstr(out, "300 ids"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s/t.json", dir);
    chm_tokenizer *t = load_ok(cmd);
    cr_assert_eq(chm_tokenizer_vocab_size(t), 300);
    chm_tokenizer_free(t);
    snprintf(cmd, sizeof cmd, "%s/empty.txt", dir);
    write_file(cmd, "", 0);
    snprintf(cmd, sizeof cmd, BIN "train --vocab-size 300 --out '%s/u.json' '%s/empty.txt' 2>&1",
             dir, dir);
    cr_assert_eq(run(cmd, &out, NULL), 2, "%s", out);
    cr_assert(strstr(out, "no text"), "%s", out);
    free(out);
    rm_dir(dir);
}

/* ---- threads ------------------------------------------------------------------------------ */

/* Encode texts[i % n] for i < n * reps on 4 threads (alternating tokenizers a and b) and compare
 * each result with a serial encode. */
static void check_threads(const chm_tokenizer *a, const chm_tokenizer *b, char **texts,
                          size_t *lens, int n) {
    int reps = 3, total = n * reps;
    chm_ids *serial = calloc((size_t)n * 2, sizeof *serial),
            *par = calloc((size_t)total, sizeof *par);
    for (int i = 0; i < 2 * n; i++) encode_ok(i < n ? a : b, texts[i % n], lens[i % n], &serial[i]);
    int failed = 0;
#pragma omp parallel for num_threads(4) schedule(dynamic, 1) reduction(+ : failed)
    for (int i = 0; i < total; i++) {
        const chm_tokenizer *t = (i / n) % 2 ? b : a;
        failed += chm_tokenizer_encode(t, texts[i % n], lens[i % n], &par[i], NULL) != CHM_OK;
    }
    cr_assert_eq(failed, 0);
    for (int i = 0; i < total; i++) {
        const chm_ids *want = &serial[(i / n) % 2 ? n + i % n : i % n];
        cr_assert(par[i].n == want->n &&
                      memcmp(par[i].ids, want->ids, want->n * sizeof(int32_t)) == 0,
                  "text %d (pass %d) differs between threads and serial", i % n, i / n);
        chm_ids_free(&par[i]);
    }
    for (int i = 0; i < 2 * n; i++) chm_ids_free(&serial[i]);
    free(serial), free(par);
}

Test(tokenizer, threads_give_identical_ids) {
    chm_tokenizer *a = load_ok(FIXTURES "trained.json"),
                  *b = load_ok(FIXTURES "trained_split1.json");
    enum { N = 48 };
    char *texts[N];
    size_t lens[N];
    tt_rng r = tt_rng_make(5);
    for (int i = 0; i < N; i++) {
        texts[i] = malloc(256 * 40);
        lens[i] = 0;
        for (int k = 0; k < 1 + i; k++) lens[i] += random_text(&r, texts[i] + lens[i]);
    }
    check_threads(a, b, texts, lens, N);
    chm_tokenizer *neox = load_neox();
    if (neox) check_threads(neox, a, texts, lens, N);
    for (int i = 0; i < N; i++) free(texts[i]);
    chm_tokenizer_free(a), chm_tokenizer_free(b), chm_tokenizer_free(neox);
}
