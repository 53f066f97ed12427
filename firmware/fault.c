/*
 * Fault-injection registry for test builds (see include/edgecap/fault.h).
 * Compiled to nothing unless EC_FAULT_INJECTION is defined.
 */
#ifdef EC_FAULT_INJECTION

#include "edgecap/fault.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAULT_POINTS_MAX 64
#define FAULT_NAME_MAX 64

typedef struct {
    char name[FAULT_NAME_MAX];
    unsigned hits; /* since the last reset, for ec_fault_hits */
    bool armed;
    unsigned skip;
    unsigned count;      /* 0 = unlimited */
    unsigned armed_hits; /* since arming, for `skip` */
    unsigned fired;
} fault_point;

static fault_point points[FAULT_POINTS_MAX];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* A misspelt, over-long or surplus point name would make a test arm a point
 * that never fires and pass for the wrong reason: stop loudly instead. */
static void die(const char *why, const char *name)
{
    fprintf(stderr, "edgecap: fault injection: %s: '%s'\n", why, name != NULL ? name : "(null)");
    abort();
}

/* Called with `lock` held. */
static fault_point *find(const char *name, bool create)
{
    if (name == NULL || name[0] == '\0' || strlen(name) >= FAULT_NAME_MAX)
        die("point name empty or longer than 63 characters", name);
    for (size_t i = 0; i < FAULT_POINTS_MAX; i++) {
        if (points[i].name[0] != '\0' && strcmp(points[i].name, name) == 0)
            return &points[i];
    }
    if (!create)
        return NULL;
    for (size_t i = 0; i < FAULT_POINTS_MAX; i++) {
        if (points[i].name[0] == '\0') {
            memcpy(points[i].name, name, strlen(name) + 1);
            return &points[i];
        }
    }
    die("more than 64 distinct points; raise FAULT_POINTS_MAX", name);
    return NULL;
}

void ec_fault_arm(const char *point, unsigned skip, unsigned count)
{
    pthread_mutex_lock(&lock);
    fault_point *p = find(point, true);
    p->armed = true;
    p->skip = skip;
    p->count = count;
    p->armed_hits = 0;
    p->fired = 0;
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
    p->hits++;
    if (p->armed) {
        unsigned n = p->armed_hits++;
        if (n >= p->skip && (p->count == 0 || p->fired < p->count)) {
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
