# shellcheck shell=bash
# What an emulated field board (toolchain/qemu-run.sh) is provisioned with,
# shared by tests/system/image.sh, image_armhf.sh and
# toolchain/bench-image.sh: an edgecap.conf for a board that captures
# hw:Loopback,1,0 (16 kHz mono, 2 s segments, VAD) and uploads to the peers'
# Blob front (tests/peers/peers.sh, whose peers.env must be sourced) through
# connect_to, and the TLS files it names beside it. Then what the system
# tests do with a board: the hooks they boot it with, booting it from IMG
# (qemu-run.sh, in the background: QEMU_PID) and its QEMU monitor; these keep
# their files in the test's scratch directory T (tap.sh).

# Prints the provisioning file of board ID, reaching the Blob host at
# CONNECT_ADDR (10.0.2.2:PORT: the host's loopback seen from QEMU's user
# networking) with container SAS token SAS.
board_conf() { # ID CONNECT_ADDR SAS
    cat <<CONF
[device]
id = $1
tags = site=qemu

[capture]
source = alsa
device = hw:Loopback,1,0
rate_hz = 16000
channels = 1
segment_seconds = 2
vad = on
; 1 s of ALSA buffer: the emulated board may stall on a loaded host
buffer_frames = 16000

[upload]
endpoint = $BLOB_ENDPOINT
container = audio
connect_to = $BLOB_HOST:443:$2
retry_base_ms = 200
retry_max_ms = 2000

[tls]
ca_file = /etc/edgecap/tls/ca.pem
client_cert = /etc/edgecap/tls/client.pem
client_key = /etc/edgecap/tls/client.key
pin_current = $SERVER_PIN
allowed_hosts = $BLOB_HOST

[auth]
mode = sas
sas_token = $3
CONF
}

# Copies the peers' CA, client certificate and key into DIR/tls/ (as the
# file names them under /etc/edgecap).
board_tls() { # DIR
    mkdir -p "$1/tls"
    cp "$CA_FILE" "$1/tls/ca.pem"
    cp "$CLIENT_CERT" "$1/tls/client.pem"
    cp "$CLIENT_KEY" "$1/tls/client.key"
}

# The start of a guest-side hook (an --extra-initrd's /extra/rc.d/ script):
# say() prefixes TAG, and it waits (bounded) until edgecap captures from
# hw:Loopback,1,0.
board_hook_head() { # TAG
    # shellcheck disable=SC2016 # $* is the hook's
    printf '#!/bin/sh\nsay() { echo "%s: $*"; }\n' "$1"
    cat <<'HOOK'
st=/proc/asound/Loopback/pcm1c/sub0/status
n=0
until grep -q RUNNING "$st" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 1200 ] || { say "capture never started"; exit 1; }
    sleep 0.1
done
HOOK
}

# The end of a hook that waits for the spool: reports when nothing sealed is
# left in it ("spool empty (N open, N quarantined)"; after 180 s "spool still
# holds N segments").
hook_wait_empty() {
    cat <<'HOOK'
n=0
while :; do
    segs=$(find /var/lib/edgecap/spool -name '*.seg' 2>/dev/null | wc -l)
    parts=$(find /var/lib/edgecap/spool -name '*.part' 2>/dev/null | wc -l)
    q=$(find /var/lib/edgecap/spool/quarantine -type f 2>/dev/null | wc -l)
    # The open segment closes after VAD's hangover and segment_seconds.
    if [ "$n" -gt 30 ] && [ "$segs" = 0 ]; then
        say "spool empty ($parts open, $q quarantined)"
        break
    fi
    n=$((n + 1))
    [ "$n" -lt 1800 ] || { say "spool still holds $segs segments"; exit 1; }
    sleep 0.1
done
HOOK
}

# Sends one command to a board's QEMU monitor and waits for its prompt back
# (`quit`: for QEMU to close the monitor).
monitor() { # NAME COMMAND
    python3 - "$T/$1.mon" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
seen = b""
while seen.count(b"(qemu)") < 2:
    chunk = s.recv(4096)
    if not chunk:
        break
    seen += chunk
s.close()
quit = sys.argv[2] == "quit" and seen.count(b"(qemu)") >= 1
sys.exit(0 if seen.count(b"(qemu)") >= 2 or quit else 1)
PY
}

# Boots board NAME from IMG with qemu-run.sh in the background: a scratch
# copy T/NAME.img flashed with PROVISION (none: as built; with --keep: as it
# is), console in T/NAME.console, monitor on T/NAME.mon, qemu-run's output in
# T/NAME.qemu. QEMU_PID is its process (killed at the test's exit).
boot() { # NAME PROVISION [EXTRA-CPIO [QEMU-RUN OPTIONS...]]
    local name=$1 prov=$2 extra=${3:-}
    shift 3 2>/dev/null || shift $#
    "$EC_SRCDIR/toolchain/qemu-run.sh" --scratch "$T/$name.img" --console "$T/$name.console" \
        --monitor "$T/$name.mon" ${extra:+--extra-initrd "$extra"} "$@" "$IMG" ${prov:+"$prov"} \
        >"$T/$name.qemu" 2>&1 </dev/null &
    QEMU_PID=$!
    EC_PIDS+=("$QEMU_PID")
}

# Packs a hook tree (DIR/extra/rc.d/..., the player, the tone) into the
# gzipped newc cpio qemu-run.sh's --extra-initrd appends: sorted, owned by
# root, no time in the gzip header.
board_extra_cpio() { # DIR OUT
    (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -n >"$2"
}

# Reads board ID's blobs back from the peers' container "audio" with
# @azure/storage-blob (peers.sh readback), decodes each with opusdec and
# compares them, in name order, with TONE (raw s16le 16 kHz mono) with the
# host tool's pcm_compare. Failures go to REASONS (tap.sh's fail_because);
# T/ID.readback.json, T/ID.cmp hold what a verdict shows. BOARD_BLOBS: how
# many were read.
board_blobs_match() { # ID TONE
    local id=$1 b f blobs
    # shellcheck disable=SC2034 # the caller's
    BOARD_BLOBS=0
    "$PEERS" readback "$P" --container audio >"$T/$id.readback.json" 2>"$T/$id.readback.err" ||
        fail_because "readback failed: $(tail -n 2 "$T/$id.readback.err")"
    mapfile -t blobs < <(grep -oE "\"name\":\"edgecap/$id/[^\"]*\\.ogg\"" "$T/$id.readback.json" |
        sed 's/"name":"//; s/"$//' | LC_ALL=C sort)
    # shellcheck disable=SC2034 # the caller's
    BOARD_BLOBS=${#blobs[@]}
    : >"$T/$id.all.raw"
    for b in "${blobs[@]}"; do
        f=$T/$id-$(basename "$b")
        "$PEERS" readback "$P" --container audio --cat "$b" >"$f" 2>/dev/null || fail_because "cannot read $b"
        opusdec --quiet --rate 16000 "$f" "$f.wav" 2>/dev/null || fail_because "opusdec rejects $b"
        sox -q "$f.wav" -t raw - >>"$T/$id.all.raw"
    done
    "${TOOL:-$BUILD/results/tool-run}" pcm_compare "$2" "$T/$id.all.raw" 0.8 960 >"$T/$id.cmp" 2>&1 ||
        fail_because "the decoded blobs of $id do not match the tone: $(cat "$T/$id.cmp")"
}

# The host side of a board test: the peers (tap.sh's start_peers), their
# container "audio" (SAS: its token), a SECONDS s 300-900 Hz sweep to play
# (T/tone.wav, and T/tone.raw: s16le 16 kHz mono) and the provisioning
# directory PROV=T/prov of board ID (edgecap.conf reaching the peers at
# 10.0.2.2, and the TLS files it names).
board_peers_and_tone() { # ID SECONDS
    start_peers
    SAS=$("$PEERS" container "$P" audio)
    sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth "$2" sine 300-900 vol 0.5
    sox -q "$T/tone.wav" -t raw "$T/tone.raw"
    PROV=$T/prov
    board_tls "$PROV"
    board_conf "$1" "10.0.2.2:$NGINX_PORT" "$SAS" >"$PROV/edgecap.conf"
}

# Presses board NAME's power button (QEMU's system_powerdown; QEMU_PID is
# its process): edgecap must stop cleanly and the board sync and power off
# within 60 s (its console T/NAME.console says so). Failures go to REASONS.
board_power_button() { # NAME
    local c=$T/$1.console
    monitor "$1" system_powerdown || fail_because "no QEMU monitor"
    wait_exit "$QEMU_PID" 60 || fail_because "the board did not power off within 60 s"
    want_fixed "$c" "edgecap-power: power button: shutting down"
    want_re "$c" "event=stopped"
    want_fixed "$c" "edgecap-shutdown: partitions synced"
    want_no_re "$c" "did not stop within"
}

# Builds the field image of ARCH and its guest-side player (make image
# build/ARCH/tools/alsa_play; the output in T/make.log) and checks what it
# printed and wrote: the sha256 and size, three partitions (T/parts), the
# .sha256 beside the image. Returns 1 when the build failed. Failures go to
# REASONS.
board_image_built() { # ARCH
    local dir=$EC_SRCDIR/build/$1/image
    if ! make -s -j2 -C "$EC_SRCDIR" ARCH="$1" image "build/$1/tools/alsa_play" >"$T/make.log" 2>&1; then
        diag_file "$T/make.log"
        fail_because "make image ARCH=$1 failed"
        return 1
    fi
    want_re "$T/make.log" "^  sha256 [0-9a-f]{64}$"
    want_re "$T/make.log" "^  size [0-9]+ bytes"
    sfdisk -d "$dir/edgecap-$1.img" >"$T/parts" 2>&1 || fail_because "sfdisk cannot read $dir/edgecap-$1.img"
    [ "$(grep -c '^/.*: start=' "$T/parts")" = 3 ] || fail_because "not three partitions"
    (cd "$dir" && sha256sum -c --quiet "edgecap-$1.img.sha256") >/dev/null 2>&1 ||
        fail_because "edgecap-$1.img.sha256 does not match"
}
