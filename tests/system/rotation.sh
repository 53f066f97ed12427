#!/bin/bash
# Live rotation without losing audio (issue 6 item 2). A daemon captures from
# a source paced in real time (a FIFO fed at 16 kHz by tests/tools/paced_pcm.py;
# 1 s segments) and uploads to the Blob peer (Azurite behind the mTLS nginx).
# While audio flows, reloads rotate one thing each: the next server pin is
# added; the CA bundle file is replaced (config unchanged); the peer moves to
# its next key from the next CA (peers.sh server-key) and the SAS token is
# rotated; the old pin and CA are dropped; the client certificate and key
# files are replaced by another device identity. Between them, a bad CA
# bundle, a broken provisioning file and a certificate/key pair that does not
# match are refused (reason, FILE:LINE and key) while the running delivery
# goes on. After each accepted reload a segment is uploaded on the new
# configuration. At the end the source stops, the spool drains, and the blobs
# (read back with @azure/storage-blob) have contiguous sequence numbers, one
# per sealed segment, each PUT once and decoding with opusdec.
#
# Under valgrind or qemu a reduced run (each accepted reload costs seconds
# there): the reload with a segment in flight and the three refusals run; the
# CA bundle, the peer's key/CA move with the SAS rotation, the old pin/CA
# drop and the client certificate rotation run natively (and under ASan).
# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 13

start_peers
SAS1=$("$PEERS" container "$P" audio rcwt 24)
# a second valid SAS for the same container, told apart by its expiry (se=)
SAS2=$("$PEERS" sas "$P" audio rcwt 48)
se_of() { sed -E 's/.*(^|&)se=([^&]*).*/\2/' <<<"$1"; }
SE1=$(se_of "$SAS1")
SE2=$(se_of "$SAS2")

# The files the provisioning file names: rotated by replacing their contents.
(
    umask 077
    cp "$CA_FILE" "$T/ca.pem"
    cp "$CLIENT_CERT" "$T/client.pem"
    cp "$CLIENT_KEY" "$T/client.key"
)
CONF=$T/edgecap.conf
write_conf() { # PIN_LINES SAS
    write_blob_config "$CONF" id=rot-0001 file="$T/mic.raw" capture_extra="rate_hz = 16000
channels = 1" upload="endpoint = $BLOB_ENDPOINT
container = audio
connect_to = $CONNECT" upload_extra="low_speed_seconds = $LOW_SPEED_S
breaker_cooldown_seconds = 1" ca_file="$T/ca.pem" client_cert="$T/client.pem" \
        client_key="$T/client.key" pins="$1" auth="mode = sas
sas_token = $2" logging="audit_file = $T/audit.log" tail="[metrics]
textfile = $T/edgecap.prom"
}
# First through a front that takes the request and never answers, with no
# low-speed limit to speak of: a segment stays in flight until a reload.
port=$("$PEERS" fault "$P" stall)
# shellcheck source=/dev/null
. "$P/fault-$port/fault.env"
STALL_LOG=$FAULT_LOG STALL_SOCK=$FAULT_DIR/stall.sock
CONNECT=$FAULT_CONNECT_TO LOW_SPEED_S=600
write_conf "pin_current = $SERVER_PIN" "$SAS1"

# ---- the source and the daemon ------------------------------------------------------
start_paced_source "$T/mic.raw"
LOG=$T/daemon.log
start_bg "$LOG" run --config "$CONF"
pid=$DAEMON_PID

# A segment uploaded in a log line after LINE (bounded).
upload_after() { # LINE
    local i
    for ((i = 0; i < EC_WAIT_S * 20; i++)); do
        tail -n "+$(($1 + 1))" "$LOG" | grep -q 'event=segment_uploaded' && return 0
        running "$pid" || return 1
        sleep 0.05
    done
    return 1
}

# A reload and its answer (reload_answer), then a segment uploaded after it.
reload_and_wait() { # EVENT [cli]
    reload_answer "$LOG" "$pid" "$CONF" "$@" || return
    upload_after "$ANSWER_LINE" || fail_because "no segment uploaded after the reload (${EC_WAIT_S} s)"
}

# True while the stalled front holds a request: it has passed it on to its
# inner server (which never answers), so /proc/net/unix shows a connected
# (state 03) socket on that server's path besides the listening one.
request_stalled() {
    grep -qE " 03 [0-9]+ $STALL_SOCK\$" /proc/net/unix
}

REASONS=()
wait_for_log "$LOG" 'event=capture_started source=file' "$pid" || fail_because "capture did not start"
for ((i = 0; i < EC_WAIT_S * 20; i++)); do
    request_stalled && break
    sleep 0.05
done
request_stalled || fail_because "no upload is held by the stalled front"
verdict "a daemon captures from a real-time source (FIFO, 1 s segments); an upload hangs on a stalled peer" \
    "$LOG"

# ---- 2: reload with a segment in flight; the next server pin is added ----------------------
CONNECT=$CONNECT_TO LOW_SPEED_S=30
write_conf "pin_current = $SERVER_PIN
pin_next = $NEXT_PIN" "$SAS1"
reload_and_wait reload_accepted cli
stalled=$(grep -oE 'event=upload_failed segment=[^ ]+ .*reason="abandoned: the uploader is stopping \(reload or shutdown\)[^"]*" effect="kept in the spool"' "$LOG" |
    head -n 1 | sed -E 's/^event=upload_failed segment=([^ ]+) .*/\1/')
if [ -z "$stalled" ]; then
    fail_because "no upload_failed ... abandoned ... kept in the spool"
else
    grep -q "event=segment_uploaded segment=$stalled " "$LOG" ||
        fail_because "the abandoned segment $stalled was not uploaded after the reload"
    wait_for_log "$STALL_LOG" '"method":"PUT".*"status":499' "$pid" ||
        fail_because "the stalled front did not see the PUT given up (499)"
fi
verdict "reload (edgecap reload) with a segment in flight to a stalled peer: abandoned, kept, uploaded by the new delivery; pin_next added" \
    "$LOG" "$STALL_LOG"

# ---- 3: the CA bundle file is replaced (config unchanged) -----------------------------------
cat "$CA_FILE" "$NEXT_CA_FILE" >"$T/ca.new" && mv "$T/ca.new" "$T/ca.pem"
if is_native; then
    reload_and_wait reload_accepted
    verdict "CA bundle file replaced by current + next CA, config unchanged: accepted, uploads go on" "$LOG"
else
    skip "CA bundle file replaced by current + next CA" "runs natively only (valgrind/qemu: reduced run)"
fi

# ---- 4: a bad CA bundle is refused before anything changes -----------------------------------
cp "$T/ca.pem" "$T/ca.good"
printf -- '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n' >"$T/ca.pem"
reload_and_wait reload_refused
[[ "$ANSWER" == *"reason=\"[tls] ca_file $T/ca.pem: "* ]] || fail_because "the reason does not name [tls] ca_file and the file"
# the same file when a delivery starts (here upload-once, on a spool of its own)
cp "$T/ca.pem" "$T/bad-ca.pem"
sed -e "s|^ca_file = .*|ca_file = $T/bad-ca.pem|" -e "s|^dir = .*|dir = $T/spool-badca|" \
    -e "s|^audit_file = .*|audit_file = $T/audit-badca.log|" -e '/^\[metrics\]/,$d' "$CONF" >"$T/badca.conf"
chmod 600 "$T/badca.conf"
ec upload-once --config "$T/badca.conf"
want_rc 78
want_err_fixed "cannot upload: invalid configuration"
want_err_fixed "event=tls_ca_unusable reason=\"[tls] ca_file $T/bad-ca.pem: no PEM or DER certificate\""
verdict "a CA bundle that does not parse: reload refused ([tls] ca_file PATH), delivery goes on; a new delivery refuses it too" \
    "$LOG" "$ERR"
mv "$T/ca.good" "$T/ca.pem"

# ---- 5: the peer moves to its next key and CA; the SAS token is rotated --------------------
if is_native; then
    "$PEERS" server-key "$P" next >"$T/sk.out" 2>&1 || fail_because "peers.sh server-key next failed"
    SK_TIME=$(date +%s.%N)
    write_conf "pin_current = $SERVER_PIN
pin_next = $NEXT_PIN" "$SAS2"
    reload_and_wait reload_accepted
    # the PUTs since the peer moved (new connections: the next key and CA)
    awk -v t="$SK_TIME" -F'"msec":' '/"method":"PUT"/ { split($2, a, ","); if (a[1] + 0 > t + 0) print }' \
        "$ACCESS_LOG" >"$T/after-sk.log"
    [ -s "$T/after-sk.log" ] || fail_because "no PUT reached the peer after it moved to the next key"
    grep -qF "se=$SE2" "$T/after-sk.log" || fail_because "no PUT carries the new SAS (se=$SE2)"
    # once the new SAS is used, the old one never is again
    first_new=$(grep -nF "se=$SE2" "$ACCESS_LOG" | head -n 1 | cut -d: -f1)
    tail -n "+${first_new:-1}" "$ACCESS_LOG" | grep '"method":"PUT"' | grep -qF "se=$SE1" &&
        fail_because "a PUT after the first with the new SAS used the old one"
    verdict "peer on its next key and CA; SAS rotated: new connections accept it (pin_next, CA bundle), the new SAS is used from then on" \
        "$LOG" "$T/sk.out"
else
    skip "peer on its next key and CA; SAS rotated" "runs natively only (valgrind/qemu: reduced run)"
fi

# ---- 6: a broken provisioning file is refused with FILE:LINE --------------------------------
cp "$CONF" "$T/conf.good"
sed -i 's|^pin_next = .*|pin_next = sha256//not-a-pin|' "$CONF"
bad_line=$(line_of "$CONF" '^pin_next = sha256//not-a-pin')
reload_and_wait reload_refused
[[ "$ANSWER" == *"reason=\"$CONF:$bad_line: [tls] pin_next: "* ]] ||
    fail_because "the reason lacks $CONF:$bad_line: [tls] pin_next: (${ANSWER:0:300})"
verdict "a broken provisioning file: reload refused with FILE:LINE and key, delivery goes on" "$LOG"
cp "$T/conf.good" "$CONF"

# ---- 7: the old pin and the old CA are dropped -------------------------------------------------
if is_native; then
    write_conf "pin_current = $NEXT_PIN" "$SAS2"
    cp "$NEXT_CA_FILE" "$T/ca.new" && mv "$T/ca.new" "$T/ca.pem"
    reload_and_wait reload_accepted
    verdict "old pin and old CA dropped (pin_current = next, bundle = next CA): accepted, uploads go on" "$LOG"
else
    skip "old pin and old CA dropped" "runs natively only (valgrind/qemu: reduced run)"
fi

# ---- 8: a certificate and key that do not match are refused ------------------------------------
cp "$T/client.pem" "$T/client.pem.good"
cp "$RSA_CLIENT_CERT" "$T/client.pem"
reload_and_wait reload_refused
[[ "$ANSWER" == *"reason=\"[tls] client_cert $T/client.pem / client_key $T/client.key: "* ]] ||
    fail_because "the reason does not name the certificate and key (${ANSWER:0:300})"
want_re "$LOG" "event=credential_invalid cert=$T/client.pem reason=\"the private key does not belong to the certificate\""
# uploads after the refusal still present the old identity
tail -n 3 "$ACCESS_LOG" | grep '"method":"PUT"' | grep -qF "\"client_fp\":\"$CLIENT_FINGERPRINT\"" ||
    fail_because "the last PUTs do not present the running identity"
verdict "a new certificate whose key does not match: refused before anything is swapped, old identity goes on" "$LOG"

# ---- 9: the client certificate and key are rotated -------------------------------------------
if is_native; then
    (umask 077 && cp "$RSA_CLIENT_KEY" "$T/client.key")
    reload_and_wait reload_accepted
    first_rsa=$(grep -nF "\"client_fp\":\"$RSA_CLIENT_FINGERPRINT\"" "$ACCESS_LOG" | head -n 1 | cut -d: -f1)
    if [ -z "$first_rsa" ]; then
        fail_because "no request presented the new certificate"
    else
        tail -n "+$first_rsa" "$ACCESS_LOG" | grep -qF "\"client_fp\":\"$CLIENT_FINGERPRINT\"" &&
            fail_because "the old certificate was presented after the new one"
    fi
    verdict "client certificate and key files replaced (another device identity): accepted, the new one is presented from then on" \
        "$LOG"
else
    cp "$T/client.pem.good" "$T/client.pem" # the running identity again, for upload-once
    skip "client certificate and key files replaced" "runs natively only (valgrind/qemu: reduced run)"
fi

# ---- 10: the source ends; the daemon stops; the spool drains -----------------------------
REASONS=()
stop_and_drain "$LOG" "$pid" "$CONF" "$T/spool" "$T/edgecap.prom" segment_uploaded
verdict "one capture throughout (nothing dropped); every sealed segment uploaded (metrics count them across reloads); the spool is empty" \
    "$LOG" "$T/drain.err" "$T/drain.out" "$T/edgecap.prom"

# ---- 11: the blobs: contiguous sequence numbers, each decodes ------------------------------
REASONS=()
"$PEERS" readback "$P" --container audio --prefix edgecap/rot-0001/ --out-dir "$T/blobs" \
    >"$T/readback.json" 2>"$T/readback.err" || fail_because "readback failed: $(tail -n 2 "$T/readback.err")"
sed -nE 's/.*"name":"[^"]*-([0-9]+)\.ogg".*/\1/p' "$T/readback.json" | sed 's/^0*//; s/^$/0/' |
    sort -n >"$T/seqs"
nblobs=$(wc -l <"$T/seqs")
first=$(head -n 1 "$T/seqs")
last=$(tail -n 1 "$T/seqs")
[ "$nblobs" -eq "$SEALED" ] || fail_because "$nblobs blobs for $SEALED sealed segments"
if [ "$nblobs" -eq 0 ] || [ $((last - first + 1)) -ne "$nblobs" ]; then
    fail_because "sequence numbers $first..$last are not contiguous over $nblobs blobs"
fi
[ -z "$(uniq -d "$T/seqs")" ] || fail_because "a sequence number appears twice: $(uniq -d "$T/seqs" | head -n 3)"
undecodable=0
while IFS= read -r f; do
    opusdec --quiet "$f" "$T/d.wav" 2>/dev/null || undecodable=$((undecodable + 1))
done < <(find "$T/blobs" -name '*.ogg')
[ "$undecodable" -eq 0 ] || fail_because "$undecodable blobs do not decode with opusdec"
diag "blobs: $nblobs, sequence $first..$last"
verdict "every segment is stored: contiguous sequence numbers from first to last, each decodes" \
    "$T/readback.err"

# ---- 12: nothing uploaded twice ----------------------------------------------------------------
REASONS=()
grep '"method":"PUT"' "$ACCESS_LOG" | grep -F '/edgecap/rot-0001/' |
    sed -E 's/.*"path":"([^"]*)".*"status":([0-9]+).*/\1 \2/' >"$T/puts"
twice=$(cut -d' ' -f1 "$T/puts" | sort | uniq -d)
[ -z "$twice" ] || fail_because "PUT more than once: $(head -n 3 <<<"$twice")"
created=$(grep -c ' 201$' "$T/puts")
[ "$created" -eq "$nblobs" ] || fail_because "$created PUTs answered 201 for $nblobs blobs"
want_no_re "$LOG" 'already_existed=true'
verdict "nothing uploaded twice: one PUT (201) per blob, none found already there" "$T/puts"

# ---- 13: the audit trail and secrets ----------------------------------------------------------
REASONS=()
n_acc=$(grep -c '"event":"reload_accepted"' "$T/audit.log")
n_ref=$(grep -c '"event":"reload_refused"' "$T/audit.log")
[ "$n_acc" -eq "$(grep -c 'event=reload_accepted' "$LOG")" ] || fail_because "$n_acc reload_accepted audit lines"
[ "$n_ref" -eq 3 ] || fail_because "$n_ref reload_refused audit lines, expected 3"
ec audit verify "$T/audit.log"
want_rc 0
want_no_secret "${SAS1#*sig=}" "$LOG" "$LOG.out" "$T/audit.log"
want_no_secret "${SAS2#*sig=}" "$LOG" "$LOG.out" "$T/audit.log"
verdict "every reload is audited (accepted and refused), the chain verifies, no SAS in log or audit" \
    "$T/audit.log" "$ERR"

finish
