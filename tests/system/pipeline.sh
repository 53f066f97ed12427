#!/bin/bash
# The audio pipeline end to end, for real: speech synthesised at test time
# (espeak-ng, sox) -> ALSA capture through alsa-lib's file PCM (this test's
# own ALSA config) -> Opus -> sealed spool. Then: the project's own reader
# decrypts every segment, opusinfo accepts it, opusdec's output matches the
# source; no plaintext anywhere on disk; tampering is caught and quarantined;
# kill -9 at random moments loses no closed segment and recovers the open one;
# both quota policies; sequence numbers survive restarts; `run` closes its
# segment on SIGTERM.
. "$(dirname "$0")/lib/tap.sh"

plan 20

TOOL=${TOOL:-$BUILD/results/tool-run}
DEC=$T/decoded
mkdir -p "$DEC" "$T/tmp"

# ---- input audio: speech, 16 kHz mono S16, padded with silence ---------------
espeak-ng -w "$T/speech22k.wav" "Edge capture system test. The quick brown fox jumps over \
the lazy dog. Every segment is sealed in memory and spooled encrypted until the server \
acknowledges it, then it is wiped." 2>/dev/null
sox -q "$T/speech22k.wav" -r 16000 -c 1 -b 16 -e signed-integer -t raw "$T/speech.raw"
SPEECH_BYTES=$(stat -c %s "$T/speech.raw")
SECONDS_IN=$((SPEECH_BYTES / 32000)) # whole seconds of speech
# ALSA's file PCM returns stale bytes past the end of its infile: pad, and
# capture a known length.
head -c 64000 /dev/zero >>"$T/speech.raw"
head -c $((SECONDS_IN * 32000)) "$T/speech.raw" >"$T/source.raw"

printf '%s\n' \
    'pcm.ecfile {' \
    '    type file' \
    '    slave.pcm { type null }' \
    '    file "/dev/null"' \
    "    infile \"$T/speech.raw\"" \
    '    format "raw"' \
    '}' \
    'pcm.ecmic {' \
    '    type plug' \
    '    slave { pcm "ecfile" channels 1 rate 16000 format S16_LE }' \
    '}' >"$T/asound.conf"
export ALSA_CONFIG_PATH=$T/asound.conf

# A provisioning file capturing from the file-backed ALSA PCM.
pipeline_config() { # FILE SPOOL_DIR [SED-SCRIPT]
    write_sas_config "$1" "$(new_secret sig=)"
    sed -i -e "s|^source = file|source = alsa\ndevice = ecmic|" -e "/^file = /d" \
        -e "s|^segment_seconds = .*|segment_seconds = 3|" -e "s|^dir = .*|dir = $2|" "$1"
    [ -z "${3:-}" ] || sed -i -e "$3" "$1"
}

# The same, capturing from a WAV file instead.
file_config() { # FILE SPOOL_DIR WAV
    pipeline_config "$1" "$2" "s|^device = ecmic|file = $3|"
    sed -i -e "s|^source = alsa|source = file|" -e "s|^segment_seconds = .*|segment_seconds = 2|" "$1"
}

# Every closed segment's name, oldest first.
segments() { # CONFIG
    "$EDGECAP" spool ls --config "$1" 2>/dev/null | awk '$NF == "closed" {print $1}'
}

# ---- 1-6: capture, list, verify, scan, decode, compare ----------------------
C1=$T/p1.conf
pipeline_config "$C1" "$T/spool1"
TMPDIR=$T/tmp ec capture --config "$C1" --seconds "$SECONDS_IN"
want_rc 0
want_out_re "^captured $((SECONDS_IN * 16000)) frames .* sealed $(((SECONDS_IN + 2) / 3)) segments, failed 0, overruns 0, dropped 0 frames"
want_err_re "event=alsa_open device=ecmic rate_hz=16000 channels=1"
verdict "capture --seconds $SECONDS_IN through the ALSA file PCM seals every frame"

ec spool ls --config "$C1"
want_rc 0
total_s=$(awk '$NF == "closed" {s += $4} END {printf "%.3f", s}' "$OUT")
seqs=$(awk '$NF == "closed" {printf "%s ", $2}' "$OUT")
[ "$total_s" = "$(printf '%.3f' "$SECONDS_IN")" ] || fail_because "durations add up to $total_s s"
[[ "$seqs" == "0 1 "* ]] || fail_because "sequences are '$seqs'"
want_out_re "^test-0001-[0-9]{8}T[0-9]{6}Z-0000000000 +0 "
verdict "spool ls: oldest first, sequences from 0, durations add up to the capture"

ec spool verify --config "$C1"
want_rc 0
want_out_re "authentic, 0 failed"
verdict "spool verify authenticates every segment"

# Nothing but ciphertext on disk: the spool (quarantine included), the key
# store and the daemon's TMPDIR (before anything is decoded for the checks
# below). The daemon creates no other file.
REASONS=()
"$TOOL" plaintext_scan "$T/source.raw" "$T/spool1" "$T/keys" "$T/tmp" >"$T/scan.out" 2>&1 ||
    fail_because "plaintext found"
grep -qE "^scanned [1-9][0-9]* files, 0 hits" "$T/scan.out" || fail_because "scan did not run"
verdict "no OggS/OpusHead/RIFF or source PCM in the spool, key store or temporary dirs" "$T/scan.out"

REASONS=()
: >"$DEC/all.raw"
n=0
for name in $(segments "$C1"); do
    n=$((n + 1))
    "$TOOL" spool_cat "$T/spool1" "$T/keys" "$name" >"$DEC/$name.opus" 2>"$DEC/$name.err" ||
        fail_because "spool_cat failed for $name"
    opusinfo "$DEC/$name.opus" >"$DEC/$name.info" 2>&1 || fail_because "opusinfo rejects $name"
    opusdec --quiet --rate 16000 "$DEC/$name.opus" "$DEC/$name.wav" 2>/dev/null ||
        fail_because "opusdec fails on $name"
    sox -q "$DEC/$name.wav" -t raw - >>"$DEC/all.raw"
done
[ "$n" -ge 2 ] || fail_because "only $n segments"
verdict "each segment decrypts with the project's reader; opusinfo and opusdec accept it"

REASONS=()
dec_samples=$(($(stat -c %s "$DEC/all.raw") / 2))
src_samples=$((SECONDS_IN * 16000))
diff=$((dec_samples - src_samples))
[ "${diff#-}" -le $((320 * n)) ] || fail_because "decoded $dec_samples samples, source $src_samples"
"$TOOL" pcm_compare "$T/source.raw" "$DEC/all.raw" 0.85 >"$T/cmp.out" 2>&1 ||
    fail_because "correlation below 0.85: $(cat "$T/cmp.out")"
diag "$(cat "$T/cmp.out")"
verdict "opusdec output matches the source: length within one frame per segment, correlation >= 0.85"

# ---- 7-8: tampering ----------------------------------------------------------
C2=$T/p2.conf
pipeline_config "$C2" "$T/spool2"
ec capture --config "$C2" --seconds 6
mapfile -t names < <(segments "$C2")
flip_byte "$T/spool2/${names[0]}.seg" 300
truncate -s -7 "$T/spool2/${names[1]}.seg"
ec spool verify --config "$C2"
want_rc 65
want_out_re "verified 2 segments: 0 authentic, 2 failed \(moved to quarantine/\)"
[ -f "$T/spool2/quarantine/${names[0]}.seg" ] || fail_because "flipped segment not in quarantine/"
[ -f "$T/spool2/quarantine/${names[1]}.seg" ] || fail_because "truncated segment not in quarantine/"
want_err_re "event=segment_quarantined segment=${names[0]}.seg"
verdict "a flipped bit and a truncation are detected, quarantined, exit 65"

# A header edit is caught at start; the daemon goes on and captures.
ec capture --config "$C2" --seconds 3
mapfile -t names < <(segments "$C2")
printf 'X' | dd of="$T/spool2/${names[0]}.seg" bs=1 seek=50 conv=notrunc status=none
start_bg "$T/run2.log" run --config "$C2"
REASONS=()
wait_for_log "$T/run2.log" "event=ready" "$DAEMON_PID" || fail_because "no ready"
want_re "$T/run2.log" "event=segment_quarantined segment=${names[0]}.seg reason=\"header does not authenticate\""
wait_for_log "$T/run2.log" "event=segment_sealed" "$DAEMON_PID" ||
    fail_because "no segment sealed after the quarantine"
kill -TERM "$DAEMON_PID"
wait_exit "$DAEMON_PID" || fail_because "did not stop"
[ "${EXIT_RC:-1}" -eq 0 ] || fail_because "exit status $EXIT_RC"
verdict "an edited header is quarantined at start; the daemon keeps capturing" "$T/run2.log"

# ---- 9: run closes its open segment on SIGTERM --------------------------------
REASONS=()
ls "$T/spool2"/*.part >/dev/null 2>&1 && fail_because ".part left after SIGTERM"
want_re "$T/run2.log" "event=capture_stopped"
"$EDGECAP" spool verify --config "$C2" >"$T/v2.out" 2>&1 || fail_because "verify after run failed"
verdict "run: SIGTERM closes the open segment (no .part, all authentic)" "$T/v2.out"

# ---- 10-11: kill -9 at random moments ------------------------------------------
# A long file source, not paced: capture runs as fast as it can encode.
sox -q -n -r 16000 -c 1 -b 16 "$T/long.wav" synth 40 sine 300-900 vol 0.4
C3=$T/p3.conf
file_config "$C3" "$T/spool3" "$T/long.wav"
trials=3
[ "$EC_SLOW" = 1 ] && trials=2
REASONS=()
recovered=0
for ((i = 1; i <= trials; i++)); do
    start_bg "$T/kill$i.log" capture --config "$C3" --seconds 40
    wait_for_log "$T/kill$i.log" "event=segment_sealed" "$DAEMON_PID" || true
    # a random moment after the first seal: 0-300 ms (x4 when slow)
    delay=$((RANDOM % 300 * (EC_SLOW * 3 + 1)))
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    kill -KILL "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
    sealed_before=$(grep -oE 'event=segment_sealed segment=[^ ]+' "$T/kill$i.log" |
        sed 's/.*segment=//; s/\.seg$//')
    "$EDGECAP" spool verify --config "$C3" >"$T/kv$i.out" 2>"$T/kv$i.err" ||
        fail_because "trial $i: verify after kill -9 failed: $(cat "$T/kv$i.out")"
    grep -q "event=segment_recovered" "$T/kv$i.err" && recovered=$((recovered + 1))
    have=$(segments "$C3")
    for s in $sealed_before; do
        grep -qx "$s" <<<"$have" || fail_because "trial $i: $s was sealed before the kill, now missing"
    done
    ls "$T/spool3"/*.part >/dev/null 2>&1 && fail_because "trial $i: .part left after restart"
done
diag "$trials kill -9 trials, $recovered with an interrupted segment recovered"
verdict "kill -9 x$trials: every segment sealed before the kill is kept, all authentic, no .part"

# A recovered segment ends where the crash cut it, without an end-of-stream
# page: opusinfo says so ("normal for live streams") and nothing else.
REASONS=()
for name in $(segments "$C3"); do
    "$TOOL" spool_cat "$T/spool3" "$T/keys" "$name" >"$DEC/k.opus" 2>/dev/null ||
        fail_because "spool_cat fails on $name"
    opusinfo "$DEC/k.opus" >"$DEC/k.info" 2>&1
    grep -E "WARNING|ERROR" "$DEC/k.info" | grep -vq "EOS not set on stream" &&
        fail_because "opusinfo complains about $name: $(grep -E 'WARNING|ERROR' "$DEC/k.info")"
    grep -q "Playback length" "$DEC/k.info" || fail_because "opusinfo cannot read $name"
    opusdec --quiet "$DEC/k.opus" "$DEC/k.wav" 2>/dev/null || fail_because "opusdec fails on $name"
done
verdict "after the kills every segment (recovered ones too) decrypts; opusinfo and opusdec read it"

# ---- 12: sequence numbers survive restarts ----------------------------------------
REASONS=()
seqs=$("$EDGECAP" spool ls --config "$C3" 2>/dev/null | awk '$NF == "closed" {print $2}')
sorted=$(sort -n <<<"$seqs" | uniq)
[ "$seqs" = "$sorted" ] || fail_because "sequences not strictly increasing: $(echo $seqs)"
max_before=$(tail -n1 <<<"$sorted")
ec capture --config "$C3" --seconds 2
last=$("$EDGECAP" spool ls --config "$C3" 2>/dev/null | awk '$NF == "closed" {print $2}' | tail -n1)
[ "${last:-0}" -gt "${max_before:-0}" ] || fail_because "new sequence $last after $max_before"
verdict "sequence numbers are strictly increasing across $((trials + 1)) restarts"

# ---- 13-14: quota policies ------------------------------------------------------------
# 1 MiB is the smallest quota; fill it with high-bitrate captures.
C4=$T/p4.conf
file_config "$C4" "$T/spool4" "$T/long.wav"
sed -i -e "s|^\[spool\]|[spool]\nquota_bytes = 1048576\nwhen_full = drop-oldest|" \
    -e "s|^\[upload\]|[encoder]\nbitrate_bps = 256000\ncomplexity = 0\n\n[upload]|" "$C4"
for i in 1 2 3 4; do ec capture --config "$C4" --seconds 40; done
REASONS=()
grep -q "event=segment_dropped" "$ERR" || fail_because "no segment_dropped event"
used=$(du -sb --exclude=quarantine "$T/spool4" | cut -f1)
[ "$used" -le $((1048576 + 16384)) ] || fail_because "spool holds $used bytes"
first=$("$EDGECAP" spool ls --config "$C4" 2>/dev/null | awk '$NF == "closed" {print $2; exit}')
[ "${first:-0}" -gt 0 ] || fail_because "oldest segment (0) was not dropped"
verdict "quota drop-oldest: the oldest segments go, the spool stays within its quota"

C5=$T/p5.conf
sed -e "s|^dir = .*|dir = $T/spool5|" -e "s|^when_full = .*|when_full = refuse-new|" "$C4" >"$C5"
chmod 600 "$C5"
for i in 1 2 3; do ec capture --config "$C5" --seconds 40; done
want_out_re "refused [1-9][0-9]* frames"
want_err_re "event=spool_full .*policy=refuse-new"
first=$("$EDGECAP" spool ls --config "$C5" 2>/dev/null | awk '$NF == "closed" {print $2; exit}')
[ "${first:-x}" = 0 ] || fail_because "oldest segment is ${first:-none}, expected 0 kept"
verdict "quota refuse-new: new audio is refused and counted, nothing old is dropped"

# A data partition smaller than the quota (a card flashed without growing
# it): a 3 MiB tmpfs, in a mount namespace of its own, under a 256 MiB quota.
# The disk is the limit: the oldest go, every write succeeds, 2 MiB stay free.
if [ "$(id -u)" = 0 ] && unshare --mount --propagation private true 2>/dev/null && full_run; then
    CS=$T/small.conf
    mkdir -p "$T/spool-small"
    sed -e "s|^dir = .*|dir = $T/spool-small|" -e "s|^quota_bytes = .*|quota_bytes = 268435456|" "$C4" >"$CS"
    chmod 600 "$CS"
    # shellcheck disable=SC2016 # expanded by the inner shell
    timeout $((EC_CMD_TIMEOUT_S * 4)) unshare --mount --propagation private sh -c '
        mount -t tmpfs -o size=3m,mode=0700 edgecap-small "$1" || exit 90
        for i in 1 2 3; do "$2" capture --config "$3" --seconds 40 >>"$4.out" 2>>"$4.err" </dev/null || exit 91; done
        "$2" spool ls --config "$3" >"$4.ls" 2>&1
        df -B1 --output=avail "$1" | tail -n 1 >"$4.df"' \
        sh "$T/spool-small" "$EDGECAP" "$CS" "$T/small" >"$T/small.sh.out" 2>&1
    RC=$?
    [ "$RC" = 0 ] || fail_because "the captures on the small file system: status $RC ($(tail -n 3 "$T/small.err" "$T/small.sh.out" 2>/dev/null | tr '\n' ' '))"
    want_re "$T/small.err" "event=spool_quota_above_disk quota_bytes=268435456 room_bytes=[0-9]+ "
    want_re "$T/small.err" 'event=segment_dropped segment=[^ ]+ reason="disk full \(drop-oldest\)"'
    # (this configuration has no audit directory: its error is not the spool's)
    grep -v "event=audit_open_failed" "$T/small.err" >"$T/small.spool.err"
    want_no_re "$T/small.spool.err" "level=error|event=(segment_quarantined|spool_full)"
    first=$(awk '$NF == "closed" {print $2; exit}' "$T/small.ls")
    [ "${first:-0}" -gt 0 ] || fail_because "the oldest segment (0) was not dropped"
    left=$(cat "$T/small.df" 2>/dev/null)
    [ "${left:-0}" -ge $((2 * 1048576 - 65536 - 4096)) ] ||
        fail_because "only ${left:-?} bytes left free on the file system"
    diag "3 MiB tmpfs: $(grep -c "event=segment_dropped" "$T/small.err") segments dropped, oldest kept ${first:-?}, ${left:-?} bytes free at the end (not a check)"
    verdict "a data partition smaller than the quota: the disk is the limit (said at start), the oldest segments are dropped, no write fails, 2 MiB stay free" \
        "$T/small.err" "$T/small.ls" "$T/small.sh.out"
else
    skip "a data partition smaller than the quota" "needs root and mount namespaces, and a full run (not under valgrind)"
fi

# ---- 15-17: bad input --------------------------------------------------------------
C6=$T/p6.conf
pipeline_config "$C6" "$T/spool6" "s|^device = ecmic|device = no_such_pcm|"
ec capture --config "$C6" --seconds 1
want_rc 66
want_err_re "cannot open the audio source no_such_pcm: not found"
want_err_re "event=alsa_open_failed device=no_such_pcm step=open"
verdict "an unknown ALSA device: exit 66 (EX_NOINPUT) with the device named"

C7=$T/p7.conf
file_config "$C7" "$T/spool7" "$T/speech22k.wav"
ec capture --config "$C7" --seconds 1
want_rc 69
want_err_re "event=audio_file_format .*rate_hz=22050 .*want_rate_hz=16000"
verdict "a WAV at the wrong rate: refused, rates named, exit 69"

ec capture --config "$C1"
want_rc 64
want_err_re "--seconds N are required"
ec capture --config "$C1" --seconds 0
want_rc 64
want_err_re "--seconds expects 1..86400"
verdict "capture without or with a bad --seconds: exit 64 with the reason"

# ---- 18: a failing source ends `run` with an error (its supervisor restarts it)
C8=$T/p8.conf
mkdir -p "$T/not-audio.raw" # opens, then every read fails (EISDIR)
file_config "$C8" "$T/spool8" "$T/not-audio.raw"
start_bg "$T/run8.log" run --config "$C8"
REASONS=()
wait_exit "$DAEMON_PID" "$EC_WAIT_S" || fail_because "still running after its source failed"
[ "${EXIT_RC:-0}" -eq 74 ] || fail_because "exit status ${EXIT_RC:-?}, expected 74"
want_re "$T/run8.log" "event=capture_failed"
want_re "$T/run8.log" "event=stopping reason=\"audio source failed\""
verdict "run exits 74 (EX_IOERR) when its audio source fails" "$T/run8.log"

# ---- 19: one owner per spool; ls observes beside a running daemon
C9=$T/p9.conf
pipeline_config "$C9" "$T/spool9"
sed -i -e "s|^segment_seconds = .*|segment_seconds = 3600|" "$C9"
start_bg "$T/run9.log" run --config "$C9"
REASONS=()
wait_for_log "$T/run9.log" "event=capture_started" "$DAEMON_PID" || fail_because "no capture"
ec capture --config "$C9" --seconds 1
[ "$RC" -eq 75 ] || fail_because "second writer: exit $RC, expected 75 (EX_TEMPFAIL)"
grep -q "in use by another process" "$ERR" || fail_because "second writer: no reason given"
ec spool ls --config "$C9"
[ "$RC" -eq 0 ] || fail_because "spool ls beside the daemon: exit $RC"
grep -qE " writing$" "$OUT" || fail_because "spool ls does not show the open segment as writing"
ls "$T/spool9"/*.seg.part >/dev/null 2>&1 || fail_because "the daemon's open segment was touched"
kill -TERM "$DAEMON_PID"
wait_exit "$DAEMON_PID" || fail_because "did not stop"
"$EDGECAP" spool verify --config "$C9" >"$T/v9.out" 2>&1 || fail_because "verify after stop failed"
grep -q "authentic, 0 failed" "$T/v9.out" || fail_because "$(cat "$T/v9.out")"
verdict "one owner per spool: a second writer exits 75, ls observes the open segment untouched"

finish
