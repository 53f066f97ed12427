/*
 * Fast transcription (see include/edgecap/speech.h). The audio part is read
 * by curl straight from the caller's secure buffer; the answer (a
 * transcript) arrives in secure memory and is parsed in a JSON arena there.
 */
#include "edgecap/speech.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "edgecap/json.h"
#include "edgecap/log.h"
#include "edgecap/secmem.h"

/* Transcripts of long segments with word timings run to megabytes. */
#define TRANSCRIPT_MAX (4u * 1024 * 1024)

static const char *const profanity_names[] = {"None", "Removed", "Tags", "Masked"};

/* The contract's error body: {"code": "...", "message": "..."} (Error), or
 * the {"error": {"code": ...}} envelope of the front doors. */
static void speech_error_code(const ec_http_response *resp, char *out, size_t out_len)
{
    ec_json_arena *arena = NULL;
    if (resp->body == NULL || resp->body_len == 0 || ec_json_arena_begin(&arena, 0) != EC_OK)
        return;
    cJSON *doc = ec_json_parse(resp->body, resp->body_len);
    const char *code = ec_json_string(doc, "code");
    if (code == NULL)
        code = ec_json_string(cJSON_GetObjectItemCaseSensitive(doc, "error"), "code");
    if (code != NULL) {
        size_t n = strspn(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.");
        snprintf(out, out_len, "%.*s", (int)(n < out_len ? n : out_len - 1), code);
    }
    ec_json_arena_end(&arena);
}

ec_status ec_speech_failure(const ec_http_response *resp, const char *what, long *http_status,
                            long *retry_after_s, char *code, size_t code_len, char *reason,
                            size_t reason_len)
{
    *http_status = resp->status;
    *retry_after_s = resp->retry_after_s;
    speech_error_code(resp, code, code_len);
    snprintf(reason, reason_len, "%s: HTTP %ld%s%s", what, resp->status, code[0] ? " " : "", code);
    if (resp->status == 401 || resp->status == 403)
        return EC_ERR_AUTH;
    if (resp->status == 408 || resp->status == 429 || resp->status >= 500)
        return EC_ERR_NETWORK;
    return EC_ERR_PROTOCOL;
}

static cJSON *definition(const ec_config *cfg, const ec_segment_meta *meta)
{
    cJSON *def = cJSON_CreateObject();
    cJSON *locales = cJSON_AddArrayToObject(def, "locales");
    cJSON_AddItemToArray(locales, cJSON_CreateString(cfg->speech.locale));
    cJSON_AddStringToObject(def, "profanityFilterMode",
                            profanity_names[cfg->speech.profanity_filter_mode]);
    cJSON *channels = cJSON_AddArrayToObject(def, "channels");
    for (int c = 0; c < meta->channels && c < 2; c++)
        cJSON_AddItemToArray(channels, cJSON_CreateNumber(c));
    if (cfg->speech.diarization) {
        cJSON *d = cJSON_AddObjectToObject(def, "diarization");
        cJSON_AddBoolToObject(d, "enabled", 1);
        cJSON_AddNumberToObject(d, "maxSpeakers", cfg->speech.max_speakers);
    }
    return def;
}

static ec_status check_result(const cJSON *doc, ec_speech_result *res);

/* Checks a 200's body against the contract's result shape, in an arena of
 * its own sized to the answer (a parsed tree takes several times the text). */
static ec_status judge_result(const ec_http_response *resp, ec_speech_result *res)
{
    if (resp->body_truncated) {
        snprintf(res->reason, sizeof res->reason, "transcript longer than %u bytes",
                 TRANSCRIPT_MAX);
        return EC_ERR_PROTOCOL;
    }
    ec_json_arena *arena = NULL;
    ec_status st = ec_json_arena_begin(&arena, resp->body_len * 8 + 64 * 1024);
    if (st != EC_OK)
        return st;
    st = check_result(ec_json_parse(resp->body, resp->body_len), res);
    ec_json_arena_end(&arena);
    return st;
}

static ec_status check_result(const cJSON *doc, ec_speech_result *res)
{
    double duration = -1;
    if (doc == NULL || !cJSON_IsObject(doc)) {
        snprintf(res->reason, sizeof res->reason,
                 "transcribe answer is not a JSON object (or too large to parse)");
        return EC_ERR_PROTOCOL;
    }
    if (!ec_json_number(doc, "durationMilliseconds", &duration) || duration < 0 ||
        duration > 86400000.0) {
        snprintf(res->reason, sizeof res->reason,
                 "transcribe answer: durationMilliseconds missing or out of range");
        return EC_ERR_PROTOCOL;
    }
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "combinedPhrases")) ||
        !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "phrases"))) {
        snprintf(res->reason, sizeof res->reason,
                 "transcribe answer: combinedPhrases or phrases missing");
        return EC_ERR_PROTOCOL;
    }
    res->duration_ms = (int64_t)duration;
    return EC_OK;
}

static ec_status keep_transcript(ec_spool *transcripts, const ec_segment_meta *meta,
                                 uint64_t pcm_frames, const ec_http_response *resp)
{
    ec_segment_meta tm = *meta;
    tm.codec = EC_CODEC_TRANSCRIPT_JSON;
    ec_spool_writer *w = NULL;
    ec_status st = ec_spool_begin(transcripts, &tm, &w);
    for (size_t off = 0; st == EC_OK && off < resp->body_len; off += 60000) {
        size_t n = resp->body_len - off < 60000 ? resp->body_len - off : 60000;
        st = ec_spool_append(w, resp->body + off, n);
    }
    if (st == EC_OK)
        return ec_spool_commit(&w, pcm_frames);
    ec_spool_abort(&w);
    return st;
}

ec_status ec_speech_transcribe(ec_auth *auth, ec_transport *t, const ec_config *cfg,
                               const char *endpoint, const ec_segment_meta *meta,
                               uint64_t pcm_frames, const uint8_t *ogg, size_t len,
                               ec_spool *transcripts, ec_speech_result *res)
{
    memset(res, 0, sizeof *res);
    res->retry_after_s = -1;
    res->expected_ms =
        meta->sample_rate_hz > 0 ? (int64_t)(pcm_frames * 1000 / meta->sample_rate_hz) : 0;
    ec_http_response resp = {0};
    ec_json_arena *arena = NULL;
    ec_status st = ec_json_arena_begin(&arena, 0);
    if (st != EC_OK)
        return st;
    char *def_text = ec_json_print(definition(cfg, meta));
    if (def_text == NULL) {
        st = EC_ERR_NOMEM;
        goto out;
    }
    char filename[96];
    snprintf(filename, sizeof filename, "%s-%" PRIu64 ".ogg", meta->device_id, meta->sequence);
    ec_http_part parts[2] = {{.name = "audio",
                              .content_type = "audio/ogg",
                              .filename = filename,
                              .data = ogg,
                              .len = len},
                             {.name = "definition",
                              .content_type = "application/json",
                              .data = (const uint8_t *)def_text,
                              .len = strlen(def_text)}};
    char url[EC_CFG_URL_MAX + 96];
    snprintf(url, sizeof url, "%s/speechtotext/transcriptions:transcribe?api-version=%s", endpoint,
             EC_SPEECH_API_VERSION);
    static const char *const headers[] = {"Accept: application/json", NULL};
    ec_http_request req = {.method = "POST",
                           .url = url,
                           .headers = headers,
                           .parts = parts,
                           .n_parts = 2,
                           .body_max = TRANSCRIPT_MAX};
    st = ec_auth_request(auth, EC_SCOPE_SPEECH, t, &req, &resp);
    res->requests = 1;
    snprintf(res->tls_version, sizeof res->tls_version, "%s", resp.tls_version);
    snprintf(res->tls_cipher, sizeof res->tls_cipher, "%s", resp.tls_cipher);
    if (st != EC_OK) {
        snprintf(res->reason, sizeof res->reason, "%s", resp.reason);
        goto out;
    }
    if (resp.status != 200) {
        st = ec_speech_failure(&resp, "transcribe", &res->http_status, &res->retry_after_s,
                               res->error_code, sizeof res->error_code, res->reason,
                               sizeof res->reason);
        goto out;
    }
    res->http_status = 200;
    st = judge_result(&resp, res);
    if (st != EC_OK)
        goto out;
    /* one Opus frame of slack, plus a millisecond for rounding on each side */
    int64_t slack = cfg->encoder.frame_ms + 2;
    int64_t diff = res->duration_ms - res->expected_ms;
    if (diff > slack || diff < -slack) {
        snprintf(res->reason, sizeof res->reason,
                 "transcribed duration %" PRId64 " ms does not match the segment's %" PRId64 " ms",
                 res->duration_ms, res->expected_ms);
        st = EC_ERR_PROTOCOL;
        goto out;
    }
    res->transcript_bytes = resp.body_len;
    if (cfg->speech.keep_transcripts) {
        if (transcripts == NULL) {
            st = EC_ERR_INTERNAL;
            goto out;
        }
        st = keep_transcript(transcripts, meta, pcm_frames, &resp);
        if (st != EC_OK) {
            snprintf(res->reason, sizeof res->reason, "keeping the transcript: %s",
                     ec_strerror(st));
            goto out;
        }
        res->transcript_kept = true;
    }
out:
    ec_json_arena_end(&arena);
    ec_http_response_free(&resp);
    return st;
}
