/*
 * corpus_grammar.c: the stochastic grammar of the embedded default corpus.
 *
 * Five genres (stories, town reports, recipes, dialogues, arithmetic facts) built
 * from templates with word slots. The design keeps every document's derivation
 * recoverable from its text: the word lists of all slots are pairwise disjoint,
 * punctuation and separators are fixed per template, and templates start with
 * distinct words where they compete. Word lists use Zipf weights (1/rank), so
 * the text looks like language; digit and arithmetic slots are uniform.
 * The arithmetic facts carry deterministic answers: a model that learns to add
 * and multiply pays nothing for them, which the floor accounts for exactly.
 */
#include "data/corpus.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Weighting of a rule's alternatives. */
enum { ZIPF = 0, UNIFORM = 1, EXPLICIT = 2 };

typedef struct rule_def {
    const char *name;
    int weighting;
    const char *const *alts; /* NULL-terminated */
    const double *w;         /* EXPLICIT: one weight per alternative */
} rule_def;

#define L(...) (const char *const[]){__VA_ARGS__, NULL}
#define W(...) (const double[]){__VA_ARGS__}

/* Filled at init: "a plus b is c." and "a times b is c." */
static const char *sum_alts[101], *product_alts[122];

static const rule_def defs[] = {
    {"DOC", EXPLICIT, L("{STORY}", "{REPORT}", "{HOWTO}", "{DIALOGUE}", "{FACTS}"),
     W(4, 2, 2, 2, 1)},

    /* stories */
    {"STORY", UNIFORM, L("{STORY_TITLE}\n\n{S_PARAS}"), NULL},
    {"STORY_TITLE", EXPLICIT, L("The {ADJ} {NOUN_SG}", "A Tale of {NAME}", "{NAME} and the {NOUN_SG}"),
     W(2, 1, 1)},
    {"S_PARAS", EXPLICIT, L("{S_PARA}", "{S_PARA}\n\n{S_PARAS}"), W(0.4, 0.6)},
    {"S_PARA", EXPLICIT, L("{S_SENT}", "{S_SENT} {S_PARA}"), W(0.25, 0.75)},
    {"S_SENT", EXPLICIT,
     L("{SUBJ} {VERB_PAST} {OBJ}.", "{SUBJ} {VERB_PAST} {OBJ} {PLACE}.", "{TIME}, {SUBJ_L} {VERB_INTR}.",
       "{SUBJ} was {ADJ}.", "{SUBJ} said that {SUBJ_L} {VERB_PAST} {OBJ}."),
     W(4, 2, 2, 1, 1)},
    {"SUBJ", EXPLICIT,
     L("{NAME}", "The {NOUN_SG}", "The {ADJ} {NOUN_SG}", "Her {NOUN_SG}", "His {NOUN_SG}"),
     W(3, 3, 2, 1, 1)},
    {"SUBJ_L", EXPLICIT,
     L("{NAME}", "the {NOUN_SG}", "the {ADJ} {NOUN_SG}", "her {NOUN_SG}", "his {NOUN_SG}"),
     W(3, 3, 2, 1, 1)},
    {"OBJ", EXPLICIT,
     L("the {NOUN_SG}", "the {ADJ} {NOUN_SG}", "{NUM_WORD} {NOUN_PL}", "{NUM_WORD} {ADJ} {NOUN_PL}",
       "{NAME}"),
     W(4, 3, 2, 1, 2)},
    {"PLACE", ZIPF, L("near the {NOUN_SG}", "in the {NOUN_SG}", "behind the {NOUN_SG}", "under the {NOUN_SG}",
                      "across the {NOUN_SG}"), NULL},
    {"TIME", ZIPF, L("In the morning", "At noon", "Later that day", "By evening", "At night", "Soon after",
                     "Long ago", "On {WEEKDAY}"), NULL},

    /* town reports */
    {"REPORT", UNIFORM, L("{R_TITLE}\n\n{R_PARAS}"), NULL},
    {"R_TITLE", UNIFORM, L("{CITY} Report", "News from {CITY}"), NULL},
    {"R_PARAS", EXPLICIT, L("{R_PARA}", "{R_PARA}\n\n{R_PARAS}"), W(0.5, 0.5)},
    {"R_PARA", EXPLICIT, L("{R_SENT}", "{R_SENT} {R_PARA}"), W(0.3, 0.7)},
    {"R_SENT", EXPLICIT,
     L("In {CITY}, {NUMBER} {NOUN_PL} were {VERB_PASSIVE} on {WEEKDAY}.",
       "Officials in {CITY} expect {NUMBER} more {NOUN_PL} by {MONTH}.",
       "The price of {NOUN_PL} {RISEFALL} by {NUMBER} percent.",
       "Residents of {CITY} {VERB_OPINION} the {ADJ} {NOUN_SG}."),
     W(3, 2, 2, 2)},
    {"NUMBER", EXPLICIT, L("{D1}", "{D1}{D}", "{D1}{D}{D}", "{D1},{D}{D}{D}"), W(0.3, 0.4, 0.2, 0.1)},
    {"D1", UNIFORM, L("1", "2", "3", "4", "5", "6", "7", "8", "9"), NULL},
    {"D", UNIFORM, L("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"), NULL},

    /* recipes */
    {"HOWTO", UNIFORM, L("How to {VERB_IMP} the {FOOD}\n\nFirst, {H_ACT}.\n{H_MORE}"), NULL},
    {"H_MORE", EXPLICIT, L("Then, {H_ACT}.\n{H_MORE}", "Finally, {H_ACT}."), W(0.65, 0.35)},
    {"H_ACT", EXPLICIT,
     L("{VERB_IMP} the {FOOD} {MANNER}", "add {NUM_WORD} cups of {FOOD}", "wait for {NUMBER} minutes",
       "{VERB_IMP} the {FOOD} for {NUMBER} minutes"),
     W(3, 2, 1, 2)},

    /* dialogues */
    {"DIALOGUE", UNIFORM, L("{D_TITLE}\n\n{D_LINES}"), NULL},
    {"D_TITLE", UNIFORM, L("A Conversation", "Voices"), NULL},
    {"D_LINES", EXPLICIT, L("{D_LINE}", "{D_LINE}\n{D_LINES}"), W(0.25, 0.75)},
    {"D_LINE", EXPLICIT,
     L("\"{UTTER},\" said {NAME}.", "{NAME} asked, \"{QUESTION}?\"", "\"{UTTER}!\" shouted {NAME}."),
     W(3, 2, 1)},
    {"UTTER", EXPLICIT,
     L("{GREETING}", "I {VERB_PRES} the {NOUN_SG}", "We need {NUM_WORD} {NOUN_PL}", "The {NOUN_SG} is {ADJ}"),
     W(2, 2, 1, 2)},
    {"QUESTION", EXPLICIT,
     L("Where is the {NOUN_SG}", "Have you seen {NAME}", "How many {NOUN_PL} are there",
       "Is the {NOUN_SG} {ADJ}"),
     W(2, 2, 1, 1)},

    /* arithmetic */
    {"FACTS", UNIFORM, L("{F_TITLE}\n\n{F_LINES}"), NULL},
    {"F_TITLE", UNIFORM, L("Arithmetic", "Sums and Products"), NULL},
    {"F_LINES", EXPLICIT, L("{FACT}", "{FACT}\n{F_LINES}"), W(0.15, 0.85)},
    {"FACT", UNIFORM, L("{SUM}", "{PRODUCT}"), NULL},
    {"SUM", UNIFORM, sum_alts, NULL},
    {"PRODUCT", UNIFORM, product_alts, NULL},

    /* word lists (pairwise disjoint) */
    {"NAME", ZIPF, L("Alice", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas",
                     "Keiko", "Luca", "Mira", "Nadia", "Oscar", "Priya", "Quinn", "Rosa", "Samir", "Tomas",
                     "Uma", "Victor", "Wen", "Yara", "Zane"), NULL},
    {"NOUN_SG", ZIPF, L("cat", "dog", "fox", "owl", "horse", "rabbit", "farmer", "baker", "sailor", "doctor",
                        "teacher", "child", "king", "queen", "robot", "wizard", "lantern", "river", "bridge",
                        "garden", "castle", "forest", "mountain", "village", "island", "letter", "book",
                        "map", "key", "coin", "clock", "ship", "cart", "bell", "mirror", "stone", "tower",
                        "window", "basket", "violin"), NULL},
    {"NOUN_PL", ZIPF, L("cats", "dogs", "foxes", "owls", "horses", "rabbits", "farmers", "bakers", "sailors",
                        "doctors", "teachers", "children", "kings", "queens", "robots", "wizards", "lanterns",
                        "rivers", "bridges", "gardens", "castles", "forests", "mountains", "villages",
                        "islands", "letters", "books", "maps", "keys", "coins", "clocks", "ships", "carts",
                        "bells", "mirrors", "stones", "towers", "windows", "baskets", "violins"), NULL},
    {"ADJ", ZIPF, L("old", "young", "quiet", "brave", "small", "large", "red", "green", "golden", "silver",
                    "clever", "tired", "hungry", "happy", "strange", "ancient", "bright", "dark", "gentle",
                    "wild", "busy", "lonely", "proud", "curious", "wooden"), NULL},
    {"VERB_PAST", ZIPF, L("found", "lost", "saw", "followed", "painted", "carried", "opened", "closed",
                          "built", "repaired", "visited", "watched", "counted", "cleaned", "hid", "sold",
                          "bought", "borrowed", "discovered", "greeted"), NULL},
    {"VERB_INTR", ZIPF, L("slept", "laughed", "waited", "sang", "wandered", "rested", "danced", "whispered",
                          "listened", "vanished"), NULL},
    {"VERB_PASSIVE", ZIPF, L("reported", "recorded", "rescued", "registered", "delivered", "inspected"),
     NULL},
    {"VERB_OPINION", ZIPF, L("praised", "criticized", "welcomed", "questioned", "ignored"), NULL},
    {"VERB_PRES", ZIPF, L("like", "remember", "trust", "fear", "miss", "want"), NULL},
    {"VERB_IMP", ZIPF, L("chop", "stir", "boil", "bake", "slice", "mix", "roast", "grill", "peel", "wash",
                         "fry", "simmer"), NULL},
    {"RISEFALL", UNIFORM, L("rose", "fell", "climbed", "dropped"), NULL},
    {"MANNER", ZIPF, L("slowly", "gently", "carefully", "quickly", "twice", "thoroughly"), NULL},
    {"FOOD", ZIPF, L("rice", "beans", "carrots", "onions", "potatoes", "flour", "butter", "garlic", "pepper",
                     "apples", "lentils", "mushrooms", "tomatoes", "cheese", "noodles"), NULL},
    {"NUM_WORD", ZIPF, L("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                         "twelve"), NULL},
    {"CITY", ZIPF, L("Ashford", "Brightwater", "Coldharbor", "Dunmore", "Eastwick", "Fairhaven", "Glenrock",
                     "Highmoor", "Ironbridge", "Kingsport", "Lakeview", "Millbrook"), NULL},
    {"WEEKDAY", UNIFORM, L("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
     NULL},
    {"MONTH", UNIFORM, L("January", "February", "March", "April", "May", "June", "July", "August",
                         "September", "October", "November", "December"), NULL},
    {"GREETING", ZIPF, L("Hello", "Good morning", "Welcome back", "Goodbye", "Thank you", "Hurry up"), NULL},
};
#define N_RULES ((int)(sizeof defs / sizeof defs[0]))

static chm_grammar_rule pub[N_RULES];
static chm_corpus_rule compiled[N_RULES];
static int compiled_ok;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The generated arithmetic facts: sums with number words, products with digits. */
static int make_facts(void) {
    static const char *words[] = {"zero", "one", "two", "three", "four", "five", "six",
                                  "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen",
                                  "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"};
    static char pool[16384];
    size_t used = 0;
    for (int k = 0; k < 221; k++) {
        int sum = k < 100;
        int a = sum ? k / 10 : 2 + (k - 100) / 11, b = sum ? k % 10 : 2 + (k - 100) % 11;
        int n = sum ? snprintf(pool + used, sizeof pool - used, "%s plus %s is %s.", words[a],
                               words[b], words[a + b])
                    : snprintf(pool + used, sizeof pool - used, "%d times %d is %d.", a, b, a * b);
        if (n < 0 || (size_t)n >= sizeof pool - used) return 0;
        if (sum) sum_alts[k] = pool + used;
        else product_alts[k - 100] = pool + used;
        used += (size_t)n + 1;
    }
    sum_alts[100] = NULL;
    product_alts[121] = NULL;
    return 1;
}

static int find_rule(const char *name, size_t len) {
    for (int i = 0; i < N_RULES; i++)
        if (strlen(defs[i].name) == len && memcmp(defs[i].name, name, len) == 0) return i;
    return -1;
}

/* Split one alternative into literal and {NAME} pieces; 0 on an unknown name. */
static int compile_alt(const char *s, chm_corpus_alt *out) {
    int cap = 1;
    for (const char *q = s; *q; q++) cap += *q == '{' ? 2 : 0;
    chm_corpus_piece *pc = calloc((size_t)cap, sizeof *pc);
    if (!pc) return 0;
    int n = 0;
    while (*s) {
        const char *open = strchr(s, '{');
        if (open != s) {
            size_t len = open ? (size_t)(open - s) : strlen(s);
            pc[n++] = (chm_corpus_piece){-1, s, len};
            s += len;
            continue;
        }
        const char *close = strchr(open, '}');
        int r = close ? find_rule(open + 1, (size_t)(close - open - 1)) : -1;
        if (r < 0) {
            free(pc);
            return 0;
        }
        pc[n++] = (chm_corpus_piece){r, NULL, 0};
        s = close + 1;
    }
    out->n_pieces = n;
    out->pieces = pc;
    return 1;
}

/* Weights -> probabilities, cumulative sums and bits for rule i; 0 on a bad table. */
static int compile_rule(int i) {
    const rule_def *d = &defs[i];
    int n = 0;
    while (d->alts[n]) n++;
    double *p = calloc((size_t)n, sizeof *p);
    chm_corpus_alt *alts = calloc((size_t)n, sizeof *alts);
    if (!p || !alts || n == 0) return 0;
    double total = 0;
    for (int k = 0; k < n; k++) {
        p[k] = d->weighting == ZIPF ? 1.0 / (k + 1) : d->weighting == UNIFORM ? 1.0 : d->w[k];
        total += p[k];
    }
    double cum = 0;
    for (int k = 0; k < n; k++) {
        p[k] /= total;
        cum += p[k];
        alts[k].cum = k == n - 1 ? 1.0 : cum;
        alts[k].bits = -log2(p[k]);
        if (!(p[k] > 0) || !compile_alt(d->alts[k], &alts[k])) return 0;
    }
    pub[i] = (chm_grammar_rule){d->name, n, d->alts, p};
    compiled[i] = (chm_corpus_rule){n, alts};
    return 1;
}

/* Built once; the tables live for the whole process. */
static void build(void) {
    if (!make_facts()) return;
    for (int i = 0; i < N_RULES; i++)
        if (!compile_rule(i)) return;
    compiled_ok = 1;
}

const chm_corpus_rule *chm_corpus_compiled(int *n_rules) {
    pthread_once(&once, build);
    *n_rules = compiled_ok ? N_RULES : 0;
    return compiled_ok ? compiled : NULL;
}

const chm_grammar_rule *chm_corpus_grammar(int *n_rules) {
    pthread_once(&once, build);
    *n_rules = compiled_ok ? N_RULES : 0;
    return compiled_ok ? pub : NULL;
}
