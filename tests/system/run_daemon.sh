#!/bin/bash
# `edgecap run --config FILE`: a valid file gives a daemon that logs `ready`,
# keeps running through a reload (SIGHUP or `edgecap reload`: a valid file is
# accepted, a broken one refused with FILE:LINE while the daemon goes on) and
# exits 0 after logging `stopping` on SIGTERM or SIGINT; a bad file exits 78 before anything starts; and a secret
# from the provisioning file never reaches the log.
# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 19

SAS=$(new_secret "sv=2025-11-05&sr=c&sp=cw&sig=")
CONF=$T/edgecap.conf
write_sas_config "$CONF" "$SAS"

# One logfmt event per line: ts, level and event first.
EVENT_LINE='^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z level=(debug|info|warn|error) event=[a-z_]+( |$)'

# ---- refusals: nothing starts --------------------------------------------------

ec run
want_rc 64
want_err_fixed "--config FILE is required"
verdict "run without --config: exit 64"

sed 's/^rate_hz = 16000$/rate_hz = 44100/' "$CONF" >"$T/bad.conf"
chmod 600 "$T/bad.conf"
ec run --config "$T/bad.conf"
want_rc 78
want_err_fixed "edgecap: $T/bad.conf:$(line_of "$T/bad.conf" '^rate_hz '): [capture] rate_hz: expected"
want_no_re "$ERR" 'event=ready'
want_no_secret "$SAS" "$OUT" "$ERR"
[ ! -e "$T/spool" ] && [ ! -e "$T/keys" ] || fail_because "the spool or key directory was created"
verdict "run with a bad file: exit 78 with FILE:LINE and key, not ready, nothing created"

ec run --config "$T/missing.conf"
want_rc 66
want_err_fixed "cannot open $T/missing.conf"
want_no_re "$ERR" 'event=ready'
verdict "run with a missing file: exit 66, not ready"

cp "$CONF" "$T/readable.conf"
chmod 644 "$T/readable.conf"
ec run --config "$T/readable.conf"
want_rc 78
want_err_fixed "holds secrets but is readable by group or others"
want_no_re "$ERR" 'event=ready'
want_no_secret "$SAS" "$OUT" "$ERR"
verdict "run with a world-readable file holding a secret: exit 78, not ready"

# ---- a daemon: ready, SIGHUP, SIGTERM -------------------------------------------

LOG=$T/daemon.log
start_bg "$LOG" run --config "$CONF"
pid=$DAEMON_PID
REASONS=()
if wait_for_log "$LOG" 'event=ready' "$pid"; then
    sum=$(sha256sum "$CONF" | cut -d' ' -f1)
    ready=$(grep -E 'event=ready' "$LOG" | head -n 1)
    for field in "level=info" "device=test-0001" "config=$CONF" "config_sha256=$sum" \
        "pid=$pid"; do
        case " $ready " in
        *" $field "*) ;;
        *) fail_because "the ready line lacks $field" ;;
        esac
    done
else
    fail_because "no ready event within ${EC_WAIT_S} s"
fi
verdict "run: logs event=ready on stderr with device, config, its SHA-256 and the pid" "$LOG"

still_running_after "$pid" 500 || fail_because "the daemon exited after ready"
verdict "run: keeps running after ready" "$LOG"

kill -HUP "$pid"
wait_for_log "$LOG" 'event=reload_accepted' "$pid" || fail_because "no reload_accepted event"
still_running_after "$pid" 500 || fail_because "SIGHUP stopped the daemon"
verdict "run: SIGHUP re-reads the file (reload_accepted) and goes on" "$LOG"

cp "$CONF" "$T/good.conf"
sed -i 's/^rate_hz = 16000$/rate_hz = 44100/' "$CONF"
bad_line=$(line_of "$CONF" '^rate_hz = 44100$')
kill -HUP "$pid"
wait_for_log "$LOG" 'event=reload_refused' "$pid" || fail_because "no reload_refused event"
want_fixed "$LOG" "event=reload_refused reason=\"$CONF:$bad_line: [capture] rate_hz: "
still_running_after "$pid" 500 || fail_because "a broken file stopped the daemon"
verdict "run: SIGHUP with a broken file: reload_refused with FILE:LINE, still running" "$LOG"
cp "$T/good.conf" "$CONF"

ec reload --config "$CONF"
want_rc 0
want_out_re "^asked edgecap \\(pid $pid\\) to reload"
for _ in $(seq 50); do
    [ "$(grep -c 'event=reload_accepted' "$LOG")" -ge 2 ] && break
    sleep 0.1
done
[ "$(grep -c 'event=reload_accepted' "$LOG")" = 2 ] || fail_because "edgecap reload did not reload"
verdict "edgecap reload --config: signals the daemon that owns the spool, which reloads" "$LOG"

kill -TERM "$pid"
wait_exit "$pid" || fail_because "still running ${EC_WAIT_S} s after SIGTERM (killed)"
[ "${EXIT_RC:-x}" = 0 ] || fail_because "exit status $EXIT_RC after SIGTERM, expected 0"
want_re "$LOG" 'level=info event=stopping signal=SIGTERM( |$)'
want_re "$LOG" 'event=stopped( |$)'
verdict "run: SIGTERM: logs stopping signal=SIGTERM, exits 0" "$LOG"

REASONS=()
echo "$pid" >"$T/spool/daemon.pid" # as a crash would leave it
ec reload --config "$CONF"
want_rc 69
want_err_fixed "no running edgecap owns the spool $T/spool"
verdict "edgecap reload with no daemon (even with a stale pid file): exit 69, nothing signalled"

REASONS=()
grep -vqE "$EVENT_LINE" "$LOG" && fail_because "a line is not one logfmt event"
want_empty "$LOG.out"
verdict "run: every stderr line is one event (ts, level, event), nothing on stdout" "$LOG" "$LOG.out"

REASONS=()
want_no_secret "$SAS" "$LOG" "$LOG.out"
verdict "run: the inline SAS token never reaches the log" "$LOG"

# ---- SIGINT ---------------------------------------------------------------------

LOG=$T/sigint.log
start_bg "$LOG" run --config "$CONF"
pid=$DAEMON_PID
REASONS=()
wait_for_log "$LOG" 'event=ready' "$pid" || fail_because "no ready event within ${EC_WAIT_S} s"
kill -INT "$pid"
wait_exit "$pid" || fail_because "still running ${EC_WAIT_S} s after SIGINT (killed)"
[ "${EXIT_RC:-x}" = 0 ] || fail_because "exit status $EXIT_RC after SIGINT, expected 0"
want_re "$LOG" 'event=stopping signal=SIGINT( |$)'
verdict "run: SIGINT: logs stopping signal=SIGINT, exits 0" "$LOG"

# A shell starts background jobs with SIGINT ignored; the daemon waits for its
# signals synchronously, so an inherited SIG_IGN must not make it deaf.
LOG=$T/sigint-ignored.log
(trap '' INT && exec "$EDGECAP" run --config "$CONF" >"$LOG.out" 2>"$LOG" </dev/null) &
pid=$!
EC_PIDS+=("$pid")
REASONS=()
wait_for_log "$LOG" 'event=ready' "$pid" || fail_because "no ready event within ${EC_WAIT_S} s"
if is_native; then # the premise: SIGINT (bit 2) is in the ignored set
    sigign=$(sed -n 's/^SigIgn:[[:space:]]*//p' "/proc/$pid/status")
    (((0x${sigign:-0} & 2) != 0)) || fail_because "test premise: SIGINT not ignored (SigIgn $sigign)"
fi
kill -INT "$pid"
wait_exit "$pid" || fail_because "still running ${EC_WAIT_S} s after SIGINT (killed)"
[ "${EXIT_RC:-x}" = 0 ] || fail_because "exit status $EXIT_RC after SIGINT, expected 0"
want_re "$LOG" 'event=stopping signal=SIGINT( |$)'
verdict "run: SIGINT stops it even when started with SIGINT ignored" "$LOG"

# ---- JSON, debug level, secret from a file ------------------------------------------

JCONF=$T/json.conf
(umask 077 && printf '%s\n' "$SAS" >"$T/sas.token")
sed -e "s#^sas_token = .*#sas_token_file = $T/sas.token#" \
    -e 's/^level = info$/level = debug\njson = on/' "$CONF" >"$JCONF"
chmod 600 "$JCONF"
LOG=$T/json.log
start_bg "$LOG" run --config "$JCONF"
pid=$DAEMON_PID
REASONS=()
wait_for_log "$LOG" '"event":"ready"' "$pid" || fail_because "no ready event within ${EC_WAIT_S} s"
want_re "$LOG" '^\{"ts":"[^"]+","level":"info","event":"ready",.*"device":"test-0001".*\}$'
verdict "run with json = on: ready is one JSON object per line" "$LOG"

kill -HUP "$pid"
wait_for_log "$LOG" '"event":"reload_accepted"' "$pid" || fail_because "no reload_accepted event"
kill -TERM "$pid"
wait_exit "$pid" || fail_because "still running ${EC_WAIT_S} s after SIGTERM (killed)"
[ "${EXIT_RC:-x}" = 0 ] || fail_because "exit status $EXIT_RC after SIGTERM, expected 0"
want_re "$LOG" '"event":"stopping","signal":"SIGTERM"'
grep -vqE '^\{"ts":"[^"]+","level":"[a-z]+","event":"[a-z_]+"(,.*)?\}$' "$LOG" &&
    fail_because "a line is not one JSON event"
verdict "run with json = on: every line is a JSON event, SIGTERM exits 0" "$LOG"

REASONS=()
want_no_secret "$SAS" "$LOG" "$LOG.out"
verdict "run at level debug with sas_token_file: the token never reaches the log" "$LOG"

# ---- two signals at once --------------------------------------------------------------

LOG=$T/burst.log
start_bg "$LOG" run --config "$CONF"
pid=$DAEMON_PID
REASONS=()
wait_for_log "$LOG" 'event=ready' "$pid" || fail_because "no ready event within ${EC_WAIT_S} s"
kill -HUP "$pid"
kill -TERM "$pid"
wait_exit "$pid" || fail_because "still running ${EC_WAIT_S} s after SIGHUP+SIGTERM (killed)"
[ "${EXIT_RC:-x}" = 0 ] || fail_because "exit status $EXIT_RC, expected 0"
[ "$(grep -cE 'event=stopping' "$LOG")" = 1 ] || fail_because "not exactly one stopping event"
verdict "run: SIGHUP then SIGTERM at once: stops once, exits 0" "$LOG"

finish
