#!/bin/bash
# Azure Speech against the contract-checked peer (tests/peers/speech: every
# body validated against the 2024-11-15 contract, assertions verified with
# jose against the registered device certificate), behind the same mutual-TLS
# nginx front as the blob peer, reached under the real host names through
# [upload] connect_to:
#   - a public regional endpoint is refused by check-config;
#   - fast transcription with Entra ID (ES256 and PS256 assertions) acknowledges
#     and wipes; kept transcripts are sealed; a 401 costs one new token and one
#     retry, never a loop; an unregistered client is refused and nothing is lost;
#   - subscription keys: a revoked primary switches to the secondary;
#   - batch transcription (BYOS): a job for exactly the acknowledged blobs,
#     followed across restarts to Succeeded; a failed job is submitted again;
#     short-lived tokens are refreshed;
#   - no token, key, assertion or SAS in any output.
. "$(dirname "$0")/lib/tap.sh"

plan 21

TOOL=${TOOL:-$BUILD/results/tool-run}


# Under valgrind (its runs are the slowest of `make test`) only the core
# paths run: config, fast transcription with an ES256 token, kept
# transcripts, a batch job followed to Succeeded, audit verify and the
# secret scan. The rest exercise the same code and run natively, under
# ASan+UBSan and under qemu for both boards.
LIGHT_REASON="valgrind run: the same code paths run natively, under ASan and under qemu"

# ---- without peers -------------------------------------------------------------

speech_config() { # FILE SPOOL MODE [EXTRA-UPLOAD] [EXTRA-AUTH] [EXTRA-SPEECH] [ENDPOINT]
    (
        umask 077
        cat >"$1" <<CONF
[device]
id = sp-0001
require_mlock = off
keystore_dir = $T/keys

[capture]
source = file
file = $T/tone.wav
segment_seconds = 3

[spool]
dir = $2

[upload]
target = speech
endpoint = ${7:-${SPEECH_ENDPOINT:-https://edgecap-speech.cognitiveservices.azure.com}}
connect_to = ${CONNECT_TO_SPEECH:-edgecap-speech.cognitiveservices.azure.com:443:127.0.0.1:9}
connect_to = ${CONNECT_TO_LOGIN:-login.microsoftonline.com:443:127.0.0.1:9}
retry_base_ms = 10
retry_max_ms = 200
${4:-}

[tls]
ca_file = ${CA_FILE:-$T/ca.pem}
client_cert = ${CLIENT_CERT:-$T/client.pem}
client_key = ${CLIENT_KEY:-$T/client.key}
pin_current = ${SERVER_PIN:-sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=}
allowed_hosts = edgecap-speech.cognitiveservices.azure.com, login.microsoftonline.com, westus.api.cognitive.microsoft.com

[auth]
mode = $3
tenant_id = ${TENANT_ID:-00000000-0000-0000-0000-000000000000}
client_id = ${CLIENT_ID:-11111111-1111-1111-1111-111111111111}
assertion_alg = ES256
${5:-}

[speech]
${6:-}

[logging]
audit_file = $T/audit-$(basename "$1" .conf).log
CONF
    )
}

REASONS=()
speech_config "$T/public.conf" "$T/spool-public" entra "" "" "" https://westus.api.cognitive.microsoft.com
ec check-config "$T/public.conf"
want_rc 78
line=$(line_of "$T/public.conf" '^endpoint = ')
want_err_fixed "$T/public.conf:$line: [upload] endpoint: westus.api.cognitive.microsoft.com is not a Speech custom domain"
sed -i 's/^\[speech\]$/[speech]\nallow_public_endpoint = on/' "$T/public.conf"
ec check-config "$T/public.conf"
want_rc 0
verdict "check-config: a regional public Speech endpoint is refused (78, file:line) unless allow_public_endpoint = on"

# ---- peers -------------------------------------------------------------------------

start_peers
sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth 9 sine 200-700 vol 0.5

control() { "$PEERS" speech "$P" "$@"; }
# Counts recorded requests: OP [STATUS [AUTH]] (since the last reset).
count() { # OP [STATUS] [AUTH]
    control /requests | node -e '
        const [op, status, auth] = process.argv.slice(1);
        let n = 0;
        for (const r of JSON.parse(require("fs").readFileSync(0, "utf8")))
            if (r.op === op && (!status || String(r.status) === status) && (!auth || r.auth === auth)) n++;
        console.log(n);' "$@"
}
spool_count() { find "$1" -maxdepth 1 -name '*.seg' 2>/dev/null | wc -l; }
ALL_OUT=()
run_logged() { # NAME ARGS...: runs edgecap, keeps its output for the secret scan
    local name=$1
    shift
    ec "$@"
    cp "$OUT" "$T/$name.out"
    cp "$ERR" "$T/$name.err"
    ALL_OUT+=("$T/$name.out" "$T/$name.err")
}

# ---- fast transcription, Entra ES256 ------------------------------------------------

REASONS=()
control /reset '{}' >/dev/null
speech_config "$T/fast.conf" "$T/spool-fast" entra
run_logged fast-capture capture --config "$T/fast.conf" --seconds 9
n=$(spool_count "$T/spool-fast")
[ "$n" = 3 ] || fail_because "captured $n segments, expected 3"
run_logged fast-upload upload-once --config "$T/fast.conf"
want_rc 0
[ "$(spool_count "$T/spool-fast")" = 0 ] || fail_because "the spool is not empty after acknowledgment"
[ "$(count transcribe 200 bearer)" = 3 ] || fail_because "not 3 transcribe requests answered 200 with a bearer token"
[ "$(count token 200)" = 1 ] || fail_because "not exactly one token request (cached token reused)"
[ "$(grep -c '"event":"segment_transcribed"' "$T/audit-fast.log")" = 3 ] || fail_because "not 3 segment_transcribed audit lines"
verdict "fast transcription (entra, ES256 assertion): 3 segments acknowledged by contract-valid 200s, spool wiped" "$T/fast-upload.err"

REASONS=()
[ -e "$T/transcripts" ] && fail_because "a transcript directory exists with keep_transcripts off"
grep -q '"duration_ms":' "$T/audit-fast.log" || fail_because "no duration in the audit"
grep -qi 'edgecap test transcript' "$T/fast-upload.err" "$T/audit-fast.log" && fail_because "transcript text reached a log"
verdict "fast transcription: no transcript kept or logged by default (data minimisation)" "$T/audit-fast.log"

# kept transcripts: sealed in their own spool
REASONS=()
speech_config "$T/keep.conf" "$T/spool-keep" entra "" "" "keep_transcripts = on
transcript_dir = $T/transcripts"
run_logged keep-capture capture --config "$T/keep.conf" --seconds 3
run_logged keep-upload upload-once --config "$T/keep.conf"
want_rc 0
[ "$(spool_count "$T/transcripts")" = 1 ] || fail_because "no sealed transcript in the transcript dir"
if grep -rqa 'edgecap test transcript\|combinedPhrases' "$T/transcripts"; then
    fail_because "transcript plaintext on disk"
fi
verdict "keep_transcripts = on: the transcript is sealed in transcript_dir, no plaintext on disk" "$T/keep-upload.err"

if full_run; then
    # a 401 costs one new token and one retry
    REASONS=()
    control /reset '{}' >/dev/null
    control /config '{"unauthorized_next": 1}' >/dev/null
    run_logged retry-capture capture --config "$T/fast.conf" --seconds 3
    run_logged retry-upload upload-once --config "$T/fast.conf"
    want_rc 0
    [ "$(count transcribe 401)" = 1 ] || fail_because "expected one 401"
    [ "$(count transcribe 200)" = 1 ] || fail_because "expected one 200 after the retry"
    [ "$(count token 200)" = 2 ] || fail_because "expected a second token after the 401"
    want_re "$T/retry-upload.err" 'event=auth_unauthorized'
    verdict "a 401 from Speech: one new token, one retry, acknowledged" "$T/retry-upload.err"

    REASONS=()
    control /reset '{}' >/dev/null
    control /config '{"unauthorized_next": 100}' >/dev/null
    run_logged loop-capture capture --config "$T/fast.conf" --seconds 3
    run_logged loop-upload upload-once --config "$T/fast.conf"
    want_rc 69
    [ "$(spool_count "$T/spool-fast")" = 1 ] || fail_because "the refused segment left the spool"
    t=$(count transcribe 401)
    tok=$(count token 200)
    # upload-once makes a bounded number of attempts, each two requests (the
    # second after a new token), never more: tokens = attempts + 1
    [ "$tok" -ge 2 ] && [ "$t" = $((2 * (tok - 1))) ] ||
        fail_because "$t refused requests for $tok tokens: not exactly one retry per attempt"
    control /config '{"unauthorized_next": 0}' >/dev/null
    verdict "401 on every request: exactly one retry per attempt (no loop), segment kept, exit 69" "$T/loop-upload.err"
    run_logged loop-drain upload-once --config "$T/fast.conf" # leaves the spool empty for later
else
    skip "a 401 from Speech: one new token, one retry, acknowledged" "$LIGHT_REASON"
    skip "401 on every request: exactly one retry per attempt (no loop), segment kept, exit 69" "$LIGHT_REASON"
fi

if full_run; then
    # PS256 with the RSA identity
    REASONS=()
    control /reset '{}' >/dev/null
    speech_config "$T/ps.conf" "$T/spool-ps" entra "" "" ""
    sed -i -e "s#^client_cert = .*#client_cert = $RSA_CLIENT_CERT#" -e "s#^client_key = .*#client_key = $RSA_CLIENT_KEY#" \
        -e "s#^client_id = .*#client_id = $RSA_CLIENT_ID#" -e 's/^assertion_alg = ES256$/assertion_alg = PS256/' "$T/ps.conf"
    run_logged ps-capture capture --config "$T/ps.conf" --seconds 3
    run_logged ps-upload upload-once --config "$T/ps.conf"
    want_rc 0
    [ "$(count token 200)" = 1 ] || fail_because "no token for the PS256 assertion"
    control /requests | grep -qE '"alg": ?"PS256"' || fail_because "the peer saw no PS256 assertion"
    verdict "PS256 assertion (RSA 3072 device key) accepted by the token endpoint; segment acknowledged" "$T/ps-upload.err"
else
    skip "PS256 assertion (RSA 3072 device key) accepted by the token endpoint; segment acknowledged" "$LIGHT_REASON"
fi

if full_run; then
    # an unregistered client: refused, nothing lost
    REASONS=()
    control /reset '{}' >/dev/null
    speech_config "$T/forged.conf" "$T/spool-forged" entra
    sed -i 's/^client_id = .*/client_id = 99999999-9999-9999-9999-999999999999/' "$T/forged.conf"
    run_logged forged-capture capture --config "$T/forged.conf" --seconds 3
    run_logged forged-upload upload-once --config "$T/forged.conf"
    want_rc 69
    want_err_re 'token endpoint refused the device: HTTP (400|401) (invalid|unauthorized)_client AADSTS[0-9]+'
    [ "$(spool_count "$T/spool-forged")" = 1 ] || fail_because "the segment left the spool"
    [ "$(count transcribe)" = 0 ] || fail_because "audio was sent without a token"
    verdict "a client the token endpoint does not know: refused with Entra's code, no audio sent, nothing lost" "$T/forged-upload.err"
else
    skip "a client the token endpoint does not know: refused with Entra's code, no audio sent, nothing lost" "$LIGHT_REASON"
fi

if full_run; then
    # a device key that does not suit the provisioned algorithm: refused before any request
    REASONS=()
    control /reset '{}' >/dev/null
    speech_config "$T/alg.conf" "$T/spool-alg" entra
    sed -i 's/^assertion_alg = ES256$/assertion_alg = PS256/' "$T/alg.conf"
    run_logged alg-capture capture --config "$T/alg.conf" --seconds 3
    run_logged alg-upload upload-once --config "$T/alg.conf"
    want_rc 78
    want_err_fixed 'what="PS256 needs an RSA key; the private key is an EC key"'
    [ "$(spool_count "$T/spool-alg")" = 1 ] || fail_because "the segment left the spool"
    [ "$(count token)" = 0 ] || fail_because "a token was requested with an unusable key"
    verdict "assertion_alg = PS256 with an EC device key: refused with the reason (78), nothing sent, nothing lost" "$T/alg-upload.err"
else
    skip "assertion_alg = PS256 with an EC device key: refused with the reason (78), nothing sent, nothing lost" "$LIGHT_REASON"
fi

# ---- subscription keys ----------------------------------------------------------------

if full_run; then
    REASONS=()
    control /reset '{}' >/dev/null
    control /config '{"revoke_primary_key": true}' >/dev/null
    speech_config "$T/key.conf" "$T/spool-key" key "" "key_primary_file = $SPEECH_KEY_PRIMARY_FILE
key_secondary_file = $SPEECH_KEY_SECONDARY_FILE"
    sed -i -e '/^tenant_id/d' -e '/^client_id/d' "$T/key.conf"
    run_logged key-capture capture --config "$T/key.conf" --seconds 6
    run_logged key-upload upload-once --config "$T/key.conf"
    want_rc 0
    [ "$(count transcribe 401 invalid)" = 1 ] || fail_because "expected one 401 (the revoked primary key)"
    [ "$(count transcribe 200 key-secondary)" = 2 ] || fail_because "expected both segments on the secondary key"
    want_re "$T/key-upload.err" 'event=auth_key_slot from=primary slot=secondary reason="HTTP 401"'
    grep -q '"event":"auth_key_slot"' "$T/audit-key.log" || fail_because "slot change not audited"
    control /config '{"revoke_primary_key": false}' >/dev/null
    verdict "key mode: a 401 on the primary switches to the secondary (logged and audited by slot)" "$T/key-upload.err"

    # rotation by reload: the only key is revoked, audio waits in the spool; the
    # operator provisions the new key and reloads; everything is delivered once
    REASONS=()
    control /reset '{}' >/dev/null
    control /config '{"revoke_primary_key": true}' >/dev/null
    speech_config "$T/rot.conf" "$T/spool-rot" key "" "key_primary_file = $SPEECH_KEY_PRIMARY_FILE"
    sed -i -e '/^tenant_id/d' -e '/^client_id/d' "$T/rot.conf"
    LOG=$T/rot.log
    start_bg "$LOG" run --config "$T/rot.conf"
    pid=$DAEMON_PID
    wait_for_log "$LOG" 'event=transcribe_failed' "$pid" 30 || fail_because "no refused upload"
    for _ in $(seq 50); do
        [ "$(spool_count "$T/spool-rot")" = 3 ] && break
        sleep 0.1
    done
    [ "$(spool_count "$T/spool-rot")" = 3 ] || fail_because "the 3 segments are not waiting in the spool"
    sed -i "s#^key_primary_file = .*#key_primary_file = $SPEECH_KEY_SECONDARY_FILE#" "$T/rot.conf"
    ec reload --config "$T/rot.conf"
    want_rc 0
    for _ in $(seq 100); do
        [ "$(grep -c 'event=segment_transcribed' "$LOG")" -ge 3 ] && break
        sleep 0.1
    done
    kill -TERM "$pid"
    wait_exit "$pid" || fail_because "the daemon did not stop"
    ALL_OUT+=("$LOG")
    want_re "$LOG" 'event=reload_accepted'
    [ "$(grep -c 'event=segment_transcribed' "$LOG")" = 3 ] || fail_because "not 3 segments transcribed after the reload"
    [ "$(spool_count "$T/spool-rot")" = 0 ] || fail_because "the spool is not empty"
    [ "$(count transcribe 200 key-secondary)" = 3 ] || fail_because "not exactly 3 transcriptions with the new key (lost or duplicated)"
    control /config '{"revoke_primary_key": false}' >/dev/null
    verdict "key rotation by reload: audio waits while the key is refused, the reloaded key delivers each segment once" "$LOG"
else
    skip "key mode: a 401 on the primary switches to the secondary (logged and audited by slot)" "$LIGHT_REASON"
    skip "key rotation by reload: audio waits while the key is refused, the reloaded key delivers each segment once" "$LIGHT_REASON"
fi

# ---- batch transcription (BYOS) --------------------------------------------------------

SAS=$("$PEERS" container "$P" batch)
AUDIT_KEY=$(new_secret "audit-key-")
batch_config() { # FILE
    (
        umask 077
        cat >"$1" <<CONF
[device]
id = bt-0001
require_mlock = off
keystore_dir = $T/keys

[capture]
source = file
file = $T/tone.wav
segment_seconds = 3

[spool]
dir = $T/spool-batch

[upload]
endpoint = $BLOB_ENDPOINT
container = batch
connect_to = $CONNECT_TO
connect_to = $CONNECT_TO_SPEECH
connect_to = $CONNECT_TO_LOGIN
retry_base_ms = 10
retry_max_ms = 200

[tls]
ca_file = $CA_FILE
client_cert = $CLIENT_CERT
client_key = $CLIENT_KEY
pin_current = $SERVER_PIN
allowed_hosts = $BLOB_HOST, $SPEECH_HOST, $LOGIN_HOST

[auth]
mode = sas
sas_token = $SAS
tenant_id = $TENANT_ID
client_id = $CLIENT_ID
assertion_alg = ES256

[speech]
batch = on
endpoint = $SPEECH_ENDPOINT
batch_max_files = 2
time_to_live_hours = 12
diarization = on
max_speakers = 3

[logging]
audit_file = $T/audit-batch.log
audit_hmac_key = $AUDIT_KEY
CONF
    )
}
control /reset '{}' >/dev/null
batch_config "$T/batch.conf"
# Runs `speech submit-now` (a new process each time: a restart) until every
# job is Succeeded or GivenUp, at most N rounds.
follow_jobs() { # N
    local i
    for ((i = 0; i < $1; i++)); do
        ec speech submit-now --config "$T/batch.conf"
        cat "$ERR" >>"$T/batch-follow.err"
        ALL_OUT+=("$OUT")
        if ! grep -qE 'state=(Submitting|NotStarted|Running|Failed)' "$OUT" &&
            ! grep -qE '^pending: [1-9]' "$OUT"; then
            return 0
        fi
        sleep 1.1
    done
    return 1
}
# contentUrls the peer received, one per line (path only)
submitted_blobs() {
    control /jobs | node -e '
        for (const j of JSON.parse(require("fs").readFileSync(0, "utf8")))
            for (const u of j.content_urls) console.log(u.container + "/" + u.blob);' | sort
}

REASONS=()
run_logged batch-capture capture --config "$T/batch.conf" --seconds 9
run_logged batch-upload upload-once --config "$T/batch.conf"
want_rc 0
[ "$(spool_count "$T/spool-batch")" = 0 ] || fail_because "the spool is not empty"
[ "$(count submit 201)" = 1 ] || fail_because "not one job submitted at batch_max_files = 2"
ec speech jobs --config "$T/batch.conf"
want_out_re '^pending: 1 blob'
want_out_re '^job [0-9a-f-]{36} state=NotStarted .* blobs=2 attempts=1$'
verdict "batch: 3 blobs acknowledged, one job for the first 2 (batch_max_files), one blob pending" "$T/batch-upload.err" "$OUT"

REASONS=()
follow_jobs 12 || fail_because "jobs did not all finish"
ec speech jobs --config "$T/batch.conf"
[ "$(grep -c 'state=Succeeded' "$OUT")" = 2 ] || fail_because "not 2 jobs Succeeded"
"$PEERS" readback "$P" --container batch >"$T/readback.json"
node -e '
    const fs = require("fs");
    for (const l of fs.readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean))
        console.log("batch/" + JSON.parse(l).name);' "$T/readback.json" | sort >"$T/stored.txt"
submitted_blobs >"$T/submitted.txt"
[ "$(wc -l <"$T/stored.txt")" = 3 ] || fail_because "not 3 blobs stored"
diff "$T/stored.txt" "$T/submitted.txt" >/dev/null || fail_because "submitted contentUrls differ from the stored blobs (or repeat one)"
[ "$(count submit 201)" = 2 ] || fail_because "not exactly 2 submissions"
[ "$(grep -c '"event":"batch_job_succeeded"' "$T/audit-batch.log")" = 2 ] || fail_because "not 2 batch_job_succeeded audit lines"
grep -q '"event":"batch_job_results".*"names":"' "$T/audit-batch.log" || fail_because "result file names not audited"
control /requests | grep -q '"op":"submit".*destinationContainerUrl' && fail_because "destinationContainerUrl sent"
verdict "batch: jobs followed to Succeeded across restarts; contentUrls = exactly the stored blobs, each once; results audited by name" "$OUT" "$T/submitted.txt" "$T/stored.txt"

if full_run; then
    REASONS=()
    control /config '{"fail_jobs": 1}' >/dev/null
    sed -i 's/^batch_max_files = 2$/batch_max_files = 1/' "$T/batch.conf"
    run_logged batch2-capture capture --config "$T/batch.conf" --seconds 3
    run_logged batch2-upload upload-once --config "$T/batch.conf"
    follow_jobs 12 || fail_because "the retried job did not finish"
    ec speech jobs --config "$T/batch.conf"
    want_out_re 'state=Succeeded .* blobs=1 attempts=2 '
    grep -q '"event":"batch_job_failed".*"code":"InvalidData"' "$T/audit-batch.log" || fail_because "the failure's code was not audited"
    verdict "batch: a job the service failed (InvalidData) is submitted again and succeeds" "$OUT" "$T/audit-batch.log"
else
    skip "batch: a job the service failed (InvalidData) is submitted again and succeeds" "$LIGHT_REASON"
fi

if full_run; then
    # the service created the job but its 201 was lost (the gateway answered
    # 502): the device finds the job by its attempt's name instead of posting again
    REASONS=()
    control /reset '{}' >/dev/null
    control /config '{"drop_submit_answers": 1}' >/dev/null
    run_logged lost-capture capture --config "$T/batch.conf" --seconds 3
    run_logged lost-upload upload-once --config "$T/batch.conf"
    follow_jobs 12 || fail_because "the job did not finish"
    [ "$(count submit)" = 1 ] || fail_because "the window was posted $(count submit) times"
    [ "$(control /jobs | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).length)')" = 1 ] ||
        fail_because "not exactly one job at the service"
    [ "$(count list 200)" -ge 1 ] || fail_because "no lookup by name"
    grep -q '"event":"batch_job_found"' "$T/audit-batch.log" || fail_because "the adoption was not audited"
    ec speech jobs --config "$T/batch.conf"
    tail -n 1 "$OUT" | grep -qE 'state=Succeeded .* attempts=1 ' || fail_because "the adopted job did not succeed as attempt 1"
    verdict "batch: a lost 201 (502 after the job was created): found by its attempt's displayName, adopted, not posted again" "$OUT" "$T/lost-upload.err"
else
    skip "batch: a lost 201 (502 after the job was created): found by its attempt's displayName, adopted, not posted again" "$LIGHT_REASON"
fi

if full_run; then
    # the daemon stops between submission and completion: the restarted daemon
    # polls the same job to Succeeded, and submits nothing again
    REASONS=()
    control /reset '{}' >/dev/null
    # held Running until the first daemon is gone, however slow the machine
    control /config '{"retry_after_s": 1, "hold_jobs": true}' >/dev/null
    run_logged restart-capture capture --config "$T/batch.conf" --seconds 3
    LOG=$T/restart-1.log
    start_bg "$LOG" run --config "$T/batch.conf"
    pid=$DAEMON_PID
    wait_for_log "$LOG" 'event=batch_job_submitted' "$pid" 60 || fail_because "no job submitted"
    kill -TERM "$pid"
    wait_exit "$pid" || fail_because "the daemon did not stop"
    self1=$(sed -n 's/.*event=batch_job_submitted .*self=\([^ ]*\).*/\1/p' "$LOG" | head -n 1)
    grep -q 'event=batch_job_succeeded' "$LOG" && fail_because "a held job finished before the restart"
    control /config '{"hold_jobs": false}' >/dev/null
    LOG2=$T/restart-2.log
    start_bg "$LOG2" run --config "$T/batch.conf"
    pid=$DAEMON_PID
    wait_for_log "$LOG2" 'event=batch_job_succeeded' "$pid" 60 || fail_because "the restarted daemon did not finish the job"
    kill -TERM "$pid"
    wait_exit "$pid" || fail_because "the daemon did not stop"
    ALL_OUT+=("$LOG" "$LOG2")
    self2=$(sed -n 's/.*event=batch_job_succeeded .*self=\([^ ]*\).*/\1/p' "$LOG2" | head -n 1)
    [ -n "$self1" ] && [ "$self1" = "$self2" ] || fail_because "succeeded job ($self2) is not the submitted one ($self1)"
    # (the daemon captures its file source again: more windows, each submitted once)
    [ -z "$(submitted_blobs | uniq -d)" ] || fail_because "a blob was submitted twice across the restart"
    verdict "batch: a job submitted before a daemon restart is followed to Succeeded by the next daemon, not resubmitted" "$LOG" "$LOG2"
else
    skip "batch: a job submitted before a daemon restart is followed to Succeeded by the next daemon, not resubmitted" "$LIGHT_REASON"
fi

if full_run; then
    # short-lived tokens: the daemon refreshes before expiry (half their
    # lifetime early), never sends an expired one. 4 s natively; under qemu or
    # valgrind a TLS handshake beside another configuration can take seconds,
    # so they live 8 s there.
    REASONS=()
    control /reset '{}' >/dev/null
    lifetime=4
    is_native || lifetime=8
    # The jobs are held Running until a token has been refreshed, so that the
    # daemon keeps polling (with tokens) however fast or slow it runs.
    control /config "{\"token_lifetime_s\": $lifetime, \"retry_after_s\": 1, \"hold_jobs\": true}" >/dev/null
    run_logged batch3-capture capture --config "$T/batch.conf" --seconds 3
    printf '\n[metrics]\ntextfile = %s\ninterval_seconds = 1\n' "$T/edgecap.prom" >>"$T/batch.conf"
    LOG=$T/batch-daemon.log
    start_bg "$LOG" run --config "$T/batch.conf"
    pid=$DAEMON_PID
    wait_for_log "$LOG" 'event=token_issued scope=speech .*refresh=true' "$pid" 60 ||
        fail_because "no token refreshed while the jobs ran"
    control /config '{"hold_jobs": false}' >/dev/null
    wait_for_log "$LOG" 'event=batch_job_succeeded' "$pid" 60 || fail_because "no job succeeded under the daemon"
    kill -TERM "$pid"
    wait_exit "$pid" || fail_because "the daemon did not stop"
    ALL_OUT+=("$LOG")
    want_re "$LOG" 'event=token_issued scope=speech .*refresh=true'
    [ "$(control /requests | grep -c '"auth":"expired"')" = 0 ] || fail_because "an expired token reached the peer"
    verdict "short-lived tokens: refreshed before expires_in runs out; no expired token sent" "$LOG"

    # the same daemon's metrics: valid Prometheus text (the reference parser),
    # agreeing with what the daemon logged
    REASONS=()
    PROM=$T/prom.txt
    if /usr/bin/python3 "$EC_SRCDIR/tests/tools/prom_check.py" "$T/edgecap.prom" >"$PROM" 2>"$T/prom.err"; then
        acked=$(grep -c 'event=segment_uploaded' "$LOG")
        want_re "$PROM" "^edgecap_segments_acknowledged_total\\{\\} $acked$"
        want_re "$PROM" "^edgecap_upload_latency_seconds_count\\{\\} $acked$"
        want_re "$PROM" '^edgecap_upload_latency_seconds_bucket\{le="\+Inf"\} [1-9]'
        want_re "$PROM" '^edgecap_token_refreshes_total\{\} [1-9]'
        want_re "$PROM" '^edgecap_batch_submissions_total\{\} [1-9]'
        want_re "$PROM" '^edgecap_breaker_state\{endpoint="primary"\} 0$'
        want_re "$PROM" '^edgecap_spool_segments\{\} 0$'
        want_re "$PROM" '^edgecap_delivering\{\} 1$'
        [ "$acked" -ge 1 ] || fail_because "the daemon acknowledged nothing"
    else
        fail_because "the textfile does not parse: $(cat "$T/prom.err")"
    fi
    [ ! -e "$T/edgecap.prom.tmp" ] || fail_because "a temporary file was left"
    verdict "metrics textfile: parsed by prometheus_client, counters agree with the log" "$PROM" "$T/prom.err"
else
    skip "short-lived tokens: refreshed before expires_in runs out; no expired token sent" "$LIGHT_REASON"
    skip "metrics textfile: parsed by prometheus_client, counters agree with the log" "$LIGHT_REASON"
fi

# a damaged state file is reported and left for a human, never overwritten
REASONS=()
cp "$T/spool-batch/speech-jobs.json" "$T/jobs.good"
printf '{"version":1,"pending":[{"blob":' >"$T/spool-batch/speech-jobs.json"
cp "$T/spool-batch/speech-jobs.json" "$T/jobs.bad"
ec speech jobs --config "$T/batch.conf"
want_rc 65
want_err_fixed "$T/spool-batch/speech-jobs.json is damaged; it is left in place for inspection"
ec speech submit-now --config "$T/batch.conf"
want_rc 69
cmp -s "$T/jobs.bad" "$T/spool-batch/speech-jobs.json" || fail_because "the damaged state file was changed"
cp "$T/jobs.good" "$T/spool-batch/speech-jobs.json"
verdict "a damaged speech-jobs.json: speech jobs exits 65 with the reason, submit-now refuses, the file is left as it was"

# the batch device's audit trail, written by a dozen processes one after
# another: its hash chain and HMACs verify; an edited line is found
REASONS=()
ec audit verify --config "$T/batch.conf" "$T/audit-batch.log"
want_rc 0
want_out_re "^$T/audit-batch.log: [0-9]+ lines, hash chain intact, every HMAC verified$"
n=$(wc -l <"$T/audit-batch.log")
[ "$n" -ge 8 ] || fail_because "only $n audit lines"
cp "$T/audit-batch.log" "$T/audit-edited.log"
sed -i '5s/"event":"[a-z_]*"/"event":"nothing_happened"/' "$T/audit-edited.log"
ec audit verify --config "$T/batch.conf" "$T/audit-edited.log"
want_rc 65
want_err_fixed "edgecap: $T/audit-edited.log:5: hmac does not match"
ec audit verify "$T/audit-edited.log"
want_rc 65
want_err_fixed "edgecap: $T/audit-edited.log:6: prev does not match the line before"
sed -i '5d' "$T/audit-batch.log"
ec audit verify "$T/audit-batch.log"
want_rc 65
want_err_fixed "edgecap: $T/audit-batch.log:5: prev does not match the line before"
ec audit verify "$T/no-such.log"
want_rc 66
verdict "audit verify: the chain and HMACs of a real trail verify; an edited line (5) and a removed one are found"

# ---- no secret anywhere ------------------------------------------------------------------

REASONS=()
KEY1=$(cat "$SPEECH_KEY_PRIMARY_FILE")
KEY2=$(cat "$SPEECH_KEY_SECONDARY_FILE")
SIG=$(printf '%s' "$SAS" | sed -n 's/.*sig=\([^&]*\).*/\1/p')
for f in "${ALL_OUT[@]}" "$T"/audit-*.log; do
    [ -f "$f" ] || continue
    for secret in "$KEY1" "$KEY2" "$SIG" "$AUDIT_KEY"; do
        grep -qF -- "$secret" "$f" && fail_because "a secret in $(basename "$f")"
    done
    grep -qE 'eyJ[A-Za-z0-9_-]{10,}\.' "$f" && fail_because "a JWT (token or assertion) in $(basename "$f")"
    grep -qi 'bearer [A-Za-z0-9]' "$f" && fail_because "a bearer credential in $(basename "$f")"
done
verdict "no subscription key, SAS signature, token or assertion in any output or audit line"
finish
