/*
 * Batch transcription jobs for BYOS uploads (see include/edgecap/speech.h).
 *
 * State: pending blobs and jobs, in SPOOL/speech-jobs.json (written through
 * ec_spool_put_file: tmp, fsync, rename, directory fsync). Pending blobs are
 * changed by the uploader (enqueue) and by the batch thread; jobs only by
 * the batch thread. Both under `lock`; requests go out without it.
 *
 * A job is saved as "Submitting" with `posting` set before its POST, under
 * a displayName unique to the attempt ("... #N"). When the outcome of a POST
 * is unknown (a crash, a lost answer), the next round first lists the
 * service's transcriptions with filter=displayName eq '...' and adopts the
 * job it finds; only when there is none is the window posted again. So a
 * window is submitted again only after its job failed.
 */
#include "edgecap/speech.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgecap/blob.h"
#include "edgecap/json.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"
#include "edgecap/secret.h"

#define STATE_MAX (8u * 1024 * 1024)
#define KEEP_FINISHED 50
#define KEEP_FINISHED_BLOBS 2000
#define POLL_DEFAULT_S 30
#define POLL_MAX_S 600
#define RETRY_MIN_S 5
#define RETRY_MAX_S 600
#define IDLE_MS (60 * 1000)
#define ANSWER_MAX (1024 * 1024)

typedef enum {
    JOB_SUBMITTING = 0, /* saved before the POST; no id yet */
    JOB_NOT_STARTED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    JOB_FAILED,   /* failed; will be submitted again */
    JOB_GIVEN_UP, /* failed EC_BATCH_ATTEMPTS times */
    JOB_EXPIRED,  /* the service deleted it (time to live) before we saw it end */
    JOB_STATES
} job_state;

static const char *const state_names[JOB_STATES] = {
    "Submitting", "NotStarted", "Running", "Succeeded", "Failed", "GivenUp", "Expired"};

static bool finished(int state)
{
    return state == JOB_SUCCEEDED || state == JOB_GIVEN_UP || state == JOB_EXPIRED;
}

typedef struct {
    char endpoint[EC_CFG_URL_MAX];
    char blob[EC_BLOB_NAME_MAX];
    uint64_t seq;
    int64_t start_ms;
} item;

typedef struct {
    int state;
    char display[160];
    char self[EC_CFG_URL_MAX];
    char files[EC_CFG_URL_MAX];
    int attempts;
    bool posting; /* a POST of this attempt may have reached the service */
    char error[64];
    int64_t window_start_ms, window_end_ms; /* UTC: first and last blob's start */
    int64_t submitted_ms, finished_ms;      /* UTC */
    int64_t next_ms;                        /* UTC: next POST or poll */
    unsigned result_files;
    item *items;
    size_t n_items;
} job;

struct ec_batch {
    const ec_config *cfg;
    ec_auth *auth;
    ec_audit *audit;
    ec_spool *spool;
    ec_transport *transport;
    bool read_only;

    pthread_mutex_t lock;
    item *pending;
    size_t n_pending, cap_pending;
    int64_t window_opened_ms; /* UTC, when the oldest pending blob arrived */
    job *jobs;
    size_t n_jobs;
    ec_batch_stats stats;

    pthread_t thread;
    bool started, stop, kicked, submit_now;
    pthread_cond_t wake;
};

static int64_t utc_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void iso8601(int64_t ms, char *out, size_t out_len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void job_free(job *j)
{
    free(j->items);
    j->items = NULL;
    j->n_items = 0;
}

/* ---- state file --------------------------------------------------------------- */

static void json_item(cJSON *arr, const item *it)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "endpoint", it->endpoint);
    cJSON_AddStringToObject(o, "blob", it->blob);
    cJSON_AddNumberToObject(o, "seq", (double)it->seq);
    cJSON_AddNumberToObject(o, "start", (double)it->start_ms);
    cJSON_AddItemToArray(arr, o);
}

static bool read_item(const cJSON *o, item *it)
{
    const char *ep = ec_json_string(o, "endpoint"), *blob = ec_json_string(o, "blob");
    double seq, start;
    if (ep == NULL || blob == NULL || !ec_json_number(o, "seq", &seq) ||
        !ec_json_number(o, "start", &start) || strlen(ep) >= sizeof it->endpoint ||
        strlen(blob) >= sizeof it->blob || !(seq >= 0 && seq <= 9007199254740991.0) ||
        !(start >= 0 && start <= 9007199254740991.0))
        return false;
    snprintf(it->endpoint, sizeof it->endpoint, "%s", ep);
    snprintf(it->blob, sizeof it->blob, "%s", blob);
    it->seq = (uint64_t)seq;
    it->start_ms = (int64_t)start;
    return true;
}

/* Writes the whole state; lock held. */
static ec_status save(ec_batch *b)
{
    ec_json_arena *arena = NULL;
    ec_status st = ec_json_arena_begin(&arena, STATE_MAX * 4);
    if (st != EC_OK)
        return st;
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, "version", 1);
    cJSON_AddStringToObject(doc, "device", b->cfg->device.id);
    cJSON_AddNumberToObject(doc, "windowOpened", (double)b->window_opened_ms);
    cJSON *pend = cJSON_AddArrayToObject(doc, "pending");
    for (size_t i = 0; i < b->n_pending; i++)
        json_item(pend, &b->pending[i]);
    cJSON *jobs = cJSON_AddArrayToObject(doc, "jobs");
    for (size_t k = 0; k < b->n_jobs; k++) {
        const job *j = &b->jobs[k];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "state", state_names[j->state]);
        cJSON_AddStringToObject(o, "displayName", j->display);
        cJSON_AddStringToObject(o, "self", j->self);
        cJSON_AddStringToObject(o, "files", j->files);
        cJSON_AddNumberToObject(o, "attempts", j->attempts);
        cJSON_AddBoolToObject(o, "posting", j->posting);
        cJSON_AddStringToObject(o, "error", j->error);
        cJSON_AddNumberToObject(o, "windowStart", (double)j->window_start_ms);
        cJSON_AddNumberToObject(o, "windowEnd", (double)j->window_end_ms);
        cJSON_AddNumberToObject(o, "submitted", (double)j->submitted_ms);
        cJSON_AddNumberToObject(o, "finished", (double)j->finished_ms);
        cJSON_AddNumberToObject(o, "next", (double)j->next_ms);
        cJSON_AddNumberToObject(o, "resultFiles", j->result_files);
        cJSON *items = cJSON_AddArrayToObject(o, "blobs");
        for (size_t i = 0; i < j->n_items; i++)
            json_item(items, &j->items[i]);
        cJSON_AddItemToArray(jobs, o);
    }
    char *text = ec_json_print(doc);
    if (text == NULL)
        st = EC_ERR_NOMEM;
    else
        st = ec_spool_put_file(b->spool, EC_BATCH_STATE_FILE, (const uint8_t *)text, strlen(text));
    ec_json_arena_end(&arena);
    if (st != EC_OK)
        ec_log(EC_LOG_ERROR, "batch_state_write_failed", EC_LOG_STATUS(st));
    return st;
}

static int state_from_name(const char *name)
{
    for (int i = 0; name != NULL && i < JOB_STATES; i++)
        if (strcmp(state_names[i], name) == 0)
            return i;
    return -1;
}

static ec_status load(ec_batch *b)
{
    uint8_t *text = NULL;
    size_t len = 0;
    ec_status st = ec_spool_get_file(b->spool, EC_BATCH_STATE_FILE, STATE_MAX, &text, &len);
    if (st == EC_ERR_NOT_FOUND)
        return EC_OK;
    if (st != EC_OK)
        return st;
    ec_json_arena *arena = NULL;
    st = ec_json_arena_begin(&arena, STATE_MAX * 8);
    if (st != EC_OK) {
        free(text);
        return st;
    }
    st = EC_ERR_PROTOCOL;
    cJSON *doc = ec_json_parse(text, len);
    double version = 0, opened = 0;
    const cJSON *pend = cJSON_GetObjectItemCaseSensitive(doc, "pending");
    const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(doc, "jobs");
    if (!ec_json_number(doc, "version", &version) || version != 1 || !cJSON_IsArray(pend) ||
        !cJSON_IsArray(jobs) || !ec_json_number(doc, "windowOpened", &opened))
        goto out;
    b->window_opened_ms = (int64_t)opened;
    size_t np = (size_t)cJSON_GetArraySize(pend), nj = (size_t)cJSON_GetArraySize(jobs);
    b->pending = np > 0 ? calloc(np, sizeof *b->pending) : NULL;
    b->jobs = nj > 0 ? calloc(nj, sizeof *b->jobs) : NULL;
    if ((np > 0 && b->pending == NULL) || (nj > 0 && b->jobs == NULL)) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    b->cap_pending = np;
    const cJSON *o;
    cJSON_ArrayForEach(o, pend)
    {
        if (!read_item(o, &b->pending[b->n_pending]))
            goto out;
        b->n_pending++;
    }
    cJSON_ArrayForEach(o, jobs)
    {
        job *j = &b->jobs[b->n_jobs];
        const char *display = ec_json_string(o, "displayName"), *self = ec_json_string(o, "self"),
                   *files = ec_json_string(o, "files"), *error = ec_json_string(o, "error");
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(o, "blobs");
        const cJSON *posting = cJSON_GetObjectItemCaseSensitive(o, "posting");
        double attempts, ws, we, sub, fin, next, rf;
        j->state = state_from_name(ec_json_string(o, "state"));
        if (j->state < 0 || display == NULL || self == NULL || files == NULL || error == NULL ||
            !cJSON_IsBool(posting) || !cJSON_IsArray(items) ||
            !ec_json_number(o, "attempts", &attempts) || !ec_json_number(o, "windowStart", &ws) ||
            !ec_json_number(o, "windowEnd", &we) || !ec_json_number(o, "submitted", &sub) ||
            !ec_json_number(o, "finished", &fin) || !ec_json_number(o, "next", &next) ||
            !ec_json_number(o, "resultFiles", &rf) || strlen(display) >= sizeof j->display ||
            strlen(self) >= sizeof j->self || strlen(files) >= sizeof j->files ||
            cJSON_GetArraySize(items) < 1 ||
            cJSON_GetArraySize(items) > EC_BATCH_CONTENT_URLS_MAX ||
            !(attempts >= 0 && attempts <= EC_BATCH_ATTEMPTS) || !(rf >= 0 && rf <= 1e6) ||
            !(ws >= 0 && ws < 1e15) || !(we >= 0 && we < 1e15) || !(sub >= 0 && sub < 1e15) ||
            !(fin >= 0 && fin < 1e15) || !(next >= 0 && next < 1e15))
            goto out;
        snprintf(j->display, sizeof j->display, "%s", display);
        snprintf(j->self, sizeof j->self, "%s", self);
        snprintf(j->files, sizeof j->files, "%s", files);
        snprintf(j->error, sizeof j->error, "%s", error);
        j->attempts = (int)attempts;
        j->posting = cJSON_IsTrue(posting);
        j->window_start_ms = (int64_t)ws;
        j->window_end_ms = (int64_t)we;
        j->submitted_ms = (int64_t)sub;
        j->finished_ms = (int64_t)fin;
        j->next_ms = (int64_t)next;
        j->result_files = (unsigned)rf;
        size_t ni = (size_t)cJSON_GetArraySize(items);
        j->items = ni > 0 ? calloc(ni, sizeof *j->items) : NULL;
        b->n_jobs++;
        if (ni > 0 && j->items == NULL) {
            st = EC_ERR_NOMEM;
            goto out;
        }
        const cJSON *io;
        cJSON_ArrayForEach(io, items)
        {
            if (!read_item(io, &j->items[j->n_items]))
                goto out;
            j->n_items++;
        }
    }
    st = EC_OK;
out:
    ec_json_arena_end(&arena);
    free(text);
    if (st == EC_ERR_PROTOCOL)
        ec_log(EC_LOG_ERROR, "batch_state_invalid", EC_LOG_STR("file", EC_BATCH_STATE_FILE),
               EC_LOG_STR("effect", "left in place; batch transcription stopped"));
    return st;
}

/* ---- open / close ----------------------------------------------------------------- */

ec_status ec_batch_open(ec_batch **out, const ec_batch_params *p)
{
    *out = NULL;
    ec_batch *b = calloc(1, sizeof *b);
    if (b == NULL)
        return EC_ERR_NOMEM;
    b->cfg = p->cfg;
    b->auth = p->auth;
    b->audit = p->audit;
    b->spool = p->spool;
    b->read_only = p->read_only;
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->wake, &ca);
    pthread_condattr_destroy(&ca);
    ec_status st = load(b);
    if (st == EC_OK && !p->read_only) {
        ec_transport_params tp = {.cfg = p->cfg,
                                  .client_cert_der = p->cert_der,
                                  .client_cert_len = p->cert_len,
                                  .client_key_der = p->key_der,
                                  .client_key_len = p->key_len,
                                  .audit = p->audit,
                                  .client_key_store = p->key_store};
        st = ec_transport_open(&b->transport, &tp);
    }
    if (st != EC_OK) {
        ec_batch_close(&b);
        return st;
    }
    *out = b;
    return EC_OK;
}

void ec_batch_close(ec_batch **bp)
{
    if (bp == NULL || *bp == NULL)
        return;
    ec_batch *b = *bp;
    ec_batch_stop(b);
    ec_transport_close(&b->transport);
    for (size_t k = 0; k < b->n_jobs; k++)
        job_free(&b->jobs[k]);
    free(b->jobs);
    free(b->pending);
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->lock);
    free(b);
    *bp = NULL;
}

/* ---- enqueue ------------------------------------------------------------------------- */

static bool known_blob(const ec_batch *b, const char *blob)
{
    for (size_t i = 0; i < b->n_pending; i++)
        if (strcmp(b->pending[i].blob, blob) == 0)
            return true;
    for (size_t k = 0; k < b->n_jobs; k++) {
        const job *j = &b->jobs[k];
        if (j->state == JOB_GIVEN_UP)
            continue;
        for (size_t i = 0; i < j->n_items; i++)
            if (strcmp(j->items[i].blob, blob) == 0)
                return true;
    }
    return false;
}

ec_status ec_batch_enqueue(ec_batch *b, const char *endpoint, const char *blob_name,
                           const ec_segment_meta *meta)
{
    if (b->read_only)
        return EC_ERR_BUSY;
    if (strlen(endpoint) >= EC_CFG_URL_MAX || strlen(blob_name) >= EC_BLOB_NAME_MAX)
        return EC_ERR_INVALID;
    pthread_mutex_lock(&b->lock);
    ec_status st = EC_OK;
    if (known_blob(b, blob_name))
        goto out;
    if (b->n_pending == b->cap_pending) {
        size_t cap = b->cap_pending == 0 ? 16 : b->cap_pending * 2;
        item *grown = realloc(b->pending, cap * sizeof *grown);
        if (grown == NULL) {
            st = EC_ERR_NOMEM;
            goto out;
        }
        b->pending = grown;
        b->cap_pending = cap;
    }
    item *it = &b->pending[b->n_pending];
    memset(it, 0, sizeof *it);
    snprintf(it->endpoint, sizeof it->endpoint, "%s", endpoint);
    snprintf(it->blob, sizeof it->blob, "%s", blob_name);
    it->seq = meta->sequence;
    it->start_ms = meta->start_utc_ms;
    int64_t opened = b->window_opened_ms;
    if (b->n_pending == 0)
        b->window_opened_ms = utc_ms();
    b->n_pending++;
    st = save(b);
    if (st != EC_OK) {
        b->n_pending--; /* not durable: the caller keeps the segment */
        b->window_opened_ms = opened;
    }
    bool due = (int)b->n_pending >= b->cfg->speech.batch_max_files;
    if (due)
        b->kicked = true;
    pthread_cond_signal(&b->wake);
out:
    pthread_mutex_unlock(&b->lock);
    return st;
}

/* ---- requests -------------------------------------------------------------------------- */

static const char *const punct_names[] = {"None", "Dictated", "Automatic", "DictatedAndAutomatic"};
static const char *const profanity_names[] = {"None", "Removed", "Tags", "Masked"};

/* https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB[?SAS]; each path
 * segment percent-encoded. */
static cJSON *content_url(const ec_config *cfg, const item *it)
{
    size_t cap = strlen(it->endpoint) + strlen(cfg->upload.container) + strlen(it->blob) * 3 + 8;
    ec_secret *sas = cfg->speech.content_sas;
    if (sas != NULL)
        cap += ec_secret_len(sas) + 1;
    char *url = cJSON_malloc(cap); /* in the arena: the SAS stays in locked memory */
    if (url == NULL)
        return NULL;
    int n = snprintf(url, cap, "%s/%s", it->endpoint, cfg->upload.container);
    const char *p = it->blob;
    while (*p != '\0' && n > 0 && (size_t)n < cap) {
        size_t seg = strcspn(p, "/");
        char part[EC_BLOB_NAME_MAX], enc[EC_BLOB_NAME_MAX * 3];
        snprintf(part, sizeof part, "%.*s", (int)seg, p);
        ec_url_encode(part, enc, sizeof enc);
        n += snprintf(url + n, cap - (size_t)n, "/%s", enc);
        p += seg;
        if (*p == '/')
            p++;
    }
    if (sas != NULL && n > 0 && (size_t)n < cap) {
        const char *q = (const char *)ec_secret_bytes(sas);
        snprintf(url + n, cap - (size_t)n, "?%s", q[0] == '?' ? q + 1 : q);
    }
    cJSON *s = cJSON_CreateString(url);
    return s;
}

static cJSON *submit_body(const ec_batch *b, const job *j, const char *name)
{
    const ec_config *cfg = b->cfg;
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "displayName", name);
    cJSON_AddStringToObject(doc, "locale", cfg->speech.locale);
    cJSON *urls = cJSON_AddArrayToObject(doc, "contentUrls");
    for (size_t i = 0; i < j->n_items; i++) {
        cJSON *u = content_url(cfg, &j->items[i]);
        if (u == NULL)
            return NULL;
        cJSON_AddItemToArray(urls, u);
    }
    cJSON *props = cJSON_AddObjectToObject(doc, "properties");
    cJSON_AddNumberToObject(props, "timeToLiveHours", cfg->speech.time_to_live_hours);
    cJSON_AddBoolToObject(props, "wordLevelTimestampsEnabled", cfg->speech.word_level_timestamps);
    cJSON_AddStringToObject(props, "punctuationMode", punct_names[cfg->speech.punctuation_mode]);
    cJSON_AddStringToObject(props, "profanityFilterMode",
                            profanity_names[cfg->speech.profanity_filter_mode]);
    cJSON *channels = cJSON_AddArrayToObject(props, "channels");
    for (int c = 0; c < cfg->capture.channels && c < 2; c++)
        cJSON_AddItemToArray(channels, cJSON_CreateNumber(c));
    if (cfg->speech.diarization) {
        cJSON *d = cJSON_AddObjectToObject(props, "diarization");
        cJSON_AddBoolToObject(d, "enabled", 1);
        cJSON_AddNumberToObject(d, "maxSpeakers", cfg->speech.max_speakers);
    }
    char ws[32], we[32], first[24], last[24];
    iso8601(j->window_start_ms, ws, sizeof ws);
    iso8601(j->window_end_ms, we, sizeof we);
    snprintf(first, sizeof first, "%" PRIu64, j->items[0].seq);
    snprintf(last, sizeof last, "%" PRIu64, j->items[j->n_items - 1].seq);
    cJSON *custom = cJSON_AddObjectToObject(doc, "customProperties");
    cJSON_AddStringToObject(custom, "device", cfg->device.id);
    cJSON_AddStringToObject(custom, "windowStart", ws);
    cJSON_AddStringToObject(custom, "windowEnd", we);
    cJSON_AddStringToObject(custom, "firstSequence", first);
    cJSON_AddStringToObject(custom, "lastSequence", last);
    return doc;
}

static bool https_on_endpoint(const char *url, const char *endpoint)
{
    size_t n = strlen(endpoint);
    return strncmp(url, endpoint, n) == 0 && url[n] == '/';
}

/* One request to Speech with the batch transport; resp owned by caller. */
static ec_status speech_call(ec_batch *b, const char *method, const char *url, const char *body,
                             ec_http_response *resp)
{
    static const char *const json_headers[] = {"Content-Type: application/json",
                                               "Accept: application/json", NULL};
    static const char *const get_headers[] = {"Accept: application/json", NULL};
    ec_http_request req = {.method = method,
                           .url = url,
                           .headers = body != NULL ? json_headers : get_headers,
                           .body = (const uint8_t *)body,
                           .body_len = body != NULL ? strlen(body) : 0,
                           .body_max = ANSWER_MAX};
    return ec_auth_request(b->auth, EC_SCOPE_SPEECH, b->transport, &req, resp);
}

static int64_t clamp_s(long s, long lo, long hi)
{
    return s < lo ? lo : s > hi ? hi : s;
}

/* A failed attempt (submit refused, or the job ended Failed). Lock held. */
static void job_failed(ec_batch *b, job *j, const char *code, const char *reason)
{
    snprintf(j->error, sizeof j->error, "%s", code[0] != '\0' ? code : "unknown");
    int64_t now = utc_ms();
    if (j->attempts >= EC_BATCH_ATTEMPTS) {
        j->state = JOB_GIVEN_UP;
        j->finished_ms = now;
        b->stats.failed++;
        ec_log(EC_LOG_ERROR, "batch_job_given_up", EC_LOG_STR("job", j->display),
               EC_LOG_STR("code", j->error), EC_LOG_STR("reason", reason),
               EC_LOG_INT("attempts", j->attempts), EC_LOG_UINT("blobs", j->n_items));
        ec_audit(b->audit, "batch_job_given_up", EC_LOG_STR("job", j->display),
                 EC_LOG_STR("self", j->self), EC_LOG_STR("code", j->error),
                 EC_LOG_INT("attempts", j->attempts), EC_LOG_UINT("blobs", j->n_items));
    } else {
        j->state = JOB_FAILED;
        j->next_ms = now + (int64_t)RETRY_MIN_S * 1000 * j->attempts;
        ec_log(EC_LOG_WARN, "batch_job_failed", EC_LOG_STR("job", j->display),
               EC_LOG_STR("code", j->error), EC_LOG_STR("reason", reason),
               EC_LOG_INT("attempt", j->attempts),
               EC_LOG_STR("effect", "the window is submitted again"));
        ec_audit(b->audit, "batch_job_failed", EC_LOG_STR("job", j->display),
                 EC_LOG_STR("self", j->self), EC_LOG_STR("code", j->error),
                 EC_LOG_INT("attempt", j->attempts));
    }
    j->self[0] = j->files[0] = '\0';
}

/* The displayName of the job's current attempt: unique per attempt, so a
 * lookup by name finds this attempt and never an earlier failed one. */
static void attempt_name(const job *j, char *out, size_t out_len)
{
    snprintf(out, out_len, "%s #%d", j->display, j->attempts);
}

/*
 * A POST of this attempt may have reached the service (a crash or a lost
 * answer): look for a job with its name before posting again. 1 = found
 * and adopted, 0 = not there, -1 = could not look (try later).
 */
static int adopt_existing(ec_batch *b, job *j)
{
    char name[200], filter[256], filter_q[768], url[EC_CFG_URL_MAX + 1024];
    attempt_name(j, name, sizeof name);
    snprintf(filter, sizeof filter, "displayName eq '%s'", name);
    ec_url_encode(filter, filter_q, sizeof filter_q);
    snprintf(url, sizeof url, "%s/speechtotext/transcriptions?api-version=%s&filter=%s",
             b->cfg->speech.endpoint, EC_SPEECH_API_VERSION, filter_q);
    ec_http_response resp = {0};
    ec_json_arena *arena = NULL;
    if (ec_json_arena_begin(&arena, 0) != EC_OK)
        return -1;
    int found = -1;
    ec_status st = speech_call(b, "GET", url, NULL, &resp);
    const cJSON *values = NULL;
    if (st == EC_OK && resp.status == 200)
        values =
            cJSON_GetObjectItemCaseSensitive(ec_json_parse(resp.body, resp.body_len), "values");
    if (cJSON_IsArray(values)) {
        found = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, values)
        {
            const char *dn = ec_json_string(t, "displayName"), *self = ec_json_string(t, "self");
            const char *files =
                ec_json_string(cJSON_GetObjectItemCaseSensitive(t, "links"), "files");
            const char *ep = b->cfg->speech.endpoint;
            if (dn == NULL || strcmp(dn, name) != 0 || self == NULL ||
                !https_on_endpoint(self, ep) || strlen(self) >= sizeof j->self ||
                (files != NULL &&
                 (!https_on_endpoint(files, ep) || strlen(files) >= sizeof j->files)))
                continue;
            int state = state_from_name(ec_json_string(t, "status"));
            pthread_mutex_lock(&b->lock);
            snprintf(j->self, sizeof j->self, "%s", self);
            snprintf(j->files, sizeof j->files, "%s", files != NULL ? files : "");
            j->state = state == JOB_RUNNING ? JOB_RUNNING : JOB_NOT_STARTED;
            j->posting = false;
            j->next_ms = utc_ms(); /* its real state comes with the next poll */
            (void)save(b);
            pthread_mutex_unlock(&b->lock);
            ec_log(EC_LOG_INFO, "batch_job_found", EC_LOG_STR("job", name),
                   EC_LOG_STR("self", j->self),
                   EC_LOG_STR("effect", "the earlier POST had arrived: not submitted again"));
            ec_audit(b->audit, "batch_job_found", EC_LOG_STR("job", name),
                     EC_LOG_STR("self", j->self));
            found = 1;
            break;
        }
    } else if (st == EC_OK && resp.status == 404) {
        found = 0; /* a service without the list operation: nothing to find */
    }
    if (found < 0)
        ec_log(EC_LOG_WARN, "batch_lookup_failed", EC_LOG_STR("job", name), EC_LOG_STATUS(st),
               EC_LOG_INT("http_status", resp.status),
               EC_LOG_STR("effect", "looked up again later"));
    ec_http_response_free(&resp);
    ec_json_arena_end(&arena);
    return found;
}

/* POSTs a job (Submitting or Failed). */
static void submit(ec_batch *b, job *j)
{
    if (j->posting) {
        int found = adopt_existing(b, j);
        if (found != 0) {
            if (found < 0) {
                pthread_mutex_lock(&b->lock);
                j->next_ms = utc_ms() + RETRY_MIN_S * 6 * 1000;
                pthread_mutex_unlock(&b->lock);
            }
            return;
        }
    } else {
        pthread_mutex_lock(&b->lock);
        j->attempts++;
        pthread_mutex_unlock(&b->lock);
    }
    ec_http_response resp = {0};
    ec_json_arena *arena = NULL;
    if (ec_json_arena_begin(&arena, 0) != EC_OK)
        return;
    char name[200];
    attempt_name(j, name, sizeof name);
    char *body = ec_json_print(submit_body(b, j, name));
    char url[EC_CFG_URL_MAX + 96];
    snprintf(url, sizeof url, "%s/speechtotext/transcriptions:submit?api-version=%s",
             b->cfg->speech.endpoint, EC_SPEECH_API_VERSION);
    pthread_mutex_lock(&b->lock);
    j->state = JOB_SUBMITTING;
    j->posting = true;
    j->submitted_ms = utc_ms();
    ec_status saved = body != NULL ? save(b) : EC_ERR_NOMEM;
    if (saved != EC_OK) {
        j->posting = false;
        j->attempts--;
        j->next_ms = utc_ms() + RETRY_MIN_S * 1000;
        pthread_mutex_unlock(&b->lock);
        ec_json_arena_end(&arena);
        return;
    }
    pthread_mutex_unlock(&b->lock);
    ec_status st = speech_call(b, "POST", url, body, &resp);
    pthread_mutex_lock(&b->lock);
    b->stats.submissions++;
    if (st != EC_OK) {
        /* the POST may or may not have arrived: posting stays set, so the
         * next round looks for the job before it posts again */
        j->next_ms = utc_ms() + RETRY_MIN_S * 6 * 1000;
        ec_log(EC_LOG_WARN, "batch_submit_failed", EC_LOG_STR("job", name), EC_LOG_STATUS(st),
               EC_LOG_STR("reason", resp.reason),
               EC_LOG_STR("effect", "looked up, then submitted again if absent"));
        (void)save(b);
        pthread_mutex_unlock(&b->lock);
        goto out;
    }
    if (resp.status != 201) {
        long http = 0, retry_after = -1;
        char code[64] = "", reason[200];
        st = ec_speech_failure(&resp, "submit", &http, &retry_after, code, sizeof code, reason,
                               sizeof reason);
        /* a 4xx creates no job; behind a gateway a 5xx (or 408) may come
         * after the service created it: then look before posting again */
        j->posting = resp.status == 408 || resp.status >= 500;
        if (st == EC_ERR_PROTOCOL) {
            job_failed(b, j, code, reason); /* the service refused this body */
        } else {
            /* not the job's fault: the same POST later, the attempt not
             * counted (while posting, its name is kept for the lookup) */
            if (!j->posting)
                j->attempts--;
            j->next_ms = utc_ms() + clamp_s(retry_after > 0 ? retry_after : RETRY_MIN_S * 6,
                                            RETRY_MIN_S, RETRY_MAX_S) *
                                        1000;
            ec_log(EC_LOG_WARN, "batch_submit_failed", EC_LOG_STR("job", name), EC_LOG_STATUS(st),
                   EC_LOG_STR("reason", reason), EC_LOG_STR("effect", "retried later"));
        }
        (void)save(b);
        pthread_mutex_unlock(&b->lock);
        goto out;
    }
    cJSON *doc = ec_json_parse(resp.body, resp.body_len);
    const char *self = ec_json_string(doc, "self");
    const char *files = ec_json_string(cJSON_GetObjectItemCaseSensitive(doc, "links"), "files");
    int state = state_from_name(ec_json_string(doc, "status"));
    const char *ep = b->cfg->speech.endpoint;
    if (self == NULL || !https_on_endpoint(self, ep) || strlen(self) >= sizeof j->self ||
        (files != NULL && (!https_on_endpoint(files, ep) || strlen(files) >= sizeof j->files))) {
        /* the job exists but its answer is unusable: posting stays set, the
         * next round looks it up by name */
        j->next_ms = utc_ms() + RETRY_MAX_S * 1000;
        ec_log(EC_LOG_ERROR, "batch_submit_answer_invalid", EC_LOG_STR("job", name),
               EC_LOG_STR("reason", "201 without a self link on the Speech endpoint"));
        (void)save(b);
        pthread_mutex_unlock(&b->lock);
        goto out;
    }
    snprintf(j->self, sizeof j->self, "%s", self);
    snprintf(j->files, sizeof j->files, "%s", files != NULL ? files : "");
    j->state = state == JOB_RUNNING ? JOB_RUNNING : JOB_NOT_STARTED;
    j->posting = false;
    j->error[0] = '\0';
    j->next_ms =
        utc_ms() + clamp_s(resp.retry_after_s > 0 ? resp.retry_after_s : 1, 1, POLL_MAX_S) * 1000;
    (void)save(b);
    ec_log(EC_LOG_INFO, "batch_job_submitted", EC_LOG_STR("job", name), EC_LOG_STR("self", j->self),
           EC_LOG_UINT("blobs", j->n_items), EC_LOG_INT("attempt", j->attempts));
    ec_audit(b->audit, "batch_job_submitted", EC_LOG_STR("job", name), EC_LOG_STR("self", j->self),
             EC_LOG_UINT("blobs", j->n_items), EC_LOG_UINT("first_seq", j->items[0].seq),
             EC_LOG_UINT("last_seq", j->items[j->n_items - 1].seq),
             EC_LOG_INT("attempt", j->attempts));
    pthread_mutex_unlock(&b->lock);
out:
    ec_http_response_free(&resp);
    ec_json_arena_end(&arena);
}

/* Lists the result files of a finished job (every page): names only, into
 * the audit. Returns how many. */
static unsigned list_files(ec_batch *b, const job *j)
{
    char url[EC_CFG_URL_MAX];
    snprintf(url, sizeof url, "%s", j->files);
    char names[900] = "";
    size_t used = 0;
    unsigned n = 0;
    for (int page = 0; url[0] != '\0' && page < 50; page++) {
        ec_http_response resp = {0};
        ec_json_arena *arena = NULL;
        if (ec_json_arena_begin(&arena, 0) != EC_OK)
            break;
        ec_status st = speech_call(b, "GET", url, NULL, &resp);
        const cJSON *values = NULL;
        cJSON *doc = NULL;
        if (st == EC_OK && resp.status == 200) {
            doc = ec_json_parse(resp.body, resp.body_len);
            values = cJSON_GetObjectItemCaseSensitive(doc, "values");
        }
        url[0] = '\0';
        if (!cJSON_IsArray(values)) {
            ec_log(EC_LOG_WARN, "batch_files_unavailable", EC_LOG_STR("job", j->display),
                   EC_LOG_INT("http_status", resp.status), EC_LOG_STR("reason", resp.reason));
        } else {
            const cJSON *f;
            cJSON_ArrayForEach(f, values)
            {
                const char *name = ec_json_string(f, "name");
                if (name == NULL)
                    continue;
                n++;
                size_t k = strcspn(name, "\"\\\n\r\t");
                if (used + k + 2 < sizeof names)
                    used += (size_t)snprintf(names + used, sizeof names - used, "%s%.*s",
                                             used > 0 ? "," : "", (int)k, name);
            }
            const char *next = ec_json_string(doc, "@nextLink");
            if (next != NULL && https_on_endpoint(next, b->cfg->speech.endpoint) &&
                strlen(next) < sizeof url)
                snprintf(url, sizeof url, "%s", next);
        }
        ec_http_response_free(&resp);
        ec_json_arena_end(&arena);
    }
    ec_audit(b->audit, "batch_job_results", EC_LOG_STR("job", j->display),
             EC_LOG_STR("self", j->self), EC_LOG_UINT("files", n), EC_LOG_STR("names", names));
    return n;
}

static void poll_job(ec_batch *b, job *j)
{
    ec_http_response resp = {0};
    ec_json_arena *arena = NULL;
    if (ec_json_arena_begin(&arena, 0) != EC_OK)
        return;
    ec_status st = speech_call(b, "GET", j->self, NULL, &resp);
    bool finished_ok = false;
    pthread_mutex_lock(&b->lock);
    int state_before = j->state;
    b->stats.polls++;
    int64_t now = utc_ms();
    long wait_s = resp.retry_after_s > 0 ? resp.retry_after_s : POLL_DEFAULT_S;
    if (st != EC_OK || (resp.status != 200 && resp.status != 404)) {
        j->next_ms = now + clamp_s(wait_s, RETRY_MIN_S, POLL_MAX_S) * 1000;
        ec_log(EC_LOG_WARN, "batch_poll_failed", EC_LOG_STR("job", j->display), EC_LOG_STATUS(st),
               EC_LOG_INT("http_status", resp.status), EC_LOG_STR("reason", resp.reason));
    } else if (resp.status == 404 &&
               now - j->submitted_ms > (int64_t)b->cfg->speech.time_to_live_hours * 3600 * 1000) {
        /* deleted by its time to live while we could not look: its results
         * (if any) are gone too, but submitting the audio again would
         * transcribe it twice */
        j->state = JOB_EXPIRED;
        j->finished_ms = now;
        ec_log(EC_LOG_WARN, "batch_job_expired", EC_LOG_STR("job", j->display),
               EC_LOG_STR("reason", "deleted by the service after its time to live"));
        ec_audit(b->audit, "batch_job_expired", EC_LOG_STR("job", j->display),
                 EC_LOG_STR("self", j->self), EC_LOG_UINT("blobs", j->n_items));
    } else if (resp.status == 404) {
        job_failed(b, j, "NotFound", "the service no longer knows the job");
    } else {
        cJSON *doc = ec_json_parse(resp.body, resp.body_len);
        int state = state_from_name(ec_json_string(doc, "status"));
        if (state == JOB_NOT_STARTED || state == JOB_RUNNING) {
            if (state != j->state)
                ec_log(EC_LOG_INFO, "batch_job_state", EC_LOG_STR("job", j->display),
                       EC_LOG_STR("status", state_names[state]));
            j->state = state;
            j->next_ms = now + clamp_s(wait_s, 1, POLL_MAX_S) * 1000;
        } else if (state == JOB_SUCCEEDED) {
            finished_ok = true;
        } else if (state == JOB_FAILED) {
            const cJSON *err = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(doc, "properties"), "error");
            const char *code = ec_json_string(err, "code");
            char safe[64] = "";
            if (code != NULL)
                snprintf(safe, sizeof safe, "%.*s",
                         (int)strspn(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                           "0123456789_."),
                         code);
            job_failed(b, j, safe, "the service reports the job Failed");
        } else {
            j->next_ms = now + POLL_DEFAULT_S * 1000;
            ec_log(EC_LOG_WARN, "batch_poll_answer_invalid", EC_LOG_STR("job", j->display),
                   EC_LOG_STR("reason", "no known status in the answer"));
        }
    }
    if (j->state != state_before)
        (void)save(b); /* polls that change nothing do not wear the flash */
    pthread_mutex_unlock(&b->lock);
    ec_http_response_free(&resp);
    ec_json_arena_end(&arena);
    if (finished_ok) {
        unsigned files = j->files[0] != '\0' ? list_files(b, j) : 0;
        pthread_mutex_lock(&b->lock);
        j->result_files = files;
        j->state = JOB_SUCCEEDED;
        j->finished_ms = utc_ms();
        b->stats.succeeded++;
        (void)save(b);
        ec_log(EC_LOG_INFO, "batch_job_succeeded", EC_LOG_STR("job", j->display),
               EC_LOG_STR("self", j->self), EC_LOG_UINT("blobs", j->n_items),
               EC_LOG_UINT("result_files", j->result_files));
        ec_audit(b->audit, "batch_job_succeeded", EC_LOG_STR("job", j->display),
                 EC_LOG_STR("self", j->self), EC_LOG_UINT("blobs", j->n_items),
                 EC_LOG_UINT("result_files", j->result_files));
        pthread_mutex_unlock(&b->lock);
    }
}

/* Moves the due window (at most batch_max_files blobs) into a new job. Lock
 * held; false when nothing is due. */
static bool cut_window(ec_batch *b, bool now)
{
    if (b->n_pending == 0)
        return false;
    int64_t t = utc_ms();
    bool due = now || (int)b->n_pending >= b->cfg->speech.batch_max_files ||
               t - b->window_opened_ms >= (int64_t)b->cfg->speech.batch_window_seconds * 1000;
    if (!due)
        return false;
    size_t take = b->n_pending;
    if (take > (size_t)b->cfg->speech.batch_max_files)
        take = (size_t)b->cfg->speech.batch_max_files;
    if (take > EC_BATCH_CONTENT_URLS_MAX)
        take = EC_BATCH_CONTENT_URLS_MAX;
    job *grown = realloc(b->jobs, (b->n_jobs + 1) * sizeof *grown);
    item *items = malloc(take * sizeof *items);
    if (grown != NULL)
        b->jobs = grown;
    if (grown == NULL || items == NULL) {
        free(items);
        return false;
    }
    job *j = &b->jobs[b->n_jobs];
    memset(j, 0, sizeof *j);
    memcpy(items, b->pending, take * sizeof *items);
    j->items = items;
    j->n_items = take;
    j->state = JOB_SUBMITTING;
    j->window_start_ms = items[0].start_ms;
    j->window_end_ms = items[take - 1].start_ms;
    char ws[32], we[32];
    iso8601(j->window_start_ms, ws, sizeof ws);
    iso8601(j->window_end_ms, we, sizeof we);
    snprintf(j->display, sizeof j->display, "edgecap %s %s..%s seq %" PRIu64 "-%" PRIu64,
             b->cfg->device.id, ws, we, items[0].seq, items[take - 1].seq);
    b->n_jobs++;
    memmove(b->pending, b->pending + take, (b->n_pending - take) * sizeof *b->pending);
    b->n_pending -= take;
    b->window_opened_ms = b->n_pending > 0 ? t : 0;
    /* old finished jobs leave the state (their results live in the audit):
     * at most KEEP_FINISHED of them and KEEP_FINISHED_BLOBS blobs, so the
     * file (rewritten on every change) stays small */
    size_t done = 0, done_blobs = 0;
    for (size_t k = 0; k < b->n_jobs; k++) {
        if (finished(b->jobs[k].state)) {
            done++;
            done_blobs += b->jobs[k].n_items;
        }
    }
    for (size_t k = 0;
         k < b->n_jobs && (done > KEEP_FINISHED || done_blobs > KEEP_FINISHED_BLOBS);) {
        if (finished(b->jobs[k].state)) {
            done--;
            done_blobs -= b->jobs[k].n_items;
            job_free(&b->jobs[k]);
            memmove(&b->jobs[k], &b->jobs[k + 1], (b->n_jobs - k - 1) * sizeof *b->jobs);
            b->n_jobs--;
        } else {
            k++;
        }
    }
    return true;
}

ec_status ec_batch_step(ec_batch *b, bool submit_now, int64_t *next_ms)
{
    if (b->read_only)
        return EC_ERR_BUSY;
    pthread_mutex_lock(&b->lock);
    bool cut = false;
    while (cut_window(b, submit_now))
        cut = true;
    ec_status st = cut ? save(b) : EC_OK;
    pthread_mutex_unlock(&b->lock);

    int64_t now = utc_ms();
    for (size_t k = 0; k < b->n_jobs; k++) {
        job *j = &b->jobs[k];
        /* a new job's next_ms is 0: submitted at once; submit-now also
         * looks up at once a job whose POST had an unknown outcome (a
         * lookup never submits twice) */
        if (j->next_ms > now && !(submit_now && j->posting))
            continue;
        if (j->state == JOB_SUBMITTING || j->state == JOB_FAILED)
            submit(b, j);
        else if (j->state == JOB_NOT_STARTED || j->state == JOB_RUNNING)
            poll_job(b, j);
    }

    pthread_mutex_lock(&b->lock);
    int64_t wake = IDLE_MS;
    now = utc_ms();
    for (size_t k = 0; k < b->n_jobs; k++) {
        const job *j = &b->jobs[k];
        if (finished(j->state))
            continue;
        int64_t in = j->next_ms - now;
        wake = in < wake ? in : wake;
    }
    if (b->n_pending > 0) {
        int64_t in =
            b->window_opened_ms + (int64_t)b->cfg->speech.batch_window_seconds * 1000 - now;
        wake = in < wake ? in : wake;
    }
    pthread_mutex_unlock(&b->lock);
    *next_ms = wake < 0 ? 0 : wake;
    return st;
}

/* ---- thread ------------------------------------------------------------------------------ */

static void *batch_main(void *arg)
{
    ec_batch *b = arg;
    int64_t next = 0;
    pthread_mutex_lock(&b->lock);
    while (!b->stop) {
        bool now = b->submit_now;
        b->submit_now = false;
        b->kicked = false;
        pthread_mutex_unlock(&b->lock);
        (void)ec_batch_step(b, now, &next);
        pthread_mutex_lock(&b->lock);
        if (b->stop || b->kicked)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += next / 1000;
        ts.tv_nsec += (long)(next % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        while (!b->stop && !b->kicked) {
            if (pthread_cond_timedwait(&b->wake, &b->lock, &ts) != 0)
                break;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

ec_status ec_batch_start(ec_batch *b)
{
    if (b->read_only)
        return EC_ERR_BUSY;
    pthread_mutex_lock(&b->lock);
    b->stop = false;
    pthread_mutex_unlock(&b->lock);
    if (pthread_create(&b->thread, NULL, batch_main, b) != 0)
        return EC_ERR_NOMEM;
    b->started = true;
    return EC_OK;
}

void ec_batch_kick(ec_batch *b, bool submit_now)
{
    pthread_mutex_lock(&b->lock);
    b->kicked = true;
    b->submit_now = b->submit_now || submit_now;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
}

void ec_batch_stop(ec_batch *b)
{
    if (!b->started)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = true;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    b->started = false;
}

void ec_batch_get_stats(ec_batch *b, ec_batch_stats *stats)
{
    pthread_mutex_lock(&b->lock);
    *stats = b->stats;
    stats->pending = b->n_pending;
    stats->submitted = 0;
    for (size_t k = 0; k < b->n_jobs; k++)
        if (b->jobs[k].state == JOB_NOT_STARTED || b->jobs[k].state == JOB_RUNNING ||
            b->jobs[k].state == JOB_SUBMITTING || b->jobs[k].state == JOB_FAILED)
            stats->submitted++;
    pthread_mutex_unlock(&b->lock);
}

void ec_batch_print(ec_batch *b, FILE *out)
{
    pthread_mutex_lock(&b->lock);
    char t[32];
    if (b->n_pending > 0) {
        iso8601(b->window_opened_ms, t, sizeof t);
        fprintf(out, "pending: %zu blob(s), window opened %s, seq %" PRIu64 "-%" PRIu64 "\n",
                b->n_pending, t, b->pending[0].seq, b->pending[b->n_pending - 1].seq);
    } else {
        fprintf(out, "pending: 0 blobs\n");
    }
    for (size_t k = 0; k < b->n_jobs; k++) {
        const job *j = &b->jobs[k];
        char ws[32], we[32];
        iso8601(j->window_start_ms, ws, sizeof ws);
        iso8601(j->window_end_ms, we, sizeof we);
        const char *slash = strrchr(j->self, '/');
        char id[80] = "-";
        if (slash != NULL)
            snprintf(id, sizeof id, "%.*s", (int)strcspn(slash + 1, "?"), slash + 1);
        fprintf(out,
                "job %s state=%s window=%s..%s seq=%" PRIu64 "-%" PRIu64 " blobs=%zu attempts=%d",
                id, state_names[j->state], ws, we, j->items[0].seq, j->items[j->n_items - 1].seq,
                j->n_items, j->attempts);
        if (j->error[0] != '\0')
            fprintf(out, " error=%s", j->error);
        if (j->state == JOB_SUCCEEDED)
            fprintf(out, " result_files=%u", j->result_files);
        fputc('\n', out);
    }
    pthread_mutex_unlock(&b->lock);
}
