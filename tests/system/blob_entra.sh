#!/bin/bash
# Blob upload with Entra ID against real peers: Azurite started with
# --oauth basic (it takes bearer tokens besides SAS and shared key) behind the
# mutual-TLS nginx front, and the Entra token peer (tests/peers/speech), which
# checks the device's signed client assertion and issues a storage-scope token
# that Azurite accepts. Shows:
#   - Put Blob, Put Block + Put Block List and Get Blob Properties carry
#     `Authorization: Bearer` and no SAS; one token per process, for
#     https://storage.azure.com/.default; acknowledged, wiped, read back byte
#     for byte with the right size, MD5 and metadata;
#   - a token Azurite refuses (expired, wrong audience) is answered 401
#     InvalidAuthenticationInfo with Azure's challenge; the device fetches one
#     new token and retries once per attempt, never loops; when the new token
#     is good the segment is acknowledged, when every token is bad it stays in
#     the spool and upload-once exits 69 with the service's code;
#   - no token, assertion or bearer value in the device's output or audit log.
# (Each block checks after its last `ec`, which clears REASONS.)
# shellcheck source-path=SCRIPTDIR disable=SC1091
# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 11

TOOL=${TOOL:-$BUILD/results/tool-run}

start_peers
# The container is made with the account key (shared key), as an operator
# would: Azurite's --oauth basic leaves shared key and SAS as they were.
"$PEERS" container "$P" audio >/dev/null 2>"$T/container.err" ||
    diag "peers.sh container failed: $(tail -n 2 "$T/container.err")"
ORIG=$T/orig
mkdir -p "$ORIG"
sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth 6 sine 200-700 vol 0.5
sox -q -n -r 48000 -c 2 -b 16 "$T/loud.wav" synth 6 whitenoise vol 0.3

# A provisioning file: target blob, [auth] mode entra, no SAS anywhere. One
# device id per spool, so that no two spools make the same blob name.
entra_config() { # FILE SPOOL_DIR DEVICE_ID [EXTRA-LINES-FOR-UPLOAD]
    local audit
    audit=$T/audit-$(basename "$1" .conf).log
    (
        umask 077
        cat >"$1" <<CONF
[device]
id = $3
require_mlock = off
keystore_dir = $T/keys

[capture]
source = file
file = $T/tone.wav
segment_seconds = 3

[spool]
dir = $2

[upload]
target = blob
endpoint = $BLOB_ENDPOINT
container = audio
connect_to = $CONNECT_TO
connect_to = $CONNECT_TO_LOGIN
retry_base_ms = 10
retry_max_ms = 200
${4:-}

[tls]
ca_file = $CA_FILE
client_cert = $CLIENT_CERT
client_key = $CLIENT_KEY
pin_current = $SERVER_PIN
allowed_hosts = $BLOB_HOST, $LOGIN_HOST

[auth]
mode = entra
tenant_id = $TENANT_ID
client_id = $CLIENT_ID
assertion_alg = ES256

[logging]
audit_file = $audit
CONF
    )
}

control() { "$PEERS" speech "$P" "$@"; }
# Storage-scope token requests the peer answered since its last reset, with
# RESULT (issued|refused) and, when given, token_mode MODE.
storage_tokens() { # RESULT [MODE]
    control '/requests?op=token' | node -e '
        const [result, mode] = process.argv.slice(1);
        let n = 0;
        for (const r of JSON.parse(require("fs").readFileSync(0, "utf8")))
            if (r.scope === "https://storage.azure.com/.default" && r.result === result &&
                (!mode || r.token_mode === mode)) n++;
        console.log(n);' "$@"
}
log_lines() { wc -l <"$ACCESS_LOG"; }
# The front's requests after line N of ACCESS_LOG in the order they began
# (nginx logs a request when it ends), one a line:
#   METHOD HOST(blob|login) STATUS UPSTREAM_STATUS AUTH_SCHEME SAS X_MS_VERSION
#   RESP_ERROR_CODE UPSTREAM_ERROR_CODE QUERY(-|block|blocklist|other)
requests_since() { # N
    tail -n +"$(($1 + 1))" "$ACCESS_LOG" | node -e '
        const [login] = process.argv.slice(1);
        const rs = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
        rs.sort((a, b) => a.msec - a.request_time - (b.msec - b.request_time));
        for (const r of rs) {
            const q = r.uri.includes("?") ? r.uri.slice(r.uri.indexOf("?") + 1) : "";
            const query = q === "" ? "-" : /^comp=block&blockid=[^&]+$/.test(q) ? "block"
                : q === "comp=blocklist" ? "blocklist" : "other";
            console.log([r.method, r.host === login ? "login" : "blob", r.status,
                r.upstream_status || "-", r.auth_scheme || "-", r.sas, r.x_ms_version || "-",
                r.resp_error_code || "-", r.upstream_error_code || "-", query].join(" "));
        }' "$LOGIN_HOST"
}
segments() { # CONFIG
    "$EDGECAP" spool ls --config "$1" 2>/dev/null | awk '$NF == "closed" {print $1}' | sort
}
# Keeps the plaintext of every segment (from the project's reader) to compare
# with what Azurite stores.
keep_originals() { # CONFIG SPOOL
    local name
    for name in $(segments "$1"); do
        "$TOOL" spool_cat "$2" "$T/keys" "$name" >"$ORIG/$name.ogg" 2>/dev/null
    done
}
blob_of() { # NAME  (DEVICE-YYYYMMDDTHHMMSSZ-SEQ)
    local id=${1%-*-*} ts
    ts=${1#"$id"-}
    echo "edgecap/$id/${ts:0:4}/${ts:4:2}/${ts:6:2}/$1.ogg"
}
ALL_OUT=()
run_logged() { # NAME ARGS...: runs edgecap, keeps its output for the secret scan
    local name=$1
    shift
    ec "$@"
    cp "$OUT" "$T/$name.out"
    cp "$ERR" "$T/$name.err"
    ALL_OUT+=("$T/$name.out" "$T/$name.err")
}

# ---- 1-5: the happy paths ----------------------------------------------------------

control /reset '{}' >/dev/null
C1=$T/put.conf
entra_config "$C1" "$T/spool1" be-0001
L0=$(log_lines)
run_logged put-capture capture --config "$C1" --seconds 6
mapfile -t S1 < <(segments "$C1")
keep_originals "$C1" "$T/spool1"
run_logged put-upload upload-once --config "$C1"
want_rc 0
want_out_re '^uploaded 2 segments '
[ "${#S1[@]}" = 2 ] || fail_because "captured ${#S1[@]} segments, expected 2"
[ -z "$(segments "$C1")" ] || fail_because "the spool is not empty after acknowledgment"
[ "$(grep -c '"event":"segment_acknowledged"' "$T/audit-put.log")" = 2 ] ||
    fail_because "not 2 segment_acknowledged audit lines"
requests_since "$L0" >"$T/put-requests.txt"
[ "$(grep -c '^PUT blob 201 201 Bearer no 2025-11-05 - - -$' "$T/put-requests.txt")" = 2 ] ||
    fail_because "not 2 Put Blob answered 201 by Azurite for a bearer token"
[ "$(grep -c '^HEAD blob 200 200 Bearer no 2025-11-05 - - -$' "$T/put-requests.txt")" = 2 ] ||
    fail_because "not 2 Get Blob Properties (HEAD) answered 200 for a bearer token"
verdict "Put Blob + Get Blob Properties with an Entra bearer token: 2 segments acknowledged by Azurite, spool wiped, audited" \
    "$T/put-upload.err" "$T/put-requests.txt"

C2=$T/block.conf
entra_config "$C2" "$T/spool2" be-0002 "block_bytes = 65536"
sed -i -e "s|^file = .*|file = $T/loud.wav|" -e "s|^segment_seconds = .*|segment_seconds = 6|" \
    -e "s|^\[capture\]|[capture]\nrate_hz = 48000\nchannels = 2|" \
    -e "s|^\[spool\]|[encoder]\nbitrate_bps = 128000\napplication = audio\n\n[spool]|" "$C2"
L1=$(log_lines)
run_logged block-capture capture --config "$C2" --seconds 6
mapfile -t S2 < <(segments "$C2")
keep_originals "$C2" "$T/spool2"
run_logged block-upload upload-once --config "$C2"
want_rc 0
[ "${#S2[@]}" = 1 ] || fail_because "captured ${#S2[@]} segments, expected 1"
[ -z "$(segments "$C2")" ] || fail_because "the spool is not empty after acknowledgment"
requests_since "$L1" >"$T/block-requests.txt"
blocks=$(grep -c '^PUT blob 201 201 Bearer no 2025-11-05 - - block$' "$T/block-requests.txt")
[ "$blocks" -ge 2 ] || fail_because "$blocks Put Block with a bearer token, expected 2 or more (> 64 KiB)"
[ "$(grep -c '^PUT blob 201 201 Bearer no 2025-11-05 - - blocklist$' "$T/block-requests.txt")" = 1 ] ||
    fail_because "not one Put Block List answered 201 for a bearer token"
grep -q '^HEAD blob 200 200 Bearer no ' "$T/block-requests.txt" || fail_because "no HEAD with a bearer token"
verdict "Put Block x$blocks + Put Block List + HEAD with a bearer token: a segment of > 64 KiB acknowledged" \
    "$T/block-upload.err" "$T/block-requests.txt"

"$PEERS" readback "$P" --container audio --prefix edgecap/ >"$T/readback.json" 2>"$T/readback.err" ||
    fail_because "readback failed: $(tail -n 2 "$T/readback.err")"
for name in "${S1[@]}" "${S2[@]}"; do
    blob=$(blob_of "$name")
    line=$(grep -F "\"name\":\"$blob\"" "$T/readback.json")
    if [ -z "$line" ]; then
        fail_because "no blob $blob"
        continue
    fi
    "$PEERS" readback "$P" --container audio --cat "$blob" >"$T/got.ogg" 2>/dev/null
    cmp -s "$T/got.ogg" "$ORIG/$name.ogg" || fail_because "$blob differs from the spooled audio"
    size=$(stat -c %s "$ORIG/$name.ogg")
    md5=$(openssl dgst -md5 -binary "$ORIG/$name.ogg" | base64)
    audited=$(cat "$T/audit-put.log" "$T/audit-block.log" | grep -F "\"segment\":\"$name\"")
    for want in "\"size\":$size," "\"contentMD5\":\"$md5\",\"md5\":\"$md5\"" '"contentType":"audio/ogg"' \
        "\"device\":\"${name%-*-*}\"" '"codec":"opus"' "\"seq\":\"$((10#${name##*-}))\"" '"durationms":"'; do
        [[ "$line" == *"$want"* ]] || fail_because "$blob: read-back lacks $want"
    done
    [[ "$audited" == *"\"content_md5\":\"$md5\""*"\"bytes\":$size,"* ]] ||
        fail_because "$name: the audit's content_md5/bytes are not the stored blob's"
done
verdict "read back with the SDK (shared key): 3 blobs, bytes = spooled plaintext, stored MD5 = computed = audited, size, metadata" \
    "$T/readback.json" "$T/readback.err"

control '/requests?op=token' >"$T/tokens.json"
[ "$(storage_tokens issued valid)" = 2 ] || fail_because "not 2 storage-scope tokens issued (one per upload-once)"
[ "$(grep -c '"op":"token"' "$T/tokens.json")" = 2 ] || fail_because "not exactly 2 token requests in all"
for want in '"alg":"ES256"' '"x5t_match":true' '"client_cert":"ec"' "\"client_id\":\"$CLIENT_ID\"" \
    '"grant_type":"client_credentials"' '"assertion_lifetime_s":300'; do
    [ "$(grep -cF "$want" "$T/tokens.json")" = 2 ] || fail_because "a token request lacks $want"
done
[ "$(cat "$T/put-requests.txt" "$T/block-requests.txt" | grep -c '^POST login 200 ')" = 2 ] ||
    fail_because "the front did not see 2 token requests"
verdict "token endpoint: one storage-scope token per process (ES256 assertion, x5t#S256 of the device certificate), reused for every blob request" \
    "$T/tokens.json"

cat "$T/put-requests.txt" "$T/block-requests.txt" | grep '^[A-Z]* blob ' >"$T/blob-requests.txt"
n=$(wc -l <"$T/blob-requests.txt")
[ "$n" -ge 8 ] || fail_because "only $n blob requests seen"
grep -v ' Bearer no 2025-11-05 ' "$T/blob-requests.txt" >"$T/odd.txt" &&
    fail_because "a blob request without Bearer, with a SAS or another x-ms-version: $(head -n 1 "$T/odd.txt")"
tail -n +"$((L0 + 1))" "$ACCESS_LOG" | grep "\"host\":\"$BLOB_HOST\"" | grep -qE 'sig=|[?&]s[vpe]=' &&
    fail_because "a SAS parameter in a blob URL"
verdict "on the wire: all $n blob requests carry Authorization: Bearer (auth_scheme), no SAS in the URL, x-ms-version 2025-11-05" \
    "$T/blob-requests.txt"

# ---- 6-9: tokens Azurite refuses --------------------------------------------------------

# The first token expired; the one fetched after the 401 is good.
C3=$T/once.conf
entra_config "$C3" "$T/spool3" be-0003
control /reset '{}' >/dev/null
control /config '{"storage_token_mode": "expired", "storage_token_mode_count": 1}' >/dev/null
run_logged once-capture capture --config "$C3" --seconds 3
L2=$(log_lines)
run_logged once-upload upload-once --config "$C3"
want_rc 0
want_out_re '^uploaded 1 segments .* 0 failed attempts'
[ -z "$(segments "$C3")" ] || fail_because "the spool is not empty"
requests_since "$L2" >"$T/once-requests.txt"
want_re "$T/once-requests.txt" '^PUT blob 401 403 Bearer no 2025-11-05 InvalidAuthenticationInfo AuthenticationFailed -$'
seq=$(awk '{print $1 "-" $3}' "$T/once-requests.txt" | tr '\n' ' ')
[ "$seq" = "POST-200 PUT-401 POST-200 PUT-201 HEAD-200 " ] ||
    fail_because "requests were: $seq(expected: token, PUT 401, new token, PUT 201, HEAD 200)"
[ "$(storage_tokens issued expired) $(storage_tokens issued valid)" = "1 1" ] ||
    fail_because "not one expired then one valid storage token"
want_re "$T/once-upload.err" 'event=auth_unauthorized scope=storage effect="fetching a new token, retrying once"'
verdict "an expired token: Azurite refuses it (403 AuthenticationFailed, sent on as Azure's 401 InvalidAuthenticationInfo); one new token, one retry, acknowledged" \
    "$T/once-upload.err" "$T/once-requests.txt"

# Azure's challenge, as the device receives it (curl with the device's identity).
control /config '{"storage_token_mode": "expired"}' >/dev/null
node "$EC_SRCDIR/tests/peers/speech/assertion.js" --key "$CLIENT_KEY" --cert "$CLIENT_CERT" \
    --client-id "$CLIENT_ID" --aud "$AUTHORITY_HOST/$TENANT_ID/oauth2/v2.0/token" 2>"$T/curl.err" |
    tr -d '\n' >"$T/assertion"
curl -sS --max-time 20 --cacert "$CA_FILE" --cert "$CLIENT_CERT" --key "$CLIENT_KEY" \
    --connect-to "$CONNECT_TO_LOGIN" --data-urlencode grant_type=client_credentials \
    --data-urlencode "client_id=$CLIENT_ID" --data-urlencode "scope=https://storage.azure.com/.default" \
    --data-urlencode "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
    --data-urlencode "client_assertion@$T/assertion" "$AUTHORITY_HOST/$TENANT_ID/oauth2/v2.0/token" \
    2>>"$T/curl.err" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' >"$T/expired-token"
claims=$(cut -d. -f2 "$T/expired-token" | node -e '
    const c = JSON.parse(Buffer.from(require("fs").readFileSync(0, "utf8").trim(), "base64url"));
    console.log(c.aud, c.iss.replace(/[0-9a-f-]{36}/, "TENANT"), c.exp < Date.now() / 1000 ? "expired" : "valid");' 2>/dev/null)
[ "$claims" = "https://storage.azure.com https://sts.windows.net/TENANT/ expired" ] ||
    fail_because "the peer's expired storage token has claims '$claims'"
# (the token goes to curl in a file, not on its command line)
printf 'Authorization: Bearer %s\n' "$(cat "$T/expired-token")" >"$T/auth.h"
code=$(curl -sS --max-time 20 -o /dev/null -D "$T/challenge.h" -w '%{http_code}' \
    --cacert "$CA_FILE" --cert "$CLIENT_CERT" --key "$CLIENT_KEY" --connect-to "$CONNECT_TO" \
    -H "x-ms-version: 2025-11-05" -H "@$T/auth.h" -I "$BLOB_ENDPOINT/audio/$(blob_of "${S1[0]}")" \
    2>>"$T/curl.err")
rm -f "$T/auth.h" "$T/assertion"
[ "$code" = 401 ] || fail_because "HEAD with an expired token: HTTP $code, expected 401"
tr -d '\r' <"$T/challenge.h" >"$T/challenge.txt"
want_fixed "$T/challenge.txt" "WWW-Authenticate: Bearer authorization_uri=https://login.microsoftonline.com/$TENANT_ID/oauth2/authorize resource_id=https://storage.azure.com"
want_fixed "$T/challenge.txt" 'x-ms-error-code: InvalidAuthenticationInfo'
want_re "$T/challenge.txt" '^x-ms-request-id: [0-9a-f-]{36}$'
want_re "$ACCESS_LOG" '"method":"HEAD",.*"status":401,.*"upstream_status":"403",.*"upstream_error_code":"AuthenticationFailed"'
verdict "the refusal the device sees for an expired token: 401, x-ms-error-code InvalidAuthenticationInfo, WWW-Authenticate naming the tenant and https://storage.azure.com" \
    "$T/challenge.txt" "$T/curl.err"

# Every token refused: one refresh and one retry per attempt, never a loop.
every_token_refused() { # MODE CONFIG
    local mode=$1 conf=$2 seq attempts tokens puts before kept
    control /reset '{}' >/dev/null
    control /config "{\"storage_token_mode\": \"$mode\"}" >/dev/null
    run_logged "$mode-capture" capture --config "$conf" --seconds 3
    kept=$(segments "$conf")
    before=$(log_lines)
    run_logged "$mode-upload" upload-once --config "$conf"
    want_rc 69
    want_err_fixed 'edgecap: the spool is not empty: unexpected server answer: Put Blob: HTTP 401 InvalidAuthenticationInfo'
    want_re "$T/$mode-upload.err" 'event=upload_failed .* http_status=401 code=InvalidAuthenticationInfo .*effect="kept in the spool"'
    [ "$(echo "$kept" | grep -c .)" = 1 ] || fail_because "$(echo "$kept" | grep -c .) segments captured, expected 1"
    [ "$(segments "$conf")" = "$kept" ] || fail_because "the spool changed"
    requests_since "$before" >"$T/$mode-requests.txt"
    grep -v '^POST login 200 \|^PUT blob 401 403 Bearer no 2025-11-05 InvalidAuthenticationInfo AuthenticationFailed -$' \
        "$T/$mode-requests.txt" >"$T/odd.txt" && fail_because "another request: $(head -n 1 "$T/odd.txt")"
    # T = a token request, P = a refused Put Blob
    seq=$(awk '{print ($1 == "POST" ? "T" : "P")}' "$T/$mode-requests.txt" | tr -d '\n')
    attempts=$(sed -n 's/.*, \([0-9]*\) failed attempts,.*/\1/p' "$OUT")
    tokens=$(grep -c '^POST' "$T/$mode-requests.txt")
    puts=$(grep -c '^PUT' "$T/$mode-requests.txt")
    # first attempt: token, PUT, new token, PUT; each later one: PUT with the
    # token kept from the last, new token, PUT
    [[ "$seq" =~ ^TPTP(PTP)*$ ]] || fail_because "requests in the order $seq, expected TPTP(PTP)*"
    if [ -z "$attempts" ] || [ "$puts" != $((2 * attempts)) ] || [ "$tokens" != $((attempts + 1)) ]; then
        fail_because "$puts PUTs and $tokens tokens for ${attempts:-?} attempts (expected 2 and 1 more per attempt)"
    fi
    [ "$(storage_tokens issued "$mode")" = "$tokens" ] || fail_because "the peer issued other than $tokens $mode tokens"
    verdict "every token $mode: Azurite refuses, 401 to the device; ${attempts:-?} attempts of exactly 2 PUTs each around one new token ($seq); segment kept; exit 69 with the code" \
        "$T/$mode-upload.err" "$T/$mode-requests.txt"
}
C4=$T/expired.conf
entra_config "$C4" "$T/spool4" be-0004
every_token_refused expired "$C4"
C5=$T/wrong_aud.conf
entra_config "$C5" "$T/spool5" be-0005
every_token_refused wrong_aud "$C5"

# Nothing was lost: with good tokens again the kept segments go.
control /config '{"storage_token_mode": "valid"}' >/dev/null
run_logged drain4 upload-once --config "$C4"
rc4=$RC
run_logged drain5 upload-once --config "$C5"
want_rc 0
[ "$rc4" = 0 ] || fail_because "upload-once (expired's spool) exited $rc4"
[ -z "$(segments "$C4")$(segments "$C5")" ] || fail_because "a spool is not empty"
"$PEERS" readback "$P" --container audio --prefix edgecap/ --no-tags >"$T/readback2.json" 2>/dev/null
[ "$(grep -c '"name"' "$T/readback2.json")" = 6 ] || fail_because "not 6 blobs stored in all"
verdict "tokens good again: the segments kept through the refusals are acknowledged (6 blobs in all)" \
    "$T/drain4.err" "$T/drain5.err" "$T/readback2.json"

# ---- 10: no secret anywhere -----------------------------------------------------------

for f in "${ALL_OUT[@]}" "$T"/audit-*.log "$ACCESS_LOG"; do
    [ -f "$f" ] || continue
    grep -qE 'eyJ[A-Za-z0-9_-]{10,}' "$f" && fail_because "a JWT (token or assertion) in $(basename "$f")"
    grep -qiE 'bearer +[A-Za-z0-9._~+/-]' "$f" && fail_because "a bearer credential in $(basename "$f")"
done
# the pattern finds the peer's tokens (the one fetched for the challenge check)
grep -qE '^eyJ[A-Za-z0-9_-]{10,}\.' "$T/expired-token" || fail_because "the JWT pattern misses a peer token"
verdict "no token, assertion or bearer value in the device's output, its audit logs or the access log (${#ALL_OUT[@]} outputs)"

finish
