#!/usr/bin/env bash
# Proves that the test peers behave as tests/peers/peers.sh says, with
# standard tools only (curl, openssl s_client, the SDK read-back): the happy
# path through nginx to Azurite, the server side of mutual pinning, every fault
# front, restart, and that stop leaves no process behind. TAP on stdout; exit
# status non-zero when a check failed.
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

plan 31
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
        CLIENT_KEY CLIENT_KEY_DER ACCOUNT ACCOUNT_KEY BLOB_HOST CONNECT_TO ACCESS_LOG AZURITE_URL; do
        [ -n "${!v:-}" ] || fail_because "peers.env has no $v"
    done
    running "$NGINX_PID" || fail_because "nginx (pid $NGINX_PID) is not running"
    running "$AZURITE_PID" || fail_because "Azurite (pid $AZURITE_PID) is not running"
    want_eq CONNECT_TO "$CONNECT_TO" "devstoreaccount1.blob.core.windows.net:443:127.0.0.1:$NGINX_PORT"
else
    fail_because "no peers.env"
fi
verdict "start brings up Azurite and nginx on free ports in ${START_S} s and writes peers.env" \
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

timeout 10 openssl s_client -connect "127.0.0.1:$NGINX_PORT" -servername "$BLOB_HOST" \
    -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null >"$T/s" 2>&1
want_re "$T/s" 'Cipher is \(NONE\)'
timeout 10 openssl s_client -connect "127.0.0.1:$NGINX_PORT" -servername "$BLOB_HOST" \
    -tls1_2 -CAfile "$CA_FILE" </dev/null >"$T/s2" 2>&1
want_re "$T/s2" 'Protocol *: TLSv1\.2'
want_re "$T/s2" 'Cipher *: ECDHE-ECDSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)'
verdict "main front: TLS 1.1 refused, TLS 1.2 with ECDHE+AEAD only" "$T/s" "$T/s2"

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
ports=$(sed -n 's/^\(NGINX_PORT\|AZURITE_PORT\)=//p' "$P/peers.env"; ls -d "$P"/fault-* | sed 's/.*fault-//')
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
verdict "a failed start stops what it started and prints the logs" "$T/bs.err"

TOTAL_S=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
diag "selftest took ${TOTAL_S} s (start ${START_S} s)"
if [ "$N" -ne "$PLANNED" ]; then
    diag "planned $PLANNED, ran $N"
    exit 1
fi
[ "$FAILED" -eq 0 ]
