#!/bin/bash
# Process hardening and the mlock policy, observed from outside on a daemon
# that runs as an unprivileged user (uid 65534):
#  - not dumpable (PR_SET_DUMPABLE 0): the kernel makes its /proc/PID files
#    root's and keeps other processes of the same user out of them;
#  - no core files (RLIMIT_CORE 0), even when started with an unlimited one;
#  - [device] require_mlock: with RLIMIT_MEMLOCK 0, "on" refuses to start
#    (exit 71, EX_OSERR) and "off" warns once and runs.
# Native runs only: under qemu-user or valgrind /proc shows the emulator.
# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 12

TESTS=(
    "control: an ordinary uid-65534 process owns its /proc/PID, shows its environ and core limit"
    "not dumpable: /proc/PID/status of the uid-65534 daemon belongs to root"
    "not dumpable: another process of uid 65534 cannot read the daemon's /proc/PID/environ"
    "RLIMIT_CORE: 0 (soft and hard) although started with unlimited"
    "the uid-65534 daemon exits 0 on SIGTERM"
    "require_mlock = on, RLIMIT_MEMLOCK 0: exit 71 (EX_OSERR), says require_mlock, not ready"
    "require_mlock = on, RLIMIT_MEMLOCK 0: no misleading 'going on unlocked' warning"
    "require_mlock = off, RLIMIT_MEMLOCK 0: ready with mlock=false"
    "require_mlock = off, RLIMIT_MEMLOCK 0: secmem_unlocked warned exactly once, as a JSON event"
    "require_mlock = off, RLIMIT_MEMLOCK 0: SIGTERM exits 0"
    "require_mlock = on with RLIMIT_MEMLOCK 8 MiB: ready with mlock=true, no warning"
    "check-config with RLIMIT_MEMLOCK 0: exit 0, no mlock warning"
)

why=""
if ! is_native; then
    why="native runs only (under ${EC_QEMU:-valgrind} /proc shows the emulator)"
elif [ "$(id -u)" != 0 ]; then
    why="needs root to start the daemon as uid 65534"
elif ! command -v setpriv >/dev/null || ! command -v prlimit >/dev/null; then
    why="needs setpriv and prlimit (util-linux)"
fi
if [ -n "$why" ]; then
    for t in "${TESTS[@]}"; do
        skip "$t" "$why"
    done
    finish
fi

# ASan's mlock() is a no-op that reports success (and ASan zeroes
# RLIMIT_CORE itself), so a sanitizer build cannot show the mlock policy.
SAN_WHY=""
if [[ "$BUILD" == *-san ]]; then
    SAN_WHY="sanitizer build: ASan's mlock() does nothing and reports success"
fi

NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
chmod 711 "$T"
H=$T/nobody
mkdir -m 700 "$H"
chown 65534:65534 "$H"
# The premise: uid 65534 can reach the scratch directory and start the binary
# (a checkout under a 0700 home directory would stop it).
if ! "${NOBODY[@]}" test -x "$H" || ! "${NOBODY[@]}" "$EDGECAP" --help >/dev/null 2>&1; then
    for t in "${TESTS[@]}"; do
        skip "$t" "uid 65534 cannot reach $H or start $EDGECAP"
    done
    finish
fi

SAS=$(new_secret "sv=2025-11-05&sr=c&sp=cw&sig=")
# A provisioning file of uid 65534 with require_mlock set to $2.
nobody_config() { # FILE on|off [SED-SCRIPT]
    write_sas_config "$1" "$SAS"
    # the daemon of uid 65534 keeps its key store and spool, and reads its
    # audio, where that uid may write and read
    cp "$T/input.wav" "$H/input.wav"
    chown 65534:65534 "$H/input.wav"
    sed -i -e "s/^require_mlock = .*/require_mlock = $2/" -e "${3:-}" \
        -e "s|^keystore_dir = .*|keystore_dir = $H/keys|" -e "s|^dir = .*|dir = $H/spool|" \
        -e "s|^file = .*|file = $H/input.wav|" "$1"
    chown 65534:65534 "$1"
}

owner() { stat -c %u "$1" 2>/dev/null; }

# ---- non-dumpable, no core ---------------------------------------------------

sleepy=$(command -v sleep)
env --default-signal=INT prlimit --core=unlimited:unlimited "${NOBODY[@]}" "$sleepy" 30 &
ctl=$!
EC_PIDS+=("$ctl")
REASONS=()
for ((i = 0; i < 100; i++)); do # until setpriv has exec'd sleep
    [ "$(owner "/proc/$ctl/status")" = 65534 ] && break
    sleep 0.05
done
[ "$(owner "/proc/$ctl/status")" = 65534 ] ||
    fail_because "/proc/$ctl/status belongs to uid $(owner "/proc/$ctl/status")"
"${NOBODY[@]}" cat "/proc/$ctl/environ" >/dev/null 2>&1 ||
    fail_because "uid 65534 cannot read its own sleep's environ"
grep -qE '^Max core file size +unlimited +unlimited' "/proc/$ctl/limits" ||
    fail_because "prlimit --core=unlimited did not show in /proc/$ctl/limits"
verdict "${TESTS[0]}"
kill "$ctl"
wait "$ctl" 2>/dev/null

CONF=$H/off.conf
nobody_config "$CONF" off
LOG=$T/nobody.log
EC_PREFIX=(prlimit --core=unlimited:unlimited "${NOBODY[@]}")
start_bg "$LOG" run --config "$CONF"
pid=$DAEMON_PID
EC_PREFIX=()
if wait_for_log "$LOG" 'event=ready' "$pid"; then
    REASONS=()
    [ "$(owner "/proc/$pid/status")" = 0 ] ||
        fail_because "/proc/$pid/status belongs to uid $(owner "/proc/$pid/status")"
    verdict "${TESTS[1]}" "$LOG"

    REASONS=()
    if "${NOBODY[@]}" cat "/proc/$pid/environ" >"$T/environ" 2>"$T/environ.err"; then
        fail_because "uid 65534 read the daemon's environ"
    fi
    verdict "${TESTS[2]}" "$T/environ.err"

    if [ -n "$SAN_WHY" ]; then
        skip "${TESTS[3]}" "sanitizer build: ASan sets RLIMIT_CORE 0 itself"
    else
        REASONS=()
        core=$(grep -E '^Max core file size' "/proc/$pid/limits")
        echo "$core" | grep -qE '^Max core file size +0 +0 +bytes' ||
            fail_because "limits: $core"
        verdict "${TESTS[3]}"
    fi
else
    REASONS=("no ready event within ${EC_WAIT_S} s")
    for t in 1 2 3; do verdict "${TESTS[t]}" "$LOG"; done
fi
kill -TERM "$pid"
REASONS=()
wait_exit "$pid" || fail_because "still running ${EC_WAIT_S} s after SIGTERM (killed)"
[ "${EXIT_RC:-x}" = 0 ] || fail_because "exit status $EXIT_RC after SIGTERM, expected 0"
verdict "${TESTS[4]}" "$LOG"

# ---- mlock policy ------------------------------------------------------------

if [ -n "$SAN_WHY" ]; then
    for t in 5 6 7 8 9 10 11; do
        skip "${TESTS[t]}" "$SAN_WHY"
    done
    finish
fi

CONF=$H/on.conf
nobody_config "$CONF" on
REASONS=()
prlimit --memlock=0:0 "${NOBODY[@]}" "$EDGECAP" run --config "$CONF" >"$OUT" 2>"$ERR" </dev/null &
pid=$!
EC_PIDS+=("$pid")
wait_exit "$pid" || fail_because "did not exit within ${EC_WAIT_S} s (killed)"
RC=${EXIT_RC:-0}
want_rc 71
want_err_re 'require_mlock'
want_no_re "$ERR" 'event=ready'
want_no_secret "$SAS" "$OUT" "$ERR"
verdict "${TESTS[5]}"
want_no_re "$ERR" 'event=secmem_unlocked'
verdict "${TESTS[6]}"

CONF=$H/off-json.conf
nobody_config "$CONF" off 's/^level = info$/level = info\njson = on/'
LOG=$T/unlocked.log
EC_PREFIX=(prlimit --memlock=0:0 "${NOBODY[@]}")
start_bg "$LOG" run --config "$CONF"
pid=$DAEMON_PID
EC_PREFIX=()
REASONS=()
wait_for_log "$LOG" '"event":"ready"' "$pid" || fail_because "no ready event within ${EC_WAIT_S} s"
want_re "$LOG" '"event":"ready",.*"mlock":false'
verdict "${TESTS[7]}" "$LOG"
n=$(grep -c 'secmem_unlocked' "$LOG")
[ "$n" = 1 ] || fail_because "$n secmem_unlocked lines"
want_re "$LOG" '^\{"ts":"[^"]+","level":"warn","event":"secmem_unlocked",'
verdict "${TESTS[8]}" "$LOG"
kill -TERM "$pid"
wait_exit "$pid" || fail_because "still running ${EC_WAIT_S} s after SIGTERM (killed)"
[ "${EXIT_RC:-x}" = 0 ] || fail_because "exit status $EXIT_RC after SIGTERM, expected 0"
want_no_secret "$SAS" "$LOG" "$LOG.out"
verdict "${TESTS[9]}" "$LOG"

CONF=$H/on.conf
LOG=$T/locked.log
EC_PREFIX=(prlimit --memlock=8388608:8388608 "${NOBODY[@]}")
start_bg "$LOG" run --config "$CONF"
pid=$DAEMON_PID
EC_PREFIX=()
REASONS=()
wait_for_log "$LOG" 'event=ready' "$pid" || fail_because "no ready event within ${EC_WAIT_S} s"
want_re "$LOG" 'event=ready .*mlock=true'
want_no_re "$LOG" 'secmem_unlocked|secmem_mlock_refused'
kill -TERM "$pid"
wait_exit "$pid" || fail_because "still running ${EC_WAIT_S} s after SIGTERM (killed)"
[ "${EXIT_RC:-x}" = 0 ] || fail_because "exit status $EXIT_RC after SIGTERM, expected 0"
verdict "${TESTS[10]}" "$LOG"

REASONS=()
timeout "$EC_CMD_TIMEOUT_S" prlimit --memlock=0:0 "${NOBODY[@]}" "$EDGECAP" check-config "$CONF" \
    >"$OUT" 2>"$ERR" </dev/null
RC=$?
want_rc 0
want_out_re '^sas_token = \*\*\*$'
want_no_re "$ERR" 'secmem_unlocked'
verdict "${TESTS[11]}"

finish
