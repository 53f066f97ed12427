#!/bin/bash
# Upload over pinned mutual TLS to a real Blob peer: Azurite behind nginx (the
# private endpoint: client certificate from the device CA, only the device's
# fingerprint admitted), all keys generated here, on free loopback ports
# (tests/peers/peers.sh). Shows the happy paths (Put Blob; Put Block + Put
# Block List), that every refused peer is refused before any audio byte is
# sent, that redirects are not followed, and that faults (503 + Retry-After,
# 500s until the breaker opens and the secondary takes over, a stalled peer, a
# peer killed and restarted, a crash between PUT and unlink) lose nothing and
# duplicate nothing. Blobs are read back with @azure/storage-blob.
. "$(dirname "$0")/lib/tap.sh"

plan 18

TOOL=${TOOL:-$BUILD/results/tool-run}

start_peers
SAS=$("$PEERS" container "$P" audio)
ORIG=$T/orig
mkdir -p "$ORIG"

sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth 8 sine 200-700 vol 0.5
sox -q -n -r 48000 -c 2 -b 16 "$T/loud.wav" synth 12 whitenoise vol 0.3

# A provisioning file: file source, target blob through the nginx front.
upload_config() { # FILE SPOOL_DIR [EXTRA-LINES-FOR-UPLOAD]
    (
        umask 077
        cat >"$1" <<CONF
[device]
id = up-0001
require_mlock = off
keystore_dir = $T/keys
tags = site=lab, line=up

[capture]
source = file
file = $T/tone.wav
segment_seconds = 3

[spool]
dir = $2

[upload]
endpoint = $BLOB_ENDPOINT
container = audio
connect_to = $CONNECT_TO
encryption_scope = cmkscope
index_tags = on
retry_base_ms = 10
retry_max_ms = 200
${3:-}

[tls]
ca_file = $CA_FILE
client_cert = $CLIENT_CERT
client_key = $CLIENT_KEY
pin_current = $SERVER_PIN
allowed_hosts = $BLOB_HOST, $SECONDARY_HOST

[auth]
mode = sas
sas_token = $SAS

[logging]
audit_file = $T/audit-$(basename "$1" .conf).log
CONF
    )
}

segments() { # CONFIG
    "$EDGECAP" spool ls --config "$1" 2>/dev/null | awk '$NF == "closed" {print $1}'
}

# Keeps the plaintext of every segment (from the project's reader) to compare
# with what the peer stores.
keep_originals() { # CONFIG SPOOL
    local name
    for name in $(segments "$1"); do
        "$TOOL" spool_cat "$2" "$T/keys" "$name" >"$ORIG/$name.ogg" 2>/dev/null
    done
}

# Blob path of a segment name.
blob_of() { # NAME  (up-0001-YYYYMMDDTHHMMSSZ-SEQ)
    local ts=${1#up-0001-}
    echo "edgecap/up-0001/${ts:0:4}/${ts:4:2}/${ts:6:2}/$1.ogg"
}

# Every segment in ORIG for NAMES is stored byte for byte, metadata right.
check_stored() { # NAME...
    local name blob
    "$PEERS" readback "$P" --container audio >"$T/readback.json" 2>"$T/readback.err" ||
        fail_because "readback failed: $(tail -n 2 "$T/readback.err")"
    for name in "$@"; do
        blob=$(blob_of "$name")
        grep -qF "\"name\":\"$blob\"" "$T/readback.json" || {
            fail_because "no blob $blob"
            continue
        }
        "$PEERS" readback "$P" --container audio --cat "$blob" >"$T/got.ogg" 2>/dev/null
        cmp -s "$T/got.ogg" "$ORIG/$name.ogg" || fail_because "$blob differs from the spooled audio"
        local line
        line=$(grep -F "\"name\":\"$blob\"" "$T/readback.json")
        for want in '"device":"up-0001"' '"codec":"opus"' '"contentType":"audio/ogg"' \
            "\"seq\":\"$((10#${name##*-}))\"" '"durationms":"' '"site":"lab"'; do
            [[ "$line" == *"$want"* ]] || fail_because "$blob: metadata lacks $want"
        done
    done
}

puts_in() { grep -c '"method":"PUT"' "$1" 2>/dev/null || true; }

# ---- 1-3: happy path, Put Blob ------------------------------------------------
C1=$T/c1.conf
upload_config "$C1" "$T/spool1"
ec capture --config "$C1" --seconds 8
mapfile -t S1 < <(segments "$C1")
keep_originals "$C1" "$T/spool1"
ec upload-once --config "$C1"
want_rc 0
want_out_re "^uploaded 3 segments "
[ -z "$(segments "$C1")" ] || fail_because "the spool is not empty"
check_stored "${S1[@]}"
verdict "Put Blob: 3 segments stored byte for byte with their metadata, spool empty"

REASONS=()
n_ack=$(grep -c '"event":"segment_acknowledged"' "$T/audit-c1.log")
[ "$n_ack" -eq 3 ] || fail_because "$n_ack audit lines"
grep -q '"wiped":true' "$T/audit-c1.log" || fail_because "audit does not say wiped"
grep -qE '"tls_version":"TLSv1\.[23]"' "$T/audit-c1.log" || fail_because "no TLS version"
grep -qE '"tls_cipher":"TLS-ECDHE-[A-Z0-9-]*(GCM|CHACHA20)' "$T/audit-c1.log" ||
    fail_because "no ECDHE AEAD cipher suite"
grep -qF "\"content_md5\":\"" "$T/audit-c1.log" || fail_because "no MD5 in the audit"
verdict "audit: one line per acknowledged segment with blob, MD5, TLS version and AEAD suite" \
    "$T/audit-c1.log"

REASONS=()
want_re "$ACCESS_LOG" '"method":"PUT".*"content_md5":"[A-Za-z0-9+/=]{24}"'
want_re "$ACCESS_LOG" '"if_none_match":"\*"'
want_re "$ACCESS_LOG" '"x_ms_encryption_scope":"cmkscope"'
want_re "$ACCESS_LOG" '"x_ms_tags":"site=lab&line=up"'
want_re "$ACCESS_LOG" '"method":"HEAD"'
want_re "$ACCESS_LOG" '"client_verify":"SUCCESS"'
want_no_re "$ACCESS_LOG" "$(printf '%s' "${SAS#*sig=}" | cut -c1-16)"
verdict "on the wire: Content-MD5, If-None-Match, encryption scope, index tags, HEAD proof" \
    "$ACCESS_LOG"

# ---- 4: Put Block + Put Block List -------------------------------------------------
C2=$T/c2.conf
upload_config "$C2" "$T/spool2" "block_bytes = 65536"
sed -i -e "s|^file = .*|file = $T/loud.wav|" -e "s|^segment_seconds = .*|segment_seconds = 6|" \
    -e "s|^\[capture\]|[capture]\nrate_hz = 48000\nchannels = 2|" \
    -e "s|^\[spool\]|[encoder]\nbitrate_bps = 128000\napplication = audio\n\n[spool]|" "$C2"
ec capture --config "$C2" --seconds 12
mapfile -t S2 < <(segments "$C2")
keep_originals "$C2" "$T/spool2"
ec upload-once --config "$C2"
want_rc 0
[ -z "$(segments "$C2")" ] || fail_because "the spool is not empty"
grep -q 'comp=block&blockid=' "$ACCESS_LOG" || fail_because "no Put Block"
grep -q 'comp=blocklist' "$ACCESS_LOG" || fail_because "no Put Block List"
want_re "$ACCESS_LOG" '"x_ms_blob_content_md5":"[A-Za-z0-9+/=]{24}"'
check_stored "${S2[@]}"
verdict "Put Block + Put Block List: ${#S2[@]} segments of > 64 KiB stored byte for byte"

# ---- 5-11: refused before any audio byte is sent --------------------------------------
C3=$T/c3.conf
upload_config "$C3" "$T/spool3"
ec capture --config "$C3" --seconds 3
mapfile -t S3 < <(segments "$C3")

refused() { # CONFIG LOG DESCRIPTION [REASON-REGEX]
    local before
    before=$(puts_in "$2")
    ec upload-once --config "$1"
    want_rc 69
    [ "$(segments "$1")" = "${S3[*]}" ] || fail_because "the spool changed"
    [ "$(puts_in "$2")" -eq "$before" ] || fail_because "a PUT reached the peer"
    [ -z "${4:-}" ] || want_err_re "$4"
    verdict "$3"
}

sed "s|^pin_current = .*|pin_current = $NEXT_PIN|" "$C3" >"$T/c3-pin.conf"
chmod 600 "$T/c3-pin.conf"
refused "$T/c3-pin.conf" "$ACCESS_LOG" "a wrong pin: refused in the handshake, no PUT" \
    "reason=\"server public key does not match the pinned keys"

fault_config() { # KIND OUT.conf -> the fault's log in FLOG
    local port
    port=$("$PEERS" fault "$P" "$1")
    # shellcheck source=/dev/null
    . "$P/fault-$port/fault.env"
    FLOG=$FAULT_LOG
    sed "s|^connect_to = .*|connect_to = $FAULT_CONNECT_TO|" "$C3" >"$2"
    chmod 600 "$2"
}

for kind in unknownca expired wronghost tls10; do
    fault_config "$kind" "$T/c3-$kind.conf"
    case $kind in
    unknownca) what="a server chained to an unknown CA" why="server certificate not trusted" ;;
    expired) what="an expired server certificate (right key, right CA)"
        why="server certificate not trusted" ;;
    wronghost) what="a certificate pinned and from our CA but for another host name"
        why="server certificate not trusted" ;;
    tls10) what="a server that offers only TLS 1.0/1.1" why="TLS handshake failed" ;;
    esac
    refused "$T/c3-$kind.conf" "$FLOG" "$what: refused, no PUT" "$why"
done

# A host not on the allow-list never gets a connection: the file is refused.
sed "s|^allowed_hosts = .*|allowed_hosts = $SECONDARY_HOST|" "$C3" >"$T/c3-host.conf"
chmod 600 "$T/c3-host.conf"
before=$(puts_in "$ACCESS_LOG")
ec upload-once --config "$T/c3-host.conf"
want_rc 78
want_err_re "\[upload\] endpoint: host \"$BLOB_HOST\" is not on \[tls\] allowed_hosts"
[ "$(puts_in "$ACCESS_LOG")" -eq "$before" ] || fail_because "a PUT reached the peer"
verdict "an endpoint host not on the allow-list: refused at load (78), no connection"

# ---- 12: proxies from the environment are ignored ------------------------------------
port=$("$PEERS" fault "$P" ok)
# shellcheck source=/dev/null
. "$P/fault-$port/fault.env"
PROXY_LOG=$FAULT_LOG
https_proxy=http://127.0.0.1:$port HTTPS_PROXY=http://127.0.0.1:$port \
    ALL_PROXY=http://127.0.0.1:$port all_proxy=http://127.0.0.1:$port \
    ec upload-once --config "$C3"
want_rc 0
[ ! -s "$PROXY_LOG" ] || fail_because "the environment's proxy received a request"
[ -z "$(segments "$C3")" ] || fail_because "the spool is not empty"
verdict "https_proxy/ALL_PROXY in the environment are ignored (the proxy saw nothing)"

# ---- 13: redirects are not followed ----------------------------------------------------
REASONS=()
for code in 301 302 307; do
    upload_config "$T/c4-$code.conf" "$T/spool4-$code"
    ec capture --config "$T/c4-$code.conf" --seconds 3
    before=$(segments "$T/c4-$code.conf")
    port=$("$PEERS" fault "$P" redirect "$code")
    # shellcheck source=/dev/null
    . "$P/fault-$port/fault.env"
    sed -i "s|^connect_to = .*|connect_to = $FAULT_CONNECT_TO|" "$T/c4-$code.conf"
    ec upload-once --config "$T/c4-$code.conf"
    [ "$RC" -eq 69 ] || fail_because "$code: exit $RC"
    grep -q "HTTP $code redirect, not followed" "$ERR" || fail_because "$code: reason not given"
    [ ! -s "$OTHER_LOG" ] || fail_because "$code: something reached the redirect target"
    [ "$(segments "$T/c4-$code.conf")" = "$before" ] || fail_because "$code: segment left the spool"
done
verdict "301/302/307: not followed, nothing sent to the other location, segment kept"

# ---- 14: 503 with Retry-After ------------------------------------------------------------
C5=$T/c5.conf
upload_config "$C5" "$T/spool5"
ec capture --config "$C5" --seconds 3
mapfile -t S5 < <(segments "$C5")
keep_originals "$C5" "$T/spool5"
port=$("$PEERS" fault "$P" busy 2)
# shellcheck source=/dev/null
. "$P/fault-$port/fault.env"
sed -i "s|^connect_to = .*|connect_to = $FAULT_CONNECT_TO|" "$C5"
t0=$(date +%s%N)
ec upload-once --config "$C5"
t1=$(date +%s%N)
want_rc 0
want_err_re "event=upload_failed .*http_status=503 code=ServerBusy"
[ $(((t1 - t0) / 1000000)) -ge 2000 ] || fail_because "retried after $(((t1 - t0) / 1000000)) ms: Retry-After: 1 not honoured"
check_stored "${S5[@]}"
verdict "503 + Retry-After: 1 twice: waited as told, then stored, nothing lost"

# ---- 15: 500s until the breaker opens; the secondary takes over -----------------------
C6=$T/c6.conf
upload_config "$C6" "$T/spool6" "breaker_failures = 2"
ec capture --config "$C6" --seconds 8
mapfile -t S6 < <(segments "$C6")
keep_originals "$C6" "$T/spool6"
p500=$("$PEERS" fault "$P" error500)
# shellcheck source=/dev/null
. "$P/fault-$p500/fault.env"
L500=$FAULT_LOG
ok2=$("$PEERS" fault "$P" ok)
sed -i -e "s|^connect_to = .*|connect_to = $BLOB_HOST:443:127.0.0.1:$p500, $SECONDARY_HOST:443:127.0.0.1:$ok2|" \
    -e "s|^endpoint = .*|endpoint = $BLOB_ENDPOINT\nsecondary_endpoint = https://$SECONDARY_HOST|" "$C6"
ec upload-once --config "$C6"
want_rc 0
want_err_re "event=breaker endpoint=primary state=open"
want_err_re "event=segment_uploaded .*endpoint=secondary"
[ "$(grep -c '"status":500' "$L500")" -eq 2 ] || fail_because "primary saw $(grep -c '"status":500' "$L500") 500s, expected 2"
[ -z "$(segments "$C6")" ] || fail_because "the spool is not empty"
"$PEERS" readback "$P" --container audio >"$T/readback.json" 2>/dev/null
for name in "${S6[@]}"; do
    [ "$(grep -cF "$(blob_of "$name")" "$T/readback.json")" -eq 1 ] ||
        fail_because "$name stored $(grep -cF "$(blob_of "$name")" "$T/readback.json") times"
done
verdict "500s: the primary's breaker opens after 2, the secondary region takes every segment once"

# ---- 16: a stalled peer hits the low-speed timeout -----------------------------------------
C7=$T/c7.conf
upload_config "$C7" "$T/spool7" "breaker_failures = 1
low_speed_seconds = 2
low_speed_bytes_per_second = 100"
ec capture --config "$C7" --seconds 3
before=$(segments "$C7")
port=$("$PEERS" fault "$P" stall)
# shellcheck source=/dev/null
. "$P/fault-$port/fault.env"
sed -i "s|^connect_to = .*|connect_to = $FAULT_CONNECT_TO|" "$C7"
ec upload-once --config "$C7"
want_rc 69
want_err_re "event=upload_failed .*error=\"network failure\""
[ "$(segments "$C7")" = "$before" ] || fail_because "the spool changed"
verdict "a stalled peer: low-speed timeout, segment kept, exit 69"

# ---- 17: peer killed mid-backlog and restarted; the daemon drains, once each ---------------
C8=$T/c8.conf
upload_config "$C8" "$T/spool8" "breaker_cooldown_seconds = 1"
sed -i -e "s|^segment_seconds = .*|segment_seconds = 1|" "$C8"
ec capture --config "$C8" --seconds 8
mapfile -t S8 < <(segments "$C8")
keep_originals "$C8" "$T/spool8"
"$PEERS" kill "$P" nginx
start_bg "$T/run8.log" run --config "$C8"
REASONS=()
wait_for_log "$T/run8.log" "event=upload_failed" "$DAEMON_PID" || fail_because "no failure while the peer was down"
"$PEERS" restart "$P" nginx >/dev/null 2>&1 || fail_because "nginx did not restart"
# the daemon's own capture adds segments too; wait until the backlog is gone
for ((i = 0; i < EC_WAIT_S * 4; i++)); do
    [ "$(grep -c 'event=segment_uploaded' "$T/run8.log")" -ge "${#S8[@]}" ] && break
    sleep 0.25
done
kill -TERM "$DAEMON_PID"
wait_exit "$DAEMON_PID" || fail_because "did not stop"
check_stored "${S8[@]}"
"$PEERS" readback "$P" --container audio >"$T/readback.json" 2>/dev/null
for name in "${S8[@]}"; do
    [ "$(grep -cF "$(blob_of "$name")" "$T/readback.json")" -eq 1 ] || fail_because "$name not stored exactly once"
done
verdict "peer killed and restarted under a backlog: every segment stored exactly once" "$T/run8.log"

# ---- 18: crash between PUT and unlink ----------------------------------------------------------
C9=$T/c9.conf
upload_config "$C9" "$T/spool9"
ec capture --config "$C9" --seconds 3
mapfile -t S9 < <(segments "$C9")
keep_originals "$C9" "$T/spool9"
cp -p "$T/spool9/${S9[0]}.seg" "$T/saved.seg"
ec upload-once --config "$C9"
# as if the process died after the PUT, before the unlink
cp -p "$T/saved.seg" "$T/spool9/${S9[0]}.seg"
ec upload-once --config "$C9"
want_rc 0
want_err_re "event=segment_uploaded segment=${S9[0]} .*already_existed=true"
[ -z "$(segments "$C9")" ] || fail_because "the spool is not empty"
grep -q '"already_existed":true' "$T/audit-c9.log" || fail_because "audit does not record it"
check_stored "${S9[0]}"
verdict "a crash between PUT and unlink: the retry finds the blob (409 + same MD5) and acknowledges"

# ---- 19: the peer's side: no client certificate, no blob ------------------------------------
REASONS=()
code=$(curl -s -o "$T/intruder.out" -w '%{http_code}' --noproxy '*' --cacert "$CA_FILE" \
    --connect-to "$BLOB_HOST:443:127.0.0.1:$NGINX_PORT" -X PUT -H 'x-ms-blob-type: BlockBlob' \
    --data-binary @"$T/tone.wav" "$BLOB_ENDPOINT/audio/intruder.ogg?$SAS")
[ "$code" = 400 ] || fail_because "a client without a certificate got $code: $(head -c 300 "$T/intruder.out")"
"$PEERS" readback "$P" --container audio >"$T/readback.json" 2>/dev/null
grep -q intruder "$T/readback.json" && fail_because "the blob appeared"
verdict "the private endpoint refuses a client without the device certificate (400, no blob)"

finish
