/*
 * dolma_lines.c: a streaming line reader over plain, gzip and zstd files.
 *
 * The container is detected from the first bytes (gzip 1f 8b, zstd 28 b5 2f fd or a
 * skippable frame); a name ending in .gz/.zst that does not carry that magic is an
 * error, anything else is plain text. Decoded bytes collect in one growing buffer, so
 * a line may be any length (real Dolma lines pass 64 KiB). Damage in a compressed
 * stream is reported only after every complete line before it has been returned.
 */
#include "chimera/data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define IN_CHUNK (256 * 1024)
#define OUT_MIN (64 * 1024)
/* Longest line accepted: far above any real document (Dolma's largest are tens of MB),
 * low enough that a hostile file (a compressed run of bytes without '\n') is refused with
 * a message instead of growing the buffer until the machine runs out of memory. */
#define LINE_MAX_BYTES ((size_t)1 << 30)

struct chm_lines {
    char *path;
    int fd;
    chm_container kind;
    unsigned char *in;       /* raw bytes read from the file */
    size_t in_len, in_pos;
    int in_eof;
    z_stream z;              /* gzip state (kind == GZIP) */
    int z_ready;
    ZSTD_DStream *zs;        /* zstd state (kind == ZSTD) */
    size_t zs_hint;          /* last ZSTD_decompressStream return: 0 = frame complete */
    char *out;               /* decoded bytes: out[out_pos..out_len) not yet returned */
    size_t out_len, out_pos, out_cap;
    int out_eof;             /* the decoder has nothing more */
    chm_status pending;      /* an error to report once the buffered lines are used */
    char pending_msg[512];
    int64_t line_no, bytes_in, bytes_out;
};

const char *chm_container_name(chm_container c) {
    switch (c) {
    case CHM_CONTAINER_GZIP: return "gzip";
    case CHM_CONTAINER_ZSTD: return "zstd";
    default: return "plain";
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Refill r->in when it is used up; returns -1 on a read error (errno set). */
static int read_more(chm_lines *r) {
    if (r->in_pos < r->in_len || r->in_eof) return 0;
    ssize_t got;
    do got = read(r->fd, r->in, IN_CHUNK);
    while (got < 0 && errno == EINTR);
    if (got < 0) return -1;
    r->in_len = (size_t)got;
    r->in_pos = 0;
    r->bytes_in += got;
    if (got == 0) r->in_eof = 1;
    return 0;
}

/* Record an error for after the buffered lines; later fills produce nothing. */
static void set_pending(chm_lines *r, chm_status code, const char *fmt, const char *what) {
    if (r->pending) return;
    r->pending = code;
    snprintf(r->pending_msg, sizeof r->pending_msg, fmt, r->path, what, (long long)r->bytes_out);
    r->out_eof = 1;
}

/* Detect the container from the first bytes (already in r->in) and the name. */
static chm_status detect(chm_lines *r, chm_err *err) {
    const unsigned char *m = r->in;
    size_t n = r->in_len;
    int gz_name = ends_with(r->path, ".gz") || ends_with(r->path, ".gzip");
    int zst_name = ends_with(r->path, ".zst") || ends_with(r->path, ".zstd");
    if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) {
        r->kind = CHM_CONTAINER_GZIP;
    } else if (n >= 4 && ((m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) ||
                          ((m[0] & 0xf0) == 0x50 && m[1] == 0x2a && m[2] == 0x4d && m[3] == 0x18))) {
        r->kind = CHM_CONTAINER_ZSTD;
    } else if (gz_name || zst_name) {
        char start[40] = "";
        for (size_t i = 0; i < n && i < 8; i++)
            snprintf(start + 3 * i, sizeof start - 3 * i, "%02x ", m[i]);
        return CHM_ERR(err, CHM_ERR_PARSE,
                       "%s: named like a %s file but it is not one (%s%s); rename it or "
                       "recompress it",
                       r->path, gz_name ? "gzip" : "zstd", n ? "it starts with bytes " : "it is empty",
                       start);
    } else {
        r->kind = CHM_CONTAINER_PLAIN;
    }
    if (r->kind == CHM_CONTAINER_GZIP) {
        /* 15 + 32: zlib window with automatic gzip/zlib header detection. */
        if (inflateInit2(&r->z, 15 + 32) != Z_OK)
            return CHM_ERR(err, CHM_ERR_NOMEM, "%s: cannot start the gzip decoder", r->path);
        r->z_ready = 1;
    } else if (r->kind == CHM_CONTAINER_ZSTD) {
        r->zs = ZSTD_createDStream();
        if (!r->zs || ZSTD_isError(ZSTD_initDStream(r->zs)))
            return CHM_ERR(err, CHM_ERR_NOMEM, "%s: cannot start the zstd decoder", r->path);
    }
    return CHM_OK;
}

chm_status chm_lines_open(const char *path, chm_lines **out, chm_err *err) {
    *out = NULL;
    chm_lines *r = calloc(1, sizeof *r);
    if (!r) return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory for a reader", path);
    r->fd = -1;
    r->path = strdup(path);
    r->in = malloc(IN_CHUNK);
    r->out_cap = OUT_MIN;
    r->out = malloc(r->out_cap);
    if (!r->path || !r->in || !r->out) {
        chm_lines_close(r);
        return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory for a reader", path);
    }
    r->fd = open(path, O_RDONLY);
    if (r->fd < 0) {
        chm_status rc = CHM_ERR(err, CHM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        chm_lines_close(r);
        return rc;
    }
    chm_status rc = CHM_OK;
    if (read_more(r) < 0)
        rc = CHM_ERR(err, CHM_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    if (!rc) rc = detect(r, err);
    if (rc) {
        chm_lines_close(r);
        return rc;
    }
    *out = r;
    return CHM_OK;
}

void chm_lines_close(chm_lines *r) {
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    if (r->z_ready) inflateEnd(&r->z);
    if (r->zs) ZSTD_freeDStream(r->zs);
    free(r->in);
    free(r->out);
    free(r->path);
    free(r);
}

chm_container chm_lines_container(const chm_lines *r) { return r->kind; }
int64_t chm_lines_number(const chm_lines *r) { return r->line_no; }
int64_t chm_lines_bytes_in(const chm_lines *r) { return r->bytes_in; }

/* After a gzip member ends: another member follows, or the file ends, or garbage. */
static void gzip_member_end(chm_lines *r) {
    if (read_more(r) < 0) {
        set_pending(r, CHM_ERR_IO, "%s: read error (%s) after %lld decompressed bytes",
                    strerror(errno));
        return;
    }
    if (r->in_pos == r->in_len) { /* clean end of file */
        r->out_eof = 1;
        return;
    }
    if (r->in[r->in_pos] != 0x1f) {
        set_pending(r, CHM_ERR_PARSE,
                    "%s: %s after a complete gzip member (at %lld decompressed bytes)",
                    "unexpected bytes");
        return;
    }
    inflateReset(&r->z);
}

/* Decode gzip into out[out_len..out_cap); produces >= 1 byte or sets out_eof. */
static void fill_gzip(chm_lines *r) {
    size_t before = r->out_len;
    while (r->out_len == before && !r->out_eof) {
        if (read_more(r) < 0) {
            set_pending(r, CHM_ERR_IO, "%s: read error (%s) after %lld decompressed bytes",
                        strerror(errno));
            return;
        }
        r->z.next_in = r->in + r->in_pos;
        r->z.avail_in = (uInt)(r->in_len - r->in_pos);
        r->z.next_out = (Bytef *)r->out + r->out_len;
        r->z.avail_out = (uInt)(r->out_cap - r->out_len);
        int ret = inflate(&r->z, Z_NO_FLUSH);
        r->in_pos = r->in_len - r->z.avail_in;
        r->bytes_out += (int64_t)(r->out_cap - r->z.avail_out - r->out_len);
        r->out_len = r->out_cap - r->z.avail_out;
        if (ret == Z_STREAM_END) {
            gzip_member_end(r);
        } else if (ret == Z_BUF_ERROR || (ret == Z_OK && r->in_eof && r->z.avail_in == 0 &&
                                          r->out_len == before)) {
            if (r->in_eof && r->in_pos == r->in_len)
                set_pending(r, CHM_ERR_PARSE, "%s: %s after %lld decompressed bytes",
                            "truncated: the gzip stream ends inside a member");
        } else if (ret != Z_OK) {
            set_pending(r, CHM_ERR_PARSE, "%s: corrupt gzip data (%s) after %lld decompressed bytes",
                        r->z.msg ? r->z.msg : "inflate failed");
        }
    }
}

/* Decode zstd frames into out[out_len..out_cap); produces >= 1 byte or sets out_eof. */
static void fill_zstd(chm_lines *r) {
    size_t before = r->out_len;
    while (r->out_len == before && !r->out_eof) {
        if (read_more(r) < 0) {
            set_pending(r, CHM_ERR_IO, "%s: read error (%s) after %lld decompressed bytes",
                        strerror(errno));
            return;
        }
        ZSTD_inBuffer ib = {r->in, r->in_len, r->in_pos};
        ZSTD_outBuffer ob = {r->out, r->out_cap, r->out_len};
        size_t ret = ZSTD_decompressStream(r->zs, &ob, &ib);
        int moved = ib.pos != r->in_pos || ob.pos != r->out_len;
        r->in_pos = ib.pos;
        r->bytes_out += (int64_t)(ob.pos - r->out_len);
        r->out_len = ob.pos;
        if (ZSTD_isError(ret)) {
            set_pending(r, CHM_ERR_PARSE, "%s: corrupt zstd data (%s) after %lld decompressed bytes",
                        ZSTD_getErrorName(ret));
            return;
        }
        /* A call that did nothing says nothing about the frame: keep the last hint. */
        if (moved) r->zs_hint = ret;
        if (!moved && r->in_pos == r->in_len && r->in_eof) {
            /* Input done: fine only when the last frame was complete and flushed. */
            if (r->zs_hint != 0)
                set_pending(r, CHM_ERR_PARSE, "%s: %s after %lld decompressed bytes",
                            "truncated: the zstd stream ends inside a frame");
            r->out_eof = 1;
        }
    }
}

/* Plain files: read straight into the output buffer. */
static void fill_plain(chm_lines *r) {
    if (r->in_pos < r->in_len) { /* the bytes read for detection */
        size_t n = r->in_len - r->in_pos;
        if (n > r->out_cap - r->out_len) n = r->out_cap - r->out_len;
        memcpy(r->out + r->out_len, r->in + r->in_pos, n);
        r->in_pos += n;
        r->out_len += n;
        r->bytes_out += (int64_t)n;
        return;
    }
    ssize_t got;
    do got = read(r->fd, r->out + r->out_len, r->out_cap - r->out_len);
    while (got < 0 && errno == EINTR);
    if (got < 0) {
        set_pending(r, CHM_ERR_IO, "%s: read error (%s) after %lld bytes", strerror(errno));
        return;
    }
    if (got == 0) r->out_eof = 1;
    r->out_len += (size_t)got;
    r->bytes_in += got;
    r->bytes_out += got;
}

/* Make room after the pending partial line: compact, then grow when it fills the buffer. */
static int make_room(chm_lines *r) {
    if (r->out_pos > 0) {
        memmove(r->out, r->out + r->out_pos, r->out_len - r->out_pos);
        r->out_len -= r->out_pos;
        r->out_pos = 0;
    }
    if (r->out_cap - r->out_len >= OUT_MIN / 2) return 0;
    size_t cap = r->out_cap * 2;
    char *p = realloc(r->out, cap);
    if (!p) return -1;
    r->out = p;
    r->out_cap = cap;
    return 0;
}

/* Hand out[out_pos..out_pos+len) as the next line (trailing '\r' dropped). */
static void take_line(chm_lines *r, size_t len, size_t skip, const char **line, size_t *n) {
    *line = r->out + r->out_pos;
    r->out_pos += len + skip;
    if (len > 0 && (*line)[len - 1] == '\r') len--;
    *n = len;
    r->line_no++;
}

chm_status chm_lines_next(chm_lines *r, const char **line, size_t *len, int *got, chm_err *err) {
    *got = 0;
    size_t scanned = 0; /* bytes of the pending line already searched for '\n' */
    for (;;) {
        char *start = r->out + r->out_pos;
        size_t avail = r->out_len - r->out_pos;
        char *nl = memchr(start + scanned, '\n', avail - scanned);
        if (nl) {
            take_line(r, (size_t)(nl - start), 1, line, len);
            *got = 1;
            return CHM_OK;
        }
        scanned = avail;
        if (r->out_eof) break;
        if (avail > LINE_MAX_BYTES)
            return CHM_ERR(err, CHM_ERR_PARSE,
                           "%s: line %lld is longer than %zu MiB without a newline: not a "
                           "JSON-lines file, or a damaged one",
                           r->path, (long long)r->line_no + 1, LINE_MAX_BYTES >> 20);
        if (make_room(r) < 0)
            return CHM_ERR(err, CHM_ERR_NOMEM, "%s: no memory for a line of %zu+ bytes", r->path,
                           avail);
        if (r->kind == CHM_CONTAINER_GZIP) fill_gzip(r);
        else if (r->kind == CHM_CONTAINER_ZSTD) fill_zstd(r);
        else fill_plain(r);
    }
    if (r->pending) { /* a damaged stream: its unfinished last line is dropped */
        r->out_pos = r->out_len;
        return chm_err_set(err, r->pending, __FILE__, __LINE__, "%s", r->pending_msg);
    }
    if (r->out_pos < r->out_len) { /* last line without '\n' */
        take_line(r, r->out_len - r->out_pos, 0, line, len);
        *got = 1;
    }
    return CHM_OK;
}
