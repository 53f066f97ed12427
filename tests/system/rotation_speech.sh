#!/bin/bash
# Live rotation to the Speech target (issue 6 item 2): subscription keys
# rotated while audio flows, the way Azure's "rotate the two keys" guidance
# has it. A daemon captures from a source paced in real time (a FIFO fed at
# 16 kHz by tests/tools/paced_pcm.py; 1 s segments) and sends each segment to
# fast transcription at the Speech custom-domain peer (tests/peers/speech
# behind the mutual-TLS nginx front) with [auth] mode = key, key_primary_file
# and key_secondary_file. While audio flows:
#   - the service regenerates key1 (the peer's POST /keys/regenerate): the
#     device's next request with the old key1 gets 401, it moves to the
#     secondary slot (key2) and the same request goes again, nothing lost;
#   - the operator puts the new key1 value in the primary key file and
#     reloads: from then on the device sends the new key1, never the old;
#   - a provisioning file with a broken subscription key line is refused
#     (FILE:LINE, key; the value never shown) and delivery goes on on the
#     running keys;
#   - natively (and under ASan) also the server pins and CA: pin_next and a
#     CA bundle of current + next CA, the peer's front moves to its next key,
#     then the old pin and CA are dropped.
# The peer records every request's key by SHA-256 prefix (key_id), never by
# value, and the audio part's name (DEVICE-SEQ.ogg). At the end the source
# stops, the spool drains, and each sealed segment was transcribed exactly
# once (peer-side count), with contiguous sequence numbers, each decoding
# with opusdec at the peer; the old key1 is refused by the peer; no key value
# is in the daemon's output or audit trail.
#
# Under valgrind or qemu the pins/CA part is skipped (each accepted reload
# costs seconds there); the key rotation runs everywhere.
# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 9

start_peers
control() { "$PEERS" speech "$P" "$@"; }
# A subscription key's id as the peer records it (the files hold the bare
# value, no newline): the first 12 hex digits of its SHA-256.
key_id() { sha256sum <"$1" | cut -c1-12; }

# The Speech peer's records after SEQ, one line each:
#   seq op status auth key_id audio_filename ogg_opus samples auth_reason...
records() { # [SINCE_SEQ [QUERY]]
    control "/requests?since=${1:-0}${2:+&$2}" | node -e '
        const a = JSON.parse(require("fs").readFileSync(0, "utf8"));
        for (const r of a)
            console.log([r.seq, r.op, r.status, r.auth, r.key_id ?? "-", r.audio_filename ?? "-",
                         r.ogg_opus ?? "-", r.samples ?? "-", r.auth_reason ?? "-"].join(" "));'
}
last_seq() { records 0 last=1 | cut -d' ' -f1 | sed 's/^$/0/'; }

# Bounded wait for a transcription after SEQ answered STATUS with AUTH and
# key id ID.
wait_transcribed() { # SINCE_SEQ STATUS AUTH KEY_ID
    local found deadline=$((SECONDS + EC_WAIT_S))
    # a deadline, not a count of rounds: each round starts curl and node,
    # which take most of a second under qemu or valgrind
    while [ "$SECONDS" -lt "$deadline" ]; do
        found=$(records "$1" | awk -v s="$2" -v a="$3" -v k="$4" \
            '$2 == "transcribe" && $3 == s && $4 == a && $5 == k { print; exit }')
        [ -n "$found" ] && return 0
        running "$pid" || return 1
        sleep 0.1
    done
    return 1
}

# The device's copies of the two keys, rotated by replacing their contents.
(
    umask 077
    cp "$SPEECH_KEY_PRIMARY_FILE" "$T/key1"
    cp "$SPEECH_KEY_SECONDARY_FILE" "$T/key2"
    cp "$CA_FILE" "$T/ca.pem"
)
K1=$(cat "$T/key1") K2=$(cat "$T/key2")
K1_ID=$(key_id "$T/key1") K2_ID=$(key_id "$T/key2")

CONF=$T/edgecap.conf
write_conf() { # PIN_LINES
    write_blob_config "$CONF" id=rsp-0001 file="$T/mic.raw" capture_extra="rate_hz = 16000
channels = 1" upload="target = speech
endpoint = $SPEECH_ENDPOINT
connect_to = $CONNECT_TO_SPEECH" upload_extra="breaker_cooldown_seconds = 1" \
        ca_file="$T/ca.pem" pins="$1" allowed_hosts="$SPEECH_HOST" auth="mode = key
key_primary_file = $T/key1
key_secondary_file = $T/key2" logging="audit_file = $T/audit.log" tail="[metrics]
textfile = $T/edgecap.prom"
}
write_conf "pin_current = $SERVER_PIN"

# ---- 1: live capture, delivered with the primary key -----------------------------------
REASONS=()
start_paced_source "$T/mic.raw"
LOG=$T/daemon.log
start_bg "$LOG" run --config "$CONF"
pid=$DAEMON_PID
wait_for_log "$LOG" 'event=capture_started source=file' "$pid" || fail_because "capture did not start"
wait_transcribed 0 200 key-primary "$K1_ID" || fail_because "no segment transcribed with key1 (primary)"
want_re "$LOG" 'event=delivery_ready auth=key '
verdict "a daemon captures from a real-time source (FIFO, 1 s segments) and delivers to the Speech custom domain with key1 (primary slot)" \
    "$LOG"

# A reload and its answer (reload_answer); MARK is the peer's last record
# then: every request after it comes from the delivery the answer left
# running, since a reload stops the old one before it answers.
reload_and_wait() { # EVENT [cli]
    reload_answer "$LOG" "$pid" "$CONF" "$@"
    MARK=$(last_seq)
}

# ---- 2: the service regenerates key1 while audio flows ---------------------------------
REASONS=()
mark=$(last_seq)
control /keys/regenerate '{"slot":"primary"}' >"$T/regen.json" || fail_because "the peer did not regenerate key1"
K1N=$(cat "$SPEECH_KEY_PRIMARY_FILE")
K1N_ID=$(key_id "$SPEECH_KEY_PRIMARY_FILE")
grep -qF "\"key_id\":\"$K1N_ID\"" "$T/regen.json" && grep -qF "\"retired_key_id\":\"$K1_ID\"" "$T/regen.json" ||
    fail_because "the peer's answer does not name the new and old key1 ids: $(cat "$T/regen.json")"
[ "$K1N_ID" != "$K1_ID" ] || fail_because "key1 did not change"
wait_for_log "$LOG" 'event=auth_key_slot from=primary slot=secondary reason="HTTP 401"' "$pid" ||
    fail_because "no slot change to secondary after a 401"
wait_transcribed "$mark" 200 key-secondary "$K2_ID" || fail_because "no segment transcribed with key2 after key1 was regenerated"
records "$mark" >"$T/after-regen.txt"
refused=$(awk -v k="$K1_ID" '$3 == 401 && $5 == k' "$T/after-regen.txt")
[ "$(wc -l <<<"$refused")" -eq 1 ] && [ -n "$refused" ] ||
    fail_because "not exactly one request with the old key1 refused (401)"
[[ "$refused" == *"subscription key regenerated (old primary)" ]] || fail_because "the 401 is not for the regenerated key: $refused"
# from the 401 on, key2 only (the device stays on the secondary slot)
awk -v k="$K1_ID" 'f && $5 == k { bad = 1 } $5 == k && $3 == 401 { f = 1 } END { exit bad }' "$T/after-regen.txt" ||
    fail_because "the old key1 was sent again after its 401"
grep -q '"event":"auth_key_slot"' "$T/audit.log" || fail_because "the slot change is not audited"
verdict "key1 regenerated at the service while audio flows: one 401 on the old key1, the device moves to the secondary slot (logged, audited) and delivers on key2" \
    "$LOG" "$T/after-regen.txt"

# ---- 3: the new key1 provisioned in its slot and reloaded --------------------------------
REASONS=()
(umask 077 && cp "$SPEECH_KEY_PRIMARY_FILE" "$T/key1.new") && mv "$T/key1.new" "$T/key1"
reload_and_wait reload_accepted cli
reload_mark=$MARK
wait_transcribed "$reload_mark" 200 key-primary "$K1N_ID" || fail_because "no segment transcribed with the new key1 after the reload"
verdict "new key1 value in the primary key file (config unchanged), edgecap reload: accepted, the new key1 is sent from then on" \
    "$LOG"

# ---- 4: a broken subscription key line is refused ------------------------------------------
REASONS=()
cp "$CONF" "$T/conf.good"
# a value pasted with a blank in it (here the new and the old key on one line)
sed -i "s|^key_primary_file = .*|key_primary = $K1N $K1|" "$CONF"
bad_line=$(line_of "$CONF" '^key_primary = ')
reload_and_wait reload_refused
[[ "$ANSWER" == *"reason=\"$CONF:$bad_line: [auth] key_primary: not a subscription key: "* ]] ||
    fail_because "the reason lacks $CONF:$bad_line: [auth] key_primary: not a subscription key (${ANSWER:0:300})"
wait_transcribed "$MARK" 200 key-primary "$K1N_ID" || fail_because "no segment transcribed on the running key1 after the refusal"
cp "$T/conf.good" "$CONF"
want_no_secret "$K1N" "$LOG"
verdict "a broken subscription key line: reload refused with FILE:LINE and key (value not shown), delivery goes on with the running keys" \
    "$LOG"

# ---- 5: server pins and CA --------------------------------------------------------------------
if is_native; then
    REASONS=()
    write_conf "pin_current = $SERVER_PIN
pin_next = $NEXT_PIN"
    cat "$CA_FILE" "$NEXT_CA_FILE" >"$T/ca.new" && mv "$T/ca.new" "$T/ca.pem"
    reload_and_wait reload_accepted
    "$PEERS" server-key "$P" next >"$T/sk.out" 2>&1 || fail_because "peers.sh server-key next failed"
    wait_transcribed "$(last_seq)" 200 key-primary "$K1N_ID" || fail_because "nothing transcribed after the peer moved to its next key"
    # only the next key and CA from now on: what is delivered now went there
    write_conf "pin_current = $NEXT_PIN"
    cp "$NEXT_CA_FILE" "$T/ca.new" && mv "$T/ca.new" "$T/ca.pem"
    reload_and_wait reload_accepted
    wait_transcribed "$MARK" 200 key-primary "$K1N_ID" || fail_because "nothing transcribed on the next pin and CA alone"
    verdict "server pin and CA rotated while audio flows (pin_next + CA bundle, peer on its next key, old pin and CA dropped): deliveries go on" \
        "$LOG" "$T/sk.out"
else
    skip "server pin and CA rotated while audio flows" "runs natively only (valgrind/qemu: reduced run)"
fi

# ---- 6: the source ends; the daemon stops; the spool drains ---------------------------------
REASONS=()
stop_and_drain "$LOG" "$pid" "$CONF" "$T/spool" "$T/edgecap.prom" segment_transcribed
verdict "one capture throughout (nothing dropped); every sealed segment transcribed (metrics count them across reloads); the spool is empty" \
    "$LOG" "$T/drain.err" "$T/drain.out" "$T/edgecap.prom"

# ---- 7: at the peer: each segment once, contiguous, decoding -----------------------------------
REASONS=()
records >"$T/all.txt"
awk '$2 == "transcribe" && $3 == 200' "$T/all.txt" >"$T/ok.txt"
sed -nE 's/^[0-9]+ transcribe 200 [^ ]+ [^ ]+ rsp-0001-([0-9]+)\.ogg .*/\1/p' "$T/ok.txt" | sort -n >"$T/seqs"
n=$(wc -l <"$T/seqs")
first=$(head -n 1 "$T/seqs")
last=$(tail -n 1 "$T/seqs")
[ "$n" -eq "$(wc -l <"$T/ok.txt")" ] || fail_because "a transcription without the segment's name"
[ "$n" -eq "$SEALED" ] || fail_because "$n segments transcribed (200) at the peer for $SEALED sealed"
[ -z "$(uniq -d "$T/seqs")" ] || fail_because "transcribed more than once: $(uniq -d "$T/seqs" | head -n 3 | tr '\n' ' ')"
if [ "$n" -eq 0 ] || [ $((last - first + 1)) -ne "$n" ]; then
    fail_because "sequence numbers $first..$last are not contiguous over $n segments"
fi
bad=$(awk '$7 != "true" || !($8 > 0)' "$T/ok.txt" | wc -l)
[ "$bad" -eq 0 ] || fail_because "$bad transcribed segments did not decode (opusinfo + opusdec at the peer)"
diag "peer: $n segments transcribed, sequence $first..$last; $(awk '$2 == "transcribe" && $3 == 401' "$T/all.txt" | wc -l) refused (401)"
verdict "at the peer: each sealed segment transcribed exactly once (200), contiguous sequence numbers, each decodes with opusdec" \
    "$T/ok.txt"

# ---- 8: the old key1: refused by the peer, never sent after the reload --------------------------
REASONS=()
after=$(awk -v m="$reload_mark" '$1 > m' "$T/all.txt")
[ -n "$after" ] || fail_because "no request after the reload"
awk -v k="$K1_ID" '$5 == k' <<<"$after" | grep -q . && fail_because "the old key1 was sent after the reload"
awk -v k="$K1_ID" 'f && $5 == k { bad = 1 } $5 == k && $3 == 401 { f = 1 } END { exit bad }' "$T/all.txt" ||
    fail_because "the old key1 was sent again after the 401 that refused it"
# asked directly (the device's own identity, through the front): old key1 401, new key1 through
probe() { # KEY_VALUE -> HTTP status of a GET for an unknown job
    (umask 077 && printf 'Ocp-Apim-Subscription-Key: %s\n' "$1" >"$T/probe.hdr")
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$T/ca.pem" \
        --cert "$CLIENT_CERT" --key "$CLIENT_KEY" --connect-to "$CONNECT_TO_SPEECH" -H "@$T/probe.hdr" \
        "$SPEECH_ENDPOINT/speechtotext/transcriptions/00000000-0000-0000-0000-000000000000?api-version=2024-11-15"
    rm -f "$T/probe.hdr"
}
old_status=$(probe "$K1")
new_status=$(probe "$K1N")
[ "$old_status" = 401 ] || fail_because "the old key1 got HTTP $old_status, expected 401"
[ "$new_status" = 404 ] || fail_because "the new key1 got HTTP $new_status, expected 404 (authorised, no such job)"
last2=$(records | tail -n 2)
grep -qF "$K1_ID" <<<"$last2" && grep -qF 'subscription key regenerated (old primary)' <<<"$last2" ||
    fail_because "the peer did not record the old key1 as regenerated"
verdict "the old key1 is refused by the service (401, regenerated) and was never sent after the reload; the new key1 is accepted" \
    "$T/all.txt"

# ---- 9: audit trail and secrets ------------------------------------------------------------------
REASONS=()
n_acc=$(grep -c '"event":"reload_accepted"' "$T/audit.log")
n_ref=$(grep -c '"event":"reload_refused"' "$T/audit.log")
[ "$n_acc" -eq "$(grep -c 'event=reload_accepted' "$LOG")" ] || fail_because "$n_acc reload_accepted audit lines"
[ "$n_ref" -eq 1 ] || fail_because "$n_ref reload_refused audit lines, expected 1"
ec audit verify "$T/audit.log"
want_rc 0
for k in "$K1" "$K2" "$K1N"; do
    want_no_secret "$k" "$LOG" "$LOG.out" "$T/audit.log" "$T/drain.out" "$T/drain.err" \
        "$SPEECH_LOG" "$ACCESS_LOG"
done
verdict "every reload is audited (accepted and refused), the chain verifies; no key value in the daemon's output, audit trail or the peer's logs" \
    "$T/audit.log" "$ERR"

finish
