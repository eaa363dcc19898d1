/*
 * tokenizer_load.c: read a Hugging Face tokenizer.json into a chm_tokenizer (byte-level BPE).
 *
 * Supported: model BPE (vocab, merges as "a b" strings or [a, b] lists, unk_token,
 * fuse_unk, ignore_merges), added_tokens with their flags, normalizer NFC / Sequence of NFC
 * / null, pre_tokenizer ByteLevel or a Sequence of Split steps ending in ByteLevel,
 * post_processor ByteLevel or null, decoder ByteLevel. Anything else is refused with a
 * message naming the file and the part, never guessed at: ids that differ silently from
 * Hugging Face's would poison a dataset.
 *
 * Added tokens get the ids Hugging Face gives them on load (the vocab's id when the content
 * is in the vocab, else the next free id after the vocab); a file whose ids disagree is
 * refused rather than remapped.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer_internal.h"

typedef struct loader {
    const char *path;
    chm_err *err;
    json_t *root, *vocab;
    chm_tokenizer *t;
    const char **tok_str; /* [max_vocab_id + 1] vocab key of each id, NULL for none */
    int32_t max_vocab_id; /* -1 for an empty vocab */
    int32_t n_vocab;      /* entries in model.vocab (HF's get_vocab_size) */
    int32_t *added_of_id; /* [n_ids] index into t->added, -1 */
} loader;

static chm_status fail(loader *L, chm_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static chm_status fail(loader *L, chm_status code, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return CHM_ERR(L->err, code, "%s: %s", L->path, msg);
}

static chm_status nomem(loader *L) {
    return fail(L, CHM_ERR_NOMEM, "out of memory while loading the tokenizer");
}

/* The "type" string of a component object, or "" when absent. */
static const char *type_of(json_t *o) {
    const char *s = json_string_value(json_object_get(o, "type"));
    return s ? s : "";
}

/* A boolean field: def when absent or null; -1 (after fail) when of another type. */
static int get_bool(loader *L, json_t *o, const char *key, int def, const char *where) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return def;
    if (!json_is_boolean(v)) {
        fail(L, CHM_ERR_PARSE, "%s.%s must be true or false", where, key);
        return -1;
    }
    return json_is_true(v);
}

/* ---- model ---------------------------------------------------------------------------- */

static chm_status parse_vocab(loader *L, json_t *model) {
    L->vocab = json_object_get(model, "vocab");
    if (!json_is_object(L->vocab))
        return fail(L, CHM_ERR_PARSE, "model.vocab is missing or not an object of token -> id");
    const char *key;
    json_t *v;
    L->max_vocab_id = -1;
    json_object_foreach(L->vocab, key, v) {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= CHM_TOK_MAX_ID)
            return fail(L, CHM_ERR_PARSE, "model.vocab[\"%.60s\"] is not an id in 0..%d", key,
                        CHM_TOK_MAX_ID - 1);
        if (id > L->max_vocab_id) L->max_vocab_id = (int32_t)id;
    }
    L->n_vocab = (int32_t)json_object_size(L->vocab);
    L->tok_str = calloc((size_t)L->max_vocab_id + 2, sizeof *L->tok_str);
    if (!L->tok_str) return nomem(L);
    json_object_foreach(L->vocab, key, v) {
        json_int_t id = json_integer_value(v);
        if (L->tok_str[id])
            return fail(L, CHM_ERR_PARSE,
                        "model.vocab gives id %lld to two tokens (\"%.60s\" and \"%.60s\"): "
                        "ids must be unique",
                        (long long)id, L->tok_str[id], key);
        L->tok_str[id] = key;
    }
    return CHM_OK;
}

/* Id of a vocab token (model vocab only), or -1. */
static int32_t vocab_id(loader *L, const char *s, size_t n) {
    json_t *v = json_object_getn(L->vocab, s, n);
    return v ? (int32_t)json_integer_value(v) : -1;
}

/* One merge entry as (a, b) strings: "a b" or ["a", "b"]; 0 ok, 1 skip (#version), -1 bad. */
static int merge_parts(json_t *m, const char **a, size_t *an, const char **b, size_t *bn) {
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        if (strncmp(s, "#version", 8) == 0) return 1;
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s))) return -1;
        *a = s, *an = (size_t)(sp - s), *b = sp + 1, *bn = n - *an - 1;
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0)),
        *an = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1)),
        *bn = json_string_length(json_array_get(m, 1));
        return 0;
    }
    return -1;
}

static chm_status parse_merges(loader *L, json_t *model) {
    json_t *ms = json_object_get(model, "merges");
    if (!json_is_array(ms)) return fail(L, CHM_ERR_PARSE, "model.merges is missing or not a list");
    size_t n = json_array_size(ms);
    if (chm_merges_init(&L->t->merges, n)) return nomem(L);
    char *cat = NULL;
    size_t cat_cap = 0;
    int32_t rank = 0;
    chm_status rc = CHM_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *a, *b;
        size_t an, bn;
        int k = merge_parts(json_array_get(ms, i), &a, &an, &b, &bn);
        if (k == 1) continue;
        if (k < 0) {
            rc = fail(L, CHM_ERR_PARSE, "model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
                      i);
            break;
        }
        int32_t ia = vocab_id(L, a, an), ib = vocab_id(L, b, bn);
        if (ia < 0 || ib < 0) {
            rc = fail(L, CHM_ERR_PARSE,
                      "model.merges[%zu] uses \"%.*s\", which is not in model.vocab", i,
                      (int)(ia < 0 ? an : bn), ia < 0 ? a : b);
            break;
        }
        if (an + bn > cat_cap) {
            cat_cap = 2 * (an + bn);
            char *p = realloc(cat, cat_cap);
            if (!p) {
                rc = nomem(L);
                break;
            }
            cat = p;
        }
        memcpy(cat, a, an), memcpy(cat + an, b, bn);
        int32_t id = vocab_id(L, cat, an + bn);
        if (id < 0)
            rc = fail(L, CHM_ERR_PARSE,
                      "model.merges[%zu] makes \"%.*s\", which is not in model.vocab", i,
                      (int)(an + bn), cat);
        else
            chm_merges_put(&L->t->merges, ia, ib, rank++, id);
    }
    free(cat);
    return rc;
}

/* The model's scalar options: what is not supported is refused. */
static chm_status parse_model_options(loader *L, json_t *model) {
    chm_tokenizer *t = L->t;
    json_t *d = json_object_get(model, "dropout");
    if (d && !json_is_null(d) && !(json_is_number(d) && json_number_value(d) == 0.0))
        return fail(L, CHM_ERR_UNSUPPORTED,
                    "model.dropout is set: BPE dropout is random, so "
                    "chimera refuses it; set it to null for deterministic ids");
    const char *names[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(model, names[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return fail(L, CHM_ERR_UNSUPPORTED,
                        "model.%s is not supported by chimera's byte-level BPE", names[i]);
    }
    int bf = get_bool(L, model, "byte_fallback", 0, "model");
    int fu = get_bool(L, model, "fuse_unk", 0, "model");
    int im = get_bool(L, model, "ignore_merges", 0, "model");
    if (bf < 0 || fu < 0 || im < 0) return L->err ? L->err->code : CHM_ERR_PARSE;
    if (bf)
        return fail(L, CHM_ERR_UNSUPPORTED,
                    "model.byte_fallback is not supported (it is for "
                    "SentencePiece-style BPE, not byte-level BPE)");
    t->fuse_unk = fu, t->ignore_merges = im;
    t->unk_id = -1;
    json_t *u = json_object_get(model, "unk_token");
    if (u && !json_is_null(u)) {
        if (!json_is_string(u) ||
            (t->unk_id = vocab_id(L, json_string_value(u), json_string_length(u))) < 0)
            return fail(L, CHM_ERR_PARSE, "model.unk_token must be a token of model.vocab");
    }
    return CHM_OK;
}

/* Bytes of a token string: its byte-level characters mapped back to bytes, or its raw UTF-8
 * when some character is not one of the 256 (as HF's ByteLevel decoder). out has n bytes. */
static bool token_bytes(const char *s, size_t n, uint8_t *out, size_t *out_n) {
    size_t i = 0, j = 0, k;
    while (i < n) {
        int b = chm_bytelevel_byte(chm_utf8_decode((const uint8_t *)s + i, &k));
        if (b < 0) {
            memcpy(out, s, n);
            *out_n = n;
            return false;
        }
        out[j++] = (uint8_t)b;
        i += k;
    }
    *out_n = j;
    return true;
}

/* byte_id[], and the whole-word table when ignore_merges is on. */
static chm_status model_tables(loader *L) {
    chm_tokenizer *t = L->t;
    uint32_t cp[256];
    chm_bytelevel_tables(cp);
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        size_t k = chm_utf8_encode(cp[b], u);
        t->byte_id[b] = vocab_id(L, (const char *)u, k);
    }
    if (!t->ignore_merges) return CHM_OK;
    uint8_t buf[1024];
    for (int32_t id = 0; id <= L->max_vocab_id; id++) {
        const char *s = L->tok_str[id];
        size_t n = s ? strlen(s) : 0, bn;
        if (!s || n > sizeof buf || !token_bytes(s, n, buf, &bn)) continue;
        int64_t slot;
        bool added;
        if (chm_bmap_put(&t->words, buf, bn, &slot, &added)) return nomem(L);
        t->words.val[slot] = id;
    }
    return CHM_OK;
}

static chm_status parse_model(loader *L) {
    json_t *model = json_object_get(L->root, "model");
    if (!json_is_object(model))
        return fail(L, CHM_ERR_PARSE, "no \"model\" object: this is not a tokenizer.json");
    const char *type = type_of(model);
    if (*type && strcmp(type, "BPE") != 0)
        return fail(L, CHM_ERR_UNSUPPORTED, "model.type is \"%s\": chimera reads only BPE models",
                    type);
    chm_status rc;
    if ((rc = parse_vocab(L, model)) || (rc = parse_model_options(L, model)) ||
        (rc = parse_merges(L, model)))
        return rc;
    return model_tables(L);
}

/* ---- added tokens ------------------------------------------------------------------- */

/* The id HF gives an added token on load: the vocab's, else one past the largest so far. */
static int32_t hf_added_id(loader *L, const char *s, size_t n, int32_t max_added) {
    int32_t v = vocab_id(L, s, n);
    if (v >= 0) return v;
    if (max_added < 0) return L->n_vocab;
    return max_added >= L->n_vocab || L->n_vocab == 0 ? max_added + 1 : L->n_vocab;
}

static chm_status added_flags(loader *L, json_t *o, size_t i, chm_added *a) {
    char where[64];
    snprintf(where, sizeof where, "added_tokens[%zu]", i);
    int sp = get_bool(L, o, "special", 0, where), sw = get_bool(L, o, "single_word", 0, where);
    int ls = get_bool(L, o, "lstrip", 0, where), rs = get_bool(L, o, "rstrip", 0, where);
    int nz = get_bool(L, o, "normalized", sp < 0 ? 0 : !sp, where);
    if (sp < 0 || sw < 0 || ls < 0 || rs < 0 || nz < 0)
        return L->err ? L->err->code : CHM_ERR_PARSE;
    a->special = sp, a->single_word = sw, a->lstrip = ls, a->rstrip = rs, a->normalized = nz;
    return CHM_OK;
}

/* The text an added token is matched as: NFC(content) when it is normalized under NFC. */
static chm_status added_pattern(loader *L, chm_added *a) {
    if (a->normalized && L->t->nfc) {
        if (chm_nfc((const uint8_t *)a->content, a->len, &a->pattern, &a->plen)) return nomem(L);
        return CHM_OK;
    }
    a->pattern = malloc(a->len + 1);
    if (!a->pattern) return nomem(L);
    memcpy(a->pattern, a->content, a->len + 1);
    a->plen = a->len;
    return CHM_OK;
}

static chm_status added_one(loader *L, json_t *o, size_t i, int32_t *max_added) {
    chm_tokenizer *t = L->t;
    json_t *c = json_object_get(o, "content"), *iv = json_object_get(o, "id");
    if (!json_is_object(o) || !json_is_string(c) || !json_string_length(c) || !json_is_integer(iv))
        return fail(L, CHM_ERR_PARSE,
                    "added_tokens[%zu] needs a non-empty \"content\" string and an "
                    "integer \"id\"",
                    i);
    const char *s = json_string_value(c);
    size_t n = json_string_length(c);
    json_int_t id = json_integer_value(iv);
    for (int32_t j = 0; j < t->n_added; j++)
        if (t->added[j].len == n && memcmp(t->added[j].content, s, n) == 0)
            return fail(L, CHM_ERR_PARSE, "added token \"%.60s\" is listed twice", s);
    int32_t want = hf_added_id(L, s, n, *max_added);
    if (id != want)
        return fail(L, CHM_ERR_PARSE,
                    "added_tokens[%zu] (\"%.60s\") has id %lld but Hugging Face "
                    "tokenizers would give it id %d (%s); fix the id in the file",
                    i, s, (long long)id, (int)want,
                    vocab_id(L, s, n) >= 0
                        ? "the vocab's id for that text"
                        : "the next id after the vocab and earlier added tokens");
    if (vocab_id(L, s, n) < 0 && id <= L->max_vocab_id && L->tok_str[id])
        return fail(L, CHM_ERR_PARSE,
                    "added token \"%.60s\" gets id %lld, which the vocab already "
                    "gives to \"%.60s\"",
                    s, (long long)id, L->tok_str[id]);
    chm_added *a = &t->added[t->n_added];
    chm_status rc = added_flags(L, o, i, a);
    if (rc) return rc;
    a->id = (int32_t)id, a->len = n;
    if (!(a->content = malloc(n + 1))) return nomem(L);
    memcpy(a->content, s, n + 1);
    t->n_added++;
    if (id > *max_added) *max_added = (int32_t)id;
    return added_pattern(L, a);
}

static chm_status parse_added(loader *L) {
    json_t *arr = json_object_get(L->root, "added_tokens");
    int32_t max_added = -1;
    if (arr && !json_is_null(arr)) {
        if (!json_is_array(arr)) return fail(L, CHM_ERR_PARSE, "added_tokens is not a list");
        L->t->added = calloc(json_array_size(arr) + 1, sizeof *L->t->added);
        if (!L->t->added) return nomem(L);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            chm_status rc = added_one(L, json_array_get(arr, i), i, &max_added);
            if (rc) return rc;
        }
    }
    int32_t top = L->max_vocab_id > max_added ? L->max_vocab_id : max_added;
    if (top < 0) return fail(L, CHM_ERR_PARSE, "the vocabulary is empty");
    L->t->n_ids = top + 1;
    return CHM_OK;
}

/* Tries in HF's order: special tokens first, then the others, each in file order. */
static chm_status build_tries(loader *L) {
    chm_tokenizer *t = L->t;
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = 0; i < t->n_added; i++) {
            chm_added *a = &t->added[i];
            if (a->special != (pass == 0)) continue;
            chm_trie *tr = a->normalized ? &t->trie_norm : &t->trie_raw;
            if (chm_trie_add(tr, a->pattern, a->plen, i)) return nomem(L);
        }
    return CHM_OK;
}

/* ---- normalizer, pre-tokenizer, post-processor, decoder ------------------------------ */

static chm_status parse_normalizer(loader *L) {
    json_t *n = json_object_get(L->root, "normalizer");
    if (!n || json_is_null(n)) return CHM_OK;
    const char *type = type_of(n);
    bool ok = strcmp(type, "NFC") == 0;
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(n, "normalizers");
        ok = json_is_array(list);
        for (size_t i = 0; ok && i < json_array_size(list); i++)
            ok = strcmp(type_of(json_array_get(list, i)), "NFC") == 0;
        if (ok && json_array_size(list) == 0) return CHM_OK;
    }
    if (!ok)
        return fail(L, CHM_ERR_UNSUPPORTED,
                    "normalizer \"%s\" is not supported: chimera implements "
                    "NFC, a Sequence of NFC, or null",
                    *type ? type : "(no type)");
    L->t->nfc = true;
    if (chm_nfc_table_build(&L->t->nfc_unsafe)) return nomem(L);
    return CHM_OK;
}

static chm_status parse_bytelevel(loader *L, json_t *p, const char *where) {
    int aps = get_bool(L, p, "add_prefix_space", 1, where);
    int ure = get_bool(L, p, "use_regex", 1, where);
    if (aps < 0 || ure < 0) return L->err ? L->err->code : CHM_ERR_PARSE;
    L->t->add_prefix_space = aps;
    if (!ure) return CHM_OK;
    char why[320];
    if (chm_regex_compile(chm_gpt2_pattern, strlen(chm_gpt2_pattern), false, &L->t->bl_re,
                          &L->t->bl_jit, why, sizeof why))
        return fail(L, CHM_ERR_INTERNAL, "cannot compile the GPT-2 regex: %s", why);
    return CHM_OK;
}

static chm_status split_behavior(const char *s, chm_split_behavior *b) {
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, names[i]) == 0) return *b = (chm_split_behavior)i, CHM_OK;
    return CHM_ERR_PARSE;
}

static chm_status parse_split(loader *L, json_t *p, size_t i) {
    chm_pretok_step *st = &L->t->steps[L->t->n_steps];
    json_t *pat = json_object_get(p, "pattern");
    json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
    json_t *src = json_is_string(re) ? re : lit;
    if (!json_is_string(src))
        return fail(L, CHM_ERR_PARSE,
                    "pre_tokenizer step %zu (Split) needs pattern {\"Regex\": ...} "
                    "or {\"String\": ...}",
                    i);
    if (split_behavior(json_string_value(json_object_get(p, "behavior")), &st->behavior))
        return fail(L, CHM_ERR_PARSE,
                    "pre_tokenizer step %zu (Split) has an unknown behavior: use "
                    "Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous",
                    i);
    int inv = get_bool(L, p, "invert", 0, "pre_tokenizer Split");
    if (inv < 0) return L->err ? L->err->code : CHM_ERR_PARSE;
    st->invert = inv;
    char why[320];
    if (chm_regex_compile(json_string_value(src), json_string_length(src), src == lit, &st->re,
                          &st->jit, why, sizeof why))
        return fail(L, CHM_ERR_PARSE, "pre_tokenizer step %zu: bad Split pattern: %s", i, why);
    L->t->n_steps++;
    return CHM_OK;
}

static chm_status parse_pretok(loader *L) {
    static const char *need =
        "chimera needs ByteLevel, alone or last in a Sequence after Split steps "
        "(as GPT-2, GPT-NeoX and newer byte-level BPEs use)";
    json_t *p = json_object_get(L->root, "pre_tokenizer");
    const char *type = p ? type_of(p) : "";
    if (strcmp(type, "ByteLevel") == 0) return parse_bytelevel(L, p, "pre_tokenizer");
    if (strcmp(type, "Sequence") != 0)
        return fail(L, CHM_ERR_UNSUPPORTED, "pre_tokenizer \"%s\" is not supported: %s",
                    *type ? type : "(none)", need);
    json_t *list = json_object_get(p, "pretokenizers");
    size_t n = json_array_size(list);
    if (n == 0 || n - 1 > CHM_TOK_MAX_STEPS)
        return fail(L, CHM_ERR_UNSUPPORTED,
                    "pre_tokenizer Sequence has %zu steps: %s (at most %d "
                    "Split steps)",
                    n, need, CHM_TOK_MAX_STEPS);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(list, i);
        const char *st = type_of(s);
        bool last = i + 1 == n;
        chm_status rc = CHM_OK;
        if (last && strcmp(st, "ByteLevel") == 0)
            rc = parse_bytelevel(L, s, "pre_tokenizer ByteLevel");
        else if (!last && strcmp(st, "Split") == 0)
            rc = parse_split(L, s, i);
        else
            rc = fail(L, CHM_ERR_UNSUPPORTED, "pre_tokenizer step %zu is \"%s\": %s", i,
                      *st ? st : "(no type)", need);
        if (rc) return rc;
    }
    return CHM_OK;
}

static chm_status parse_post_and_decoder(loader *L) {
    json_t *pp = json_object_get(L->root, "post_processor");
    if (pp && !json_is_null(pp) && strcmp(type_of(pp), "ByteLevel") != 0)
        return fail(L, CHM_ERR_UNSUPPORTED,
                    "post_processor \"%s\" is not supported (it would add "
                    "tokens to every encoding); chimera supports ByteLevel or null",
                    type_of(pp));
    json_t *d = json_object_get(L->root, "decoder");
    if (!d || strcmp(type_of(d), "ByteLevel") != 0)
        return fail(L, CHM_ERR_UNSUPPORTED,
                    "decoder \"%s\" is not supported: chimera needs the "
                    "ByteLevel decoder",
                    d ? type_of(d) : "(none)");
    return CHM_OK;
}

static chm_status parse_top(loader *L) {
    if (!json_is_object(L->root))
        return fail(L, CHM_ERR_PARSE, "the top level is not a JSON object");
    json_t *v = json_object_get(L->root, "version");
    if (v && (!json_is_string(v) || strcmp(json_string_value(v), "1.0") != 0))
        return fail(L, CHM_ERR_UNSUPPORTED, "unknown tokenizer.json version (expected \"1.0\")");
    const char *keys[2] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        json_t *x = json_object_get(L->root, keys[i]);
        if (x && !json_is_null(x))
            return fail(L, CHM_ERR_UNSUPPORTED,
                        "\"%s\" is set: chimera encodes whole documents; set "
                        "it to null",
                        keys[i]);
    }
    return CHM_OK;
}

/* ---- tables built after parsing ----------------------------------------------------- */

static chm_status build_decode(loader *L) {
    chm_tokenizer *t = L->t;
    L->added_of_id = malloc((size_t)t->n_ids * sizeof *L->added_of_id);
    t->dec_off = malloc(((size_t)t->n_ids + 1) * sizeof *t->dec_off);
    t->dec_has = calloc((size_t)t->n_ids, 1);
    if (!L->added_of_id || !t->dec_off || !t->dec_has) return nomem(L);
    for (int32_t i = 0; i < t->n_ids; i++) L->added_of_id[i] = -1;
    for (int32_t i = 0; i < t->n_added; i++) L->added_of_id[t->added[i].id] = i;
    size_t total = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (L->added_of_id[id] >= 0)
            total += t->added[L->added_of_id[id]].len;
        else if (id <= L->max_vocab_id && L->tok_str[id])
            total += strlen(L->tok_str[id]);
    }
    if (total > UINT32_MAX)
        return fail(L, CHM_ERR_UNSUPPORTED, "the tokens hold more than 4 GiB of text");
    if (!(t->dec_bytes = malloc(total + 1))) return nomem(L);
    uint32_t off = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        t->dec_off[id] = off;
        size_t k = 0;
        if (L->added_of_id[id] >= 0) { /* added tokens decode to their content */
            const chm_added *a = &t->added[L->added_of_id[id]];
            memcpy(t->dec_bytes + off, a->content, k = a->len);
            t->dec_has[id] = 1;
        } else if (id <= L->max_vocab_id && L->tok_str[id]) {
            token_bytes(L->tok_str[id], strlen(L->tok_str[id]), t->dec_bytes + off, &k);
            t->dec_has[id] = 1;
        }
        off += (uint32_t)k;
    }
    t->dec_off[t->n_ids] = off;
    return CHM_OK;
}

static void find_eos(loader *L) {
    static const char *names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"};
    chm_tokenizer *t = L->t;
    t->eos = -1;
    for (size_t k = 0; k < sizeof names / sizeof *names && t->eos < 0; k++) {
        for (int32_t i = 0; i < t->n_added && t->eos < 0; i++)
            if (strcmp(t->added[i].content, names[k]) == 0) t->eos = t->added[i].id;
        if (t->eos < 0) t->eos = vocab_id(L, names[k], strlen(names[k]));
    }
}

static chm_status open_json(loader *L) {
    json_error_t je;
    L->root = json_load_file(L->path, JSON_REJECT_DUPLICATES, &je);
    if (L->root) return CHM_OK;
    if (json_error_code(&je) == json_error_cannot_open_file)
        return fail(L, CHM_ERR_IO, "cannot read the file (%s); check the --tokenizer path",
                    je.text);
    return fail(L, CHM_ERR_PARSE, "not valid JSON at line %d, column %d: %s", je.line, je.column,
                je.text);
}

chm_status chm_bpe_load(const char *path, chm_tokenizer **out, chm_err *err) {
    loader L = {.path = path, .err = err};
    chm_status rc = open_json(&L);
    if (rc) return rc;
    chm_tokenizer *t = L.t = calloc(1, sizeof *t);
    if (!t) rc = nomem(&L);
    if (!rc) {
        t->kind = CHM_TOK_BPE;
        t->serial = chm_tokenizer_next_serial();
        rc = parse_top(&L);
    }
    if (!rc) rc = parse_normalizer(&L);
    if (!rc) rc = parse_model(&L);
    if (!rc) rc = parse_added(&L);
    if (!rc) rc = parse_pretok(&L);
    if (!rc) rc = parse_post_and_decoder(&L);
    if (!rc) rc = build_tries(&L);
    if (!rc) rc = build_decode(&L);
    if (!rc) {
        find_eos(&L);
        const char *base = strrchr(path, '/');
        snprintf(t->describe, sizeof t->describe, "byte-level BPE, %d ids, from %s", (int)t->n_ids,
                 base ? base + 1 : path);
        *out = t;
    } else {
        chm_tokenizer_free(t);
    }
    free(L.tok_str);
    free(L.added_of_id);
    json_decref(L.root);
    return rc;
}

void chm_bpe_free(chm_tokenizer *t) {
    free(t->dec_off), free(t->dec_bytes), free(t->dec_has);
    chm_merges_free(&t->merges);
    chm_bmap_free(&t->words);
    free(t->nfc_unsafe);
    for (int32_t i = 0; i < t->n_added; i++) free(t->added[i].content), free(t->added[i].pattern);
    free(t->added);
    chm_trie_free(&t->trie_raw), chm_trie_free(&t->trie_norm);
    for (int i = 0; i < t->n_steps; i++) pcre2_code_free(t->steps[i].re);
    pcre2_code_free(t->bl_re);
}

chm_status chm_bpe_decode(const chm_tokenizer *t, const int32_t *ids, size_t n, char **text_out,
                          size_t *len_out, chm_err *err) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->dec_has[ids[i]])
            return CHM_ERR(err, CHM_ERR_INVALID_ARG,
                           "id %d at position %zu is not a token of this "
                           "tokenizer (%s)",
                           (int)ids[i], i, t->describe);
        total += t->dec_off[ids[i] + 1] - t->dec_off[ids[i]];
    }
    char *s = malloc(total + 1);
    if (!s) return CHM_ERR(err, CHM_ERR_NOMEM, "out of memory while decoding");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = t->dec_off[ids[i]], b = t->dec_off[ids[i] + 1];
        memcpy(s + k, t->dec_bytes + a, b - a);
        k += b - a;
    }
    s[k] = '\0';
    *text_out = s;
    *len_out = k;
    return CHM_OK;
}
