/*
 * suggest.c: "did you mean ...?" for unknown config keys: the optimal string
 * alignment distance (Levenshtein plus adjacent transpositions, so that
 * d_modle -> d_model costs 1) and the pick of the closest known key.
 */
#include "config_internal.h"

#include <ctype.h>
#include <string.h>

#define MAX_KEY 64

/* Letters compare without case: D_MODEL is a typo of d_model too. */
static bool same(char x, char y) {
    return tolower((unsigned char)x) == tolower((unsigned char)y);
}

static int min3(int a, int b, int c) {
    int m = a < b ? a : b;
    return m < c ? m : c;
}

int chm_cfg_edit_distance(const char *a, const char *b) {
    int n = (int)strlen(a), m = (int)strlen(b);
    if (n > MAX_KEY || m > MAX_KEY) return MAX_KEY + 1;
    /* d[i][j]: distance between the first i letters of a and the first j of b. */
    int d[MAX_KEY + 1][MAX_KEY + 1];
    for (int i = 0; i <= n; i++) d[i][0] = i;
    for (int j = 0; j <= m; j++) d[0][j] = j;
    for (int i = 1; i <= n; i++) {
        for (int j = 1; j <= m; j++) {
            int cost = !same(a[i - 1], b[j - 1]);
            d[i][j] = min3(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
            if (i > 1 && j > 1 && same(a[i - 1], b[j - 2]) && same(a[i - 2], b[j - 1]) &&
                d[i - 2][j - 2] + 1 < d[i][j])
                d[i][j] = d[i - 2][j - 2] + 1;
        }
    }
    return d[n][m];
}

const char *chm_cfg_suggest(const char *word, const char *const *cands, int n) {
    /* Allow about one typo per three letters: short keys must be nearly right. */
    int len = (int)strlen(word);
    int limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;
    const char *best = NULL;
    int best_d = limit + 1;
    for (int i = 0; i < n; i++) {
        int d = chm_cfg_edit_distance(word, cands[i]);
        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    return best;
}
