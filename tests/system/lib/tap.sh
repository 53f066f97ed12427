# shellcheck shell=bash
# Shared helpers for tests/system/*.sh (sourced, never run: it lives below
# lib/ so that tests/run.sh, which runs tests/system/*.sh, does not pick it up).
#
# A script sources this file, calls `plan N`, runs its checks and ends with
# `finish`. Output is TAP: "1..N", then "ok K - what" / "not ok K - what" with
# "# ..." diagnostics; the exit status is non-zero when a check failed.
#
# Environment (set by tests/run.sh; defaults for a native run by hand):
#   EDGECAP      the wrapper that starts the binary of the configuration under
#                test (native, valgrind or qemu-user); always start it through
#                this, since the binary may not be native
#   BUILD ARCH EC_SRCDIR EC_QEMU EC_VALGRIND

set -u

EC_SRCDIR=${EC_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
ARCH=${ARCH:-x86_64}
BUILD=${BUILD:-$EC_SRCDIR/build/$ARCH}
EDGECAP=${EDGECAP:-$BUILD/edgecap}
EC_QEMU=${EC_QEMU:-}
EC_VALGRIND=${EC_VALGRIND:-0}
cd "$EC_SRCDIR" || exit 1

# Slow configurations (qemu-user, valgrind) get longer bounds; a bound is the
# most a poll waits, never a fixed sleep.
if [ -n "$EC_QEMU" ] || [ "$EC_VALGRIND" = 1 ]; then
    EC_SLOW=1
    EC_WAIT_S=20
else
    EC_SLOW=0
    EC_WAIT_S=10
fi
# Longest time one foreground command may take before it counts as hung.
EC_CMD_TIMEOUT_S=120

TAP_PLANNED=0 TAP_N=0 TAP_FAILED=0
EC_PIDS=()

# A private scratch directory, removed at exit with every process still running.
T=$(mktemp -d "${TMPDIR:-/tmp}/edgecap-system.XXXXXX") || exit 1

ec_cleanup() {
    local pid
    for pid in "${EC_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    rm -rf "$T"
}
trap ec_cleanup EXIT
trap 'exit 130' INT TERM

plan() {
    TAP_PLANNED=$1
    echo "1..$1"
}

diag() {
    local line
    for line in "$@"; do
        printf '%s\n' "$line" | sed 's/^/# /'
    done
}

# Shows a file's first lines as diagnostics.
diag_file() { # FILE [LABEL]
    [ -s "$1" ] || return 0
    echo "# ${2:-$(basename "$1")}:"
    head -n 15 "$1" | cut -c1-200 | sed 's/^/#   /'
}

ok() {
    TAP_N=$((TAP_N + 1))
    echo "ok $TAP_N - $1"
}

not_ok() {
    TAP_N=$((TAP_N + 1))
    TAP_FAILED=$((TAP_FAILED + 1))
    echo "not ok $TAP_N - $1"
}

skip() { # DESCRIPTION REASON
    TAP_N=$((TAP_N + 1))
    echo "ok $TAP_N - $1 # SKIP $2"
}

finish() {
    if [ "$TAP_N" -ne "$TAP_PLANNED" ]; then
        diag "planned $TAP_PLANNED tests, ran $TAP_N"
        exit 1
    fi
    [ "$TAP_FAILED" -eq 0 ]
    exit
}

# ---- one check = several conditions, one TAP line ---------------------------
#
#   ec edgecap check-config "$f"        # runs, records RC, OUT, ERR
#   want_rc 78
#   want_err_fixed "$f:3: [capture] rate_hz: "
#   want_none "$SECRET" "$OUT" "$ERR"
#   verdict "check-config rejects rate_hz = 44100"

REASONS=()
RC=0
OUT=$T/last.out
ERR=$T/last.err

# Runs the binary under test with ARGS; stdout to $OUT, stderr to $ERR.
# Reasons already given in the current check are kept (verdict clears them).
ec() {
    timeout "$EC_CMD_TIMEOUT_S" "$EDGECAP" "$@" >"$OUT" 2>"$ERR" </dev/null
    RC=$?
    [ "$RC" -eq 124 ] && REASONS+=("timed out after ${EC_CMD_TIMEOUT_S} s: edgecap $*")
    return 0
}

fail_because() { REASONS+=("$*"); }

want_rc() {
    [ "$RC" -eq "$1" ] || REASONS+=("exit status $RC, expected $1")
}

# Regex (grep -E) / fixed string in a file.
want_re() { # FILE REGEX
    grep -qE -- "$2" "$1" || REASONS+=("$(basename "$1") has no line matching /$2/")
}
want_fixed() { # FILE STRING
    grep -qF -- "$2" "$1" || REASONS+=("$(basename "$1") does not contain \"$2\"")
}
want_no_re() { # FILE REGEX
    ! grep -qE -- "$2" "$1" || REASONS+=("$(basename "$1") unexpectedly matches /$2/")
}
want_out_re() { want_re "$OUT" "$1"; }
want_err_re() { want_re "$ERR" "$1"; }
want_err_fixed() { want_fixed "$ERR" "$1"; }
want_empty() { # FILE
    [ ! -s "$1" ] || REASONS+=("$(basename "$1") is not empty")
}

# Damages FILE at byte OFFSET by inverting it (a damage that writes a fixed
# value changes nothing when the byte already holds it: 1 run in 256).
flip_byte() { # FILE OFFSET
    local b
    b=$(od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' ')
    [ -n "$b" ] || { REASONS+=("$(basename "$1") has no byte $2 to damage"); return 1; }
    # shellcheck disable=SC2059 # the octal escape is the format
    printf "\\$(printf '%03o' $((b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# A secret must not appear in any of FILES, not even in part: the whole value
# and each of its 12-character windows are looked for.
want_no_secret() { # SECRET FILE...
    local secret=$1 f i window
    shift
    for f in "$@"; do
        # a file that is not there would pass unread
        if [ ! -r "$f" ]; then
            REASONS+=("$(basename "$f") is not there to be scanned for the secret")
            continue
        fi
        if grep -qF -- "$secret" "$f"; then
            REASONS+=("the secret appears in $(basename "$f")")
            continue
        fi
        for ((i = 0; i + 12 <= ${#secret}; i += 4)); do
            window=${secret:i:12}
            if grep -qF -- "$window" "$f"; then
                REASONS+=("part of the secret (\"${window:0:3}...\") appears in $(basename "$f")")
                break
            fi
        done
    done
}

verdict() { # DESCRIPTION [FILES TO SHOW ON FAILURE...]
    local desc=$1 f
    shift
    if [ "${#REASONS[@]}" -eq 0 ]; then
        ok "$desc"
    else
        not_ok "$desc"
        diag "${REASONS[@]}"
        if [ $# -eq 0 ]; then
            set -- "$ERR" "$OUT"
        fi
        for f in "$@"; do
            diag_file "$f"
        done
    fi
    REASONS=()
}

# ---- daemons ----------------------------------------------------------------

# Starts the binary under test in the background, stderr to LOG and stdout to
# LOG.out, with SIGINT and SIGQUIT at their defaults (a non-interactive shell
# would start it with them ignored). env, every element of EC_PREFIX (setpriv,
# prlimit) and the wrapper exec, so DAEMON_PID is the daemon's own PID (or
# qemu's / valgrind's, which carry the signals to it).
#   EC_PREFIX=(prlimit --core=unlimited) start_bg LOG run --config FILE
EC_PREFIX=()
start_bg() { # LOG ARGS...
    local log=$1
    shift
    env --default-signal=INT,QUIT "${EC_PREFIX[@]}" "$EDGECAP" "$@" \
        >"$log.out" 2>"$log" </dev/null &
    DAEMON_PID=$!
    EC_PIDS+=("$DAEMON_PID")
}

# True while PID runs (a zombie, exited but not yet reaped, does not count).
running() { # PID
    local state
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Polls LOG for an extended regex while PID runs; at most SECONDS.
wait_for_log() { # LOG REGEX PID [SECONDS]
    local log=$1 re=$2 pid=$3 limit=${4:-$EC_WAIT_S} i
    for ((i = 0; i < limit * 20; i++)); do
        grep -qE -- "$re" "$log" 2>/dev/null && return 0
        running "$pid" || { grep -qE -- "$re" "$log" 2>/dev/null; return; }
        sleep 0.05
    done
    return 1
}

# Waits (bounded) for PID to exit and sets EXIT_RC; kills it after SECONDS and
# returns 1 when it does not go.
wait_exit() { # PID [SECONDS]
    local pid=$1 limit=${2:-$EC_WAIT_S} i
    for ((i = 0; i < limit * 20; i++)); do
        running "$pid" || break
        sleep 0.05
    done
    if running "$pid"; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        EXIT_RC=137
        return 1
    fi
    wait "$pid"
    EXIT_RC=$?
    return 0
}

# Stays true when PID is still running MILLISECONDS later (a short settle
# time, used only to show that something did *not* happen).
still_running_after() { # PID MILLISECONDS
    local pid=$1 limit=$2 i
    for ((i = 0; i < limit / 50; i++)); do
        running "$pid" || return 1
        sleep 0.05
    done
    running "$pid"
}

# ---- provisioning files -----------------------------------------------------

# A SAS token unique to this run, short enough that a value quoted back in an
# error message would show it whole.
new_secret() { # PREFIX
    printf '%s%s' "$1" "$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
}

# A valid provisioning file for target blob with auth mode sas and the SAS
# token inline; mode 600. Tests derive broken variants from it with sed.
write_sas_config() { # FILE TOKEN
    local f=$1 token=$2
    # One second of a tone to capture: the daemon now starts its pipeline.
    [ -f "$T/input.wav" ] || sox -q -n -r 16000 -c 1 -b 16 "$T/input.wav" synth 1 sine 440
    (
        umask 077
        cat >"$f" <<EOF
; edgecap system test: blob target, SAS token inline
[device]
id = test-0001
require_mlock = off
keystore_dir = $T/keys

[capture]
source = file
file = $T/input.wav
rate_hz = 16000
channels = 1
segment_seconds = 60

[spool]
dir = $T/spool

[upload]
target = blob
endpoint = https://edgecaptest.blob.core.windows.net
container = audio

[tls]
ca_file = $T/ca.pem
client_cert = $T/client.pem
client_key = $T/client.key
pin_current = sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
allowed_hosts = edgecaptest.blob.core.windows.net

[auth]
mode = sas
sas_token = $token

[logging]
level = info
EOF
    )
}

# A provisioning file for the peers start_peers started, mode 600: target
# blob (Azurite behind the mutual-TLS nginx front) with SAS auth, a file
# source and an audit file. What tests vary comes as NAME=VALUE arguments
# (default in brackets); a *_extra adds lines at the end of its section:
#   id (test-0001)  file ($T/tone.wav)  segment_seconds (1)  spool ($T/spool)
#   upload (target, endpoint, container and connect_to lines: the Blob peer's)
#   ca_file client_cert client_key (the peers')  pins (pin_current = SERVER_PIN)
#   allowed_hosts ($BLOB_HOST)  auth ("mode = sas" and "sas_token = $SAS")
#   logging (audit_file = $T/audit-BASE.log, BASE the file's name without .conf)
#   capture_extra  spool_extra  upload_extra  tail (further sections)
# With upload=, allowed_hosts= and auth= it writes a Speech target's file.
write_blob_config() { # FILE [NAME=VALUE...]
    local f=$1 arg name
    shift
    local id=test-0001 file=$T/tone.wav segment_seconds=1 spool=$T/spool
    local upload="endpoint = ${BLOB_ENDPOINT:-}
container = audio
connect_to = ${CONNECT_TO:-}"
    local ca_file=${CA_FILE:-} client_cert=${CLIENT_CERT:-} client_key=${CLIENT_KEY:-}
    local pins="pin_current = ${SERVER_PIN:-}" allowed_hosts=${BLOB_HOST:-}
    local auth="mode = sas
sas_token = ${SAS:-}"
    local logging
    logging="audit_file = $T/audit-$(basename "$f" .conf).log"
    local capture_extra="" spool_extra="" upload_extra="" tail=""
    for arg in "$@"; do
        name=${arg%%=*}
        case "$name" in
        id | file | segment_seconds | spool | upload | ca_file | client_cert | client_key | pins | \
            allowed_hosts | auth | logging | capture_extra | spool_extra | upload_extra | tail)
            printf -v "$name" '%s' "${arg#*=}"
            ;;
        *)
            echo "write_blob_config: unknown setting \"$name\"" >&2
            return 1
            ;;
        esac
    done
    (
        umask 077
        cat >"$f" <<CONF
[device]
id = $id
require_mlock = off
keystore_dir = $T/keys

[capture]
source = file
file = $file
segment_seconds = $segment_seconds
$capture_extra

[spool]
dir = $spool
$spool_extra

[upload]
$upload
retry_base_ms = 10
retry_max_ms = 200
$upload_extra

[tls]
ca_file = $ca_file
client_cert = $client_cert
client_key = $client_key
$pins
allowed_hosts = $allowed_hosts

[auth]
$auth

[logging]
$logging
$tail
CONF
    )
}

# Line number of the first line of FILE matching the extended regex.
line_of() { # FILE REGEX
    grep -nE -- "$2" "$1" | head -n 1 | cut -d: -f1
}

is_native() { [ -z "$EC_QEMU" ] && [ "$EC_VALGRIND" != 1 ]; }

# False under valgrind, where each start of the daemon costs seconds: a test
# then runs the checks that take its new C paths and skips the rest, which run
# natively, under ASan and under qemu.
full_run() { [ "${EC_VALGRIND:-0}" != 1 ]; }

# True in the one configuration of `make test` that runs host-side tests
# (flashing, the field image): the native x86_64 build, not its ASan twin.
once_per_run() { is_native && [ "${ARCH:-x86_64}" = x86_64 ] && [ "$(basename "$BUILD")" = x86_64 ]; }

# ---- the test peers (tests/peers/peers.sh) -------------------------------------

# Starts the peers in $T/peers (PEERS, P), stops them on exit, and sources
# their peers.env. If they do not start, every check still planned fails
# with the reason and the script ends.
start_peers() {
    PEERS=$EC_SRCDIR/tests/peers/peers.sh
    P=$T/peers
    trap '"$PEERS" stop "$P" >/dev/null 2>&1; ec_cleanup' EXIT
    if ! "$PEERS" start "$P" >"$T/peers-start.log" 2>&1; then
        diag "peers did not start:"
        diag_file "$T/peers-start.log"
        while [ "$TAP_N" -lt "$TAP_PLANNED" ]; do not_ok "peers started"; done
        finish
    fi
    # shellcheck source=/dev/null
    . "$P/peers.env"
}

# ---- live capture: a real-time source, reloads while it runs ------------------

# Makes the FIFO PATH and starts tests/tools/paced_pcm.py feeding it a 16 kHz
# mono tone in real time, for a daemon whose [capture] file is PATH (with
# rate_hz = 16000, channels = 1); WRITER is its PID.
start_paced_source() { # PATH
    mkfifo "$1" || return 1
    /usr/bin/python3 "$EC_SRCDIR/tests/tools/paced_pcm.py" "$1" 16000 1 &
    WRITER=$!
    EC_PIDS+=("$WRITER")
}

# Signals a reload to the daemon PID that logs to LOG (SIGHUP, or `edgecap
# reload --config CONF` with `cli`) and waits (bounded) for its answer: sets
# ANSWER_LINE (the answer's line number in LOG, 0 when none came) and ANSWER
# (the line). EVENT is reload_accepted (which must also say delivering=true)
# or reload_refused.
reload_answer() { # LOG PID CONF EVENT [cli]
    local log=$1 pid=$2 conf=$3 event=$4 before i
    before=$(grep -cE 'event=reload_(accepted|refused)' "$log")
    if [ "${5:-}" = cli ]; then
        ec reload --config "$conf"
        want_rc 0
    else
        kill -HUP "$pid"
    fi
    ANSWER="" ANSWER_LINE=0
    for ((i = 0; i < EC_WAIT_S * 20; i++)); do
        [ "$(grep -cE 'event=reload_(accepted|refused)' "$log")" -gt "$before" ] && break
        sleep 0.05
    done
    ANSWER_LINE=$(grep -nE 'event=reload_(accepted|refused)' "$log" | sed -n "$((before + 1))p" | cut -d: -f1)
    if [ -z "$ANSWER_LINE" ]; then
        ANSWER_LINE=0
        fail_because "no answer to the reload within ${EC_WAIT_S} s"
        return 1
    fi
    ANSWER=$(sed -n "${ANSWER_LINE}p" "$log")
    [[ "$ANSWER" == *"event=$event"* ]] || fail_because "expected $event, got: ${ANSWER:0:300}"
    if [ "$event" = reload_accepted ]; then
        [[ "$ANSWER" == *"delivering=true"* ]] || fail_because "accepted but not delivering"
    fi
    return 0
}

# Ends a live run: stops the source (WRITER), then the daemon PID (the
# segment it had open is sealed at SIGTERM), then drains what is left with
# `edgecap upload-once --config CONF` (its output kept in $T/drain.out and
# $T/drain.err), so the end needs no guess about when the FIFO's last bytes
# were read. Checks that capture ran once and lost nothing, that the
# daemon's last metrics (textfile PROM) count every segment it delivered
# (DELIVERED: the log event of one, e.g. segment_uploaded), that each sealed
# segment was delivered by the daemon or by the drain, and that SPOOL is
# empty. Sets SEALED, BY_DAEMON and DRAINED; reasons go to the current check.
stop_and_drain() { # LOG PID CONF SPOOL PROM DELIVERED
    local log=$1 pid=$2 conf=$3 spool=$4 prom=$5 delivered=$6 left
    kill -TERM "$WRITER"
    wait "$WRITER" 2>/dev/null
    kill -TERM "$pid"
    # a Speech upload in flight may take its 15 s stop grace, and valgrind's
    # leak check comes after it
    wait_exit "$pid" $((EC_WAIT_S + 20)) || fail_because "did not stop"
    [ "${EXIT_RC:-1}" -eq 0 ] || fail_because "exit status $EXIT_RC"
    SEALED=$(grep -c 'event=segment_sealed' "$log")
    BY_DAEMON=$(grep -c "event=$delivered" "$log")
    want_re "$log" "event=capture_stopped .*segments_sealed=$SEALED segments_failed=0 overruns=0 frames_dropped=0 "
    [ "$(grep -c 'event=capture_started' "$log")" -eq 1 ] || fail_because "capture started more than once"
    want_no_re "$log" 'event=(segment_quarantined|upload_read_failed|segment_commit_failed)'
    want_re "$prom" "^edgecap_segments_acknowledged_total(\\{[^}]*\\})? $BY_DAEMON\$"
    ec upload-once --config "$conf"
    want_rc 0
    cp "$OUT" "$T/drain.out"
    cp "$ERR" "$T/drain.err"
    DRAINED=$(sed -nE 's/^uploaded ([0-9]+) segments.*/\1/p' "$OUT")
    [ $((BY_DAEMON + ${DRAINED:-0})) -eq "$SEALED" ] ||
        fail_because "$BY_DAEMON delivered by the daemon + ${DRAINED:-?} after it for $SEALED sealed segments"
    left=$(find "$spool" -maxdepth 1 \( -name '*.seg' -o -name '*.part' \) | wc -l)
    [ "$left" -eq 0 ] || fail_because "$left segments left in the spool"
    diag "$SEALED segments sealed; $BY_DAEMON delivered by the daemon, ${DRAINED:-?} after it;" \
        "$(grep -c 'event=reload_accepted' "$log") reloads accepted, $(grep -c 'event=reload_refused' "$log") refused"
}
