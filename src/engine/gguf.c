/* GGUF reader. Layout (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 * n_kv × (string key, u32 type, value), n_tensors × (string name, u32 n_dims, u64 ne[n_dims],
 * u32 type, u64 offset), padding to the alignment, tensor data. A string is u64 length + bytes. */
#include "engine/gguf.h"

#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"
#include "util/str.h"

/* ---- a small bump allocator: all metadata copies live here and die with the file ---- */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_chunk;

static void *arena_alloc(arena_chunk **head, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    arena_chunk *c = *head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > (1u << 20) ? n : (1u << 20);
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(arena_chunk *c)
{
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* ---- bounded cursor over the file ---- */

typedef struct cursor {
    const unsigned char *p;
    size_t size, pos;
    gguf_file *g;
    pwb_err *e;
} cursor;

static int trunc_err(cursor *c, const char *what)
{
    return err_set(c->e, PWB_EPARSE, "%s: truncated GGUF file: %s at offset %zu runs past the end (%zu bytes)",
                   c->g->path, what, c->pos, c->size);
}

static int rd_bytes(cursor *c, void *dst, size_t n, const char *what)
{
    if (c->size - c->pos < n)
        return trunc_err(c, what);
    memcpy(dst, c->p + c->pos, n);
    c->pos += n;
    return PWB_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what)
{
    unsigned char b[4];
    int rc = rd_bytes(c, b, 4, what);
    if (rc)
        return rc;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return PWB_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what)
{
    uint32_t lo, hi;
    int rc = rd_u32(c, &lo, what);
    if (!rc)
        rc = rd_u32(c, &hi, what);
    if (!rc)
        *v = (uint64_t)hi << 32 | lo;
    return rc;
}

/* Reads a GGUF string and copies it, NUL-terminated, into the arena. */
static int rd_str(cursor *c, uint64_t max, const char **out, uint32_t *out_len, const char *what)
{
    uint64_t n;
    size_t at = c->pos;
    int rc = rd_u64(c, &n, what);
    if (rc)
        return rc;
    if (n > max)
        return err_set(c->e, PWB_EPARSE, "%s: %s at offset %zu: string length %llu exceeds the limit %llu",
                       c->g->path, what, at, (unsigned long long)n, (unsigned long long)max);
    if (c->size - c->pos < n)
        return trunc_err(c, what);
    char *s = arena_alloc((arena_chunk **)&c->g->arena_, (size_t)n + 1);
    if (!s)
        return err_set(c->e, PWB_ENOMEM, "%s: out of memory", c->g->path);
    memcpy(s, c->p + c->pos, (size_t)n);
    s[n] = '\0';
    c->pos += (size_t)n;
    *out = s;
    if (out_len)
        *out_len = (uint32_t)n;
    return PWB_OK;
}

static size_t vtype_size(int t)
{
    switch (t) {
    case GGUF_T_U8: case GGUF_T_I8: case GGUF_T_BOOL: return 1;
    case GGUF_T_U16: case GGUF_T_I16: return 2;
    case GGUF_T_U32: case GGUF_T_I32: case GGUF_T_F32: return 4;
    case GGUF_T_U64: case GGUF_T_I64: case GGUF_T_F64: return 8;
    default: return 0;
    }
}

const char *gguf_vtype_name(int t)
{
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return t >= 0 && t < GGUF_T_COUNT_ ? names[t] : "?";
}

static int rd_scalar(cursor *c, int type, gguf_kv *kv, const char *what)
{
    unsigned char b[8] = {0};
    size_t n = vtype_size(type);
    int rc = rd_bytes(c, b, n, what);
    if (rc)
        return rc;
    uint64_t u = 0;
    for (size_t i = 0; i < n; i++)
        u |= (uint64_t)b[i] << (8 * i);
    switch (type) {
    case GGUF_T_I8: kv->v.i64 = (int8_t)u; break;
    case GGUF_T_I16: kv->v.i64 = (int16_t)u; break;
    case GGUF_T_I32: kv->v.i64 = (int32_t)u; break;
    case GGUF_T_I64: kv->v.i64 = (int64_t)u; break;
    case GGUF_T_F32: { float f; uint32_t u32 = (uint32_t)u; memcpy(&f, &u32, 4); kv->v.f64 = f; break; }
    case GGUF_T_F64: memcpy(&kv->v.f64, &u, 8); break;
    case GGUF_T_BOOL:
        if (u > 1)
            return err_set(c->e, PWB_EPARSE, "%s: %s: bool value %llu is not 0 or 1", c->g->path, what,
                           (unsigned long long)u);
        kv->v.u64 = u;
        break;
    default: kv->v.u64 = u; break;
    }
    return PWB_OK;
}

static int rd_array(cursor *c, gguf_arr *a, int depth, const char *what)
{
    uint32_t t;
    uint64_t n;
    size_t at = c->pos;
    int rc = rd_u32(c, &t, what);
    if (!rc)
        rc = rd_u64(c, &n, what);
    if (rc)
        return rc;
    if (t >= GGUF_T_COUNT_)
        return err_set(c->e, PWB_EPARSE, "%s: %s at offset %zu: unknown array element type %u", c->g->path,
                       what, at, t);
    if (t == GGUF_T_ARRAY && depth >= GGUF_MAX_NESTING)
        return err_set(c->e, PWB_EPARSE, "%s: %s: arrays nested deeper than %d", c->g->path, what,
                       GGUF_MAX_NESTING);
    if (n > GGUF_MAX_ARRAY)
        return err_set(c->e, PWB_ERANGE, "%s: %s at offset %zu: array of %llu elements exceeds the limit %u",
                       c->g->path, what, at, (unsigned long long)n, GGUF_MAX_ARRAY);
    /* Every element takes at least this many bytes: reject absurd counts before allocating. */
    size_t min_el = t == GGUF_T_STRING ? 8 : t == GGUF_T_ARRAY ? 12 : vtype_size((int)t);
    if ((c->size - c->pos) / min_el < n)
        return trunc_err(c, what);
    a->type = (int)t;
    a->n = n;
    arena_chunk **ar = (arena_chunk **)&c->g->arena_;
    if (t == GGUF_T_STRING) {
        const char **strs = arena_alloc(ar, (size_t)n * sizeof *strs + 1);
        uint32_t *lens = arena_alloc(ar, (size_t)n * sizeof *lens + 1);
        if (!strs || !lens)
            return err_set(c->e, PWB_ENOMEM, "%s: out of memory", c->g->path);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_str(c, GGUF_MAX_STRING, &strs[i], &lens[i], what)))
                return rc;
        a->strs = strs;
        a->str_lens = lens;
    } else if (t == GGUF_T_ARRAY) {
        gguf_arr *arrs = arena_alloc(ar, (size_t)n * sizeof *arrs + 1);
        if (!arrs)
            return err_set(c->e, PWB_ENOMEM, "%s: out of memory", c->g->path);
        memset(arrs, 0, (size_t)n * sizeof *arrs);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_array(c, &arrs[i], depth + 1, what)))
                return rc;
        a->arrs = arrs;
    } else {
        size_t bytes = (size_t)n * min_el;
        void *d = arena_alloc(ar, bytes + 1);
        if (!d)
            return err_set(c->e, PWB_ENOMEM, "%s: out of memory", c->g->path);
        /* The file is little-endian, as is every host pwb targets, so a copy is the conversion. */
        if ((rc = rd_bytes(c, d, bytes, what)))
            return rc;
        if (t == GGUF_T_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (((unsigned char *)d)[i] > 1)
                    return err_set(c->e, PWB_EPARSE, "%s: %s: bool array element is not 0 or 1",
                                   c->g->path, what);
        a->data = d;
    }
    return PWB_OK;
}

/* ---- open ---- */

static int cmp_by_offset(const void *a, const void *b)
{
    const pwb_tensor *x = *(const pwb_tensor *const *)a, *y = *(const pwb_tensor *const *)b;
    const unsigned char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py;
}

static int parse(gguf_file *g, pwb_err *e)
{
    cursor c = {g->base, g->size, 0, g, e};
    unsigned char magic[4];
    uint32_t version;
    uint64_t n_tensors, n_kv;
    int rc = rd_bytes(&c, magic, 4, "magic");
    if (rc)
        return rc;
    if (memcmp(magic, "GGUF", 4) != 0)
        return err_set(e, PWB_EPARSE, "%s: not a GGUF file (bad magic)", g->path);
    if ((rc = rd_u32(&c, &version, "version")))
        return rc;
    if (version == 0x03000000u || version == 0x02000000u)
        return err_set(e, PWB_EUNSUP, "%s: big-endian GGUF files are not supported", g->path);
    if (version != 2 && version != 3)
        return err_set(e, PWB_EUNSUP, "%s: GGUF version %u is not supported (only 2 and 3)", g->path, version);
    g->version = version;
    if ((rc = rd_u64(&c, &n_tensors, "tensor count")) || (rc = rd_u64(&c, &n_kv, "metadata count")))
        return rc;
    if (n_tensors > GGUF_MAX_TENSORS)
        return err_set(e, PWB_ERANGE, "%s: %llu tensors exceeds the limit %d", g->path,
                       (unsigned long long)n_tensors, GGUF_MAX_TENSORS);
    if (n_kv > GGUF_MAX_KV)
        return err_set(e, PWB_ERANGE, "%s: %llu metadata pairs exceeds the limit %d", g->path,
                       (unsigned long long)n_kv, GGUF_MAX_KV);
    /* Smallest encodings: a kv is 8+4+1 bytes, a tensor info 8+4+4+8 bytes. */
    if ((g->size - c.pos) / 13 < n_kv || (g->size - c.pos) / 24 < n_tensors)
        return err_set(e, PWB_EPARSE, "%s: truncated GGUF file: %llu metadata pairs and %llu tensors cannot fit in %zu bytes",
                       g->path, (unsigned long long)n_kv, (unsigned long long)n_tensors, g->size);

    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return err_set(e, PWB_ENOMEM, "%s: out of memory", g->path);

    g->alignment = 32;
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        uint32_t t;
        if ((rc = rd_str(&c, 65535, &kv->key, NULL, "metadata key")))
            return rc;
        for (size_t j = 0; j < g->n_kv; j++)
            if (strcmp(g->kv[j].key, kv->key) == 0)
                return err_set(e, PWB_EPARSE, "%s: duplicate metadata key '%s'", g->path, kv->key);
        if ((rc = rd_u32(&c, &t, kv->key)))
            return rc;
        if (t >= GGUF_T_COUNT_)
            return err_set(e, PWB_EPARSE, "%s: metadata '%s': unknown value type %u", g->path, kv->key, t);
        kv->type = (int)t;
        if (t == GGUF_T_STRING)
            rc = rd_str(&c, GGUF_MAX_STRING, &kv->str, &kv->str_len, kv->key);
        else if (t == GGUF_T_ARRAY)
            rc = rd_array(&c, &kv->arr, 1, kv->key);
        else
            rc = rd_scalar(&c, (int)t, kv, kv->key);
        if (rc)
            return rc;
        g->n_kv++;
    }

    const gguf_kv *al = gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_T_U32 || al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1)) || al->v.u64 > (1u << 20))
            return err_set(e, PWB_EPARSE, "%s: general.alignment must be a u32 power of two up to 1 MiB", g->path);
        g->alignment = (size_t)al->v.u64;
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        pwb_tensor *t = &g->tensors[i];
        uint32_t n_dims, type;
        uint64_t off;
        if ((rc = rd_str(&c, GGUF_MAX_NAME, &t->name, NULL, "tensor name")))
            return rc;
        for (size_t j = 0; j < g->n_tensors; j++)
            if (strcmp(g->tensors[j].name, t->name) == 0)
                return err_set(e, PWB_EPARSE, "%s: duplicate tensor '%s'", g->path, t->name);
        if ((rc = rd_u32(&c, &n_dims, t->name)))
            return rc;
        if (n_dims > TENSOR_MAX_DIMS)
            return err_set(e, PWB_EPARSE, "%s: tensor '%s' has %u dimensions (at most %d)", g->path, t->name,
                           n_dims, TENSOR_MAX_DIMS);
        t->n_dims = (int)n_dims;
        for (int d = 0; d < TENSOR_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t ne;
            if ((rc = rd_u64(&c, &ne, t->name)))
                return rc;
            if (ne > (uint64_t)INT64_MAX / 2)
                return err_set(e, PWB_EPARSE, "%s: tensor '%s': dimension %u is %llu", g->path, t->name, d,
                               (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
        }
        if ((rc = rd_u32(&c, &type, t->name)) || (rc = rd_u64(&c, &off, t->name)))
            return rc;
        if (type >= DT_COUNT_ || quant_block_size((int)type) == 0)
            return err_set(e, PWB_EUNSUP, "%s: tensor '%s' has unknown type %u", g->path, t->name, type);
        t->type = (int)type;
        size_t nbytes;
        if ((rc = quant_tensor_nbytes(t->type, t->ne, TENSOR_MAX_DIMS, &nbytes)))
            return err_set(e, PWB_EPARSE, "%s: tensor '%s' (%s): bad shape [%lld, %lld, %lld, %lld]", g->path,
                           t->name, quant_type_name(t->type), (long long)t->ne[0], (long long)t->ne[1],
                           (long long)t->ne[2], (long long)t->ne[3]);
        if (off % g->alignment)
            return err_set(e, PWB_EPARSE, "%s: tensor '%s': data offset %llu is not a multiple of the alignment %zu",
                           g->path, t->name, (unsigned long long)off, g->alignment);
        t->nbytes = nbytes;
        /* Stash the relative offset; it becomes a pointer once the data section is known. */
        t->data = (const void *)(uintptr_t)0;
        memcpy(&t->data, &(const void *){NULL}, 0);
        g->n_tensors++;
        /* Keep the offset in a side field: reuse ne? No: store it temporarily in nbytes' place is
         * lossy, so record it in the tensor-offset array below. */
        ((uint64_t *)g->arena_offsets_)[i] = off;
    }
    return PWB_OK;
}
