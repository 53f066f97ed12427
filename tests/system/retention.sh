#!/bin/bash
# Retention and secure deletion against the real Blob peer (Azurite behind the
# mTLS nginx). Segments are made "in the past" by running the real capture
# under faketime (Debian's libfaketime: it preloads into native processes
# only, so those checks are skipped under qemu-user and valgrind, which run
# the binary themselves); a quarantined file without a header is aged by its
# mtime everywhere. [spool] max_age_hours = 1: upload-once and the daemon
# crypto-shred and audit what is older and never upload it. `wipe --all`
# leaves no KEK and no wrapped key that could open any remaining byte (even
# in a hard link that plays flash keeping old blocks), and refuses without
# --all, while a daemon runs and with a bad config path. It also destroys the
# device's TLS private key ([tls] client_key: every byte zeroed, even in a
# hard link, then removed) and the Speech job state with its .tmp, and names
# each; a key it cannot destroy (a read-only mount) is reported, exit 74,
# after everything else went.
. "$(dirname "$0")/lib/tap.sh"

plan 10

# Under valgrind only the paths through new C code run (each start costs
# seconds there); the argument checks run natively, under ASan and qemu.

start_peers
SAS=$("$PEERS" container "$P" audio)
sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth 4 sine 300-600 vol 0.5

retention_config() { # FILE
    write_blob_config "$1" id=ret-0001 segment_seconds=2 spool_extra="max_age_hours = 1" \
        logging="audit_file = $T/audit.log" tail="[metrics]
textfile = $T/metrics.prom
interval_seconds = 1"
}
C=$T/ret.conf
retention_config "$C"

segments() { "$EDGECAP" spool ls --config "$C" 2>/dev/null | awk '$NF == "closed" {print $1}'; }

# Captures SECONDS of the tone with the clock HOURS behind (faketime). An
# ASan build wants its runtime first among preloads; libfaketime only
# replaces clock functions, which ASan does not intercept.
capture_past() { # HOURS SECONDS
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        timeout "$EC_CMD_TIMEOUT_S" faketime -f "-$1h" "$EDGECAP" capture --config "$C" \
        --seconds "$2" >"$T/past.out" 2>"$T/past.err" </dev/null ||
        fail_because "capture under faketime failed: $(tail -n 1 "$T/past.err")"
}

# No blob and no request at the peer for any of NAMES.
never_uploaded() { # NAME...
    local name
    "$PEERS" readback "$P" --container audio >"$T/readback.json" 2>"$T/readback.err" ||
        fail_because "readback failed: $(tail -n 2 "$T/readback.err")"
    for name in "$@"; do
        grep -qF "$name" "$T/readback.json" && fail_because "$name reached the blob store"
        grep -qF "$name" "$ACCESS_LOG" && fail_because "a request for $name reached the peer"
    done
}

# ---- 1: upload-once shreds and audits what is past max_age_hours ---------------
if is_native && command -v faketime >/dev/null; then
    capture_past 3 4
    mapfile -t OLD < <(segments)
    ec capture --config "$C" --seconds 2
    mapfile -t ALL < <(segments)
    NEW=${ALL[-1]}
    [ "${#OLD[@]}" -eq 2 ] && [ "${#ALL[@]}" -eq 3 ] ||
        fail_because "expected 2 old and 1 new segment, got ${#OLD[@]} and ${#ALL[@]}"
    ec upload-once --config "$C"
    want_rc 0
    want_out_re "^purged 2 segments older than 1 hours \(crypto-shredded, not uploaded\)$"
    want_out_re "^uploaded 1 segments "
    for name in "${OLD[@]}"; do
        want_re "$T/audit.log" "\"event\":\"retention_purge\",\"segment\":\"$name\.seg\",\"kind\":\"sealed\",\"sequence\":[0-9]+,\"age_s\":10[0-9]{3},\"size_bytes\":[1-9][0-9]*,\"age_from\":\"header\""
    done
    want_re "$T/audit.log" "\"event\":\"segment_acknowledged\",\"segment\":\"$NEW\""
    [ -z "$(segments)" ] || fail_because "the spool is not empty"
    never_uploaded "${OLD[@]}"
    grep -qF "$NEW" "$T/readback.json" || fail_because "the young segment $NEW was not uploaded"
    want_no_re "$T/audit.log" 'OggS|OpusHead'
    verdict "upload-once: 2 segments 3 h old crypto-shredded and audited, never uploaded; the new one uploaded" \
        "$OUT" "$T/audit.log"
else
    skip "upload-once shreds segments past max_age_hours" \
        "libfaketime preloads only into native processes (qemu-user/valgrind run the binary)"
fi

# ---- 2: the daemon purges at start, a quarantined header-less file by mtime -----
(umask 077 && mkdir -p "$T/spool/quarantine")
head -c 700 /dev/urandom >"$T/spool/quarantine/junk.seg.1"
touch -d '3 hours ago' "$T/spool/quarantine/junk.seg.1"
head -c 700 /dev/urandom >"$T/spool/quarantine/fresh.seg.1"
DOLD=()
if is_native && command -v faketime >/dev/null; then
    capture_past 5 2
    mapfile -t DOLD < <(segments)
fi
start_bg "$T/daemon.log" run --config "$C"
if full_run; then
    wait_for_log "$T/daemon.log" 'event=segment_uploaded' "$DAEMON_PID" ||
        fail_because "the daemon uploaded nothing"
fi
wait_for_log "$T/daemon.log" 'event=retention_purge segment=junk\.seg\.1 kind=quarantined' \
    "$DAEMON_PID" || fail_because "the old quarantined file was not purged"
want_re "$T/daemon.log" 'event=retention_age_from_mtime segment=junk\.seg\.1 kind=quarantined reason="no readable header"'
for ((i = 0; i < EC_WAIT_S * 20; i++)); do
    grep -qE '^edgecap_segments_purged_total [1-9]' "$T/metrics.prom" 2>/dev/null && break
    sleep 0.05
done
want_re "$T/metrics.prom" "^edgecap_segments_purged_total $((1 + ${#DOLD[@]}))\$"
want_re "$T/audit.log" '"event":"retention_purge","segment":"junk\.seg\.1","kind":"quarantined","sequence":0,"age_s":10[0-9]{3},"size_bytes":700,"age_from":"mtime"'
[ -e "$T/spool/quarantine/junk.seg.1" ] && fail_because "junk.seg.1 is still there"
[ -e "$T/spool/quarantine/fresh.seg.1" ] || fail_because "the fresh quarantined file went too"
for name in "${DOLD[@]}"; do
    want_re "$T/daemon.log" "event=retention_purge segment=$name\.seg kind=sealed .*age_from=header"
done
[ "${#DOLD[@]}" -gt 0 ] && never_uploaded "${DOLD[@]}"
verdict "run: purges at start (a 5 h old segment by its header$(is_native || echo ': skipped here'), a header-less quarantined file by mtime), never uploads them; counted in the metrics" \
    "$T/daemon.log"

# ---- 3: wipe refuses while the daemon runs --------------------------------------
ec wipe --config "$C" --all
want_rc 75
want_err_re "^edgecap wipe: refusing: edgecap \(pid [0-9]+\) is running on $T/spool; stop it first$"
[ -e "$T/keys/kek" ] || fail_because "the KEK went"
[ -e "$T/spool/quarantine/fresh.seg.1" ] || fail_because "a file was shredded"
verdict "wipe refuses while the daemon runs, destroys nothing"
kill -TERM "$DAEMON_PID"
wait_exit "$DAEMON_PID" || fail_because "the daemon did not stop"

# ---- 4-5: no accidental wipes, a bad config path ----------------------------------
ec wipe --config "$C"
want_rc 64
want_err_fixed "edgecap wipe: refusing without --all (a wipe destroys every spooled segment and the key store's KEK, for good)"
[ -e "$T/keys/kek" ] || fail_because "the KEK went"
if full_run; then
    ec wipe --all
    want_rc 64
    want_err_fixed "edgecap wipe: --config FILE is required"
    ec wipe --help
    want_rc 0
    want_out_re '^usage: edgecap wipe --config FILE --all$'
fi
verdict "wipe without --all (or without --config) is a usage error and destroys nothing"

if full_run; then
    ec wipe --config "$T/no-such.conf" --all
    want_rc 66
    want_err_fixed "edgecap: $T/no-such.conf: cannot open $T/no-such.conf"
    [ -e "$T/keys/kek" ] || fail_because "the KEK went"
    verdict "wipe with a config path that does not exist: EX_NOINPUT, names the path"
else
    skip "wipe with a config path that does not exist" "argument checks: not under valgrind"
fi

# ---- 6: no audit record, no wipe ---------------------------------------------------
sed "s|^audit_file = .*|audit_file = $T/tone.wav/audit.log|" "$C" >"$T/noaudit.conf"
chmod 600 "$T/noaudit.conf"
ec wipe --config "$T/noaudit.conf" --all
want_rc 74
want_err_fixed "edgecap wipe: cannot write the audit log $T/tone.wav/audit.log: "
want_err_fixed "; nothing was destroyed"
[ -e "$T/keys/kek" ] || fail_because "the KEK went"
[ -e "$T/spool/quarantine/fresh.seg.1" ] || fail_because "a file was shredded"
verdict "wipe whose audit record cannot be written destroys nothing (EX_IOERR)"

# ---- 7-9: wipe --all --------------------------------------------------------------
# (what the daemon left, if it left anything, will do)
mapfile -t LEFT < <(segments)
if [ "${#LEFT[@]}" -eq 0 ]; then
    ec capture --config "$C" --seconds 4
    mapfile -t LEFT < <(segments)
fi
mkdir -p "$T/flash"
for name in "${LEFT[@]}"; do
    # what flash that keeps old blocks would still hold after the unlink
    ln "$T/spool/$name.seg" "$T/flash/$name.seg"
done
cp "$T/spool/${LEFT[0]}.seg" "$T/spool/quarantine/${LEFT[0]}.seg.1"
printf '{"pending":["edgecap/ret-0001/x.ogg"]}' >"$T/spool/speech-jobs.json"
printf '{"pending":["edgecap/ret-0001/y.ogg"]' >"$T/spool/speech-jobs.json.tmp"
# the device's own key (a copy: the peers' client key is shared) behind a
# symlink, as /etc often has it, and a hard link to it that plays flash
# keeping old blocks
(umask 077 && mkdir -p "$T/dev/store" && cp "$CLIENT_KEY" "$T/dev/store/client.key")
ln -s store/client.key "$T/dev/client.key"
ln "$T/dev/store/client.key" "$T/flash/client.key"
REAL_KEY=$(realpath "$T/dev/store/client.key")
# a sealed transcript spool (the same format and KEK) beside it
(umask 077 && mkdir -p "$T/transcripts")
cp "$T/spool/${LEFT[0]}.seg" "$T/transcripts/"
ln "$T/transcripts/${LEFT[0]}.seg" "$T/flash/transcript.seg"
(umask 077 && sed "s|^client_key = .*|client_key = $T/dev/client.key|" "$C" >"$T/wipe.conf")
printf '\n[speech]\ntranscript_dir = %s\n' "$T/transcripts" >>"$T/wipe.conf"
ec wipe --config "$T/wipe.conf" --all
want_rc 0
want_out_re "^transcripts $T/transcripts: 1 sealed, 0 part, 0 quarantined crypto-shredded \([0-9]+ bytes\)$"
want_out_re "^spool $T/spool: ${#LEFT[@]} sealed, 0 part, 2 quarantined crypto-shredded \([0-9]+ bytes\)$"
want_out_re "^speech job state $T/spool/speech-jobs.json: overwritten and removed \(38 bytes\)$"
want_out_re "^speech job state $T/spool/speech-jobs.json.tmp: overwritten and removed \(37 bytes\)$"
want_out_re "^KEK [0-9a-f]{32} destroyed \($T/keys/kek overwritten and removed\)$"
want_out_re "^destroyed: device key $T/dev/client.key -> $REAL_KEY \(overwritten and removed, $(stat -c %s "$T/flash/client.key") bytes\)$"
want_out_re "^kept: certificate $CLIENT_CERT \(public, names the device but cannot act as it\)$"
[ "${#LEFT[@]}" -ge 1 ] || fail_because "no segment to wipe"
verdict "wipe --all: says what it destroyed (segments, quarantined files, transcripts, job state and its .tmp, KEK id, device key) and what it kept"

# Every file left in the state directories (and the flash copies) that carries a
# segment header has an all-zero wrapped key, and there is no KEK.
REASONS=()
[ -e "$T/keys/kek" ] && fail_because "$T/keys/kek still exists"
ls "$T"/keys/.kek* >/dev/null 2>&1 && fail_because "a temporary KEK file is left"
[ -e "$T/dev/store/client.key" ] && fail_because "the device key $T/dev/store/client.key still exists"
[ -L "$T/dev/client.key" ] && fail_because "the symlink $T/dev/client.key is left"
[ -s "$T/flash/client.key" ] && [ -z "$(tr -d '\0' <"$T/flash/client.key")" ] ||
    fail_because "the device key's bytes survive in a hard link"
ls "$T"/spool/speech-jobs.json* >/dev/null 2>&1 && fail_because "speech job state is left"
n_headers=0
while IFS= read -r -d '' f; do
    [ "$(head -c 5 "$f")" = ECSEG ] || continue
    n_headers=$((n_headers + 1))
    key=$(od -An -v -tx1 -j28 -N60 "$f" | tr -d ' \n')
    [ "${#key}" -eq 120 ] && [[ "$key" =~ ^0+$ ]] || fail_because "$f holds a wrapped key"
done < <(find "$T/spool" "$T/transcripts" "$T/keys" "$T/flash" -type f -print0)
[ "$n_headers" -gt "${#LEFT[@]}" ] || fail_because "only $n_headers headers scanned (the flash copies are gone?)"
[ -z "$(find "$T/spool" "$T/transcripts" -name '*.seg*' -print)" ] ||
    fail_because "segment files left in the spool or the transcripts"
verdict "after the wipe: no KEK, no device key (its hard link holds only zeros), no speech job state, and all $n_headers segment headers on disk (flash copies included) hold only zeros where the wrapped key was"

REASONS=()
w_start=$(line_of "$T/audit.log" '"event":"wipe_started"')
w_first=$(line_of "$T/audit.log" '"event":"wipe_shredded"')
w_end=$(line_of "$T/audit.log" '"event":"wipe_finished"')
[ -n "$w_start" ] && [ -n "$w_first" ] && [ -n "$w_end" ] && [ "$w_start" -lt "$w_first" ] &&
    [ "$w_first" -lt "$w_end" ] || fail_because "wipe audit lines missing or out of order"
want_re "$T/audit.log" "\"event\":\"wipe_started\",\"device\":\"ret-0001\",\"spool\":\"$T/spool\".*\"kek_id\":\"[0-9a-f]{32}\""
want_re "$T/audit.log" "\"event\":\"wipe_device_key\",\"key\":\"$T/dev/client.key -> $REAL_KEY\",\"result\":\"destroyed\",\"bytes\":[1-9]"
want_re "$T/audit.log" '"event":"wipe_finished","shredded":[0-9]+,.*"complete":true'
if full_run; then
    ec audit verify "$T/audit.log"
    want_rc 0
fi
ec wipe --config "$T/wipe.conf" --all
want_rc 0
want_out_re "^KEK: none in $T/keys \(already destroyed\?\)$"
want_out_re "^device key: none at $T/dev/client.key \(already destroyed\?\)$"
[ -e "$T/keys/kek" ] && fail_because "a second wipe created a KEK"
verdict "the wipe is audited before anything goes, the audit log survives and verifies; a second wipe mints no KEK" \
    "$T/audit.log" "$OUT" "$ERR"

# ---- 10: a device key on a read-only mount -----------------------------------------
# Root gets a read-only bind mount in its own mount namespace (EROFS: the key
# stays as it was); anyone else a directory without write permission (EACCES
# on the unlink, after the zeros).
REASONS=()
(umask 077 && mkdir -p "$T/rokey" && cp "$CLIENT_KEY" "$T/rokey/client.key")
head -c 32 /dev/urandom >"$T/keys/kek" && chmod 600 "$T/keys/kek"
printf '{}' >"$T/spool/speech-jobs.json"
mkdir "$T/spool/speech-jobs.json.tmp" # not a file: cannot be removed either
(umask 077 && sed "s|^client_key = .*|client_key = $T/rokey/client.key|" "$T/wipe.conf" >"$T/ro.conf")
RO=() why=""
if [ "$(id -u)" != 0 ]; then
    chmod 500 "$T/rokey"
    why="Permission denied"
elif unshare -m true 2>/dev/null; then
    RO=(unshare -m sh -c 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        sh "$T/rokey")
    why="Read-only file system"
fi
if [ -n "$why" ]; then
    timeout "$EC_CMD_TIMEOUT_S" "${RO[@]}" "$EDGECAP" wipe --config "$T/ro.conf" --all \
        >"$OUT" 2>"$ERR" </dev/null
    RC=$?
    chmod 700 "$T/rokey"
    want_rc 74
    want_err_fixed "edgecap wipe: cannot destroy the device key $T/rokey/client.key: input/output error ($why)"
    want_err_fixed "edgecap wipe: incomplete: see the log above"
    want_out_re "^KEK [0-9a-f]{32} destroyed \($T/keys/kek overwritten and removed\)$"
    want_out_re "^speech job state $T/spool/speech-jobs.json: overwritten and removed \(2 bytes\)$"
    want_err_fixed "edgecap wipe: cannot remove the speech job state $T/spool/speech-jobs.json.tmp: input/output error (Is a directory)"
    [ ${#RO[@]} -eq 0 ] || cmp -s "$CLIENT_KEY" "$T/rokey/client.key" ||
        fail_because "the key on the read-only mount changed"
    [ -e "$T/keys/kek" ] && fail_because "the KEK survived the failed key"
    [ -e "$T/spool/speech-jobs.json" ] && fail_because "the job state survived the failed key"
    want_re "$T/audit.log" "\"event\":\"wipe_device_key\",\"key\":\"$T/rokey/client.key\",\"result\":\"failed\""
    [ "$(tail -n 1 "$T/audit.log" | grep -c '"event":"wipe_finished".*"complete":false')" = 1 ] ||
        fail_because "the last audit line is not an incomplete wipe_finished"
    verdict "wipe with the device key on a read-only location and a job state .tmp it cannot remove: says so ($why), exit 74, destroys the rest" \
        "$OUT" "$ERR"
else
    skip "wipe with the device key on a read-only location" \
        "root without mount namespaces (unshare -m): no read-only location to make"
fi

finish
