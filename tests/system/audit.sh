#!/bin/bash
# The audit trail with real parts: the daemon uploading to the Blob peer
# (Azurite behind the mutual-TLS nginx) with an HMAC key, rotation and the
# syslog copy going to a datagram socket this test listens on (python3):
#   - every security event of a run is there (start/stop with the config hash,
#     delivery with its auth mode, segments sealed, uploaded and acknowledged
#     with blob, MD5 and size, reload refused and accepted);
#   - the rotated files verify across the boundaries with `audit verify`, a
#     rotated file alone verifies and says where it continues from, and
#     tampering across a boundary is reported at the right file and line;
#   - the syslog copy carries exactly the audit lines; a missing receiver
#     never stops a writer;
#   - the daemon and a CLI writer appending to one file at once keep one chain;
#   - no audio, SAS token, device key or HMAC key reaches the trail or syslog.
. "$(dirname "$0")/lib/tap.sh"

plan 11

start_peers
SAS=$("$PEERS" container "$P" audio)
AUDIT_KEY=$(new_secret "audit-hmac-")
AUDIT=$T/audit/audit.log
SOCK=$T/syslog.sock
# Under valgrind (the slowest run of `make test`) a short capture without
# rotation; the rotation checks run natively, under ASan+UBSan and qemu.
LIGHT_REASON="valgrind run: rotation is checked natively, under ASan and under qemu"
# 20 one-second segments: their audit lines fill more than one 16 KiB file
if full_run; then SEGMENTS=20; else SEGMENTS=3; fi
sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth $SEGMENTS sine 200-700 vol 0.5
sox -q -n -r 16000 -c 1 -b 16 "$T/short.wav" synth 6 sine 300 vol 0.5

audit_config() { # FILE SPOOL [EXTRA-LOGGING]
    write_blob_config "$1" id=au-0001 spool="$2" allowed_hosts="$BLOB_HOST, $SECONDARY_HOST" \
        logging="audit_file = $AUDIT
audit_hmac_key = $AUDIT_KEY
audit_max_bytes = 16384
audit_keep = 9
${3:-}"
}

# A syslog receiver: every datagram on SOCK, one per line, into FILE.
start_syslog() { # FILE
    /usr/bin/python3 -u -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
out = open(sys.argv[2], "ab", buffering=0)
while True:
    d = s.recv(65536)
    out.write(d.replace(b"\n", b"\\n") + b"\n")
' "$SOCK" "$1" &
    SYSLOG_PID=$!
    EC_PIDS+=("$SYSLOG_PID")
    local i
    for ((i = 0; i < EC_WAIT_S * 20; i++)); do
        [ -S "$SOCK" ] && return 0
        sleep 0.05
    done
    return 1
}

# The audit files, oldest first.
audit_files() {
    local k
    for ((k = 99; k >= 1; k--)); do
        [ -f "$AUDIT.$k" ] && printf '%s\n' "$AUDIT.$k"
    done
    printf '%s\n' "$AUDIT"
}

# ---- 1: a daemon run, every event audited ---------------------------------------------
REASONS=()
C=$T/au.conf
audit_config "$C" "$T/spool" "audit_syslog = on
audit_syslog_socket = $SOCK
audit_syslog_facility = local4"
start_syslog "$T/syslog.txt" || fail_because "the syslog receiver did not start"
CONF_SHA=$(sha256sum "$C" | cut -d' ' -f1)
start_bg "$T/daemon.log" run --config "$C"
DAEMON=$DAEMON_PID
# every segment sealed and acknowledged
n=0
for ((i = 0; i < EC_WAIT_S * 60; i++)); do
    n=$(cat $(audit_files) 2>/dev/null | grep -c '"event":"segment_acknowledged"')
    [ "$n" -ge "$SEGMENTS" ] && break
    running "$DAEMON" || break
    sleep 0.05
done
[ "$n" -ge "$SEGMENTS" ] || fail_because "$n segments acknowledged, expected $SEGMENTS"
# a broken file is refused, a good one accepted
cp "$C" "$T/au.good"
sed -i 's/^audit_keep = 9$/audit_keep = 0/' "$C"
kill -HUP "$DAEMON"
wait_for_log "$T/daemon.log" 'event=reload_refused' "$DAEMON" || fail_because "no reload_refused"
cp "$T/au.good" "$C"
kill -HUP "$DAEMON"
wait_for_log "$T/daemon.log" 'event=reload_accepted' "$DAEMON" || fail_because "no reload_accepted"
kill -TERM "$DAEMON"
wait_exit "$DAEMON" || fail_because "the daemon did not stop"
[ "${EXIT_RC:-1}" -eq 0 ] || fail_because "the daemon exited $EXIT_RC"
mapfile -t FILES < <(audit_files)
cat "${FILES[@]}" >"$T/all.log"
want_re "$T/all.log" "\"event\":\"started\",.*\"config_sha256\":\"$CONF_SHA\""
want_re "$T/all.log" "\"event\":\"stopped\",\"exit_status\":0,\"config_sha256\":\"$CONF_SHA\""
want_re "$T/all.log" '"event":"delivery_started","auth":"sas"'
[ "$(grep -c '"event":"segment_sealed"' "$T/all.log")" -eq "$SEGMENTS" ] ||
    fail_because "not $SEGMENTS segment_sealed lines"
want_re "$T/all.log" '"event":"segment_acknowledged","segment":"au-0001-[0-9TZ]+-[0-9]+","blob":"edgecap/au-0001/[0-9/]+au-0001-[^"]+\.ogg",.*"content_md5":"[A-Za-z0-9+/]{22}==","bytes":[1-9][0-9]*,.*"wiped":true'
want_re "$T/all.log" "\"event\":\"reload_refused\",\"reason\":\"$C:[0-9]+: \[logging\] audit_keep: expected 1..99, got 0\""
want_re "$T/all.log" "\"event\":\"reload_accepted\",\"config_sha256\":\"$CONF_SHA\",\"delivering\":true"
verdict "daemon run: started/stopped with the config hash, delivery auth mode, every segment sealed and acknowledged (blob, MD5, size), reload refused and accepted" "$T/all.log" "$T/daemon.log"

# ---- 2: rotation, verified across the files ---------------------------------------------
if full_run; then
    REASONS=()
    [ "${#FILES[@]}" -ge 2 ] || fail_because "only ${#FILES[@]} audit files: no rotation"
    for f in "${FILES[@]}"; do
        [ "$(stat -c %s "$f")" -le 16384 ] || fail_because "$(basename "$f") is over audit_max_bytes"
    done
    ec audit verify --config "$C" "${FILES[@]}"
    want_rc 0
    lines=$(wc -l <"$T/all.log")
    want_out_re "^${FILES[0]} \.\. $AUDIT: ${#FILES[@]} files, $lines lines, hash chain intact across them, every HMAC verified$"
    # the current file alone: intact, continuing from the last line of AUDIT.1
    last=$(tail -n 1 "$AUDIT.1" | tr -d '\n' | sha256sum | cut -d' ' -f1)
    ec audit verify --config "$C" "$AUDIT"
    want_rc 0
    want_out_re "^$AUDIT: [0-9]+ lines, hash chain intact, continuing from $last \(after $(wc -l <"$AUDIT.1") lines of an older file\), every HMAC verified$"
    head -n 1 "$AUDIT" | grep -q "^{\"ts\":\"[^\"]*\",\"event\":\"rotated\",\"previous_sha256\":\"$last\"" ||
        fail_because "the current file does not begin with the rotated record"
    verdict "rotation: ${#FILES[@]} files of at most 16384 bytes verify across the boundaries; the current one alone says it continues from AUDIT.1's last hash" "$OUT" "$ERR"
else
    skip "rotation: the files verify across the boundaries; the current one alone says where it continues" "$LIGHT_REASON"
fi

# ---- 3: tampering across a boundary, at the right file and line -----------------------------
if full_run; then
    REASONS=()
    mkdir -p "$T/tamper"
    cp "$AUDIT.1" "$T/tamper/a.1"
    cp "$AUDIT" "$T/tamper/a"
    sed -i '$d' "$T/tamper/a.1" # the old file's last line removed
    ec audit verify "$T/tamper/a.1" "$T/tamper/a"
    want_rc 65
    want_err_fixed "edgecap: $T/tamper/a:1: does not continue the file before it: it names previous_sha256 ${last:0:16}..."
    cp "$AUDIT.1" "$T/tamper/a.1"
    sed -i '3s/"event":"[a-z_]*"/"event":"nothing_happened"/' "$T/tamper/a.1"
    ec audit verify --config "$C" "$T/tamper/a.1" "$T/tamper/a"
    want_rc 65
    want_err_fixed "edgecap: $T/tamper/a.1:3: hmac does not match (edited, or another key)"
    ec audit verify "$T/tamper/a.1" "$T/tamper/a"
    want_rc 65
    want_err_fixed "edgecap: $T/tamper/a.1:4: prev does not match the line before"
    cp "$AUDIT.1" "$T/tamper/a.1"
    sed -i '1d' "$T/tamper/a" # the rotated record removed
    ec audit verify "$T/tamper/a.1" "$T/tamper/a"
    want_rc 65
    want_err_fixed "edgecap: $T/tamper/a:1: does not begin with a rotated record continuing the file before it"
    ec audit verify "$AUDIT" "$AUDIT.1" # out of order
    want_rc 65
    want_err_fixed "edgecap: $AUDIT.1:1: "
    verdict "audit verify: a removed, edited or reordered line or file across a rotation is named by file and line"
else
    skip "audit verify: a removed, edited or reordered line or file across a rotation is named by file and line" "$LIGHT_REASON"
fi

# ---- 4: CLI usage and configuration errors -----------------------------------------------
REASONS=()
ec audit verify
want_rc 64
want_err_fixed "edgecap audit verify: expected FILE (or several, oldest first)"
ec audit verify "$AUDIT" "$T/no-such.log"
want_rc 66
want_err_fixed "edgecap: cannot read $T/no-such.log: no such file"
sed '/^audit_hmac_key = /d' "$C" >"$T/nokey.conf"
chmod 600 "$T/nokey.conf"
ec audit verify --config "$T/nokey.conf" "$AUDIT"
want_rc 78
want_err_fixed "edgecap audit verify: $T/nokey.conf provisions no [logging] audit_hmac_key"
sed 's/^audit_max_bytes = 16384$/audit_max_bytes = 4096/' "$C" >"$T/small.conf"
chmod 600 "$T/small.conf"
ec check-config "$T/small.conf"
want_rc 78
want_err_fixed "$T/small.conf:$(line_of "$T/small.conf" '^audit_max_bytes'): [logging] audit_max_bytes: must be 0 (never rotate) or at least 16384"
verdict "audit verify and check-config: usage, missing file, missing key and a too small audit_max_bytes are reported"

# ---- 5: the syslog copy ---------------------------------------------------------------------
REASONS=()
# every audit line once, in order, as RFC 3164 from local4.notice (4 = local4: 20*8+5)
sed -E 's/^<165>[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} edgecap\[[0-9]+\]: //' "$T/syslog.txt" >"$T/syslog.body"
cmp -s "$T/syslog.body" "$T/all.log" || fail_because "the syslog copy differs from the audit lines ($(wc -l <"$T/syslog.txt") datagrams, $(wc -l <"$T/all.log") lines)"
grep -qvE '^<165>' "$T/syslog.txt" && fail_because "a datagram without <165>"
verdict "syslog: every audit line went to the socket as one RFC 3164 datagram, local4.notice, in order" "$T/syslog.txt"

REASONS=()
# no receiver: the writer goes on, says so once, and the chain is whole
{
    kill -KILL "$SYSLOG_PID"
    wait "$SYSLOG_PID"
} 2>/dev/null
rm -f "$SOCK"
audit_config "$T/dead.conf" "$T/spool-dead" "audit_syslog = on
audit_syslog_socket = $SOCK
audit_syslog_format = rfc5424"
before=$(cat $(audit_files) | wc -l)
sed -i "s#^file = .*#file = $T/short.wav#" "$T/dead.conf"
ec capture --config "$T/dead.conf" --seconds 3
want_rc 0
[ "$(grep -c 'event=audit_syslog_dropping' "$ERR")" -eq 1 ] || fail_because "not one audit_syslog_dropping warning"
after=$(cat $(audit_files) | wc -l)
[ "$after" -ge $((before + 3)) ] || fail_because "the sealed segments were not audited ($before -> $after lines)"
mapfile -t FILES < <(audit_files)
ec audit verify --config "$C" "${FILES[@]}"
want_rc 0
verdict "syslog receiver gone: capture goes on, one warning, every line still in the audit file"

# ---- 6: two writers at once -------------------------------------------------------------------
REASONS=()
# the daemon (its own spool) and `capture` (another spool) seal into one trail
audit_config "$T/d2.conf" "$T/spool-d2"
audit_config "$T/w2.conf" "$T/spool-w2"
sed -i "s#^file = .*#file = $T/short.wav#" "$T/d2.conf" "$T/w2.conf"
start_bg "$T/daemon2.log" run --config "$T/d2.conf"
DAEMON=$DAEMON_PID
ec capture --config "$T/w2.conf" --seconds 6
want_rc 0
wait_for_log "$T/daemon2.log" 'event=segment_uploaded' "$DAEMON" || fail_because "the daemon uploaded nothing"
kill -TERM "$DAEMON"
wait_exit "$DAEMON" || fail_because "the daemon did not stop"
mapfile -t FILES < <(audit_files)
ec audit verify --config "$C" "${FILES[@]}"
want_rc 0
want_out_re "hash chain intact.*, every HMAC verified$"
cat "${FILES[@]}" >"$T/all2.log"
grep -q '"segment":"au-0001-[^"]*".*' "$T/all2.log" || fail_because "no segments"
verdict "the daemon and edgecap capture appending to one audit file at once: one chain, every HMAC verified" "$ERR" "$T/daemon2.log"

# ---- quarantine -------------------------------------------------------------------------------
REASONS=()
audit_config "$T/q.conf" "$T/spool-q"
sed -i "s#^file = .*#file = $T/short.wav#" "$T/q.conf"
ec capture --config "$T/q.conf" --seconds 2
seg=$(find "$T/spool-q" -maxdepth 1 -name '*.seg' | sort | head -n 1)
flip_byte "$seg" 300
ec spool verify --config "$T/q.conf"
want_rc 65
mapfile -t FILES < <(audit_files)
cat "${FILES[@]}" >"$T/all3.log"
want_re "$T/all3.log" "\"event\":\"segment_quarantined\",\"segment\":\"$(basename "$seg")\",\"moved_to\":\"$(basename "$seg")\",\"reason\":\"[^\"]+\",\"bytes\":[1-9]"
ec audit verify --config "$C" "${FILES[@]}"
want_rc 0
verdict "spool verify: a damaged segment moved to quarantine is audited (name, reason, size)" "$T/all3.log"

# ---- 7: nothing secret, no audio --------------------------------------------------------------
REASONS=()
SIG=$(printf '%s' "$SAS" | sed -n 's/.*sig=\([^&]*\).*/\1/p')
KEY_B64=$(grep -v '^-----' "$CLIENT_KEY" | tr -d '\n' | cut -c1-48)
mapfile -t FILES < <(audit_files)
for secret in "$SIG" "$AUDIT_KEY" "$KEY_B64"; do
    want_no_secret "$secret" "${FILES[@]}" "$T/syslog.txt"
done
for f in "${FILES[@]}" "$T/syslog.txt"; do
    grep -qaE 'OggS|OpusHead|OpusTags' "$f" && fail_because "Ogg/Opus bytes in $(basename "$f")"
    LC_ALL=C grep -qP '[^\x20-\x7e]' "$f" && fail_because "non-printable bytes in $(basename "$f")"
done
verdict "no SAS token, device key, HMAC key or audio bytes in any audit file or syslog datagram"

# ---- 8-9: file modes ----------------------------------------------------------------------------
REASONS=()
for f in "${FILES[@]}"; do
    [ "$(stat -c %a "$f")" = 600 ] || fail_because "$(basename "$f") is mode $(stat -c %a "$f")"
done
[ "$(stat -c %a "$T/audit")" = 700 ] || fail_because "the audit directory is mode $(stat -c %a "$T/audit")"
verdict "every audit file is 0600 in a 0700 directory"

REASONS=()
ls "$T/audit" >"$T/ls.txt"
grep -qE '\.new$' "$T/ls.txt" && fail_because "a rotation left audit.log.new behind"
[ -e "$AUDIT.10" ] && fail_because "more than audit_keep rotated files"
verdict "no rotation left half done, at most audit_keep rotated files" "$T/ls.txt"

finish
