/*
 * JSON in secure memory. edgecap parses and writes JSON with cJSON (Debian's
 * libcjson); what passes through it — token answers, transcripts, request
 * bodies carrying blob URLs — must never touch the ordinary heap. So every
 * allocation cJSON makes on a thread comes from that thread's active arena:
 * chunks of locked, guarded secure memory, released and wiped together by
 * ec_json_arena_end. With no arena active, cJSON's allocations fail (a
 * programming error surfaces as a parse failure, never as a heap copy).
 *
 * Used by firmware/auth and firmware/speech.
 */
#ifndef EDGECAP_JSON_H
#define EDGECAP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "edgecap/status.h"

typedef struct ec_json_arena ec_json_arena;

/* Routes cJSON's allocator to the arenas; once per process, before threads. */
void ec_json_global_init(void);

/*
 * Starts an arena of at most `limit_bytes` (0 = 4 MiB) on this thread; it
 * stays active until ec_json_arena_end, which must come in reverse order of
 * the begins (an inner arena, e.g. a token fetch in the middle of a Speech
 * request, interrupts the outer one). EC_ERR_NOMEM.
 */
ec_status ec_json_arena_begin(ec_json_arena **out, size_t limit_bytes);

/* Wipes and releases everything allocated in the arena (every cJSON tree and
 * printed string from it become invalid) and deactivates it. NULL-safe. */
void ec_json_arena_end(ec_json_arena **arena);

/* Parses `len` bytes (need not be NUL-terminated) inside the active arena;
 * NULL when malformed, nested too deep, or the arena is exhausted. */
cJSON *ec_json_parse(const uint8_t *text, size_t len);

/* Prints unformatted into the active arena; NULL on exhaustion. */
char *ec_json_print(const cJSON *item);

/* Typed look-ups: NULL/false when absent or of another type. */
const char *ec_json_string(const cJSON *obj, const char *name);
bool ec_json_number(const cJSON *obj, const char *name, double *out);

#endif
