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
    unsigned char b[4] = {0};
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

static int parse_tensors(gguf_file *g, cursor *c, uint64_t n_tensors, uint64_t *offs, pwb_err *e)
{
    int rc;
    for (uint64_t i = 0; i < n_tensors; i++) {
        pwb_tensor *t = &g->tensors[i];
        uint32_t n_dims, type;
        if ((rc = rd_str(c, GGUF_MAX_NAME, &t->name, NULL, "tensor name")))
            return rc;
        for (size_t j = 0; j < g->n_tensors; j++)
            if (strcmp(g->tensors[j].name, t->name) == 0)
                return err_set(e, PWB_EPARSE, "%s: duplicate tensor '%s'", g->path, t->name);
        if ((rc = rd_u32(c, &n_dims, t->name)))
            return rc;
        if (n_dims > TENSOR_MAX_DIMS)
            return err_set(e, PWB_EPARSE, "%s: tensor '%s' has %u dimensions (at most %d)", g->path, t->name,
                           n_dims, TENSOR_MAX_DIMS);
        t->n_dims = (int)n_dims;
        for (int d = 0; d < TENSOR_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t ne;
            if ((rc = rd_u64(c, &ne, t->name)))
                return rc;
            if (ne > (uint64_t)INT64_MAX / 2)
                return err_set(e, PWB_EPARSE, "%s: tensor '%s': dimension %u is %llu", g->path, t->name, d,
                               (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
        }
        if ((rc = rd_u32(c, &type, t->name)) || (rc = rd_u64(c, &offs[i], t->name)))
            return rc;
        if (type >= DT_COUNT_ || quant_block_size((int)type) == 0)
            return err_set(e, PWB_EUNSUP, "%s: tensor '%s' has unknown type %u", g->path, t->name, type);
        t->type = (int)type;
        if (quant_tensor_nbytes(t->type, t->ne, TENSOR_MAX_DIMS, &t->nbytes))
            return err_set(e, PWB_EPARSE, "%s: tensor '%s' (%s): bad shape [%lld, %lld, %lld, %lld]", g->path,
                           t->name, quant_type_name(t->type), (long long)t->ne[0], (long long)t->ne[1],
                           (long long)t->ne[2], (long long)t->ne[3]);
        if (offs[i] % g->alignment)
            return err_set(e, PWB_EPARSE, "%s: tensor '%s': data offset %llu is not a multiple of the alignment %zu",
                           g->path, t->name, (unsigned long long)offs[i], g->alignment);
        g->n_tensors++;
    }
    /* The data section starts at the next multiple of the alignment. */
    size_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    if (n_tensors == 0) {
        g->data_offset = c->pos + pad <= g->size ? c->pos + pad : g->size;
        return PWB_OK;
    }
    if (g->size - c->pos < pad)
        return trunc_err(c, "padding before tensor data");
    g->data_offset = c->pos + pad;
    size_t avail = g->size - g->data_offset;
    for (size_t i = 0; i < g->n_tensors; i++) {
        pwb_tensor *t = &g->tensors[i];
        if (offs[i] > avail || t->nbytes > avail - offs[i])
            return err_set(e, PWB_EPARSE, "%s: tensor '%s': data [%llu, +%zu) lies past the end of the file "
                           "(%zu data bytes)", g->path, t->name, (unsigned long long)offs[i], t->nbytes, avail);
        t->data = g->base + g->data_offset + offs[i];
    }
    /* Overlapping tensors mean a corrupt (or malicious) file. */
    const pwb_tensor **by = malloc(g->n_tensors * sizeof *by);
    if (!by)
        return err_set(e, PWB_ENOMEM, "%s: out of memory", g->path);
    for (size_t i = 0; i < g->n_tensors; i++)
        by[i] = &g->tensors[i];
    qsort(by, g->n_tensors, sizeof *by, cmp_by_offset);
    rc = PWB_OK;
    for (size_t i = 1; i < g->n_tensors; i++) {
        const unsigned char *prev_end = (const unsigned char *)by[i - 1]->data + by[i - 1]->nbytes;
        if ((const unsigned char *)by[i]->data < prev_end) {
            rc = err_set(e, PWB_EPARSE, "%s: tensors '%s' and '%s' overlap", g->path, by[i - 1]->name, by[i]->name);
            break;
        }
    }
    free(by);
    return rc;
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
        return err_set(e, PWB_EPARSE, "%s: truncated GGUF file: %llu metadata pairs and %llu tensors cannot "
                       "fit in %zu bytes", g->path, (unsigned long long)n_kv, (unsigned long long)n_tensors, g->size);

    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors)
        return err_set(e, PWB_ENOMEM, "%s: out of memory", g->path);

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

    g->alignment = 32;
    const gguf_kv *al = gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_T_U32 || al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1)) || al->v.u64 > (1u << 20))
            return err_set(e, PWB_EPARSE, "%s: general.alignment must be a u32 power of two up to 1 MiB", g->path);
        g->alignment = (size_t)al->v.u64;
    }

    uint64_t *offs = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *offs);
    if (!offs)
        return err_set(e, PWB_ENOMEM, "%s: out of memory", g->path);
    rc = parse_tensors(g, &c, n_tensors, offs, e);
    free(offs);
    return rc;
}

static int open_common(gguf_file **out, gguf_file *g, pwb_err *e)
{
    int rc = parse(g, e);
    if (rc) {
        gguf_close(g);
        *out = NULL;
        return rc;
    }
    *out = g;
    return PWB_OK;
}

int gguf_open(gguf_file **out, const char *path, pwb_err *e)
{
    *out = NULL;
    gguf_file *g = calloc(1, sizeof *g);
    if (!g || !(g->path = str_dup(path))) {
        free(g);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    int rc = file_map_open(&g->map, path, e);
    if (rc) {
        gguf_close(g);
        return rc;
    }
    g->base = g->map.data;
    g->size = g->map.size;
    return open_common(out, g, e);
}

int gguf_open_memory(gguf_file **out, const void *data, size_t n, const char *name, pwb_err *e)
{
    *out = NULL;
    gguf_file *g = calloc(1, sizeof *g);
    if (!g || !(g->path = str_dup(name ? name : "<memory>"))) {
        free(g);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    if (n && ((uintptr_t)data % 32)) {
        /* Tensor data must be aligned for the kernels' typed loads: copy once. */
        void *copy = NULL;
        if (posix_memalign(&copy, 32, n))
            copy = NULL;
        if (!copy) {
            gguf_close(g);
            return err_set(e, PWB_ENOMEM, "%s: out of memory", name ? name : "<memory>");
        }
        memcpy(copy, data, n);
        g->owned_copy_ = copy;
        data = copy;
    }
    g->base = data;
    g->size = n;
    if (!data || n == 0) {
        gguf_close(g);
        return err_set(e, PWB_EPARSE, "%s: empty file", name ? name : "<memory>");
    }
    return open_common(out, g, e);
}

void gguf_close(gguf_file *g)
{
    if (!g)
        return;
    arena_free(g->arena_);
    free(g->kv);
    free(g->tensors);
    if (g->map.data)
        file_map_close(&g->map);
    free(g->owned_copy_);
    free(g->path);
    free(g);
}

/* ---- lookups ---- */

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key)
{
    if (!g || !key)
        return NULL;
    for (size_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0)
            return &g->kv[i];
    return NULL;
}

static int kv_is_signed(int t)
{
    return t == GGUF_T_I8 || t == GGUF_T_I16 || t == GGUF_T_I32 || t == GGUF_T_I64;
}

static int kv_is_unsigned(int t)
{
    return t == GGUF_T_U8 || t == GGUF_T_U16 || t == GGUF_T_U32 || t == GGUF_T_U64 || t == GGUF_T_BOOL;
}

/* An integer metadata value as int64 range-checked into [lo, hi]; 0 on success. */
static int kv_int(const gguf_kv *kv, int64_t lo, uint64_t hi, int64_t *s, uint64_t *u)
{
    if (!kv)
        return -1;
    if (kv_is_signed(kv->type)) {
        if (kv->v.i64 < lo || (kv->v.i64 >= 0 && (uint64_t)kv->v.i64 > hi))
            return -1;
        *s = kv->v.i64;
        *u = (uint64_t)kv->v.i64;
        return 0;
    }
    if (kv_is_unsigned(kv->type)) {
        if (kv->v.u64 > hi)
            return -1;
        *s = (int64_t)kv->v.u64;
        *u = kv->v.u64;
        return 0;
    }
    return -1;
}

uint32_t gguf_get_u32(const gguf_file *g, const char *key, uint32_t def)
{
    int64_t s;
    uint64_t u;
    return kv_int(gguf_find_kv(g, key), 0, UINT32_MAX, &s, &u) ? def : (uint32_t)u;
}

int32_t gguf_get_i32(const gguf_file *g, const char *key, int32_t def)
{
    int64_t s;
    uint64_t u;
    return kv_int(gguf_find_kv(g, key), INT32_MIN, INT32_MAX, &s, &u) ? def : (int32_t)s;
}

uint64_t gguf_get_u64(const gguf_file *g, const char *key, uint64_t def)
{
    int64_t s;
    uint64_t u;
    return kv_int(gguf_find_kv(g, key), 0, UINT64_MAX, &s, &u) ? def : u;
}

float gguf_get_f32(const gguf_file *g, const char *key, float def)
{
    const gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return def;
    if (kv->type == GGUF_T_F32 || kv->type == GGUF_T_F64)
        return (float)kv->v.f64;
    if (kv_is_signed(kv->type))
        return (float)kv->v.i64;
    if (kv_is_unsigned(kv->type) && kv->type != GGUF_T_BOOL)
        return (float)kv->v.u64;
    return def;
}

int gguf_get_bool(const gguf_file *g, const char *key, int def)
{
    const gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return def;
    if (kv->type == GGUF_T_BOOL || kv_is_unsigned(kv->type))
        return kv->v.u64 != 0;
    if (kv_is_signed(kv->type))
        return kv->v.i64 != 0;
    return def;
}

const char *gguf_get_str(const gguf_file *g, const char *key, const char *def)
{
    const gguf_kv *kv = gguf_find_kv(g, key);
    return kv && kv->type == GGUF_T_STRING ? kv->str : def;
}

const gguf_arr *gguf_get_arr(const gguf_file *g, const char *key)
{
    const gguf_kv *kv = gguf_find_kv(g, key);
    return kv && kv->type == GGUF_T_ARRAY ? &kv->arr : NULL;
}

static const gguf_arr *arr_of(const gguf_file *g, const char *key, int type, size_t *n)
{
    const gguf_arr *a = gguf_get_arr(g, key);
    if (!a || a->type != type) {
        if (n)
            *n = 0;
        return NULL;
    }
    if (n)
        *n = (size_t)a->n;
    return a;
}

const char *const *gguf_get_arr_strs(const gguf_file *g, const char *key, size_t *n)
{
    const gguf_arr *a = arr_of(g, key, GGUF_T_STRING, n);
    return a ? a->strs : NULL;
}

const float *gguf_get_arr_f32(const gguf_file *g, const char *key, size_t *n)
{
    const gguf_arr *a = arr_of(g, key, GGUF_T_F32, n);
    return a ? a->data : NULL;
}

const int32_t *gguf_get_arr_i32(const gguf_file *g, const char *key, size_t *n)
{
    const gguf_arr *a = arr_of(g, key, GGUF_T_I32, n);
    return a ? a->data : NULL;
}

const pwb_tensor *gguf_find_tensor(const gguf_file *g, const char *name)
{
    if (!g || !name)
        return NULL;
    for (size_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0)
            return &g->tensors[i];
    return NULL;
}
