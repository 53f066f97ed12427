/*
 * JSON arenas (see include/edgecap/json.h). An arena is a list of secure
 * memory chunks with a bump pointer; cJSON's free is a no-op inside it, and
 * ec_json_arena_end releases (and so wipes) every chunk at once.
 */
#include "edgecap/json.h"

#include <string.h>

#include "edgecap/secmem.h"

#define CHUNK_BYTES (64u * 1024)
#define DEFAULT_LIMIT (4u * 1024 * 1024)
#define ALIGN 16u

typedef struct chunk {
    struct chunk *next;
    size_t cap;
    size_t used;
    /* data follows, ALIGN-aligned */
} chunk;

struct ec_json_arena {
    struct ec_json_arena *outer; /* the arena this one interrupted */
    chunk *head;
    size_t total;
    size_t limit;
};

static _Thread_local ec_json_arena *active;

static size_t header_bytes(void)
{
    return (sizeof(chunk) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static void *arena_alloc(size_t size)
{
    ec_json_arena *a = active;
    if (a == NULL || size == 0 || size > a->limit)
        return NULL;
    size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    chunk *c = a->head;
    if (c == NULL || c->cap - c->used < size) {
        size_t cap = size > CHUNK_BYTES ? size : CHUNK_BYTES;
        if (a->total + cap > a->limit)
            return NULL;
        c = ec_secmem_alloc(header_bytes() + cap);
        if (c == NULL)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->total += cap;
    }
    void *p = (uint8_t *)c + header_bytes() + c->used;
    c->used += size;
    return p;
}

static void arena_free(void *p)
{
    (void)p; /* released with the arena */
}

void ec_json_global_init(void)
{
    cJSON_Hooks hooks = {.malloc_fn = arena_alloc, .free_fn = arena_free};
    cJSON_InitHooks(&hooks);
}

ec_status ec_json_arena_begin(ec_json_arena **out, size_t limit_bytes)
{
    *out = NULL;
    ec_json_arena *a = ec_secmem_alloc(sizeof *a);
    if (a == NULL)
        return EC_ERR_NOMEM;
    a->outer = active;
    a->head = NULL;
    a->total = 0;
    a->limit = limit_bytes == 0 ? DEFAULT_LIMIT : limit_bytes;
    active = a;
    *out = a;
    return EC_OK;
}

void ec_json_arena_end(ec_json_arena **arena)
{
    if (arena == NULL || *arena == NULL)
        return;
    ec_json_arena *a = *arena;
    if (active == a)
        active = a->outer;
    for (chunk *c = a->head; c != NULL;) {
        chunk *next = c->next;
        ec_secmem_free(c);
        c = next;
    }
    ec_secmem_free(a);
    *arena = NULL;
}

cJSON *ec_json_parse(const uint8_t *text, size_t len)
{
    if (active == NULL || text == NULL)
        return NULL;
    return cJSON_ParseWithLength((const char *)text, len);
}

char *ec_json_print(const cJSON *item)
{
    if (active == NULL)
        return NULL;
    return cJSON_PrintUnformatted(item);
}

const char *ec_json_string(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

bool ec_json_number(const cJSON *obj, const char *name, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsNumber(v))
        return false;
    *out = v->valuedouble;
    return true;
}
