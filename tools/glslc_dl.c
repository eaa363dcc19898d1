/*
 * glslc_dl.c: a glslc-compatible front end over a glslang library loaded at
 * run time, for the shader variants Debian 12's glslang (12.0) cannot compile
 * (GL_KHR_cooperative_matrix, GL_NV_cooperative_matrix2, GL_EXT_bfloat16).
 *
 * The library is Slang's build of glslang and SPIRV-Tools (the
 * libslang-glslang-*.so that PyPI's slangpy wheel carries; tools/bootstrap.sh
 * fetches it): it exports glslang_compile_1_2, which takes one preprocessed
 * GLSL source, and glslang_validateSPIRV. This program does what glslc does
 * for cmake/vk_shaders.cmake's rules: the -D defines go in after the #version
 * line, #include "file" lines are expanded from the including file's folder
 * and the -I folders, the SPIR-V is optimised (-O) and validated, and written
 * to -o only when both succeeded.
 *
 *   chimera_glslc --lib LIB [-O|-O0] [--target-env=vulkan1.2|vulkan1.3]
 *                 [-fshader-stage=compute] [-I DIR]... [-D NAME[=VALUE]]... -o OUT IN
 *   chimera_glslc --lib LIB --version      (exit 0 when the library loads)
 *
 * Compute shaders only. Exit status 0 on success, 1 with a message on stderr.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 64
#define MAX_DEPTH 16

typedef void (*gl_output_fn)(void const *data, size_t size, void *user);

/* The library's request (Slang's glslang_CompileRequest_1_2, field for field). */
typedef struct gl_request {
    size_t size_in_bytes;
    const char *source_path;
    const void *input_begin, *input_end;
    gl_output_fn diagnostic_fn;
    void *diagnostic_user;
    gl_output_fn output_fn;
    void *output_user;
    int stage;              /* SlangStage: 6 = compute */
    unsigned action;        /* 0: GLSL -> SPIR-V */
    unsigned optimization;  /* 0 none, 1 default, 2 high */
    unsigned debug_info;    /* 0 none */
    const char *target_name; /* NULL: from the version below */
    int spv_major, spv_minor, spv_patch;
    const char *entry_point;
} gl_request;

typedef int (*gl_compile_fn)(gl_request *r);
typedef bool (*gl_validate_fn)(const uint32_t *words, int count);

/* A growable byte buffer. */
typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static int buf_add(buf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static void on_output(void const *data, size_t n, void *user) {
    if (buf_add(user, data, n)) fprintf(stderr, "chimera_glslc: out of memory\n");
}
static void on_diagnostic(void const *data, size_t n, void *user) {
    (void)user;
    fwrite(data, 1, n, stderr);
}

typedef struct opts {
    const char *lib, *out, *in;
    const char *incs[MAX_ARGS], *defs[MAX_ARGS];
    int ninc, ndef;
    unsigned opt;
    int spv_minor;
    bool version;
} opts;

static int usage(const char *why) {
    fprintf(stderr,
            "chimera_glslc: %s\nusage: chimera_glslc --lib LIB [-O|-O0] "
            "[--target-env=vulkan1.2|vulkan1.3] [-fshader-stage=compute] [-I DIR]... "
            "[-D NAME[=VALUE]]... -o OUT IN\n",
            why);
    return 1;
}

/* Parse argv into o; returns 0 or prints why and returns 1. */
static int parse(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->opt = 2, o->spv_minor = 5, o->lib = getenv("CHIMERA_GLSLANG_LIB");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--lib") && next) o->lib = argv[++i];
        else if (!strcmp(a, "--version")) o->version = true;
        else if (!strcmp(a, "-O")) o->opt = 2;
        else if (!strcmp(a, "-O0")) o->opt = 0;
        else if (!strcmp(a, "--target-env=vulkan1.2")) o->spv_minor = 5;
        else if (!strcmp(a, "--target-env=vulkan1.3")) o->spv_minor = 6;
        else if (!strcmp(a, "-fshader-stage=compute")) continue;
        else if (!strcmp(a, "-o") && next) o->out = argv[++i];
        else if (!strncmp(a, "-I", 2) && o->ninc < MAX_ARGS)
            o->incs[o->ninc++] = a[2] ? a + 2 : (next ? argv[++i] : "");
        else if (!strncmp(a, "-D", 2) && o->ndef < MAX_ARGS)
            o->defs[o->ndef++] = a[2] ? a + 2 : (next ? argv[++i] : "");
        else if (a[0] != '-' && !o->in) o->in = a;
        else {
            fprintf(stderr, "chimera_glslc: unknown or repeated argument '%s'\n", a);
            return 1;
        }
    }
    if (!o->lib) return usage("no glslang library (--lib or CHIMERA_GLSLANG_LIB)");
    if (!o->version && (!o->in || !o->out)) return usage("need an input and -o OUT");
    return 0;
}

/* The whole file at path into b (appended); -1 when it cannot be read. */
static int read_file(const char *path, buf *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char tmp[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        if (buf_add(b, tmp, n)) rc = -1;
    if (ferror(f)) rc = -1;
    fclose(f);
    return rc;
}

/* The folder part of path ("." when it has none) into dir[n]. */
static void dir_of(const char *path, char *dir, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, n, ".");
    else snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

static int expand(const opts *o, const char *path, buf *out, int depth);

/* Expand the #include "name" of a line found in the file at `from`. */
static int include_one(const opts *o, const char *from, const char *line, buf *out, int depth) {
    const char *q = strchr(line, '"'), *e = q ? strchr(q + 1, '"') : NULL;
    if (!q || !e) {
        fprintf(stderr, "%s: chimera_glslc: malformed #include: %s\n", from, line);
        return -1;
    }
    char name[512], dir[512], path[1100];
    snprintf(name, sizeof name, "%.*s", (int)(e - q - 1), q + 1);
    dir_of(from, dir, sizeof dir);
    for (int i = -1; i < o->ninc; i++) {
        snprintf(path, sizeof path, "%s/%s", i < 0 ? dir : o->incs[i], name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fclose(f);
        return expand(o, path, out, depth + 1);
    }
    fprintf(stderr, "%s: chimera_glslc: cannot find include \"%s\"\n", from, name);
    return -1;
}

/* The file at path with its #include lines expanded, appended to out; the -D defines go
   in after the top file's #version line. */
static int expand(const opts *o, const char *path, buf *out, int depth) {
    if (depth > MAX_DEPTH) {
        fprintf(stderr, "%s: chimera_glslc: includes nested deeper than %d\n", path, MAX_DEPTH);
        return -1;
    }
    buf src = {0};
    if (read_file(path, &src)) {
        fprintf(stderr, "chimera_glslc: cannot read %s\n", path);
        free(src.p);
        return -1;
    }
    int rc = 0;
    for (char *line = src.p; line && *line && !rc;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
        const char *t = line + strspn(line, " \t");
        if (!strncmp(t, "#include", 8)) {
            char one[1024];
            snprintf(one, sizeof one, "%.*s", (int)(len < sizeof one ? len : sizeof one - 1), line);
            rc = include_one(o, path, one, out, depth);
        } else {
            rc = buf_add(out, line, len);
            if (!rc && depth == 0 && !strncmp(t, "#version", 8)) {
                for (int i = 0; i < o->ndef && !rc; i++) {
                    char d[512];
                    const char *eq = strchr(o->defs[i], '=');
                    int n = eq ? snprintf(d, sizeof d, "#define %.*s %s\n",
                                          (int)(eq - o->defs[i]), o->defs[i], eq + 1)
                               : snprintf(d, sizeof d, "#define %s\n", o->defs[i]);
                    rc = buf_add(out, d, (size_t)n);
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    free(src.p);
    return rc;
}

/* Compile the expanded source, validate it and write o->out. */
static int compile(const opts *o, gl_compile_fn comp, gl_validate_fn val, const buf *src) {
    buf spv = {0};
    gl_request r;
    memset(&r, 0, sizeof r);
    r.size_in_bytes = sizeof r;
    r.source_path = o->in;
    r.input_begin = src->p;
    r.input_end = src->p + src->n;
    r.diagnostic_fn = on_diagnostic;
    r.output_fn = on_output;
    r.output_user = &spv;
    r.stage = 6;
    r.optimization = o->opt;
    r.spv_major = 1, r.spv_minor = o->spv_minor;
    r.entry_point = "main";
    int rc = comp(&r);
    if (rc != 0 || spv.n < 20 || spv.n % 4) {
        fprintf(stderr, "%s: chimera_glslc: compilation failed (%d)\n", o->in, rc);
        free(spv.p);
        return 1;
    }
    if (!val((const uint32_t *)(void *)spv.p, (int)(spv.n / 4))) {
        fprintf(stderr, "%s: chimera_glslc: the SPIR-V does not validate\n", o->in);
        free(spv.p);
        return 1;
    }
    FILE *f = fopen(o->out, "wb");
    bool ok = f && fwrite(spv.p, 1, spv.n, f) == spv.n;
    if (f && fclose(f)) ok = false;
    free(spv.p);
    if (!ok) {
        fprintf(stderr, "chimera_glslc: cannot write %s\n", o->out);
        remove(o->out);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o)) return 1;
    void *lib = dlopen(o.lib, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "chimera_glslc: cannot load %s: %s\n", o.lib, dlerror());
        return 1;
    }
    gl_compile_fn comp;
    gl_validate_fn val;
    *(void **)&comp = dlsym(lib, "glslang_compile_1_2");
    *(void **)&val = dlsym(lib, "glslang_validateSPIRV");
    if (!comp || !val) {
        fprintf(stderr, "chimera_glslc: %s lacks glslang_compile_1_2/glslang_validateSPIRV\n",
                o.lib);
        return 1;
    }
    if (o.version) {
        printf("chimera_glslc over %s\n", o.lib);
        return 0;
    }
    buf src = {0};
    int rc = expand(&o, o.in, &src, 0) ? 1 : compile(&o, comp, val, &src);
    free(src.p);
    return rc;
}
