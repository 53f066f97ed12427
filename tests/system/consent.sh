#!/bin/bash
# Consent and data minimisation ([consent] window and switch) with the daemon
# capturing from a file source paced in real time (file_realtime = on): the
# switch file is turned off, on, and made unreadable while `edgecap run`
# captures. Shown: the open segment is sealed at the off (while still off,
# no .part); the audio of the off period is not in the spool (each
# segment, decrypted with spool_cat and decoded with opusdec, matches the
# source where its sample clock says it starts, not where the first one
# stopped); the audit log has the transitions in order and verifies; a window
# that excludes now captures nothing; a switch that cannot be read is off and
# said once; a malformed window is refused with FILE:LINE and key.
# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 9

TOOL=${TOOL:-$BUILD/results/tool-run}
RATE=16000
SW=$T/switch

# A rising sweep: any stretch of it differs from every other, so decoded audio
# says which part of the source it came from.
sox -q -n -r $RATE -c 1 -b 16 "$T/sweep.wav" synth 30 sine 200-3000 vol 0.5
sox -q "$T/sweep.wav" -t raw "$T/sweep.raw"

consent_config() { # FILE SPOOL_DIR AUDIT_LOG [CONSENT LINES...]
    local f=$1 spool=$2 audit=$3
    shift 3
    write_sas_config "$f" "$(new_secret sig=)"
    sed -i -e "s|^file = .*|file = $T/sweep.wav\nfile_realtime = on|" \
        -e "s|^dir = .*|dir = $spool|" "$f"
    printf 'audit_file = %s\n\n[consent]\n' "$audit" >>"$f"
    printf '%s\n' "$@" >>"$f"
}

# Closed segments, oldest first: NAME START_MS FRAMES (one spool ls: the
# duration is frames / rate to the millisecond, exact for 20 ms blocks).
segments() { # CONFIG
    "$EDGECAP" spool ls --config "$1" 2>/dev/null | awk -v rate=$RATE '$NF == "closed" {
        split(substr($3, 12, 12), t, /[:.]/)
        printf "%s %d %d\n", $1, ((t[1] * 60 + t[2]) * 60 + t[3]) * 1000 + t[4], $4 * rate + 0.5
    }'
}

# Seconds of audio the daemon captures between two flips. Not a wait for
# something to happen: how much audio the test asks for (what it got is
# measured from the spool).
run_for() { # PID MILLISECONDS
    still_running_after "$1" "$2" || fail_because "the daemon exited"
}

# ---- 1-5: off, on, unreadable while run captures --------------------------------
C=$T/run.conf
AUDIT=$T/audit.log
consent_config "$C" "$T/spool" "$AUDIT" "switch = $SW" "window = daily 00:00-24:00"
LOG=$T/run.log
echo 1 >"$SW"
start_bg "$LOG" run --config "$C"
pid=$DAEMON_PID
REASONS=()
wait_for_log "$LOG" 'event=consent_on reason=start window=inside switch=on' "$pid" ||
    fail_because "no consent_on at start"
run_for "$pid" 800
echo 0 >"$SW"
wait_for_log "$LOG" 'event=consent_off reason=switch window=inside switch=off' "$pid" ||
    fail_because "no consent_off after the switch went off"
wait_for_log "$LOG" 'event=segment_sealed' "$pid" || fail_because "no segment sealed at the off"
ls "$T/spool"/*.part >/dev/null 2>&1 && fail_because "a segment is still open while off"
sealed_while_off=$(grep -c 'event=segment_sealed' "$LOG")
[ "$sealed_while_off" -eq 1 ] || fail_because "$sealed_while_off segments sealed while off"
verdict "switch off: consent_off logged, the open segment sealed at once (no .part while off)" "$LOG"

REASONS=()
run_for "$pid" 800
echo on >"$SW"
wait_for_log "$LOG" 'event=consent_on reason=switch window=inside switch=on' "$pid" ||
    fail_because "no consent_on after the switch went on"
run_for "$pid" 800
# atomically replaced by a symlink to a directory, which cannot be read
mkdir -p "$T/nodir"
ln -s "$T/nodir" "$T/link"
mv -T "$T/link" "$SW"
wait_for_log "$LOG" 'event=consent_off reason=switch window=inside switch=unreadable' "$pid" ||
    fail_because "no consent_off when the switch became unreadable"
run_for "$pid" 400
kill -TERM "$pid"
wait_exit "$pid" || fail_because "the daemon did not stop"
[ "${EXIT_RC:-1}" -eq 0 ] || fail_because "exit status ${EXIT_RC:-}"
n=$(grep -c 'event=consent_switch_unreadable' "$LOG")
[ "$n" -eq 1 ] || fail_because "consent_switch_unreadable logged $n times, expected once"
want_re "$LOG" "event=consent_switch_unreadable path=$SW reason=\"Is a directory\" effect=\"counted as off\""
for ev in consent_on consent_off; do
    n=$(grep -c "event=$ev " "$LOG")
    [ "$n" -eq 2 ] || fail_because "$ev logged $n times, expected 2 (once per transition)"
done
verdict "on again, then unreadable: each transition logged once; unreadable is off, said once" "$LOG"

# The audit log: the transitions in order, the chain intact.
REASONS=()
grep -oE '"event":"(started|consent_on|consent_off|stopped)"(,"reason":"[a-z]+","window":"[a-z]+","switch":"[a-z]+")?' \
    "$AUDIT" | sed -E 's/"event":"([a-z_]+)"(,"reason":"([a-z]+)","window":"([a-z]+)","switch":"([a-z]+)")?/\1 \3 \4 \5/; s/ +$//' \
    >"$T/transitions"
printf '%s\n' "started" "consent_on start inside on" "consent_off switch inside off" \
    "consent_on switch inside on" "consent_off switch inside unreadable" "stopped" >"$T/want"
diff "$T/want" "$T/transitions" >"$T/transitions.diff" ||
    fail_because "audit transitions differ: $(tr '\n' '|' <"$T/transitions.diff")"
ec audit verify "$AUDIT"
want_rc 0
verdict "audit log: started, consent_on/off x2 with reasons in order, stopped; the chain verifies" \
    "$AUDIT" "$T/transitions.diff"

# What is in the spool: two segments, nothing from the off periods.
REASONS=()
segments "$C" >"$T/segs"
mapfile -t segs <"$T/segs"
[ "${#segs[@]}" -eq 2 ] || fail_because "${#segs[@]} segments, expected 2"
stopped=$(grep -E 'event=capture_stopped' "$LOG")
captured=$(sed -E 's/.* frames=([0-9]+) .*/\1/' <<<"$stopped")
withheld=$(sed -E 's/.*frames_withheld=([0-9]+).*/\1/' <<<"$stopped")
dropped=$(sed -E 's/.*frames_dropped=([0-9]+).*/\1/' <<<"$stopped")
kept=$(awk '{s += $3} END {print s + 0}' "$T/segs")
[ "$((kept + withheld + dropped))" -eq "$captured" ] ||
    fail_because "spooled $kept + withheld $withheld + dropped $dropped != captured $captured frames"
# the off spells: at least 0.8 s, then 0.4 s, of audio never kept
[ "$withheld" -ge $((RATE * 6 / 5)) ] || fail_because "only $withheld frames withheld"
# natively the encoder keeps up with a real-time source: nothing is dropped
if is_native && [ "$dropped" -ne 0 ]; then fail_because "$dropped frames dropped (overruns)"; fi
diag "captured $captured frames, spooled $kept in ${#segs[@]} segments, withheld $withheld, dropped $dropped"
verdict "frames: spooled + withheld (+ dropped) = captured; the off periods (>= 1.2 s) are withheld" \
    "$T/segs" "$LOG"

# Each segment decoded against the source: at the offset its start time says
# (the sample clock moves on through the gap), and not where the audio would
# continue had the off period's audio been kept. Natively only (decoding
# through valgrind or qemu is slow; the frame counts above run everywhere).
REASONS=()
slice() { # FROM_FRAME FRAMES OUT
    tail -c +$(($1 * 2 + 1)) "$T/sweep.raw" | head -c $(($2 * 2)) >"$3"
}
if ! is_native; then
    skip "decoded segments match the source where their start times say" "slow run"
elif [ "${#segs[@]}" -ne 2 ]; then
    fail_because "${#segs[@]} segments, expected 2"
    verdict "decoded: segment 1 is the source up to the off, segment 2 the source from the on"
else
    read -r name0 start0 frames0 <<<"${segs[0]}"
    read -r name1 start1 frames1 <<<"${segs[1]}"
    for name in "$name0" "$name1"; do
        "$TOOL" spool_cat "$T/spool" "$T/keys" "$name" >"$T/$name.opus" 2>/dev/null ||
            fail_because "spool_cat fails on $name"
        opusdec --quiet --rate $RATE "$T/$name.opus" "$T/$name.wav" 2>/dev/null ||
            fail_because "opusdec fails on $name"
        sox -q "$T/$name.wav" -t raw "$T/$name.raw"
    done
    gap_ms=$((start1 - start0))
    at=$((gap_ms * RATE / 1000))
    diag "segment 1: $frames0 frames from 0; segment 2: $frames1 frames from frame $at (gap $((at - frames0)) frames)"
    [ "$at" -ge $((frames0 + RATE * 4 / 5)) ] || fail_because "segment 2 starts only $((at - frames0)) frames after segment 1 ends"
    slice 0 "$frames0" "$T/src0.raw"
    slice "$at" "$frames1" "$T/src1.raw"
    slice "$frames0" "$frames1" "$T/src1-if-kept.raw"
    "$TOOL" pcm_compare "$T/src0.raw" "$T/$name0.raw" 0.8 >"$T/cmp0" 2>&1 ||
        fail_because "segment 1 does not match the source's start: $(cat "$T/cmp0")"
    "$TOOL" pcm_compare "$T/src1.raw" "$T/$name1.raw" 0.8 >"$T/cmp1" 2>&1 ||
        fail_because "segment 2 does not match the source at its start time: $(cat "$T/cmp1")"
    "$TOOL" pcm_compare "$T/src1-if-kept.raw" "$T/$name1.raw" 0.3 >"$T/cmp-off" 2>&1 &&
        fail_because "segment 2 matches the audio right after segment 1: $(cat "$T/cmp-off")"
    diag "seg1 $(cat "$T/cmp0")" "seg2 $(cat "$T/cmp1")" "seg2 vs the off period $(cat "$T/cmp-off")"
    verdict "decoded: segment 1 is the source up to the off, segment 2 the source from the on; the off period's audio is in neither"
fi

# ---- 6: outside every window nothing is captured -------------------------------------
# A window on the day after tomorrow (local time) excludes now. Natively only
# (window evaluation runs everywhere in test_consent; this is one more daemon).
REASONS=()
if ! is_native; then
    skip "a window excluding now: nothing captured" "slow run"
else
    day=$(LC_ALL=C date -d '+2 days' +%a | tr '[:upper:]' '[:lower:]')
    C2=$T/window.conf
    consent_config "$C2" "$T/spool2" "$T/audit2.log" "switch = $SW" "window = $day 00:00-24:00"
    rm -rf "$SW"
    echo 1 >"$SW"
    LOG2=$T/window.log
    start_bg "$LOG2" run --config "$C2"
    pid=$DAEMON_PID
    wait_for_log "$LOG2" 'event=consent_off reason=window window=outside switch=on' "$pid" ||
        fail_because "no consent_off reason=window at start"
    run_for "$pid" 600
    kill -TERM "$pid"
    wait_exit "$pid" || fail_because "the daemon did not stop"
    stopped=$(grep -E 'event=capture_stopped' "$LOG2")
    captured=$(sed -E 's/.* frames=([0-9]+) .*/\1/' <<<"$stopped")
    withheld=$(sed -E 's/.*frames_withheld=([0-9]+).*/\1/' <<<"$stopped")
    if [ -z "$captured" ] || [ "$captured" -eq 0 ] || [ "$captured" != "$withheld" ]; then
        fail_because "captured '$captured' frames, withheld '$withheld'"
    fi
    want_no_re "$LOG2" 'event=segment_sealed|event=consent_on'
    ec spool ls --config "$C2"
    want_out_re '^0 segments'
    want_re "$T/audit2.log" '"event":"consent_off","reason":"window","window":"outside","switch":"on"'
    verdict "a window excluding now ($day): consent_off reason=window, every frame withheld, no segment" "$LOG2"
fi

# ---- 7: a switch unreadable from the start ------------------------------------------
REASONS=()
C3=$T/unreadable.conf
consent_config "$C3" "$T/spool3" "$T/audit3.log" "switch = $T/nodir"
ec capture --config "$C3" --seconds 1
want_rc 0
want_out_re "^captured $RATE frames .* sealed 0 segments, .* withheld $RATE frames$"
n=$(grep -c 'event=consent_switch_unreadable' "$ERR")
[ "$n" -eq 1 ] || fail_because "consent_switch_unreadable logged $n times, expected once"
want_err_re "event=consent_off reason=switch window=none switch=unreadable"
verdict "a switch path that cannot be read: off from the start, said once, nothing sealed"

# ---- 8-9: malformed windows are refused ---------------------------------------------
REASONS=()
C4=$T/bad.conf
consent_config "$C4" "$T/spool4" "$T/audit4.log" "switch = $SW" "window = mon-fri 8:00-17:30"
ec check-config "$C4"
want_rc 78
want_err_fixed "$C4:$(line_of "$C4" '^window = '): [consent] window: expected DAYS HH:MM-HH:MM"
want_err_fixed 'got "mon-fri 8:00-17:30"'
if is_native; then
    ec run --config "$C4"
    want_rc 78
    want_no_re "$ERR" 'event=ready'
    [ ! -e "$T/spool4" ] || fail_because "run created the spool"
fi
verdict "window = mon-fri 8:00-17:30: check-config and run refuse it with FILE:LINE and key"

REASONS=()
if ! is_native; then
    skip "switch and state_file together are refused" "slow run (test_config has the case)"
    finish
fi
C5=$T/bad2.conf
consent_config "$C5" "$T/spool5" "$T/audit5.log" "switch = $SW" "state_file = $SW"
ec check-config "$C5"
want_rc 78
want_err_fixed "$C5:$(line_of "$C5" '^state_file = '): [consent] state_file: state_file is the older name of switch: set one of them"
verdict "switch and its older name state_file together are refused with FILE:LINE"

finish
