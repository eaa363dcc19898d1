/*
 * tokenizer_text.c: UTF-8 checking and repair, and NFC normalisation for the tokenizer.
 *
 * Repair replaces each maximal subpart of an ill-formed sequence by U+FFFD (Unicode's
 * "best practice", which is what Python's bytes.decode("utf-8", errors="replace") does),
 * so our ids match Hugging Face tokenizers run on the Python-decoded string.
 *
 * NFC is utf8proc's. Most text is already NFC, so a quick check runs first: a bitmap marks
 * every code point that could change or combine under NFC (combining class != 0, a
 * canonical decomposition that does not recompose to itself, any non-first character of a
 * canonical decomposition, and characters whose decomposition starts with a marked one).
 * A string with no marked code point is NFC, because then no composition, reordering or
 * decomposition can happen across or inside its characters.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "data/tokenizer_internal.h"

/* Length of the well-formed sequence at s[0..n) (Unicode table 3-7), or 0 with *bad set to
 * the length of its maximal ill-formed subpart (>= 1). */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t *bad) {
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED)
        need = 2, hi = 0x9F;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

size_t chm_utf8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0, bad;
    while (i < n) {
        if (i + 8 <= n) { /* ASCII fast path: 8 bytes without a high bit */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        size_t k = utf8_seq(s + i, n - i, &bad);
        if (!k) return i;
        i += k;
    }
    return n;
}

chm_status chm_utf8_repair(const uint8_t *s, size_t n, char **out, size_t *out_n) {
    /* each bad byte becomes at most 3 bytes (U+FFFD) */
    if (n > (SIZE_MAX - 1) / 3) return CHM_ERR_NOMEM;
    uint8_t *d = malloc(3 * n + 1);
    if (!d) return CHM_ERR_NOMEM;
    size_t i = 0, j = 0, bad;
    while (i < n) {
        size_t k = utf8_seq(s + i, n - i, &bad);
        if (k) {
            memcpy(d + j, s + i, k);
            i += k, j += k;
        } else {
            d[j++] = 0xEF, d[j++] = 0xBF, d[j++] = 0xBD;
            i += bad;
        }
    }
    d[j] = 0;
    *out = (char *)d;
    *out_n = j;
    return CHM_OK;
}

uint32_t chm_utf8_decode(const uint8_t *s, size_t *k) {
    uint8_t c = s[0];
    if (c < 0x80) return *k = 1, c;
    if (c < 0xE0) return *k = 2, (uint32_t)(c & 0x1F) << 6 | (s[1] & 0x3F);
    if (c < 0xF0)
        return *k = 3, (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    *k = 4;
    return (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
           (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
}

size_t chm_utf8_encode(uint32_t cp, uint8_t *o) {
    if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
    if (cp < 0x800)
        return o[0] = (uint8_t)(0xC0 | cp >> 6), o[1] = (uint8_t)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12), o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | cp >> 18), o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)), o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

#define NFC_CODEPOINTS 0x110000u

static void mark(uint8_t *b, uint32_t cp) { b[cp >> 3] |= (uint8_t)(1u << (cp & 7)); }
static bool marked(const uint8_t *b, uint32_t cp) { return b[cp >> 3] >> (cp & 7) & 1; }

/* Canonical full decomposition of cp into d[0..8); returns its length (1 with d[0] == cp
 * when cp does not decompose). */
static int canon_decompose(uint32_t cp, utf8proc_int32_t d[8]) {
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
    bool hangul = cp >= 0xAC00 && cp <= 0xD7A3;
    if (p->decomp_seqindex == UINT16_MAX && !hangul) return d[0] = (utf8proc_int32_t)cp, 1;
    int last = 0;
    utf8proc_ssize_t k =
        utf8proc_decompose_char((utf8proc_int32_t)cp, d, 8, UTF8PROC_DECOMPOSE, &last);
    return k >= 1 && k <= 8 ? (int)k : (d[0] = (utf8proc_int32_t)cp, 1);
}

/* true when NFC of the single character cp is cp itself. */
static bool nfc_stable(uint32_t cp) {
    uint8_t s[4];
    size_t k = chm_utf8_encode(cp, s);
    utf8proc_uint8_t *d = NULL;
    utf8proc_ssize_t m =
        utf8proc_map(s, (utf8proc_ssize_t)k, &d, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    bool same = m == (utf8proc_ssize_t)k && memcmp(d, s, k) == 0;
    free(d);
    return same;
}

chm_status chm_nfc_table_build(uint8_t **bitmap) {
    uint8_t *b = calloc(NFC_CODEPOINTS / 8, 1);
    if (!b) return CHM_ERR_NOMEM;
    for (uint32_t cp = 0; cp < NFC_CODEPOINTS; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        if (utf8proc_get_property((utf8proc_int32_t)cp)->combining_class) mark(b, cp);
        utf8proc_int32_t d[8];
        int k = canon_decompose(cp, d);
        if (k == 1 && (uint32_t)d[0] == cp) continue;
        for (int i = 1; i < k; i++) mark(b, (uint32_t)d[i]);
        if (k == 1 || !nfc_stable(cp)) mark(b, cp);
    }
    /* second pass: a decomposition starting with a marked character may interact */
    for (uint32_t cp = 0x80; cp < NFC_CODEPOINTS; cp++) {
        if ((cp >= 0xD800 && cp <= 0xDFFF) || marked(b, cp)) continue;
        utf8proc_int32_t d[8];
        if (canon_decompose(cp, d) > 1 && marked(b, (uint32_t)d[0])) mark(b, cp);
    }
    *bitmap = b;
    return CHM_OK;
}

bool chm_nfc_quick(const uint8_t *bitmap, const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp = chm_utf8_decode(s + i, &k);
        if (marked(bitmap, cp)) return false;
        i += k;
    }
    return true;
}

chm_status chm_nfc(const uint8_t *s, size_t n, char **out, size_t *out_n) {
    utf8proc_uint8_t *d = NULL;
    utf8proc_ssize_t m =
        utf8proc_map(s, (utf8proc_ssize_t)n, &d, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (m < 0) {
        free(d);
        return m == UTF8PROC_ERROR_NOMEM ? CHM_ERR_NOMEM : CHM_ERR_INVALID_ARG;
    }
    *out = (char *)d;
    *out_n = (size_t)m;
    return CHM_OK;
}

/* GPT-2's table: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order, so every byte becomes a visible character. */
void chm_bytelevel_tables(uint32_t byte_to_cp[256]) {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; b++) {
        bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_to_cp[b] = keep ? b : next++;
    }
}

int chm_bytelevel_byte(uint32_t cp) {
    static const uint8_t shifted[68] = {
        0,   1,   2,   3,   4,   5,   6,   7,   8,   9,   10,  11,  12,  13,  14,  15,  16,
        17,  18,  19,  20,  21,  22,  23,  24,  25,  26,  27,  28,  29,  30,  31,  32,  127,
        128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144,
        145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 173};
    if ((cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp >= 256 && cp < 256 + 68) return shifted[cp - 256];
    return -1;
}
