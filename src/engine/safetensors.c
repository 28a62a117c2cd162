#include "engine/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/str.h"

static const struct {
    const char *name;
    int type;
} DTYPES[] = {{"F32", DT_F32}, {"F16", DT_F16}, {"BF16", DT_BF16}};

static int dtype_from_name(const char *s)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (strcmp(s, DTYPES[i].name) == 0)
            return DTYPES[i].type;
    return -1;
}

static const char *dtype_name(int type)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (DTYPES[i].type == type)
            return DTYPES[i].name;
    return NULL;
}

/* A JSON number that is an exact non-negative integer up to 2^53. */
static int json_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

typedef struct range {
    uint64_t begin, end;
    size_t idx;
} range;

static int cmp_range(const void *a, const void *b)
{
    const range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int parse_tensor(safetensors_file *f, const cJSON *item, range *r, pwb_err *e)
{
    const char *name = item->string;
    pwb_tensor *t = &f->tensors[f->n_tensors];
    if (!cJSON_IsObject(item))
        return err_set(e, PWB_EPARSE, "%s: tensor '%s': entry is not an object", f->path, name);
    const char *dt = json_str(item, "dtype", NULL);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!dt || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return err_set(e, PWB_EPARSE, "%s: tensor '%s': needs dtype, shape and data_offsets [begin, end]",
                       f->path, name);
    int type = dtype_from_name(dt);
    if (type < 0)
        return err_set(e, PWB_EUNSUP, "%s: tensor '%s': dtype %.32s is not supported (F32, F16, BF16 are)",
                       f->path, name, dt);
    int rank = cJSON_GetArraySize(shape);
    if (rank > TENSOR_MAX_DIMS)
        return err_set(e, PWB_EUNSUP, "%s: tensor '%s': rank %d exceeds %d", f->path, name, rank, TENSOR_MAX_DIMS);
    if (!(t->name = str_dup(name)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    t->type = type;
    t->n_dims = rank;
    for (int d = 0; d < TENSOR_MAX_DIMS; d++)
        t->ne[d] = 1;
    uint64_t elems = 1;
    int d = 0;
    for (const cJSON *v = shape->child; v; v = v->next, d++) {
        uint64_t n;
        if (json_u64(v, &n) || n > (1ull << 40))
            return err_set(e, PWB_EPARSE, "%s: tensor '%s': bad shape", f->path, name);
        t->ne[rank - 1 - d] = (int64_t)n;   /* GGUF order: the last dimension is contiguous */
        if (n && elems > UINT64_MAX / n)
            return err_set(e, PWB_EPARSE, "%s: tensor '%s': shape overflows", f->path, name);
        elems *= n;
    }
    uint64_t esize = quant_type_size(type);
    if (elems > UINT64_MAX / esize)
        return err_set(e, PWB_EPARSE, "%s: tensor '%s': shape overflows", f->path, name);
    if (json_u64(offs->child, &r->begin) || json_u64(offs->child->next, &r->end) || r->end < r->begin)
        return err_set(e, PWB_EPARSE, "%s: tensor '%s': bad data_offsets", f->path, name);
    uint64_t avail = f->size - f->data_offset;
    if (r->end > avail)
        return err_set(e, PWB_EPARSE, "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data (%llu bytes)",
                       f->path, name, (unsigned long long)r->begin, (unsigned long long)r->end,
                       (unsigned long long)avail);
    if (r->end - r->begin != elems * esize)
        return err_set(e, PWB_EPARSE, "%s: tensor '%s': %llu data bytes but shape x %s needs %llu", f->path, name,
                       (unsigned long long)(r->end - r->begin), dt, (unsigned long long)(elems * esize));
    t->nbytes = (size_t)(r->end - r->begin);
    t->data = f->base + f->data_offset + r->begin;
    r->idx = f->n_tensors;
    f->n_tensors++;
    return PWB_OK;
}

static int parse_meta(safetensors_file *f, const cJSON *meta, pwb_err *e)
{
    if (!cJSON_IsObject(meta))
        return err_set(e, PWB_EPARSE, "%s: __metadata__ is not an object", f->path);
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->meta_keys = calloc(n + 1, sizeof *f->meta_keys);
    f->meta_vals = calloc(n + 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (const cJSON *v = meta->child; v; v = v->next) {
        if (!cJSON_IsString(v) || !v->valuestring)
            return err_set(e, PWB_EPARSE, "%s: __metadata__ value '%s' is not a string", f->path, v->string);
        f->meta_keys[f->n_meta] = str_dup(v->string);
        f->meta_vals[f->n_meta] = str_dup(v->valuestring);
        if (!f->meta_keys[f->n_meta] || !f->meta_vals[f->n_meta])
            return err_set(e, PWB_ENOMEM, "out of memory");
        f->n_meta++;
    }
    return PWB_OK;
}

/* Tensors whose data is not aligned for their element type are copied into owned memory, so the
 * kernels can use typed loads (and UBSan stays quiet). */
static int align_tensors(safetensors_file *f, pwb_err *e)
{
    size_t total = 0;
    for (size_t i = 0; i < f->n_tensors; i++)
        if ((uintptr_t)f->tensors[i].data % quant_type_size(f->tensors[i].type))
            total += (f->tensors[i].nbytes + 63) & ~(size_t)63;
    if (!total)
        return PWB_OK;
    unsigned char *buf = aligned_alloc(64, total);
    if (!buf)
        return err_set(e, PWB_ENOMEM, "%s: out of memory", f->path);
    f->aligned_copy_ = buf;
    for (size_t i = 0; i < f->n_tensors; i++) {
        pwb_tensor *t = &f->tensors[i];
        if ((uintptr_t)t->data % quant_type_size(t->type)) {
            memcpy(buf, t->data, t->nbytes);
            t->data = buf;
            buf += (t->nbytes + 63) & ~(size_t)63;
        }
    }
    return PWB_OK;
}

static int parse(safetensors_file *f, pwb_err *e)
{
    if (f->size < 8)
        return err_set(e, PWB_EPARSE, "%s: truncated safetensors file (%zu bytes)", f->path, f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | f->base[i];
    if (hlen > SAFETENSORS_MAX_HEADER)
        return err_set(e, PWB_ERANGE, "%s: header of %llu bytes exceeds the limit %u", f->path,
                       (unsigned long long)hlen, SAFETENSORS_MAX_HEADER);
    if (hlen < 2 || hlen > f->size - 8)
        return err_set(e, PWB_EPARSE, "%s: header length %llu does not fit the file (%zu bytes)", f->path,
                       (unsigned long long)hlen, f->size);
    f->data_offset = 8 + (size_t)hlen;
    cJSON *root = json_parse((const char *)f->base + 8, (size_t)hlen, f->path, e);
    if (!root)
        return e ? e->code : PWB_EPARSE;
    int rc = PWB_OK;
    range *ranges = NULL;
    int n = cJSON_GetArraySize(root);
    if (!cJSON_IsObject(root)) {
        rc = err_set(e, PWB_EPARSE, "%s: header is not a JSON object", f->path);
        goto done;
    }
    if (n > SAFETENSORS_MAX_TENSORS) {
        rc = err_set(e, PWB_ERANGE, "%s: %d header entries exceed the limit %d", f->path, n, SAFETENSORS_MAX_TENSORS);
        goto done;
    }
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    ranges = calloc((size_t)n + 1, sizeof *ranges);
    if (!f->tensors || !ranges) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    for (const cJSON *item = root->child; item; item = item->next) {
        if (!item->string) {
            rc = err_set(e, PWB_EPARSE, "%s: header entry without a name", f->path);
            goto done;
        }
        if (strcmp(item->string, "__metadata__") == 0) {
            if (f->meta_keys) {
                rc = err_set(e, PWB_EPARSE, "%s: duplicate __metadata__", f->path);
                goto done;
            }
            if ((rc = parse_meta(f, item, e)))
                goto done;
            continue;
        }
        if (safetensors_find_tensor(f, item->string)) {
            rc = err_set(e, PWB_EPARSE, "%s: duplicate tensor '%s'", f->path, item->string);
            goto done;
        }
        if ((rc = parse_tensor(f, item, &ranges[f->n_tensors], e)))
            goto done;
    }
    qsort(ranges, f->n_tensors, sizeof *ranges, cmp_range);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (ranges[i].begin < ranges[i - 1].end) {
            rc = err_set(e, PWB_EPARSE, "%s: tensors '%s' and '%s' overlap", f->path,
                         f->tensors[ranges[i - 1].idx].name, f->tensors[ranges[i].idx].name);
            goto done;
        }
    rc = align_tensors(f, e);
done:
    free(ranges);
    cJSON_Delete(root);
    return rc;
}

static int open_common(safetensors_file **out, safetensors_file *f, pwb_err *e)
{
    int rc = parse(f, e);
    if (rc) {
        safetensors_close(f);
        return rc;
    }
    *out = f;
    return PWB_OK;
}

int safetensors_open(safetensors_file **out, const char *path, pwb_err *e)
{
    *out = NULL;
    safetensors_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = str_dup(path))) {
        free(f);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    int rc = file_map_open(&f->map, path, e);
    if (rc) {
        safetensors_close(f);
        return rc;
    }
    f->base = f->map.data;
    f->size = f->map.size;
    return open_common(out, f, e);
}

int safetensors_open_memory(safetensors_file **out, const void *data, size_t n, const char *name,
                            pwb_err *e)
{
    *out = NULL;
    safetensors_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = str_dup(name ? name : "<memory>"))) {
        free(f);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    f->base = data;
    f->size = data ? n : 0;
    return open_common(out, f, e);
}

void safetensors_close(safetensors_file *f)
{
    if (!f)
        return;
    /* The array has a spare slot past n_tensors; a tensor that failed mid-parse left its name there. */
    for (size_t i = 0; f->tensors && i <= f->n_tensors; i++)
        free((char *)f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->aligned_copy_);
    if (f->map.data)
        file_map_close(&f->map);
    free(f->path);
    free(f);
}

const pwb_tensor *safetensors_find_tensor(const safetensors_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *safetensors_get_meta(const safetensors_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_vals[i];
    return NULL;
}

/* ---- writer ---- */

static int build_header(const pwb_tensor *ts, size_t n, const char *const *meta, size_t n_meta, char **out,
                        pwb_err *e)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = PWB_OK;
    if (n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; m && i < n_meta; i++)
            if (!cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1]))
                m = NULL;
        if (!m) {
            rc = err_set(e, PWB_ENOMEM, "out of memory");
            goto done;
        }
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const pwb_tensor *t = &ts[i];
        const char *dt = dtype_name(t->type);
        if (!dt) {
            rc = err_set(e, PWB_EUNSUP, "tensor '%s': safetensors_write supports F32, F16 and BF16", t->name);
            goto done;
        }
        if (t->n_dims < 0 || t->n_dims > TENSOR_MAX_DIMS) {
            rc = err_set(e, PWB_EINVAL, "tensor '%s': bad rank %d", t->name, t->n_dims);
            goto done;
        }
        size_t nbytes;
        if (quant_tensor_nbytes(t->type, t->ne, t->n_dims, &nbytes) || nbytes > t->nbytes) {
            rc = err_set(e, PWB_EINVAL, "tensor '%s': shape does not match its data", t->name);
            goto done;
        }
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = o ? cJSON_AddArrayToObject(o, "shape") : NULL;
        cJSON *offs = o ? cJSON_AddArrayToObject(o, "data_offsets") : NULL;
        if (!o || !shape || !offs || !cJSON_AddStringToObject(o, "dtype", dt)) {
            rc = err_set(e, PWB_ENOMEM, "out of memory");
            goto done;
        }
        for (int d = t->n_dims - 1; d >= 0; d--)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->ne[d]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nbytes)));
        off += nbytes;
    }
    *out = cJSON_PrintUnformatted(root);
    if (!*out)
        rc = err_set(e, PWB_ENOMEM, "out of memory");
done:
    cJSON_Delete(root);
    return rc;
}

int safetensors_write(const char *path, const pwb_tensor *tensors, size_t n,
                      const char *const *meta, size_t n_meta, pwb_err *e)
{
    char *json = NULL;
    int rc = build_header(tensors, n, meta, n_meta, &json, e);
    if (rc)
        return rc;
    size_t hlen = strlen(json);
    size_t padded = (hlen + 7) & ~(size_t)7;
    pwb_buf b;
    buf_init(&b);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    rc = buf_append(&b, len8, 8) || buf_append(&b, json, hlen);
    for (size_t i = hlen; !rc && i < padded; i++)
        rc = buf_putc(&b, ' ');
    for (size_t i = 0; !rc && i < n; i++) {
        size_t nbytes;
        quant_tensor_nbytes(tensors[i].type, tensors[i].ne, tensors[i].n_dims, &nbytes);
        rc = buf_append(&b, tensors[i].data, nbytes);
    }
    free(json);
    if (rc) {
        buf_free(&b);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", path);
    }
    rc = file_write_atomic(path, b.data, b.len, e);
    buf_free(&b);
    return rc;
}
