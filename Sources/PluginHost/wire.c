/* Little-endian encoding of control messages (see ferret_isolation.h). */
#include "helper.h"

#include <stdlib.h>
#include <string.h>

void fh_buf_reset(fh_buf *b) { b->len = 0; b->failed = 0; }

void *fh_buf_grow(fh_buf *b, size_t n) {
    if (b->failed) return NULL;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) { b->failed = 1; return NULL; }
        b->data = d;
        b->cap = cap;
    }
    void *p = b->data + b->len;
    b->len += n;
    return p;
}

void fh_put_u32(fh_buf *b, uint32_t v) { void *p = fh_buf_grow(b, 4); if (p) memcpy(p, &v, 4); }
void fh_put_u64(fh_buf *b, uint64_t v) { void *p = fh_buf_grow(b, 8); if (p) memcpy(p, &v, 8); }
void fh_put_str(fh_buf *b, const char *s, size_t n) {
    fh_put_u32(b, (uint32_t)n);
    void *p = fh_buf_grow(b, n);
    if (p && n) memcpy(p, s, n);
}

uint32_t fh_get_u32(fh_reader *r) {
    uint32_t v = 0;
    if (r->failed || r->end - r->p < 4) { r->failed = 1; return 0; }
    memcpy(&v, r->p, 4);
    r->p += 4;
    return v;
}

uint64_t fh_get_u64(fh_reader *r) {
    uint64_t v = 0;
    if (r->failed || r->end - r->p < 8) { r->failed = 1; return 0; }
    memcpy(&v, r->p, 8);
    r->p += 8;
    return v;
}

char *fh_get_str(fh_reader *r, size_t *len) {
    uint32_t n = fh_get_u32(r);
    if (r->failed || (size_t)(r->end - r->p) < n) { r->failed = 1; *len = 0; return NULL; }
    char *s = malloc((size_t)n + 1);
    if (!s) { r->failed = 1; *len = 0; return NULL; }
    memcpy(s, r->p, n);
    s[n] = 0;
    r->p += n;
    *len = n;
    return s;
}
