#!/bin/bash
# Metrics over HTTP and `edgecap status`, against the real mTLS nginx +
# Azurite peers: the [metrics] listen endpoint on loopback TCP and on a Unix
# socket (0600, removed at stop) serves text that prometheus_client parses;
# other paths and methods are refused; a client that never finishes its
# request does not stop the next scrape; a listen address beyond loopback is
# refused at load (file:line). A wrong pin against the real peer shows as
# edgecap_tls_failures_total{reason="pin_mismatch"} and as a tls_pin_mismatch
# audit line naming the pin the peer showed; the other refusals (unknown CA,
# expired, wrong host, TLS 1.0) each get their own reason. `status` and
# `status --json` with the daemon running and stopped.
. "$(dirname "$0")/lib/tap.sh"

plan 11

start_peers
SAS=$("$PEERS" container "$P" audio)
PROMCHECK=(/usr/bin/python3 "$EC_SRCDIR/tests/tools/prom_check.py")
sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth 1 sine 300 vol 0.5

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A provisioning file for the blob peer with [metrics] LISTEN.
metrics_config() { # FILE SPOOL_DIR LISTEN [PIN]
    write_blob_config "$1" id=met-0001 spool="$2" pins="pin_current = ${4:-$SERVER_PIN}" tail="[metrics]
listen = $3
interval_seconds = 1"
}

# Scrapes until the text has a line matching REGEX (bounded); the last
# answer stays in FILE.
scrape_until() { # FILE REGEX CURL-ARGS...
    local file=$1 re=$2 i
    shift 2
    for ((i = 0; i < EC_WAIT_S * 10; i++)); do
        curl -s --max-time 5 -o "$file" "$@" 2>/dev/null && grep -qE -- "$re" "$file" && return 0
        sleep 0.1
    done
    return 1
}

# Under valgrind and qemu only the core runs: checks 1-5 (HTTP behaviour of one
# thread, the same on every arch; ASan runs them) are native, and status is
# shown there with the pin-mismatch daemon instead.
PORT=$(free_port)
CA=$T/a.conf
metrics_config "$CA" "$T/spool-a" "127.0.0.1:$PORT"
if is_native; then
    # ---- 1: loopback TCP: a real scrape, parsed by prometheus_client -----------------
    start_bg "$T/a.log" run --config "$CA"
    PID_A=$DAEMON_PID
    URL=http://127.0.0.1:$PORT/metrics
    if scrape_until "$T/a.prom" '^edgecap_segments_acknowledged_total [1-9]' "$URL"; then
        curl -s --max-time 5 -D "$T/a.hdr" -o "$T/a.prom" "$URL"
        if "${PROMCHECK[@]}" "$T/a.prom" >"$T/a.samples" 2>"$T/a.err"; then
            want_re "$T/a.samples" '^edgecap_segments_acknowledged_total\{\} [1-9]'
            want_re "$T/a.samples" '^edgecap_tls_failures_total\{endpoint="primary",reason="pin_mismatch"\} 0$'
            want_re "$T/a.samples" '^edgecap_breaker_state\{endpoint="primary"\} 0$'
            want_re "$T/a.samples" '^edgecap_last_acknowledged_timestamp_seconds\{\} [1-9]'
        else
            fail_because "the scrape does not parse: $(cat "$T/a.err")"
        fi
        want_re "$T/a.hdr" '^HTTP/1.1 200 '
        want_re "$T/a.hdr" '^Content-Type: text/plain; version=0.0.4'
    else
        fail_because "no scrape with an acknowledged segment from $URL"
    fi
    want_no_secret "$SAS" "$T/a.prom"
    verdict "GET /metrics on 127.0.0.1: 200, text/plain; version=0.0.4, parsed by prometheus_client, uploads counted" \
        "$T/a.prom" "$T/a.log"

    # ---- 2: other paths and methods ---------------------------------------------------
    code() { curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$@"; }
    [ "$(code "http://127.0.0.1:$PORT/")" = 404 ] || fail_because "/ did not answer 404"
    [ "$(code "http://127.0.0.1:$PORT/metrics/../secret")" = 404 ] || fail_because "/secret did not answer 404"
    [ "$(code "http://127.0.0.1:$PORT/metricsx")" = 404 ] || fail_because "/metricsx did not answer 404"
    [ "$(code -X POST --data x "$URL")" = 405 ] || fail_because "POST /metrics did not answer 405"
    [ "$(code -X DELETE "$URL")" = 405 ] || fail_because "DELETE /metrics did not answer 405"
    [ "$(code -I "$URL")" = 200 ] || fail_because "HEAD /metrics did not answer 200"
    printf 'GARBAGE\r\n\r\n' >"$T/garbage.req"
    answer=$(/usr/bin/python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),5); s.sendall(open(sys.argv[2],"rb").read()); print(s.recv(64).decode(errors="replace").splitlines()[0])' "$PORT" "$T/garbage.req" 2>&1)
    [[ "$answer" == "HTTP/1.1 400 "* ]] || fail_because "a malformed request got '$answer', not 400"
    big=$(/usr/bin/python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),5); s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a"*8000); print(s.recv(64).decode(errors="replace").splitlines()[0])' "$PORT" 2>&1)
    [[ "$big" == "HTTP/1.1 431 "* ]] || fail_because "an 8 KB request got '$big', not 431"
    verdict "other paths 404, other methods 405, HEAD 200, garbage 400, an oversized request 431"

    # ---- 3: a client that never finishes does not wedge the listener ---------------------
    exec 7<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'GET /metr' >&7 # and never more
    if ! curl -s --max-time 10 -o "$T/a2.prom" "$URL"; then
        fail_because "the scrape after a stalled client failed"
    fi
    grep -q '^edgecap_spool_bytes ' "$T/a2.prom" || fail_because "the scrape after a stalled client has no metrics"
    # the stalled one was cut off with 408 rather than held forever
    timeout 10 head -c 12 <&7 >"$T/stalled.answer" 2>/dev/null
    grep -q '^HTTP/1.1 408' "$T/stalled.answer" || fail_because "the stalled client was not answered 408"
    exec 7>&-
    running "$PID_A" || fail_because "the daemon died"
    verdict "a request that never finishes is cut off (408) and the next scrape is served" "$T/a.log"

    # ---- 4: status while running ------------------------------------------------------------
    ec status --config "$CA"
    want_rc 0
    want_out_re "^daemon: +running \\(pid $PID_A\\); counters from listener 127.0.0.1:$PORT"
    want_out_re '^spool: +.*segments waiting, [0-9]+ bytes, oldest [0-9]+ s old, 0 in quarantine'
    want_out_re '^upload: +[1-9][0-9]* segments acknowledged .* last acknowledged [0-9]+ s ago'
    want_out_re '^breaker: +primary closed'
    cp "$OUT" "$T/status-running.txt"
    ec status --config "$CA" --json
    want_rc 0
    /usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["device"] == "met-0001", d
assert d["daemon"]["running"] is True and d["daemon"]["pid"] == int(sys.argv[2]), d["daemon"]
assert d["daemon"]["counters_from"].startswith("listener "), d["daemon"]
assert d["upload"]["segments_acknowledged"] >= 1, d["upload"]
assert d["breakers"]["primary"] == "closed", d["breakers"]
assert d["tls_failures"]["primary"]["pin_mismatch"] == 0, d["tls_failures"]
assert isinstance(d["spool"]["segments"], int), d["spool"]
    ' "$OUT" "$PID_A" 2>"$T/json.err" || fail_because "status --json: $(tail -n 1 "$T/json.err")"
    verdict "status and status --json while the daemon runs: running, pid, spool, uploads, breakers" \
        "$T/status-running.txt" "$OUT" "$ERR"

    # ---- 5: status when stopped ------------------------------------------------------------
    kill -TERM "$PID_A"
    wait_exit "$PID_A" || fail_because "the daemon did not stop"
    ec status --config "$CA"
    want_rc 0
    want_out_re '^daemon: +not running; spool facts read from the spool directly'
    want_out_re '^spool: +.*segments waiting'
    want_no_re "$OUT" '^upload:'
    cp "$OUT" "$T/status-stopped.txt"
    ec status --config "$CA" --json
    want_rc 0
    /usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["daemon"] == {"running": False, "counters_from": "spool"}, d["daemon"]
assert "upload" not in d and "breakers" not in d, d
assert d["spool"]["quarantined"] == 0 and d["spool"]["segments"] >= 0, d["spool"]
    ' "$OUT" 2>"$T/json2.err" || fail_because "status --json: $(tail -n 1 "$T/json2.err")"
    curl -s --max-time 2 -o /dev/null "$URL" && fail_because "something still answers on 127.0.0.1:$PORT"
    verdict "status and status --json with the daemon stopped: says so, facts from the spool" \
        "$T/status-stopped.txt" "$OUT" "$ERR"
else
    for what in "GET /metrics on loopback TCP" "404/405/400/431" "a stalled client" \
        "status while running (shown below with the pin-mismatch daemon)" \
        "status when stopped (shown below)"; do
        skip "$what" "native only (valgrind/qemu run the core checks)"
    done
fi

# ---- 6-7: a pin mismatch against the real nginx, scraped over the Unix socket ------------
SOCK=$T/metrics.sock
CB=$T/b.conf
metrics_config "$CB" "$T/spool-b" "unix:$SOCK" "$NEXT_PIN"
start_bg "$T/b.log" run --config "$CB"
PID_B=$DAEMON_PID
if scrape_until "$T/b.prom" '^edgecap_tls_failures_total\{endpoint="primary",reason="pin_mismatch"\} [1-9]' \
    --unix-socket "$SOCK" http://localhost/metrics; then
    "${PROMCHECK[@]}" "$T/b.prom" >"$T/b.samples" 2>"$T/b.err" ||
        fail_because "the scrape does not parse: $(cat "$T/b.err")"
    want_re "$T/b.samples" '^edgecap_tls_failures_total\{endpoint="primary",reason="pin_mismatch"\} [1-9]'
    want_re "$T/b.samples" '^edgecap_tls_failures_total\{endpoint="primary",reason="cert_untrusted"\} 0$'
    want_re "$T/b.samples" '^edgecap_segments_acknowledged_total\{\} 0$'
else
    fail_because "no pin_mismatch count over unix:$SOCK"
fi
[ "$(stat -c %a "$SOCK" 2>/dev/null)" = 600 ] || fail_because "the socket's mode is $(stat -c %a "$SOCK" 2>&1), not 600"
if ! is_native; then
    ec status --config "$CB" --json
    want_rc 0
    /usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["daemon"]["running"] is True and d["daemon"]["pid"] == int(sys.argv[2]), d["daemon"]
assert d["daemon"]["counters_from"] == "listener unix:" + sys.argv[3], d["daemon"]
assert d["tls_failures"]["primary"]["pin_mismatch"] >= 1, d["tls_failures"]
' "$OUT" "$PID_B" "$SOCK" 2>"$T/json3.err" || fail_because "status --json: $(tail -n 1 "$T/json3.err")"
fi
verdict "a wrong pin: edgecap_tls_failures_total{endpoint=\"primary\",reason=\"pin_mismatch\"} over the 0600 Unix socket" \
    "$T/b.prom" "$T/b.log"

AUD=$T/audit-b.log
want_re "$AUD" "\"event\":\"tls_pin_mismatch\".*\"host\":\"$BLOB_HOST\".*\"pin_seen\":\"${SERVER_PIN//+/\\+}\""
want_re "$T/b.log" "event=tls_refused host=$BLOB_HOST reason=pin_mismatch"
want_no_secret "$SAS" "$T/b.prom"
if is_native; then # (audit verify has its own tests under every configuration)
    ec audit verify "$AUD"
    want_rc 0
fi
verdict "the pin mismatch is audited with the host and the pin the peer showed; the chain verifies" "$AUD"

kill -TERM "$PID_B"
wait_exit "$PID_B" || fail_because "the daemon did not stop"
[ ! -e "$SOCK" ] || fail_because "the socket was left behind"
if ! is_native; then
    ec status --config "$CB"
    want_rc 0
    want_out_re '^daemon: +not running; spool facts read from the spool directly'
fi
verdict "the Unix socket is removed when the daemon stops" "$T/b.log"

# ---- 9: a listen address beyond loopback is refused at load -------------------------------
# (under valgrind and qemu one address is enough: the load check is the same)
bads=(0.0.0.0:9464)
is_native && bads+=(192.168.1.10:9464 "[::]:9464" unix:relative/path)
for bad in "${bads[@]}"; do
    sed "s|^listen = .*|listen = $bad|" "$CA" >"$T/bad.conf"
    chmod 600 "$T/bad.conf"
    ec run --config "$T/bad.conf"
    want_rc 78
    want_err_fixed "$T/bad.conf:$(line_of "$T/bad.conf" '^listen = '): [metrics] listen"
    want_err_fixed "expected 127.0.0.1:PORT, [::1]:PORT or unix:/absolute/path"
done
verdict "listen = 0.0.0.0, a LAN address, [::] or a relative socket path: refused with file:line (78)"

# ---- 10: a listener that cannot start is reported; capture goes on ---------------------------
if is_native; then
    echo keep >"$T/plain"
    CC=$T/c.conf
    metrics_config "$CC" "$T/spool-c" "unix:$T/plain"
    start_bg "$T/c.log" run --config "$CC"
    wait_for_log "$T/c.log" 'event=metrics_listen_failed' "$DAEMON_PID" ||
        fail_because "no metrics_listen_failed in the log"
    want_re "$T/c.log" "event=metrics_listen_failed listen=unix:$T/plain reason=\"$T/plain exists and is not a socket\""
    wait_for_log "$T/c.log" 'event=segment_sealed|event=segment_uploaded' "$DAEMON_PID" ||
        fail_because "the daemon did not go on capturing"
    running "$DAEMON_PID" || fail_because "the daemon stopped"
    [ "$(cat "$T/plain")" = keep ] || fail_because "the file at the socket path was changed"
    kill -TERM "$DAEMON_PID"
    wait_exit "$DAEMON_PID" || fail_because "the daemon did not stop"
    [ "$(cat "$T/plain" 2>/dev/null)" = keep ] || fail_because "the file at the socket path was removed"
    ec status
    want_rc 64
    want_err_fixed "edgecap status: --config FILE is required"
    verdict "a socket path that is a regular file: metrics_listen_failed, file left alone, capture goes on; status needs --config" \
        "$T/c.log" "$ERR"
else
    skip "a socket path that is a regular file: reported, left alone" "native only (one more daemon)"
fi

# ---- 10: every other TLS refusal has its own reason (native: one handshake each) ------------
if is_native; then
    ec capture --config "$CA" --seconds 1
    # openssl's own server, TLS 1.3 only: no version in common with our 1.2
    S13_PORT=$(free_port)
    openssl s_server -quiet -www -tls1_3 -accept "127.0.0.1:$S13_PORT" -cert "$SERVER_CERT" \
        -key "$P/pki/server.key" >"$T/s13.log" 2>&1 </dev/null &
    EC_PIDS+=("$!")
    for ((i = 0; i < 100; i++)); do
        (exec 8<>"/dev/tcp/127.0.0.1/$S13_PORT") 2>/dev/null && break
        sleep 0.05
    done
    # tls10 offers TLS 1.0/1.1 with no AEAD suite: the server ends it with
    # handshake_failure before versions could matter
    for kind in unknownca:cert_untrusted expired:cert_expired wronghost:hostname tls10:handshake \
        tls13only:protocol_version; do
        if [ "${kind%%:*}" = tls13only ]; then
            FAULT_CONNECT_TO=$BLOB_HOST:443:127.0.0.1:$S13_PORT
        else
            port=$("$PEERS" fault "$P" "${kind%%:*}")
            # shellcheck source=/dev/null
            . "$P/fault-$port/fault.env"
        fi
        sed "s|^connect_to = .*|connect_to = $FAULT_CONNECT_TO|" "$CA" >"$T/f.conf"
        chmod 600 "$T/f.conf"
        ec upload-once --config "$T/f.conf"
        want_rc 69
        grep -q "event=tls_refused host=$BLOB_HOST reason=${kind#*:} " "$ERR" ||
            fail_because "${kind%%:*}: no tls_refused with reason=${kind#*:} ($(grep -o 'event=tls_refused.*' "$ERR" | head -n 1))"
    done
    verdict "unknown CA, expired, wrong host name, TLS 1.0 only, TLS 1.3 only: cert_untrusted, cert_expired, hostname, handshake, protocol_version"
else
    skip "unknown CA, expired, wrong host name, TLS 1.0 only, TLS 1.3 only: their own reasons" "native only (five handshakes)"
fi

finish
