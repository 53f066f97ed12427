/*
 * Fault-injection registry for test builds (see include/edgecap/fault.h).
 * Compiled to nothing unless EC_FAULT_INJECTION is defined.
 */
#ifdef EC_FAULT_INJECTION

#include "edgecap/fault.h"

#include <pthread.h>
#include <string.h>

#define FAULT_POINTS_MAX 64
#define FAULT_NAME_MAX 64

typedef struct {
    char name[FAULT_NAME_MAX];
    unsigned hits;
    bool armed;
    unsigned skip;
    unsigned count; /* 0 = unlimited */
    unsigned fired;
} fault_point;

static fault_point points[FAULT_POINTS_MAX];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static fault_point *find(const char *name, bool create)
{
    for (size_t i = 0; i < FAULT_POINTS_MAX; i++) {
        if (points[i].name[0] != '\0' && strcmp(points[i].name, name) == 0)
            return &points[i];
    }
    if (!create)
        return NULL;
    for (size_t i = 0; i < FAULT_POINTS_MAX; i++) {
        if (points[i].name[0] == '\0') {
            strncpy(points[i].name, name, FAULT_NAME_MAX - 1);
            return &points[i];
        }
    }
    return NULL;
}

void ec_fault_arm(const char *point, unsigned skip, unsigned count)
{
    pthread_mutex_lock(&lock);
    fault_point *p = find(point, true);
    if (p != NULL) {
        p->armed = true;
        p->skip = skip;
        p->count = count;
        p->fired = 0;
        p->hits = 0;
    }
    pthread_mutex_unlock(&lock);
}

void ec_fault_reset(void)
{
    pthread_mutex_lock(&lock);
    memset(points, 0, sizeof points);
    pthread_mutex_unlock(&lock);
}

bool ec_fault_hit(const char *point)
{
    bool fail = false;
    pthread_mutex_lock(&lock);
    fault_point *p = find(point, true);
    if (p != NULL) {
        unsigned n = p->hits++;
        if (p->armed && n >= p->skip && (p->count == 0 || p->fired < p->count)) {
            p->fired++;
            fail = true;
        }
    }
    pthread_mutex_unlock(&lock);
    return fail;
}

unsigned ec_fault_hits(const char *point)
{
    pthread_mutex_lock(&lock);
    const fault_point *p = find(point, false);
    unsigned n = p != NULL ? p->hits : 0;
    pthread_mutex_unlock(&lock);
    return n;
}

#else
/* ISO C forbids an empty translation unit. */
typedef int ec_fault_unused;
#endif
