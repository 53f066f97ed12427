#!/usr/bin/env bash
# Proves that the test peers behave as tests/peers/peers.sh says, with
# standard tools only (curl, openssl s_client, the SDK read-back, opusinfo and
# opusdec, speech/assertion.js signing with node's crypto): the happy path
# through nginx to Azurite, the server side of mutual pinning, the Speech and
# token peer (contract errors, job states, fast transcription, every refusal
# of a client assertion, credentials and injected faults), every fault front,
# restart, and that stop leaves no process behind. TAP on stdout; exit status
# non-zero when a check failed.
#
#   tests/peers/selftest.sh            (KEEP=1 keeps the scratch directory)
# shellcheck disable=SC1090,SC1091  # peers.env and fault.env are written at run time
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEERS=$HERE/peers.sh
T=$(mktemp -d "${TMPDIR:-/tmp}/edgecap-peers.XXXXXX") || exit 1
P=$T/peers

cleanup() {
    "$PEERS" stop "$P" >/dev/null 2>&1
    if [ "${KEEP:-0}" = 1 ]; then
        echo "# kept $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

N=0 FAILED=0 REASONS=()
plan() { PLANNED=$1; echo "1..$1"; }
diag() { printf '%s\n' "$@" | sed 's/^/# /'; }
fail_because() { REASONS+=("$*"); }
verdict() { # DESCRIPTION [FILE TO SHOW ON FAILURE...]
    local desc=$1 f
    shift
    N=$((N + 1))
    if [ "${#REASONS[@]}" -eq 0 ]; then
        echo "ok $N - $desc"
    else
        FAILED=$((FAILED + 1))
        echo "not ok $N - $desc"
        diag "${REASONS[@]}"
        for f in "$@"; do
            [ -s "$f" ] || continue
            echo "# $f:"
            tail -n 8 "$f" | cut -c1-300 | sed 's/^/#   /'
        done
    fi
    REASONS=()
}
want_eq() { # WHAT GOT EXPECTED
    [ "$2" = "$3" ] || fail_because "$1: got '$2', expected '$3'"
}
want_re() { # FILE REGEX
    grep -qE -- "$2" "$1" 2>/dev/null || fail_because "$(basename "$1") has no line matching /$2/"
}
want_fixed() { # FILE STRING
    grep -qF -- "$2" "$1" 2>/dev/null || fail_because "$(basename "$1") does not contain '$2'"
}
want_no_fixed() { # FILE STRING
    ! grep -qF -- "$2" "$1" 2>/dev/null || fail_because "$(basename "$1") unexpectedly contains '$2'"
}
want_no_re() { # FILE REGEX
    ! grep -qE -- "$2" "$1" 2>/dev/null || fail_because "$(basename "$1") unexpectedly matches /$2/"
}
running() {
    local state
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
listening() {
    grep -qE "^ *[0-9]+: 0100007F:$(printf '%04X' "$1") 00000000:0000 0A " /proc/net/tcp
}
# Polls for a line in FILE (a log written when a request ends); at most 10 s.
wait_line() { # FILE REGEX
    local i
    for ((i = 0; i < 200; i++)); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# curl as the device: client certificate, server CA, the real host name
# reached through --connect-to. Sets CODE and CURL_RC; headers in $T/h, body
# in $T/b, curl's stderr in $T/e.
device_curl() { # PORT [CURL ARGS...] URL
    local port=$1
    shift
    CODE=$(curl -sS --max-time 20 -o "$T/b" -D "$T/h" -w '%{http_code}' \
        --cacert "$CA_FILE" --cert "$CLIENT_CERT" --key "$CLIENT_KEY" \
        --connect-to "$BLOB_HOST:443:127.0.0.1:$port" "$@" 2>"$T/e")
    CURL_RC=$?
}
header() { # NAME: the value of a response header in $T/h
    grep -i "^$1:" "$T/h" | tail -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}
blobs_under() { # PREFIX: number of blobs in container "audio" under PREFIX
    "$PEERS" readback "$P" --container audio --prefix "$1" --no-tags | grep -c '"name"'
}
fault() { # KIND [ARG...]: starts a fault front and sources its fault.env
    local port
    port=$("$PEERS" fault "$P" "$@" 2>"$T/fault.err") || {
        fail_because "peers.sh fault $*: $(tail -n 3 "$T/fault.err")"
        return 1
    }
    # shellcheck disable=SC1090
    . "$P/fault-$port/fault.env"
}

plan 53
T0=$EPOCHREALTIME

# ---- start ------------------------------------------------------------------
S0=$EPOCHREALTIME
"$PEERS" start "$P" >"$T/start.out" 2>"$T/start.err"
rc=$?
START_S=$(awk -v a="$S0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
want_eq "peers.sh start status" "$rc" 0
if [ -f "$P/peers.env" ]; then
    # shellcheck disable=SC1091
    . "$P/peers.env"
    for v in NGINX_PORT NGINX_PID AZURITE_PORT AZURITE_PID CA_FILE SERVER_PIN NEXT_PIN CLIENT_CERT \
        CLIENT_KEY CLIENT_KEY_DER ACCOUNT ACCOUNT_KEY BLOB_HOST CONNECT_TO ACCESS_LOG AZURITE_URL \
        SPEECH_HOST SPEECH_ENDPOINT LOGIN_HOST AUTHORITY_HOST TENANT_ID CLIENT_ID RSA_CLIENT_ID \
        RSA_CLIENT_CERT RSA_CLIENT_KEY RSA_CLIENT_KEY_DER SPEECH_KEY_PRIMARY_FILE \
        SPEECH_KEY_SECONDARY_FILE SPEECH_PORT SPEECH_PID SPEECH_CONTROL SPEECH_LOG CONNECT_TO_SPEECH \
        CONNECT_TO_LOGIN; do
        [ -n "${!v:-}" ] || fail_because "peers.env has no $v"
    done
    running "$NGINX_PID" || fail_because "nginx (pid $NGINX_PID) is not running"
    running "$AZURITE_PID" || fail_because "Azurite (pid $AZURITE_PID) is not running"
    running "$SPEECH_PID" || fail_because "the Speech peer (pid $SPEECH_PID) is not running"
    want_eq CONNECT_TO "$CONNECT_TO" "devstoreaccount1.blob.core.windows.net:443:127.0.0.1:$NGINX_PORT"
    want_eq CONNECT_TO_SPEECH "$CONNECT_TO_SPEECH" \
        "edgecap-speech.cognitiveservices.azure.com:443:127.0.0.1:$NGINX_PORT"
    want_eq CONNECT_TO_LOGIN "$CONNECT_TO_LOGIN" "login.microsoftonline.com:443:127.0.0.1:$NGINX_PORT"
    want_eq SPEECH_ENDPOINT "$SPEECH_ENDPOINT" https://edgecap-speech.cognitiveservices.azure.com
    want_eq AUTHORITY_HOST "$AUTHORITY_HOST" https://login.microsoftonline.com
    for v in TENANT_ID CLIENT_ID RSA_CLIENT_ID; do
        [[ "${!v}" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] ||
            fail_because "$v is not a GUID"
    done
    grep -qE '^SPEECH_KEY_(PRIMARY|SECONDARY)=' "$P/peers.env" && fail_because "peers.env holds a key value"
else
    fail_because "no peers.env"
fi
verdict "start brings up Azurite, the Speech peer and nginx on free ports in ${START_S} s and writes peers.env" \
    "$T/start.err"
if [ "$rc" -ne 0 ]; then
    diag "cannot go on without peers"
    exit 1
fi
diag "start took ${START_S} s; Azurite $(node -p "require('$HERE/node_modules/azurite/package.json').version"), nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(openssl version | cut -d' ' -f1-2)"

# ---- container, SAS -----------------------------------------------------------
SAS=$("$PEERS" container "$P" audio 2>"$T/e")
[[ "$SAS" == *"sp=rcwt"* ]] || fail_because "SAS has no sp=rcwt: ${SAS:0:60}"
[[ "$SAS" == *"spr=https"* ]] || fail_because "SAS is not https-only"
[[ "$SAS" == *"sig="* ]] || fail_because "SAS has no signature"
verdict "container audio made, container SAS (rcwt, https) from the SDK" "$T/e"

# ---- Put Blob through nginx -----------------------------------------------------
head -c 70000 /dev/urandom >"$T/seg1.ogg"
MD5=$(openssl dgst -md5 -binary "$T/seg1.ogg" | base64)
BLOB=edgecap/test-0001/2026/01/02/test-0001-20260102T030405Z-000001.ogg
put_blob() { # PORT FILE NAME [EXTRA CURL ARGS...]
    local port=$1 file=$2 name=$3 md5
    shift 3
    md5=$(openssl dgst -md5 -binary "$file" | base64)
    device_curl "$port" -X PUT -H "x-ms-blob-type: BlockBlob" -H "Content-MD5: $md5" \
        -H "If-None-Match: *" -H "x-ms-version: 2021-08-06" -H "x-ms-blob-content-type: audio/ogg" \
        -H "Content-Type: application/octet-stream" "$@" --data-binary "@$file" \
        "https://$BLOB_HOST/audio/$name?$SAS"
}
put_blob "$NGINX_PORT" "$T/seg1.ogg" "$BLOB" -H "x-ms-meta-device: test-0001" -H "x-ms-meta-seq: 1" \
    -H "x-ms-encryption-scope: edgecap-scope" --resolve "$BLOB_HOST:$NGINX_PORT:127.0.0.1"
want_eq "HTTP status" "$CODE" 201
want_eq "echoed Content-MD5" "$(header content-md5)" "$MD5"
want_re "$ACCESS_LOG" "\"method\":\"PUT\",\"uri\":\"/audio/$BLOB\\?[^\"]*sig=REDACTED"
want_re "$ACCESS_LOG" '"status":201,'
want_re "$ACCESS_LOG" '"tls":"TLSv1\.[23]"'
want_re "$ACCESS_LOG" '"client_verify":"SUCCESS"'
want_fixed "$ACCESS_LOG" "\"content_md5\":\"$MD5\""
want_re "$ACCESS_LOG" '"if_none_match":"\*"'
want_re "$ACCESS_LOG" '"x_ms_encryption_scope":"edgecap-scope"'
want_re "$ACCESS_LOG" "\"host\":\"$BLOB_HOST\""
want_no_fixed "$ACCESS_LOG" "${SAS##*sig=}"
want_eq "requests logged" "$(wc -l <"$ACCESS_LOG")" 1
verdict "Put Blob through nginx with the device cert: 201, Content-MD5 echoed, headers in the access log, SAS not" \
    "$T/h" "$T/b" "$T/e" "$ACCESS_LOG"

# ---- read back ------------------------------------------------------------------
"$PEERS" readback "$P" --container audio --prefix edgecap/ --out-dir "$T/rb" >"$T/rb.json" 2>"$T/e"
want_eq "blobs read back" "$(grep -c '"name"' "$T/rb.json")" 1
cmp -s "$T/seg1.ogg" "$T/rb/$BLOB" || fail_because "read-back bytes differ from what was sent"
want_fixed "$T/rb.json" "\"contentMD5\":\"$MD5\",\"md5\":\"$MD5\""
want_re "$T/rb.json" '"contentType":"audio/ogg"'
want_re "$T/rb.json" '"metadata":\{"device":"test-0001","seq":"1"\}'
"$PEERS" readback "$P" --container audio --cat "$BLOB" 2>>"$T/e" | cmp -s - "$T/seg1.ogg" ||
    fail_because "readback --cat bytes differ"
verdict "readback.js (SDK, straight to Azurite) returns the same bytes, MD5, type and metadata" \
    "$T/rb.json" "$T/e"

# ---- If-None-Match ------------------------------------------------------------------
put_blob "$NGINX_PORT" "$T/seg1.ogg" "$BLOB"
want_eq "HTTP status" "$CODE" 409
want_re "$T/b" '<Code>BlobAlreadyExists</Code>'
want_eq "x-ms-error-code" "$(header x-ms-error-code)" BlobAlreadyExists
verdict "a second Put Blob with If-None-Match: * gets 409 BlobAlreadyExists" "$T/h" "$T/b"

# ---- Put Block + Put Block List + HEAD ---------------------------------------------
head -c 40000 /dev/urandom >"$T/b1"
head -c 25000 /dev/urandom >"$T/b2"
cat "$T/b1" "$T/b2" >"$T/seg2.ogg"
BLOB2=edgecap/test-0001/2026/01/02/test-0001-20260102T030505Z-000002.ogg
ids=()
for i in 1 2; do
    id=$(printf 'block-%06d' "$i" | base64)
    ids+=("$id")
    device_curl "$NGINX_PORT" -X PUT -H "Content-MD5: $(openssl dgst -md5 -binary "$T/b$i" | base64)" \
        --data-binary "@$T/b$i" "https://$BLOB_HOST/audio/$BLOB2?comp=block&blockid=${id//=/%3D}&$SAS"
    want_eq "Put Block $i status" "$CODE" 201
    [ -z "$(header content-md5)" ] || diag "Azurite now echoes Content-MD5 on Put Block"
done
MD5_2=$(openssl dgst -md5 -binary "$T/seg2.ogg" | base64)
printf '<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>%s</Latest><Latest>%s</Latest></BlockList>' \
    "${ids[@]}" >"$T/list.xml"
device_curl "$NGINX_PORT" -X PUT -H "Content-MD5: $(openssl dgst -md5 -binary "$T/list.xml" | base64)" \
    -H "x-ms-blob-content-md5: $MD5_2" -H "x-ms-blob-content-type: audio/ogg" -H "If-None-Match: *" \
    -H "x-ms-meta-seq: 2" --data-binary "@$T/list.xml" "https://$BLOB_HOST/audio/$BLOB2?comp=blocklist&$SAS"
want_eq "Put Block List status" "$CODE" 201
device_curl "$NGINX_PORT" -I "https://$BLOB_HOST/audio/$BLOB2?$SAS"
want_eq "HEAD status" "$CODE" 200
want_eq "HEAD Content-Length" "$(header content-length)" 65000
want_eq "HEAD Content-MD5" "$(header content-md5)" "$MD5_2"
"$PEERS" readback "$P" --container audio --cat "$BLOB2" 2>"$T/e" | cmp -s - "$T/seg2.ogg" ||
    fail_because "read-back of the block blob differs"
verdict "Put Block x2 + Put Block List (x-ms-blob-content-md5) + HEAD: length and MD5 as sent" \
    "$T/h" "$T/b" "$T/e"

# ---- server side of mutual pinning --------------------------------------------------
before=$(blobs_under edgecap/nocert)
CODE=$(curl -sS --max-time 20 -o "$T/b" -w '%{http_code}' --cacert "$CA_FILE" \
    --connect-to "$CONNECT_TO" -X PUT -H "x-ms-blob-type: BlockBlob" --data-binary "@$T/seg1.ogg" \
    "https://$BLOB_HOST/audio/edgecap/nocert/x.ogg?$SAS" 2>"$T/e")
want_eq "HTTP status without a client certificate" "$CODE" 400
want_re "$T/b" 'No required SSL certificate was sent'
want_eq "blobs created" "$(blobs_under edgecap/nocert)" "$before"
verdict "no client certificate: TLS completes, nginx answers 400, no blob appears" "$T/b" "$T/e"

CODE=$(curl -sS --max-time 20 -o "$T/b" -w '%{http_code}' --cacert "$CA_FILE" \
    --cert "$FOREIGN_CLIENT_CERT" --key "$FOREIGN_CLIENT_KEY" --connect-to "$CONNECT_TO" -X PUT \
    -H "x-ms-blob-type: BlockBlob" --data-binary "@$T/seg1.ogg" \
    "https://$BLOB_HOST/audio/edgecap/foreign/x.ogg?$SAS" 2>"$T/e")
want_eq "HTTP status with a certificate from another CA" "$CODE" 400
want_re "$T/b" 'The SSL certificate error'
want_eq "blobs created" "$(blobs_under edgecap/foreign)" 0
verdict "client certificate from another CA: 400 (SSL certificate error), no blob" "$T/b" "$T/e"

CODE=$(curl -sS --max-time 20 -o "$T/b" -w '%{http_code}' --cacert "$CA_FILE" \
    --cert "$OTHER_CLIENT_CERT" --key "$OTHER_CLIENT_KEY" --connect-to "$CONNECT_TO" -X PUT \
    -H "x-ms-blob-type: BlockBlob" --data-binary "@$T/seg1.ogg" \
    "https://$BLOB_HOST/audio/edgecap/other/x.ogg?$SAS" 2>"$T/e")
want_eq "HTTP status with an unprovisioned certificate of the device CA" "$CODE" 403
want_eq "blobs created" "$(blobs_under edgecap/other)" 0
verdict "device-CA certificate that is not the provisioned one (fingerprint): 403, no blob" "$T/b" "$T/e"

# ---- client-side checks the device will make, done with curl ---------------------------
device_curl "$NGINX_PORT" --pinnedpubkey "$SERVER_PIN" "https://$BLOB_HOST/?comp=list"
want_eq "status with SERVER_PIN pinned" "$CODE" 403 # Azurite: no SAS on this probe
want_eq "x-ms-error-code" "$(header x-ms-error-code)" AuthorizationFailure
device_curl "$NGINX_PORT" --pinnedpubkey "$NEXT_PIN" "https://$BLOB_HOST/?comp=list"
want_eq "curl status with only NEXT_PIN pinned" "$CURL_RC" 90
CODE=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' --cacert "$CA_FILE" --cert "$CLIENT_CERT" \
    --key-type DER --key "$CLIENT_KEY_DER" --connect-to "$CONNECT_TO" "https://$BLOB_HOST/?comp=list" 2>"$T/e")
want_eq "status with the DER key" "$CODE" 403
verdict "SERVER_PIN matches the main front (curl --pinnedpubkey), NEXT_PIN does not; CLIENT_KEY_DER works" \
    "$T/e"

# server-key: the main front moves to the next key and CA while it runs, and back.
"$PEERS" server-key "$P" next >"$T/sk.out" 2>"$T/sk.err" || fail_because "server-key next failed"
device_curl "$NGINX_PORT" --cacert "$NEXT_CA_FILE" --pinnedpubkey "$NEXT_PIN" "https://$BLOB_HOST/?comp=list"
want_eq "status with NEXT_CA_FILE and NEXT_PIN after server-key next" "$CODE" 403
device_curl "$NGINX_PORT" --pinnedpubkey "$NEXT_PIN" "https://$BLOB_HOST/?comp=list"
want_eq "curl status with the current CA after server-key next" "$CURL_RC" 60
device_curl "$NGINX_PORT" --cacert "$NEXT_CA_FILE" --pinnedpubkey "$SERVER_PIN" "https://$BLOB_HOST/?comp=list"
want_eq "curl status with only SERVER_PIN after server-key next" "$CURL_RC" 90
"$PEERS" server-key "$P" current >>"$T/sk.out" 2>>"$T/sk.err" || fail_because "server-key current failed"
device_curl "$NGINX_PORT" --pinnedpubkey "$SERVER_PIN" "https://$BLOB_HOST/?comp=list"
want_eq "status with SERVER_PIN after server-key current" "$CODE" 403
"$PEERS" server-key "$P" sideways >"$T/sk-bad.out" 2>"$T/sk-bad.err"
want_eq "exit status of server-key sideways" "$?" 64
want_re "$T/sk-bad.err" 'usage: peers.sh server-key DIR current\|next'
verdict "server-key next/current: the running front presents the next key from NEXT_CA_FILE, then the current one again" \
    "$T/sk.err" "$T/e"

timeout 10 openssl s_client -connect "127.0.0.1:$NGINX_PORT" -servername "$BLOB_HOST" \
    -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null >"$T/s" 2>&1
want_re "$T/s" 'Cipher is \(NONE\)'
timeout 10 openssl s_client -connect "127.0.0.1:$NGINX_PORT" -servername "$BLOB_HOST" \
    -tls1_2 -CAfile "$CA_FILE" </dev/null >"$T/s2" 2>&1
want_re "$T/s2" 'Protocol *: TLSv1\.2'
want_re "$T/s2" 'Cipher *: ECDHE-ECDSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)'
verdict "main front: TLS 1.1 refused, TLS 1.2 with ECDHE+AEAD only" "$T/s" "$T/s2"

# ---- the Speech + Entra ID peer (speech/server.js) -----------------------------------
# curl as the device to the Speech and login hosts (EC identity unless SCERT /
# SKEY say otherwise). Sets CODE; headers in $T/h, body in $T/b.
speech_curl() { # [CURL ARGS...] URL
    CODE=$(curl -sS --max-time 20 -o "$T/b" -D "$T/h" -w '%{http_code}' --cacert "$CA_FILE" \
        --cert "${SCERT:-$CLIENT_CERT}" --key "${SKEY:-$CLIENT_KEY}" \
        --connect-to "$CONNECT_TO_SPEECH" --connect-to "$CONNECT_TO_LOGIN" "$@" 2>"$T/e")
    CURL_RC=$?
}
# The value of a JavaScript expression over d, the JSON in $T/b (or FILE).
json() { # EXPR [FILE]
    node -e 'const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        const v = eval(process.argv[2]);
        process.stdout.write(typeof v === "string" ? v : JSON.stringify(v) ?? "undefined");' \
        "${2:-$T/b}" "$1" 2>/dev/null || echo "(no JSON)"
}
# The control API, straight (peers.sh speech is checked once, below).
control() { # PATH [JSON]
    if [ $# -ge 2 ]; then
        curl -sS --max-time 10 -H 'Content-Type: application/json' --data-binary "$2" "$SPEECH_CONTROL$1"
    else
        curl -sS --max-time 10 "$SPEECH_CONTROL$1"
    fi
}
# The last request record of OP (compact JSON, one line) in $T/rec.
last_record() { control "/requests?op=$1&last=1" >"$T/rec"; }
api() { echo "$SPEECH_ENDPOINT/speechtotext/$1?api-version=2024-11-15"; }
TOKEN_URL="$AUTHORITY_HOST/$TENANT_ID/oauth2/v2.0/token"
SPEECH_SCOPE=https://cognitiveservices.azure.com/.default
SECRETS=()
assertion() { # [assertion.js OPTIONS...]: an EC assertion for CLIENT_ID (options override)
    node "$HERE/speech/assertion.js" --key "$CLIENT_KEY" --cert "$CLIENT_CERT" --client-id "$CLIENT_ID" \
        --aud "$TOKEN_URL" "$@"
}
token_req() { # ASSERTION [CLIENT_ID [SCOPE [TOKEN_URL]]]
    SECRETS+=("$1")
    speech_curl --data-urlencode grant_type=client_credentials --data-urlencode "client_id=${2:-$CLIENT_ID}" \
        --data-urlencode "scope=${3:-$SPEECH_SCOPE}" \
        --data-urlencode "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
        --data-urlencode "client_assertion=$1" "${4:-$TOKEN_URL}"
}
# The access token of a 200 answer in $T/b.
access_token() { sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' "$T/b"; }
KEY1=$(cat "$SPEECH_KEY_PRIMARY_FILE") KEY2=$(cat "$SPEECH_KEY_SECONDARY_FILE")
SECRETS+=("$KEY1" "$KEY2" "${SAS##*sig=}")

[ "$(stat -c %a "$SPEECH_KEY_PRIMARY_FILE") $(stat -c %a "$SPEECH_KEY_SECONDARY_FILE")" = "600 600" ] ||
    fail_because "the key files are not mode 0600"
if ! [[ "$KEY1" =~ ^[0-9a-f]{32}$ ]] || [ "$KEY1" = "$KEY2" ]; then
    fail_because "the keys are not two distinct 32-hex-digit values"
fi
openssl x509 -in "$SERVER_CERT" -noout -ext subjectAltName >"$T/san" 2>&1
want_fixed "$T/san" "DNS:$SPEECH_HOST"
want_fixed "$T/san" "DNS:$LOGIN_HOST"
want_fixed "$T/san" "DNS:$BLOB_HOST"
openssl x509 -in "$RSA_CLIENT_CERT" -noout -text >"$T/rsa" 2>&1
want_re "$T/rsa" 'Public-Key: \(3072 bit\)'
openssl verify -CAfile "$DEVICE_CA" "$RSA_CLIENT_CERT" >/dev/null 2>&1 ||
    fail_because "RSA_CLIENT_CERT is not from the device CA"
CODE=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' --cacert "$CA_FILE" --cert "$RSA_CLIENT_CERT" \
    --key-type DER --key "$RSA_CLIENT_KEY_DER" --connect-to "$CONNECT_TO" "https://$BLOB_HOST/?comp=list" 2>"$T/e")
want_eq "blob front with the RSA identity (DER key): Azurite's answer" "$CODE" 403
SCERT=$OTHER_CLIENT_CERT SKEY=$OTHER_CLIENT_KEY speech_curl "$(api transcriptions/00000000-0000-0000-0000-000000000000)"
want_eq "Speech host with OTHER_CLIENT_CERT" "$CODE" 403
[ -z "$(header apim-request-id)" ] || fail_because "OTHER_CLIENT_CERT reached the Speech peer"
speech_curl "$(api transcriptions/00000000-0000-0000-0000-000000000000)"
want_eq "Speech host without a credential" "$CODE" 401
want_fixed "$T/b" '{"code":"Unauthorized","message":"edgecap peer: no credential'
[ -n "$(header apim-request-id)" ] || fail_because "no apim-request-id: not the Speech peer"
"$PEERS" speech "$P" /registration >"$T/reg" 2>>"$T/e" || fail_because "peers.sh speech /registration failed"
want_fixed "$T/reg" "\"client_id\":\"$RSA_CLIENT_ID\""
"$PEERS" speech "$P" /config '{"no_such_setting":1}' >"$T/cfg" 2>&1 && fail_because "an unknown setting was taken"
want_fixed "$T/cfg" "unknown setting no_such_setting"
verdict "Speech/login hosts in the server certificate, routed by Host to the Speech peer: RSA device cert admitted, OTHER refused (403), no credential 401; peers.sh speech reaches the control API" \
    "$T/b" "$T/e" "$T/san" "$T/cfg"

# ---- Entra ID token endpoint ----
token_req "$(assertion)"
want_eq "ES256: status" "$CODE" 200
want_re "$T/b" '^\{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"[^"]+"\}$'
TOKEN=$(access_token)
SECRETS+=("$TOKEN")
last_record token
for f in '"alg":"ES256"' '"client_cert":"ec"' '"result":"issued"' '"x5t_match":true' "\"scope\":\"$SPEECH_SCOPE\""; do
    want_fixed "$T/rec" "$f"
done
SCERT=$RSA_CLIENT_CERT SKEY=$RSA_CLIENT_KEY token_req "$(assertion --key "$RSA_CLIENT_KEY" \
    --cert "$RSA_CLIENT_CERT" --client-id "$RSA_CLIENT_ID")" "$RSA_CLIENT_ID"
want_eq "PS256: status" "$CODE" 200
RSA_TOKEN=$(access_token)
SECRETS+=("$RSA_TOKEN")
last_record token
for f in '"alg":"PS256"' '"client_cert":"rsa"' '"client_key_type":"rsa"' '"result":"issued"'; do
    want_fixed "$T/rec" "$f"
done
token_req "$(assertion)" "" https://storage.azure.com/.default
want_eq "storage scope: status" "$CODE" 200
STORAGE_TOKEN=$(access_token)
SECRETS+=("$STORAGE_TOKEN")
want_eq "storage token aud iss lifetime" "$(echo "$STORAGE_TOKEN" | cut -d. -f2 | node -e \
    'const c = JSON.parse(Buffer.from(require("fs").readFileSync(0, "utf8").trim(), "base64url"));
     process.stdout.write([c.aud, c.iss, c.exp - c.iat].join(" "))')" \
    "https://storage.azure.com https://sts.windows.net/$TENANT_ID/ 3600"
verdict "token endpoint: ES256 (EC client) and PS256 (RSA client) certificate assertions get Bearer tokens (3600 s); storage scope too" \
    "$T/b" "$T/rec" "$T/e"

# One refusal per check: error_description names what failed.
refused() { # DESCRIPTION STATUS ERROR REASON ASSERTION
    local desc=$1 status=$2 error=$3 reason=$4
    token_req "$5"
    want_eq "status" "$CODE" "$status"
    want_fixed "$T/b" "{\"error\":\"$error\",\"error_description\":\"AADSTS"
    want_re "$T/b" '"error_codes":\[[0-9]+\],"timestamp":"[^"]+","trace_id":"[^"]+","correlation_id":"[^"]+"'
    want_fixed "$T/b" ": edgecap peer: $reason"
    want_no_fixed "$T/b" "$5"
    last_record token
    want_fixed "$T/rec" '"result":"refused"'
    want_fixed "$T/rec" "\"reason\":\"$reason"
    verdict "token endpoint refuses $desc: $status $error, \"$reason\"" "$T/b" "$T/rec"
}
refused "an assertion signed by another key" 401 invalid_client "signature verification failed" \
    "$(assertion --key "$OTHER_CLIENT_KEY")"
refused "a wrong aud" 401 invalid_client "aud does not match the token endpoint $TOKEN_URL" \
    "$(assertion --aud "https://login.microsoftonline.com/common/oauth2/v2.0/token")"
refused "an expired assertion" 401 invalid_client "assertion expired" "$(assertion --iat-offset -700 --lifetime 600)"
refused "exp - iat > 600 s" 401 invalid_client "assertion lifetime exceeds 600 s" "$(assertion --lifetime 601)"
A=$(assertion)
token_req "$A"
[ "$CODE" = 200 ] || fail_because "first use of the assertion: $CODE"
refused "a replayed jti" 401 invalid_client "jti replayed" "$A"
refused "a wrong x5t#S256" 401 invalid_client "x5t#S256 does not match the certificate registered for client_id" \
    "$(assertion --x5t-cert "$OTHER_CLIENT_CERT")"
# More: RS256, an alg that does not fit the key, typ, iat, iss, unknown client, scope, tenant.
for c in "401 invalid_client alg RS256 not allowed|--key $RSA_CLIENT_KEY --cert $RSA_CLIENT_CERT --client-id $RSA_CLIENT_ID --alg RS256|$RSA_CLIENT_ID" \
    "401 invalid_client alg PS256 does not fit the registered EC certificate|--key $RSA_CLIENT_KEY --alg PS256|" \
    "401 invalid_client typ must be JWT|--typ JOSE|" \
    "401 invalid_client iat is in the future|--iat-offset 120 --nbf-offset 0|" \
    "401 invalid_client iss is not the client_id|--client-id $RSA_CLIENT_ID|" \
    "400 unauthorized_client unknown client_id|--client-id 11111111-2222-3333-4444-555555555555|11111111-2222-3333-4444-555555555555" \
    "400 invalid_scope invalid scope||$CLIENT_ID|https://graph.microsoft.com/.default" \
    "400 invalid_request tenant not found||$CLIENT_ID|$SPEECH_SCOPE|$AUTHORITY_HOST/common/oauth2/v2.0/token"; do
    IFS='|' read -r expect opts cid scope url <<<"$c"
    read -r st er re <<<"$expect"
    # shellcheck disable=SC2086  # opts is a list of options
    token_req "$(assertion $opts)" "$cid" "$scope" "$url"
    want_eq "$re: status" "$CODE" "$st"
    want_fixed "$T/b" "{\"error\":\"$er\","
    want_fixed "$T/b" ": edgecap peer: $re"
done
verdict "token endpoint also refuses RS256, an alg that does not fit the key, typ JOSE, iat in the future, iss != client_id, an unknown client, a foreign scope, another tenant" \
    "$T/b"

# ---- Azurite --oauth basic: storage tokens through nginx ----
# Valid: Put Blob and HEAD with the bearer token, no SAS. Refused: Azurite's
# own answer (straight to it) is 403 AuthenticationFailed with its reason;
# through nginx (x-ms-version 2019-12-12 and later) Azure's 401 challenge.
bearer_curl() { # TOKEN VERSION [CURL ARGS...] URL: as the device, through nginx
    local token=$1 version=$2
    shift 2
    device_curl "$NGINX_PORT" -H "x-ms-version: $version" -H "Authorization: Bearer $token" "$@"
}
OAUTH_BLOB=edgecap/oauth/2026/01/02/oauth-0001-20260102T050000Z-000001.ogg
bearer_curl "$STORAGE_TOKEN" 2025-11-05 -X PUT -H "x-ms-blob-type: BlockBlob" -H "Content-MD5: $MD5" \
    --data-binary "@$T/seg1.ogg" "https://$BLOB_HOST/audio/$OAUTH_BLOB"
want_eq "Put Blob with the storage token" "$CODE" 201
want_eq "echoed Content-MD5" "$(header content-md5)" "$MD5"
tail -n 1 "$ACCESS_LOG" >"$T/line"
want_re "$T/line" '"method":"PUT",.*"status":201,.*"auth_scheme":"Bearer","sas":"no"'
bearer_curl "$STORAGE_TOKEN" 2025-11-05 -I "https://$BLOB_HOST/audio/$OAUTH_BLOB"
want_eq "HEAD with the storage token" "$CODE $(header content-length)" "200 70000"
bearer_curl "$TOKEN" 2025-11-05 -I "https://$BLOB_HOST/audio/$OAUTH_BLOB"
want_eq "HEAD with a Speech token (aud cognitiveservices)" "$CODE" 401
want_eq "x-ms-error-code" "$(header x-ms-error-code)" InvalidAuthenticationInfo
want_eq "WWW-Authenticate" "$(header www-authenticate)" \
    "Bearer authorization_uri=https://$LOGIN_HOST/$TENANT_ID/oauth2/authorize resource_id=https://storage.azure.com"
[ -n "$(header x-ms-request-id)" ] || fail_because "no x-ms-request-id on the 401"
tail -n 1 "$ACCESS_LOG" >"$T/line"
want_re "$T/line" '"status":401,.*"upstream_status":"403",.*"resp_error_code":"InvalidAuthenticationInfo","upstream_error_code":"AuthenticationFailed"'
bearer_curl "$TOKEN" 2019-07-07 -I "https://$BLOB_HOST/audio/$OAUTH_BLOB"
want_eq "the same with x-ms-version 2019-07-07 (no challenge before 2019-12-12)" \
    "$CODE $(header x-ms-error-code)" "403 AuthenticationFailed"
modes=""
for m in "expired|Lifetime validation failed. The token is expired." "wrong_aud|Invalid token audience." \
    "wrong_iss|Invalid token issuer."; do
    IFS='|' read -r mode detail <<<"$m"
    control /config "{\"storage_token_mode\":\"$mode\"}" >/dev/null
    token_req "$(assertion)" "" https://storage.azure.com/.default
    tok=$(access_token)
    SECRETS+=("$tok")
    last_record token
    modes="$modes $(sed -n 's/.*"token_mode":"\([a-z_]*\)".*/\1/p' "$T/rec")"
    CODE=$(curl -sS --max-time 20 -o "$T/b" -w '%{http_code}' --cacert "$AZURITE_CA" -X PUT \
        -H "x-ms-version: 2025-11-05" -H "x-ms-blob-type: BlockBlob" -H "Authorization: Bearer $tok" \
        --data-binary "@$T/seg1.ogg" "$AZURITE_URL/audio/edgecap/oauth/$mode.ogg" 2>"$T/e")
    want_eq "$mode token straight to Azurite" "$CODE" 403
    want_fixed "$T/b" "<AuthenticationErrorDetail>$detail</AuthenticationErrorDetail>"
    bearer_curl "$tok" 2025-11-05 -X PUT -H "x-ms-blob-type: BlockBlob" --data-binary "@$T/seg1.ogg" \
        "https://$BLOB_HOST/audio/edgecap/oauth/$mode.ogg"
    want_eq "$mode token through nginx" "$CODE $(header x-ms-error-code)" "401 InvalidAuthenticationInfo"
done
want_eq "token_mode of the records" "$modes" " expired wrong_aud wrong_iss"
control /config '{"storage_token_mode":"expired","storage_token_mode_count":1}' >/dev/null
token_req "$(assertion)" "" https://storage.azure.com/.default
last_record token
c1=$(sed -n 's/.*"token_mode":"\([a-z_]*\)".*/\1/p' "$T/rec")
SECRETS+=("$(access_token)")
token_req "$(assertion)" "" https://storage.azure.com/.default
last_record token
SECRETS+=("$(access_token)")
want_eq "storage_token_mode_count 1: the next two storage tokens" "$c1 $(sed -n 's/.*"token_mode":"\([a-z_]*\)".*/\1/p' "$T/rec")" \
    "expired valid"
"$PEERS" readback "$P" --container audio --prefix edgecap/oauth/ --no-tags >"$T/rb.json" 2>"$T/e"
want_eq "blobs under edgecap/oauth/ (the valid token's only)" "$(grep -c '"name"' "$T/rb.json")" 1
verdict "Azurite --oauth basic: the storage token writes and reads through nginx (Bearer, no SAS); expired, wrong_aud, wrong_iss tokens and a Speech token are refused (Azurite 403 with its reason; through nginx Azure's 401 challenge)" \
    "$T/b" "$T/line" "$T/e"

# ---- Speech: submit ----
# A real Ogg Opus segment in the blob container (espeak-ng -> opusenc).
if ! espeak-ng -w "$T/say.wav" "edgecap test transcript" 2>>"$T/e" ||
    ! opusenc --quiet "$T/say.wav" "$T/say.ogg" 2>>"$T/e"; then
    fail_because "cannot make test audio (espeak-ng, opusenc)"
fi
OGG_BLOB=edgecap/test-0001/2026/01/02/test-0001-20260102T040000Z-000010.ogg
put_blob "$NGINX_PORT" "$T/say.ogg" "$OGG_BLOB"
[ "$CODE" = 201 ] || fail_because "Put Blob of the Ogg Opus segment: $CODE"
OPUSINFO_MS=$(opusinfo "$T/say.ogg" | sed -nE 's/.*Playback length: ([0-9]+)m:([0-9]+)\.([0-9]{3})s.*/\1 \2 \3/p' |
    awk '{ print ($1 * 60 + $2) * 1000 + $3 }')
SAMPLES=$(($(opusdec --quiet --rate 48000 "$T/say.ogg" - 2>/dev/null | wc -c) / 2))
submit() { # JSON|@FILE [AUTH HEADER]
    speech_curl -H "${2:-Ocp-Apim-Subscription-Key: $KEY1}" -H 'Content-Type: application/json' --data-binary "$1" \
        "$(api transcriptions:submit)"
}
body() { # CONTENT_URLS_JSON [EXTRA PROPERTIES JSON]: a valid submit body
    printf '{"contentUrls":%s,"locale":"en-US","displayName":"edgecap test-0001","properties":{"timeToLiveHours":48%s},"customProperties":{"device":"test-0001"}}' \
        "$1" "${2:+,$2}"
}
GOOD_URL="https://$BLOB_HOST/audio/$OGG_BLOB?$SAS"
submit '{"contentUrls":["https://'"$BLOB_HOST"'/audio/x.ogg"],"displayName":"x","properties":{"timeToLiveHours":48}}'
want_eq "status" "$CODE" 400
want_fixed "$T/b" '{"code":"InvalidRequest","message":"edgecap peer: the transcription does not fit the contract: (body): missing required property \"locale\"'
want_fixed "$T/b" '"details":[{"code":"InvalidArgument","target":"(body)"'
last_record submit
want_fixed "$T/rec" '"schema_valid":false'
verdict "submit without locale: 400 InvalidRequest, the contract error listed in details; recorded schema_valid false" \
    "$T/b" "$T/rec"

submit "$(body "[\"$GOOD_URL\"]" '"destinationContainerUrl":"https://'"$BLOB_HOST"'/results?sv=x&sig=y"')"
want_eq "status" "$CODE" 400
want_fixed "$T/b" '"target":"properties.destinationContainerUrl"'
want_fixed "$T/b" 'destinationContainerUrl is not allowed: this Speech resource uses BYOS'
last_record submit
want_fixed "$T/rec" '"schema_valid":true'
verdict "submit with properties.destinationContainerUrl (BYOS): 400 although it fits the schema" "$T/b" "$T/rec"

# The upstream example's shape (timeToLive, diarizationEnabled) loses to its schema.
submit '{"contentUrls":["'"$GOOD_URL"'"],"locale":"en-US","displayName":"x","properties":{"diarizationEnabled":false,"timeToLive":"P2D"}}'
want_eq "example shape: status" "$CODE" 400
want_fixed "$T/b" 'missing required property \"timeToLiveHours\"'
want_fixed "$T/b" 'unknown property \"timeToLive\" (not in the contract)'
submit "$(body "[\"$GOOD_URL\"]" | sed 's/"timeToLiveHours":48/"timeToLiveHours":745/')"
want_eq "timeToLiveHours 745: status" "$CODE" 400
want_fixed "$T/b" '"innerError":{"code":"InvalidTimeToLive"'
submit "$(body "[\"$GOOD_URL\"]" | sed 's/^{/{"status":"Succeeded",/')"
want_fixed "$T/b" 'read-only property \"status\" must not be sent'
submit "$(body "[\"https://evil.example.com/audio/x.ogg\"]")"
want_fixed "$T/b" '"innerError":{"code":"InvalidRecordingsUri"'
node -e 'process.stdout.write(JSON.stringify(Array(1001).fill(process.argv[1])))' "$GOOD_URL" >"$T/urls"
body "$(cat "$T/urls")" >"$T/big.json"
submit "@$T/big.json"
want_eq "1001 contentUrls: status" "$CODE" 400
want_fixed "$T/b" '"innerError":{"code":"ExceededNumberOfRecordingsUris"'
speech_curl -H "Ocp-Apim-Subscription-Key: $KEY1" -H 'Content-Type: application/json' \
    --data-binary "$(body "[\"$GOOD_URL\"]")" "$SPEECH_ENDPOINT/speechtotext/transcriptions:submit?api-version=3.2"
want_eq "api-version 3.2: status" "$CODE" 400
want_fixed "$T/b" '"target":"api-version"'
want_eq "jobs made by refused submits" "$(control /jobs | tr -d ' \n')" "[]"
verdict "submit: the example's timeToLive, TTL 745 h, readOnly status, a foreign host, 1001 URLs, api-version 3.2: 400, no job" \
    "$T/b"

submit "$(body "[\"$GOOD_URL\"]")"
want_eq "status" "$CODE" 201
cp "$T/b" "$T/job.json"
want_eq "status, echo" "$(json '[d.status, d.displayName, d.locale, d.properties.timeToLiveHours,
    d.customProperties.device, "contentUrls" in d].join(" ")')" "NotStarted edgecap test-0001 en-US 48 test-0001 false"
SELF=$(json d.self)
JOB=${SELF##*/transcriptions/}
JOB=${JOB%%\?*}
want_eq "self" "$SELF" "$SPEECH_ENDPOINT/speechtotext/transcriptions/$JOB?api-version=2024-11-15"
want_fixed "$T/b" "\"links\":{\"files\":\"$SPEECH_ENDPOINT/speechtotext/transcriptions/$JOB/files?api-version=2024-11-15\"}"
want_eq "Location" "$(header location)" "$SELF"
statuses="" ras=""
for i in 1 2 3; do
    speech_curl -H "Authorization: Bearer $TOKEN" "$SELF"
    statuses="$statuses $CODE:$(sed -n 's/.*"status":"\([A-Za-z]*\)".*/\1/p' "$T/b")" ras="$ras $(header retry-after)"
done
want_eq "polls" "$statuses" " 200:Running 200:Succeeded 200:Succeeded"
want_eq "Retry-After" "$ras" " 1  "
want_fixed "$T/b" "\"durationMilliseconds\":$OPUSINFO_MS"
speech_curl -H "Authorization: Bearer $TOKEN" "${SELF%%\?*}/files?api-version=2024-11-15"
want_eq "files status" "$CODE" 200
want_eq "files" "$(json 'd.values.map((v) => v.kind + ":" + v.name).join(" ")')" \
    "Transcription:contenturl_0.json TranscriptionReport:report.json"
speech_curl "$(json 'd.values[0].links.contentUrl')"
want_fixed "$T/b" '"display":"edgecap test transcript"'
last_record submit
want_fixed "$T/rec" "\"url\":\"https://$BLOB_HOST/audio/$OGG_BLOB\""
for f in '"sas":true' '"found":true' '"ogg_opus":true' "\"samples\":$SAMPLES" '"auth":"key-primary"'; do
    want_fixed "$T/rec" "$f"
done
verdict "submit an uploaded Ogg Opus blob (SAS URL): 201 NotStarted; polls Running (Retry-After: 1) -> Succeeded ($OPUSINFO_MS ms); files list; result file" \
    "$T/job.json" "$T/b" "$T/rec" "$T/h"

submit "$(body "[\"https://$BLOB_HOST/audio/edgecap/missing.ogg\",\"https://$SECONDARY_HOST/audio/$BLOB\"]")"
want_eq "status" "$CODE" 201
MISSING=$(header location)
submit "$(body "[\"https://$SECONDARY_HOST/audio/$BLOB\"]")"
NOT_OPUS=$(header location)
control /config '{"fail_jobs":1}' >/dev/null
submit "$(body "[\"$GOOD_URL\"]")"
INJECTED=$(header location)
submit "$(body "[\"$GOOD_URL\"]")"
AFTER=$(header location)
got=""
for u in "$MISSING" "$NOT_OPUS" "$INJECTED" "$AFTER"; do
    speech_curl -H "Authorization: Bearer $TOKEN" "$u"
    speech_curl -H "Authorization: Bearer $TOKEN" "$u"
    got="$got $(sed -n 's/.*"status":"\([A-Za-z]*\)".*/\1/p' "$T/b"):$(sed -n 's/.*"error":{"code":"\([A-Za-z]*\)".*/\1/p' "$T/b")"
    cat "$T/b" >>"$T/failed"
done
want_eq "outcomes" "$got" " Failed:InvalidData Failed:InvalidData Failed:InvalidData Succeeded:"
control /config '{"hold_jobs":true}' >/dev/null
submit "$(body "[\"$GOOD_URL\"]")"
HELD=$(header location)
held=""
for i in 1 2 3 4; do
    [ "$i" = 4 ] && control /config '{"hold_jobs":false}' >/dev/null
    speech_curl -H "Authorization: Bearer $TOKEN" "$HELD"
    held="$held $(sed -n 's/.*"status":"\([A-Za-z]*\)".*/\1/p' "$T/b")"
done
want_eq "a job held (hold_jobs), then released" "$held" " Running Running Running Succeeded"
want_fixed "$T/failed" "contentUrls[0] (audio/edgecap/missing.ogg): blob not found"
want_fixed "$T/failed" "contentUrls[0] (audio/$BLOB): not Ogg Opus: not an Ogg file"
want_fixed "$T/failed" 'injected failure (fail_jobs)'
verdict "jobs end Failed (InvalidData) for a missing blob, a blob that is not Ogg Opus, and fail_jobs 1; the next one Succeeded; hold_jobs keeps one Running" \
    "$T/b" "$T/failed"

# ---- Speech: fast transcription ----
transcribe() { # [CURL ARGS...]: POST transcriptions:transcribe with the primary key
    speech_curl -H "Ocp-Apim-Subscription-Key: $KEY1" "$@" "$(api transcriptions:transcribe)"
}
speech_curl -H "Authorization: Bearer $TOKEN" -F "audio=@$T/say.ogg;type=audio/ogg" \
    -F 'definition={"locales":["en-US"]};type=application/json' "$(api transcriptions:transcribe)"
want_eq "status" "$CODE" 200
want_eq "durationMilliseconds: opusinfo's Playback length, round(opusdec samples / 48)" \
    "$(json d.durationMilliseconds) $OPUSINFO_MS $(((SAMPLES + 24) / 48))" "$OPUSINFO_MS $OPUSINFO_MS $OPUSINFO_MS"
want_fixed "$T/b" '"combinedPhrases":[{"text":"edgecap test transcript"}],"phrases":[{"offsetMilliseconds":0,'
want_fixed "$T/b" '"text":"edgecap test transcript","locale":"en-US","confidence":0.9}]}'
last_record transcribe
for f in '"auth":"bearer"' "\"samples\":$SAMPLES" '"ogg_opus":true' '"audio_content_type":"audio/ogg"'; do
    want_fixed "$T/rec" "$f"
done
verdict "transcribe a real Ogg Opus (bearer token): 200, durationMilliseconds $OPUSINFO_MS = opusinfo = decoded samples ($SAMPLES) / 48" \
    "$T/b" "$T/rec"

codes=""
inner() { sed -n 's/.*"innerError":{"code":"\([A-Za-z]*\)".*/\1/p' "$T/b"; }
transcribe -F "audio=@$T/say.wav;type=audio/ogg"
codes="$codes $CODE:$(inner)"
transcribe -F "audio=@$T/say.ogg;type=audio/wav"
codes="$codes $CODE:$(inner)"
transcribe -F "audio=@$T/say.ogg;type=audio/ogg" -F 'definition={"locales":"en-US"}'
codes="$codes $CODE:$(inner)"
transcribe -F 'definition={"locales":["en-US"]}'
codes="$codes $CODE:$(inner)"
printf -- '--b0undary\r\nContent-Disposition: form-data; name="audio"\r\nContent-Type: audio/ogg\r\n\r\nOggS' >"$T/trunc"
transcribe -H 'Content-Type: multipart/form-data; boundary=b0undary' --data-binary "@$T/trunc"
codes="$codes $CODE:$(inner)"
want_fixed "$T/b" 'malformed multipart body: no closing boundary'
transcribe -H 'Content-Type: application/json' --data-binary '{}'
codes="$codes $CODE:$(sed -n 's/^{"code":"\([A-Za-z]*\)".*/\1/p' "$T/b")"
want_eq "answers" "$codes" \
    " 400:InvalidPayload 400:InvalidPayload 400:InvalidPayload 400:InvalidPayload 400:InvalidRequestBodyFormat 415:UnsupportedMediaType"
verdict "transcribe refuses WAV audio, a part type other than audio/ogg, locales as a string, no audio, a truncated multipart body (400), JSON (415)" \
    "$T/b"

# ---- Speech: credentials and injected faults ----
speech_curl -H "Ocp-Apim-Subscription-Key: 0123456789abcdef0123456789abcdef" "$SELF"
c1=$CODE
speech_curl -H "Authorization: Bearer $STORAGE_TOKEN" "$SELF"
c2=$CODE
want_fixed "$T/b" 'bearer token is for https://storage.azure.com/.default'
speech_curl -H "Authorization: Bearer $RSA_TOKEN" "$SELF"
c3=$CODE
speech_curl -H "Ocp-Apim-Subscription-Key: $KEY1" "$SELF"
c4=$CODE
control /config '{"revoke_primary_key":true}' >/dev/null
speech_curl -H "Ocp-Apim-Subscription-Key: $KEY1" "$SELF"
c5=$CODE
want_fixed "$T/b" 'subscription key revoked (primary)'
speech_curl -H "Ocp-Apim-Subscription-Key: $KEY2" "$SELF"
c6=$CODE
want_eq "statuses (bad key, storage token, RSA client's token, primary, revoked primary, secondary)" \
    "$c1 $c2 $c3 $c4 $c5 $c6" "401 401 200 200 401 200"
control '/requests?op=get&last=6' >"$T/recs"
want_eq "recorded auth kinds" "$(sed -n 's/.*"auth":"\([a-z-]*\)".*/\1/p' "$T/recs" | tr '\n' ' ')" \
    "invalid invalid bearer key-primary invalid key-secondary "
verdict "Speech auth: unknown key, storage-scope token -> 401; RSA client's token, primary key -> 200; primary revoked -> 401, secondary -> 200" \
    "$T/b" "$T/recs"

control /config '{"revoke_primary_key":false,"unauthorized_next":1,"transcribe_status":503}' >/dev/null
speech_curl -H "Authorization: Bearer $TOKEN" "$SELF"
c1=$CODE
speech_curl -H "Authorization: Bearer $TOKEN" "$SELF"
c2=$CODE
transcribe -F "audio=@$T/say.ogg;type=audio/ogg"
c3="$CODE:$(sed -n 's/^{"code":"\([A-Za-z]*\)".*/\1/p' "$T/b"):$(header retry-after)"
transcribe -F "audio=@$T/say.ogg;type=audio/ogg"
c4=$CODE
control /config '{"token_lifetime_s":1}' >/dev/null
token_req "$(assertion)"
want_fixed "$T/b" '"expires_in":1,'
SHORT=$(access_token)
SECRETS+=("$SHORT")
sleep 1.1
speech_curl -H "Authorization: Bearer $SHORT" "$SELF"
c5=$CODE
last_record get
want_eq "statuses (injected 401, then OK; injected 503, then OK; expired token)" "$c1 $c2 $c3 $c4 $c5" \
    "401 200 503:ServiceUnavailable:1 200 401"
want_fixed "$T/rec" '"auth":"expired"'
verdict "control: unauthorized_next 1 (one 401, then 200), transcribe_status 503 (+ Retry-After), token_lifetime_s 1 (expired -> 401)" \
    "$T/b" "$T/rec"

for f in "$SPEECH_LOG" "$P/speech.out" "$ACCESS_LOG"; do
    for s in "${SECRETS[@]}"; do
        [ -n "$s" ] && grep -qF -- "$s" "$f" && fail_because "$(basename "$f") contains a secret (${s:0:4}...)"
    done
done
want_fixed "$SPEECH_LOG" '"op":"submit"'
want_no_fixed "$SPEECH_LOG" "sig="
verdict "SPEECH_LOG, the peer's output and the access log hold no key, token, assertion or SAS signature (${#SECRETS[@]} looked for)" \
    "$SPEECH_LOG"

old=$SPEECH_PID
"$PEERS" restart "$P" speech 2>"$T/e" || fail_because "peers.sh restart speech failed"
. "$P/peers.env"
[ "$SPEECH_PID" != "$old" ] || fail_because "SPEECH_PID not updated"
running "$old" && fail_because "the old Speech peer $old still runs"
speech_curl -H "Authorization: Bearer $TOKEN" "$SELF"
want_eq "a token of the old process" "$CODE" 401
token_req "$(assertion)"
want_eq "a new token (same registration)" "$CODE" 200
speech_curl -H "Authorization: Bearer $(access_token)" -F "audio=@$T/say.ogg;type=audio/ogg" \
    "$(api transcriptions:transcribe)"
want_eq "transcribe after restart" "$CODE" 200
control /reset '{}' >/dev/null
want_eq "requests after /reset" "$(control /requests | tr -d ' \n')" "[]"
verdict "Speech peer restarted on the same port (same registration and keys; old tokens invalid); /reset clears the records" \
    "$T/e" "$T/b"

# ---- fault fronts ----------------------------------------------------------------------
if fault busy 2; then
    codes="" ras=""
    for i in 1 2 3; do
        put_blob "$FAULT_PORT" "$T/seg1.ogg" "edgecap/busy/x.ogg"
        codes="$codes $CODE" ras="$ras $(header retry-after)"
    done
    want_eq "statuses" "$codes" " 503 503 201"
    want_eq "Retry-After values" "$ras" " 1 1 "
    want_eq "requests in FAULT_LOG" "$(grep -c '"method":"PUT"' "$FAULT_LOG")" 3
fi
verdict "fault busy 2: 503 + Retry-After: 1 twice, then proxied (201)" "$T/h" "${FAULT_LOG:-}"

if fault busy 1 429; then
    put_blob "$FAULT_PORT" "$T/seg1.ogg" "edgecap/busy429/x.ogg"
    c1=$CODE ra=$(header retry-after)
    put_blob "$FAULT_PORT" "$T/seg1.ogg" "edgecap/busy429/x.ogg"
    want_eq "statuses" "$c1 $CODE" "429 201"
    want_eq "Retry-After" "$ra" 1
fi
verdict "fault busy 1 429: one 429 + Retry-After, then 201" "$T/h"

if fault error500; then
    codes=""
    for i in 1 2 3; do
        put_blob "$FAULT_PORT" "$T/seg1.ogg" "edgecap/e500/x.ogg"
        codes="$codes $CODE"
    done
    want_eq "statuses" "$codes" " 500 500 500"
    want_re "$T/b" '<Code>InternalError</Code>'
    want_eq "blobs created" "$(blobs_under edgecap/e500)" 0
fi
verdict "fault error500: 500 InternalError every time, nothing stored" "$T/b"

for code in 301 302 307; do
    if fault redirect "$code"; then
        put_blob "$FAULT_PORT" "$T/seg1.ogg" "edgecap/redir$code/x.ogg"
        want_eq "status" "$CODE" "$code"
        want_eq "Location" "$(header location | cut -d/ -f1-3)" "https://localhost:$OTHER_PORT"
        listening "$OTHER_PORT" || fail_because "nothing listens on OTHER_PORT $OTHER_PORT"
        [ ! -s "$OTHER_LOG" ] || fail_because "OTHER_LOG is not empty"
        want_eq "blobs created" "$(blobs_under "edgecap/redir$code")" 0
    fi
    verdict "fault redirect $code: Location to another host:port, nothing arrives there unless followed" \
        "$T/h" "${OTHER_LOG:-}"
done
# ...and a client that does follow is seen there (so the empty log means something).
device_curl "$FAULT_PORT" -L -X PUT -H "x-ms-blob-type: BlockBlob" --data-binary "@$T/seg1.ogg" \
    "https://$BLOB_HOST/audio/edgecap/followed/x.ogg?$SAS"
want_eq "status after following" "$CODE" 201
wait_line "$OTHER_LOG" '"method":"PUT".*"status":201' || fail_because "OTHER_LOG shows no PUT"
want_eq "blobs created by the follower" "$(blobs_under edgecap/followed)" 1
verdict "a client that follows the redirect does reach OTHER_PORT (logged) and stores the blob" \
    "$T/e" "${OTHER_LOG:-}"

if fault stall; then
    s0=$EPOCHREALTIME
    device_curl "$FAULT_PORT" --speed-limit 1 --speed-time 2 -X PUT -H "x-ms-blob-type: BlockBlob" \
        --data-binary "@$T/seg1.ogg" "https://$BLOB_HOST/audio/edgecap/stall/x.ogg?$SAS"
    took=$(awk -v a="$s0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    want_eq "curl status (28 = timeout)" "$CURL_RC" 28
    wait_line "$FAULT_LOG" '"method":"PUT".*"status":499' || fail_because "FAULT_LOG shows no 499 PUT"
    want_re "$FAULT_LOG" '"request_length":7[0-9]{4},'
    want_eq "blobs created" "$(blobs_under edgecap/stall)" 0
fi
verdict "fault stall: body read, no answer; the low-speed timeout fires (${took:-?} s), log shows 499" \
    "$T/e" "${FAULT_LOG:-}"

if fault expired; then
    device_curl "$FAULT_PORT" "https://$BLOB_HOST/?comp=list"
    want_eq "curl status" "$CURL_RC" 60
    want_re "$T/e" 'certificate has expired'
    want_eq "FAULT_PIN" "$FAULT_PIN" "$SERVER_PIN"
    [ ! -s "$FAULT_LOG" ] || fail_because "a request reached the expired front"
fi
verdict "fault expired: same key (pin matches), certificate expired, no request gets through" "$T/e"

if fault wronghost; then
    device_curl "$FAULT_PORT" "https://$BLOB_HOST/?comp=list"
    want_eq "curl status" "$CURL_RC" 60
    want_re "$T/e" 'no alternative certificate subject name matches'
    want_eq "FAULT_PIN" "$FAULT_PIN" "$SERVER_PIN"
    openssl verify -CAfile "$CA_FILE" "$FAULT_CERT" >/dev/null 2>&1 ||
        fail_because "the wrong-host certificate does not chain to CA_FILE"
fi
verdict "fault wronghost: valid chain, pinned key, other host name; refused by name check" "$T/e"

if fault unknownca; then
    device_curl "$FAULT_PORT" "https://$BLOB_HOST/?comp=list"
    want_eq "curl status" "$CURL_RC" 60
    want_re "$T/e" 'unable to get local issuer certificate'
    want_eq "FAULT_PIN" "$FAULT_PIN" "$SERVER_PIN"
fi
verdict "fault unknownca: right name and pin, unknown CA; refused" "$T/e"

if fault rekeyed; then
    want_eq "FAULT_PIN" "$FAULT_PIN" "$NEXT_PIN"
    device_curl "$FAULT_PORT" --pinnedpubkey "$SERVER_PIN" "https://$BLOB_HOST/?comp=list"
    want_eq "curl status pinning SERVER_PIN only" "$CURL_RC" 90
    device_curl "$FAULT_PORT" --pinnedpubkey "$SERVER_PIN;$NEXT_PIN" "https://$BLOB_HOST/?comp=list"
    want_eq "status pinning SERVER_PIN;NEXT_PIN" "$CODE" 403
fi
verdict "fault rekeyed: next key, valid chain and name; refused by the current pin alone, accepted with the next" \
    "$T/e"

if fault tls10; then
    for v in tls1 tls1_1; do
        timeout 10 openssl s_client -connect "127.0.0.1:$FAULT_PORT" -servername "$BLOB_HOST" \
            -"$v" -cipher 'DEFAULT:@SECLEVEL=0' -CAfile "$CA_FILE" </dev/null >"$T/s" 2>&1
        want_re "$T/s" "Protocol *: TLSv1(\\.1)?\$"
        want_re "$T/s" 'Verify return code: 0 \(ok\)'
        want_no_re "$T/s" 'Cipher is \(NONE\)'
    done
    timeout 10 openssl s_client -connect "127.0.0.1:$FAULT_PORT" -servername "$BLOB_HOST" \
        -tls1_2 </dev/null >"$T/s" 2>&1
    want_re "$T/s" 'Cipher is \(NONE\)'
    device_curl "$FAULT_PORT" "https://$BLOB_HOST/?comp=list"
    [ "$CURL_RC" -ne 0 ] || fail_because "a default curl (TLS >= 1.2) connected"
    [ ! -s "$FAULT_LOG" ] || fail_because "a request reached the tls10 front"
    CODE=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' --tlsv1.0 --tls-max 1.1 \
        --ciphers 'DEFAULT:@SECLEVEL=0' --cacert "$CA_FILE" --cert "$CLIENT_CERT" --key "$CLIENT_KEY" \
        --connect-to "$FAULT_CONNECT_TO" "https://$BLOB_HOST/?comp=list" 2>"$T/e")
    want_eq "status over TLS 1.1 at SECLEVEL=0" "$CODE" 403
    want_re "$FAULT_LOG" '"tls":"TLSv1\.1"'
fi
verdict "fault tls10: negotiates TLS 1.0 and 1.1 (SECLEVEL=0), refuses TLS 1.2+" "$T/s" "$T/e"

if fault ok; then
    put_blob "$FAULT_PORT" "$T/seg1.ogg" "edgecap/ok/x.ogg"
    want_eq "status" "$CODE" 201
    device_curl "$FAULT_PORT" --connect-to "$SECONDARY_HOST:443:127.0.0.1:$FAULT_PORT" -I \
        "https://$SECONDARY_HOST/audio/edgecap/ok/x.ogg?$SAS"
    want_eq "HEAD through SECONDARY_HOST" "$CODE" 200
    want_eq "Content-MD5 through SECONDARY_HOST" "$(header content-md5)" "$MD5"
fi
verdict "fault ok: a second healthy front; SECONDARY_HOST reaches the same account" "$T/h" "$T/e"

if fault proxy; then
    [ ! -s "$FAULT_LOG" ] || fail_because "FAULT_LOG not empty at start"
    CODE=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' -x "$FAULT_PROXY_URL" \
        --cacert "$CA_FILE" --cert "$CLIENT_CERT" --key "$CLIENT_KEY" \
        "https://$BLOB_HOST/?comp=list" 2>"$T/e")
    want_eq "status through the proxy" "$CODE" 000
    want_re "$T/e" 'CONNECT tunnel failed'
    wait_line "$FAULT_LOG" '"status":400' || fail_because "FAULT_LOG shows no CONNECT"
fi
verdict "fault proxy: a client that uses it shows up in FAULT_LOG and gets nowhere" "$T/e"

# ---- restart ---------------------------------------------------------------------------------
old=$NGINX_PID
"$PEERS" kill "$P" nginx 2>"$T/e" || fail_because "peers.sh kill nginx failed"
running "$old" && fail_because "nginx $old still runs after kill"
device_curl "$NGINX_PORT" "https://$BLOB_HOST/?comp=list"
want_eq "curl status while nginx is down" "$CURL_RC" 7
"$PEERS" restart "$P" nginx 2>>"$T/e" || fail_because "peers.sh restart nginx failed"
. "$P/peers.env"
[ "$NGINX_PID" != "$old" ] || fail_because "NGINX_PID not updated"
device_curl "$NGINX_PORT" -I "https://$BLOB_HOST/audio/$BLOB?$SAS"
want_eq "HEAD after restart" "$CODE" 200
verdict "nginx killed: connection refused; restarted on the same port, peers.env updated" "$T/e"

old=$AZURITE_PID
R0=$EPOCHREALTIME
"$PEERS" restart "$P" azurite 2>"$T/e" || fail_because "peers.sh restart azurite failed"
took=$(awk -v a="$R0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
. "$P/peers.env"
[ "$AZURITE_PID" != "$old" ] || fail_because "AZURITE_PID not updated"
running "$old" && fail_because "the old Azurite $old still runs"
device_curl "$NGINX_PORT" -I "https://$BLOB_HOST/audio/$BLOB?$SAS"
want_eq "HEAD after restart" "$CODE" 200
want_eq "Content-MD5 after restart" "$(header content-md5)" "$MD5"
verdict "Azurite restarted (${took} s) on the same port; blobs kept" "$T/e" "$AZURITE_LOG"

# ---- stop ----------------------------------------------------------------------------------
pids=$(cat "$P"/run/*.pid 2>/dev/null)
ports=$(sed -n 's/^\(NGINX_PORT\|AZURITE_PORT\|SPEECH_PORT\)=//p' "$P/peers.env"; echo "${SPEECH_CONTROL##*:}"
    for d in "$P"/fault-*; do echo "${d##*fault-}"; done)
npids=$(echo "$pids" | wc -w)
"$PEERS" stop "$P" 2>"$T/e" || fail_because "peers.sh stop failed"
for pid in $pids; do
    running "$pid" && fail_because "pid $pid still runs"
done
for port in $ports; do
    listening "$port" && fail_because "port $port still listens"
done
ls "$P"/run/*.pid >/dev/null 2>&1 && fail_because "pid files left"
[ "$npids" -ge 16 ] || fail_because "only $npids processes were recorded"
verdict "stop ends every recorded process ($npids) by PID; no port left listening" "$T/e"

# Stopping twice is harmless.
"$PEERS" stop "$P" 2>"$T/e" || fail_because "a second stop failed"
verdict "a second stop is a no-op" "$T/e"

# A start that cannot work stops what it started and says why.
mkdir -p "$T/broken"
PEERS_NGINX=/bin/false "$PEERS" start "$T/broken" >"$T/bs.out" 2>"$T/bs.err"
rc=$?
[ "$rc" -ne 0 ] || fail_because "start with a broken nginx succeeded"
want_re "$T/bs.err" 'start failed'
want_re "$T/bs.err" 'last lines of .*azurite.log'
for f in "$T/broken"/run/*.pid; do
    [ -f "$f" ] && fail_because "pid file $(basename "$f") left"
done
pgrep -f -- "--location $T/broken/azurite" >/dev/null && fail_because "Azurite of the failed start still runs"
pgrep -f -- "$T/broken/speech/config.json" >/dev/null && fail_because "the Speech peer of the failed start still runs"
verdict "a failed start stops what it started and prints the logs" "$T/bs.err"

TOTAL_S=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
diag "selftest took ${TOTAL_S} s (start ${START_S} s)"
if [ "$N" -ne "$PLANNED" ]; then
    diag "planned $PLANNED, ran $N"
    exit 1
fi
[ "$FAILED" -eq 0 ]
