#!/bin/bash
# edgecap under systemd, without systemd as PID 1: the unit file is checked
# offline with Debian's systemd-analyze (verify passes, and fails on a broken
# copy; the security exposure is in the "OK" band and matches README.md), the
# notification protocol is checked against a real AF_UNIX datagram socket
# that this test listens on (READY=1 after start, WATCHDOG=1 repeatedly, none
# when WATCHDOG_PID names another process, RELOADING=1 then READY=1 on SIGHUP,
# STOPPING=1 on SIGTERM, and pings that stop while the capture source stalls
# and resume when it flows again), and secrets come from systemd credentials
# ($CREDENTIALS_DIRECTORY): the daemon uploads to the Blob peer with a SAS
# token read from a credential, never shows it, and names a missing one.
# Under valgrind and qemu only the protocol checks 5, 7 and 8 run (with
# delivery unavailable): the rest is the same code natively, and slow there.
. "$(dirname "$0")/lib/tap.sh"

plan 14

UNIT=$EC_SRCDIR/config/edgecap.service
PY=/usr/bin/python3

# ---- 1-4: the unit file, offline (the same in every configuration: native only) ----
analyze_skip() { skip "$1" "systemd-analyze checks the unit file, not the binary: native run only"; }
if is_native && ! command -v systemd-analyze >/dev/null; then
    for d in "verify passes" "verify fails on a broken copy" "security rates OK" \
        "security rates an unsandboxed copy worse"; do
        not_ok "systemd-analyze $d"
    done
    diag "systemd-analyze is missing: toolchain/install-deps.sh tools installs Debian's systemd"
elif is_native; then
    # verify checks that ExecStart= exists: a copy runs the binary under test,
    # once as shipped and once with every credential example enabled.
    mkdir -p "$T/unit" "$T/unit-creds" "$T/broken" "$T/badtype" "$T/weak"
    sed "s#^ExecStart=/usr/bin/edgecap #ExecStart=$BUILD/edgecap #" "$UNIT" >"$T/unit/edgecap.service"
    sed 's/^#\(LoadCredential\(Encrypted\)\?=\)/\1/' "$T/unit/edgecap.service" \
        >"$T/unit-creds/edgecap.service"
    grep -q "^ExecStart=$BUILD/edgecap run --config " "$T/unit/edgecap.service" ||
        fail_because "the copy's ExecStart= was not rewritten"
    [ "$(grep -c '^LoadCredential' "$T/unit-creds/edgecap.service")" -ge 4 ] ||
        fail_because "the unit has fewer than 4 LoadCredential(Encrypted)= examples"
    for u in unit unit-creds; do
        systemd-analyze verify "$T/$u/edgecap.service" >"$T/$u.verify" 2>&1 ||
            fail_because "verify of the $u copy exited $?"
        # a directive systemd does not understand is only a warning: none allowed
        [ ! -s "$T/$u.verify" ] || fail_because "verify of the $u copy printed warnings"
    done
    # the directories systemd makes are the example's paths
    grep -qx 'ConfigurationDirectory=edgecap' "$UNIT" || fail_because "no ConfigurationDirectory=edgecap"
    grep -qx 'StateDirectory=edgecap' "$UNIT" || fail_because "no StateDirectory=edgecap"
    grep -q '^ExecStart=/usr/bin/edgecap run --config /etc/edgecap/edgecap.conf$' "$UNIT" ||
        fail_because "ExecStart= does not read /etc/edgecap/edgecap.conf"
    stray=$(grep -oE '/(etc|var/lib|run|opt|srv)/[A-Za-z0-9_.-]+' \
        "$EC_SRCDIR/config/edgecap.conf.example" | sort -u |
        grep -vxE '/etc/edgecap|/var/lib/edgecap|/var/lib/node_exporter|/etc/localtime' | tr '\n' ' ')
    [ -z "$stray" ] || fail_because "the example uses paths outside the unit's directories: $stray"
    grep -q '^#ReadWritePaths=/var/lib/node_exporter/textfile$' "$UNIT" ||
        fail_because "the unit does not show how to allow [metrics] textfile's directory"
    verdict "systemd-analyze verify passes (ExecStart= at the built binary; credential examples)" \
        "$T/unit.verify" "$T/unit-creds.verify"

    sed 's#^ExecStart=/usr/bin/edgecap#ExecStart=/nonexistent/edgecap#' "$UNIT" \
        >"$T/broken/edgecap.service"
    sed 's/^Type=notify$/Type=notifyy/' "$T/unit/edgecap.service" >"$T/badtype/edgecap.service"
    systemd-analyze verify "$T/broken/edgecap.service" >"$T/broken.verify" 2>&1 &&
        fail_because "verify passed a unit whose ExecStart= does not exist"
    want_fixed "$T/broken.verify" "Command /nonexistent/edgecap is not executable"
    systemd-analyze verify "$T/badtype/edgecap.service" >"$T/badtype.verify" 2>&1
    want_fixed "$T/badtype.verify" "Failed to parse service type, ignoring: notifyy"
    verdict "systemd-analyze verify fails on a missing ExecStart= and warns on a bad Type=" \
        "$T/broken.verify" "$T/badtype.verify"

    # "Overall exposure level for edgecap.service: 1.6 OK :-)": systemd rates
    # 0.0 PERFECT, 0.1-4.9 OK, 5.0-7.4 MEDIUM, 7.5-8.9 EXPOSED, 9.0+ UNSAFE.
    exposure() { # UNIT-FILE -> "SCORE WORD"
        systemd-analyze security --offline=true --no-pager "$1" 2>/dev/null |
            sed -nE 's/^.*Overall exposure level for [^:]*: ([0-9]+\.[0-9]) ([A-Z]+).*$/\1 \2/p'
    }
    read -r score word < <(exposure "$T/unit/edgecap.service")
    [ -n "${score:-}" ] || fail_because "no exposure level in systemd-analyze security's output"
    case "${word:-}" in OK | PERFECT) ;; *) fail_because "rated ${word:-nothing}, not OK" ;; esac
    awk -v s="${score:-99}" 'BEGIN { exit !(s <= 4.9) }' || fail_because "exposure $score > 4.9"
    # the recorded score is the measured one
    grep -qE "^  .systemd-analyze security --offline=true. rates the unit exposure ${score:-x} ${word:-x}$" \
        "$EC_SRCDIR/README.md" ||
        fail_because "README.md does not record 'exposure ${score:-?} ${word:-?}'"
    verdict "systemd-analyze security rates the unit ${score:-?} ${word:-?} (OK band, <= 4.9)"

    # the parser and the band are real: the same unit without its sandbox is not OK
    grep -vE '^(Protect|Private|Restrict|SystemCall|Capability|NoNewPrivileges|LockPersonality|MemoryDeny|Device|UMask|User|Group|RemoveIPC|KeyringMode|ProcSubset)' \
        "$T/unit/edgecap.service" >"$T/weak/edgecap.service"
    read -r wscore wword < <(exposure "$T/weak/edgecap.service")
    case "${wword:-}" in MEDIUM | EXPOSED | UNSAFE | DANGEROUS) ;;
    *) fail_because "the unsandboxed copy is rated ${wscore:-?} ${wword:-nothing}" ;; esac
    verdict "without its sandbox the unit rates ${wscore:-?} ${wword:-?}, outside the OK band"
else
    for d in "verify passes" "verify fails on a broken copy" "security rates OK" \
        "security rates an unsandboxed copy worse"; do
        analyze_skip "systemd-analyze $d"
    done
fi

# ---- the notification socket --------------------------------------------------------

cat >"$T/listen.py" <<'PY'
# Receives sd_notify datagrams on an AF_UNIX path; one line per datagram,
# its newlines shown as |.
import os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1] + ".tmp")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])  # appears only once bound
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        data = sock.recv(65536).decode("utf-8", "replace")
        out.write(data.replace("\n", "|") + "\n")
PY

# Starts a listener on $T/NAME.sock writing $T/NAME.notify; sets NOTIFY.
listen() { # NAME
    local i
    NOTIFY=$T/$1.notify
    : >"$NOTIFY"
    "$PY" "$T/listen.py" "$T/$1.sock" "$NOTIFY" 2>"$T/$1.listen.err" 7>&- &
    EC_PIDS+=("$!")
    for ((i = 0; i < EC_WAIT_S * 20; i++)); do
        [ -S "$T/$1.sock" ] && return 0
        sleep 0.05
    done
    fail_because "the listener did not bind $T/$1.sock"
}

# Polls until FILE has at least N lines matching REGEX (bounded).
wait_lines() { # FILE REGEX N [SECONDS]
    local i limit=${4:-$EC_WAIT_S}
    for ((i = 0; i < limit * 20; i++)); do
        [ "$(grep -cE -- "$2" "$1")" -ge "$3" ] && return 0
        sleep 0.05
    done
    return 1
}
count() { grep -cE -- "$2" "$1"; } # FILE REGEX

# Number of the first line after line AFTER that starts with PREFIX (fixed
# text), or nothing.
first_after() { # FILE PREFIX AFTER
    awk -v p="$2" -v after="$3" 'NR > after && index($0, p) == 1 { print NR; exit }' "$1"
}

# Starts the daemon with the notification environment plus ENV... on CONFIG.
start_notified() { # NAME CONFIG ENV...
    local name=$1 conf=$2
    shift 2
    EC_PREFIX=(env "NOTIFY_SOCKET=$T/$name.sock" "$@")
    # fd 7 (the FIFO writer below) stays with the test: a daemon holding it
    # would never see the end of its own source
    start_bg "$T/$name.log" run --config "$conf" 7>&-
    EC_PREFIX=()
}

# ---- 5-8 with the Blob peer, the SAS token from a credential ----------------------

# The peers take most of this script's time: they run natively only (the
# upload path itself is shown under valgrind and qemu by upload.sh); the
# other configurations check the protocol with delivery unavailable.
if is_native; then
    start_peers
    SAS=$("$PEERS" container "$P" audio)
    RUN_STATUS="capturing and uploading"
else
    BLOB_HOST=sd-test.blob.core.windows.net
    BLOB_ENDPOINT=https://$BLOB_HOST
    CONNECT_TO=$BLOB_HOST:443:127.0.0.1:9
    CA_FILE=$T/absent/ca.pem CLIENT_CERT=$T/absent/client.pem CLIENT_KEY=$T/absent/client.key
    SERVER_PIN=sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
    SAS=$(new_secret "sv=2025-11-05&sr=c&sp=rcwt&sig=")
    RUN_STATUS="capturing into the spool only (upload unavailable)"
fi
# The SAS's secret is its signature (the rest, dates and permissions, may well
# appear in a log by coincidence).
SIG=$(printf '%s' "$SAS" | sed -E 's/^(.*&)?sig=([^&]*).*$/\2/')
if [ -z "$SIG" ] || [ "$SIG" = "$SAS" ]; then
    diag "no sig= in the SAS: the whole token is looked for"
    SIG=$SAS
fi
sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth 2 sine 300 vol 0.5
CREDS=$T/creds
mkdir -p "$CREDS"
(umask 277 && printf '%s\n' "$SAS" >"$CREDS/edgecap.sas-token")

cred_config() { # FILE SPOOL_DIR AUTH-LINE
    write_blob_config "$1" id=sd-0001 segment_seconds=60 spool="$2" auth="mode = sas
$3"
}

C1=$T/c1.conf
cred_config "$C1" "$T/spool1" "sas_token_credential = edgecap.sas-token"
listen n1
start_notified n1 "$C1" "CREDENTIALS_DIRECTORY=$CREDS" WATCHDOG_USEC=400000
PID1=$DAEMON_PID
wait_lines "$NOTIFY" '^READY=1\|STATUS=' 1 || fail_because "no READY=1"
want_re "$T/n1.log" 'event=ready .*pid='
[ "$(head -n 1 "$NOTIFY" | cut -c1-8)" = "READY=1|" ] ||
    fail_because "the first notification is not READY=1: $(head -n 1 "$NOTIFY")"
want_fixed "$NOTIFY" "READY=1|STATUS=$RUN_STATUS"
wait_lines "$NOTIFY" '^WATCHDOG=1$' 3 || fail_because "fewer than 3 WATCHDOG=1 (WATCHDOG_USEC=400000)"
want_re "$T/n1.log" 'event=watchdog timeout_ms=400 ping_interval_ms=200'
verdict "notify: READY=1 with STATUS= once up, then WATCHDOG=1 repeatedly" "$NOTIFY" "$T/n1.log"

if is_native; then
    wait_for_log "$T/audit-c1.log" '"event":"segment_acknowledged"' "$PID1" ||
        fail_because "no segment acknowledged"
    "$PEERS" readback "$P" --container audio >"$T/readback.json" 2>"$T/readback.err" ||
        fail_because "readback failed"
    grep -qE '"name":"edgecap/sd-0001/[0-9/]+/sd-0001-[0-9TZ]+-[0-9]{10}\.ogg"' \
        "$T/readback.json" || fail_because "the blob is not in the container"
    want_no_secret "$SIG" "$T/n1.log" "$T/n1.log.out" "$T/audit-c1.log" "$NOTIFY"
    verdict "credential: the daemon uploads with the SAS token from \$CREDENTIALS_DIRECTORY, never shown" \
        "$T/n1.log" "$T/readback.json"
else
    skip "credential: the daemon uploads with the SAS token from \$CREDENTIALS_DIRECTORY" \
        "the Blob peer runs natively only"
fi

before=$(wc -l <"$NOTIFY")
if is_native; then
    # `edgecap reload` by hand, outside the unit: the daemon has the
    # credential, the command does not (it checks the credential's name only)
    env -u CREDENTIALS_DIRECTORY timeout "$EC_CMD_TIMEOUT_S" "$EDGECAP" reload --config "$C1" \
        >"$OUT" 2>"$ERR" </dev/null
    RC=$?
    want_rc 0
    want_out_re "^asked edgecap \(pid $PID1\) to reload its provisioning file$"
else
    kill -HUP "$PID1"
fi
wait_for_log "$T/n1.log" 'event=reload_accepted' "$PID1" || fail_because "no reload_accepted"
wait_lines "$NOTIFY" '^RELOADING=1\|MONOTONIC_USEC=[0-9]+\|STATUS=' 1 || fail_because "no RELOADING=1"
r=$(first_after "$NOTIFY" 'RELOADING=1|MONOTONIC_USEC=' "$before")
[ -n "$r" ] || fail_because "no RELOADING=1 after the SIGHUP"
if [ -n "$r" ]; then
    wait_lines "$NOTIFY" '^READY=1' 2 || true
    [ -n "$(first_after "$NOTIFY" "READY=1|STATUS=$RUN_STATUS" "$r")" ] ||
        fail_because "no READY=1 after RELOADING=1"
fi
want_no_secret "$SIG" "$T/n1.log"
verdict "notify: a reload (edgecap reload natively, else SIGHUP) sends RELOADING=1, then READY=1" \
    "$NOTIFY" "$T/n1.log" "$ERR"

kill -TERM "$PID1"
wait_exit "$PID1" || fail_because "did not stop on SIGTERM"
[ "${EXIT_RC:-1}" -eq 0 ] || fail_because "exit status $EXIT_RC"
wait_lines "$NOTIFY" '^STOPPING=1\|STATUS=' 1 || fail_because "no STOPPING=1"
[ "$(grep -vE '^WATCHDOG=1$' "$NOTIFY" | tail -n 1 | cut -c1-11)" = "STOPPING=1|" ] ||
    fail_because "STOPPING=1 is not the last state sent"
verdict "notify: SIGTERM sends STOPPING=1, exit 0" "$NOTIFY" "$T/n1.log"

# Under valgrind and qemu only the protocol checks above run: the rest is
# config parsing (test_config runs there) and pacing-sensitive.
if ! is_native; then
    for d in "credential: a missing credential is refused" \
        "credential: \$CREDENTIALS_DIRECTORY unset is refused" \
        "notify: no WATCHDOG=1 when WATCHDOG_PID names another process" \
        "watchdog: pings while the source delivers" "watchdog: a stalled source stops the pings" \
        "watchdog: pings resume"; do
        skip "$d" "native run only (test_config and test_watchdog run in every configuration)"
    done
    finish
fi

# ---- 9-10: credential errors ------------------------------------------------------
C2=$T/c2.conf
cred_config "$C2" "$T/spool2" "sas_token_credential = edgecap.no-such"
line=$(line_of "$C2" '^sas_token_credential')
CREDENTIALS_DIRECTORY=$CREDS ec check-config "$C2"
want_rc 78
want_err_fixed "edgecap: $C2:$line: [auth] sas_token_credential: credential \"edgecap.no-such\" not found in \$CREDENTIALS_DIRECTORY ($CREDS)"
CREDENTIALS_DIRECTORY=$CREDS ec run --config "$C2"
want_rc 78
want_err_fixed "$C2:$line: [auth] sas_token_credential: credential \"edgecap.no-such\" not found"
verdict "credential: a missing credential is refused with FILE:LINE and its name (check-config, run)"

env -u CREDENTIALS_DIRECTORY timeout "$EC_CMD_TIMEOUT_S" "$EDGECAP" check-config "$C1" \
    >"$OUT" 2>"$ERR" </dev/null
RC=$?
want_rc 78
line=$(line_of "$C1" '^sas_token_credential')
want_err_fixed "edgecap: $C1:$line: [auth] sas_token_credential: credential \"edgecap.sas-token\": \$CREDENTIALS_DIRECTORY is not set (give it to the unit with LoadCredential=edgecap.sas-token:PATH"
CREDENTIALS_DIRECTORY=$CREDS ec check-config "$C1"
want_rc 0
want_out_re '^sas_token = \*\*\*$'
want_no_secret "$SIG" "$OUT" "$ERR"
# commands that use no secret work outside the unit
env -u CREDENTIALS_DIRECTORY timeout "$EC_CMD_TIMEOUT_S" "$EDGECAP" spool ls --config "$C1" \
    >"$OUT" 2>"$ERR" </dev/null
RC=$?
want_rc 0
want_out_re '^[0-9]+ segments, [0-9]+ bytes$'
verdict "credential: \$CREDENTIALS_DIRECTORY unset is refused (spool ls needs none); set, check-config shows ***"

# ---- 11-14: the watchdog is ours only with our pid, and stops when capture stalls -----
C3=$T/c3.conf
cred_config "$C3" "$T/spool3" "sas_token_credential = edgecap.sas-token"
listen n2
start_notified n2 "$C3" "CREDENTIALS_DIRECTORY=$CREDS" WATCHDOG_USEC=400000 WATCHDOG_PID=1
PID2=$DAEMON_PID
wait_lines "$NOTIFY" '^READY=1' 1 || fail_because "no READY=1"
# 5 ping intervals with no ping (a settle time: it shows something does not happen)
still_running_after "$PID2" 1000 || fail_because "the daemon ended"
[ "$(count "$NOTIFY" '^WATCHDOG=1$')" -eq 0 ] || fail_because "WATCHDOG=1 sent for WATCHDOG_PID=1"
want_no_re "$T/n2.log" 'event=watchdog '
kill -TERM "$PID2"
wait_exit "$PID2" || fail_because "did not stop"
verdict "notify: no WATCHDOG=1 when WATCHDOG_PID names another process" "$NOTIFY"

# A FIFO source: audio flows while the test writes, and reads block (the
# pipeline stalls) while it does not; fd 7 keeps a writer so no EOF comes.
FIFO=$T/live.raw
mkfifo "$FIFO"
exec 7<>"$FIFO"
head -c 3200 /dev/urandom >"$T/chunk.raw" # 0.1 s of 16 kHz mono S16
feed() {
    while :; do
        cat "$T/chunk.raw" >&7 || exit 0
        sleep 0.05
    done &
    FEEDER=$!
    EC_PIDS+=("$FEEDER")
}
C4=$T/c4.conf
cred_config "$C4" "$T/spool4" "sas_token_credential = edgecap.sas-token"
sed -i "s|^file = .*|file = $FIFO|" "$C4"
feed
listen n3
start_notified n3 "$C4" "CREDENTIALS_DIRECTORY=$CREDS" WATCHDOG_USEC=600000
PID3=$DAEMON_PID
wait_lines "$NOTIFY" '^WATCHDOG=1$' 4 || fail_because "no WATCHDOG=1 while audio flows"
verdict "watchdog: pings while the capture source delivers" "$NOTIFY" "$T/n3.log"

kill "$FEEDER"
wait "$FEEDER" 2>/dev/null
wait_for_log "$T/n3.log" 'event=watchdog_withheld stage=capture' "$PID3" ||
    fail_because "no watchdog_withheld for the stalled capture"
wait_lines "$NOTIFY" '^STATUS=stalled: capture makes no progress$' 1 ||
    fail_because "no STATUS= saying capture stalled"
stalled=$(count "$NOTIFY" '^WATCHDOG=1$')
# 5 ping intervals without a ping
still_running_after "$PID3" 1500 || fail_because "the daemon ended"
[ "$(count "$NOTIFY" '^WATCHDOG=1$')" -eq "$stalled" ] ||
    fail_because "WATCHDOG=1 went on while capture was stalled"
verdict "watchdog: a stalled capture source (a FIFO nobody writes) stops the pings" \
    "$NOTIFY" "$T/n3.log"

feed
wait_for_log "$T/n3.log" 'event=watchdog_resumed stage=capture' "$PID3" ||
    fail_because "no watchdog_resumed"
wait_lines "$NOTIFY" '^WATCHDOG=1$' $((stalled + 2)) || fail_because "pings did not resume"
kill "$FEEDER"
wait "$FEEDER" 2>/dev/null
exec 7>&- # EOF: capture ends, so the daemon can close its segment and stop
kill -TERM "$PID3"
wait_exit "$PID3" || fail_because "did not stop"
[ "${EXIT_RC:-1}" -eq 0 ] || fail_because "exit status $EXIT_RC"
verdict "watchdog: pings resume when the source delivers again" "$NOTIFY" "$T/n3.log"

finish
