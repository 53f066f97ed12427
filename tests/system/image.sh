#!/bin/bash
# The field image end to end under qemu-system-aarch64 (-M virt, TCG, user
# networking only): `make image ARCH=aarch64` builds it, a provisioning
# directory goes onto its EC-PROV partition (as toolchain/qemu-run.sh writes
# it), and the emulated board boots, captures through the real kernel ALSA
# driver snd-aloop (a player inside the guest writes a tone to
# hw:Loopback,0,0 in real time; edgecap captures hw:Loopback,1,0), seals,
# spools and uploads over pinned mTLS to the Azurite + nginx peers on the
# host's loopback, which the guest reaches as 10.0.2.2 through connect_to
# with the real Azure host name. The host reads the blobs back with
# @azure/storage-blob, decodes them with opusdec and compares them with the
# tone; the guest reports its spool empty after the acknowledgments. A
# killed edgecap is restarted by the supervisor; QEMU's system_powerdown (the
# power button) stops it cleanly and powers off. Then boards that must upload
# nothing: a broken provisioning file (check-config's FILE:LINE on the
# console), an empty EC-PROV (as built), an RTC before the build date.
#
# Boots take tens of seconds under TCG: this runs once per `make test`, in the
# native x86_64 configuration only.
. "$(dirname "$0")/lib/tap.sh"

plan 10

skip_all() {
    while [ "$TAP_N" -lt "$TAP_PLANNED" ]; do skip "field image under qemu-system-aarch64" "$1"; done
    finish
}

once_per_run ||
    skip_all "boots once per make test, in the native x86_64 run"
command -v qemu-system-aarch64 >/dev/null && command -v mksquashfs >/dev/null &&
    command -v mcopy >/dev/null ||
    skip_all "no qemu-system-aarch64/squashfs-tools/mtools (toolchain/install-deps.sh image)"

TOOL=${TOOL:-$BUILD/results/tool-run}
AB=$EC_SRCDIR/build/aarch64
IMGDIR=$AB/image
IMG=$IMGDIR/edgecap-aarch64.img
SECONDS_PLAYED=5

# ---- 1: the image builds (and the guest-side player with it) ---------------
if ! make -s -j2 -C "$EC_SRCDIR" ARCH=aarch64 image "build/aarch64/tools/alsa_play" \
    >"$T/make.log" 2>&1; then
    diag_file "$T/make.log"
    fail_because "make image ARCH=aarch64 failed"
    verdict "make image ARCH=aarch64: three partitions, sha256 and size printed"
    skip_all "the image did not build (see above)"
fi
want_re "$T/make.log" "^  sha256 [0-9a-f]{64}$"
want_re "$T/make.log" "^  size [0-9]+ bytes"
sfdisk -d "$IMG" >"$T/parts" 2>&1 || fail_because "sfdisk cannot read $IMG"
[ "$(grep -c '^/.*: start=' "$T/parts")" = 3 ] || fail_because "not three partitions"
(cd "$IMGDIR" && sha256sum -c --quiet "edgecap-aarch64.img.sha256") >/dev/null 2>&1 ||
    fail_because "edgecap-aarch64.img.sha256 does not match"
verdict "make image ARCH=aarch64: three partitions, sha256 and size printed" "$T/make.log" "$T/parts"

# ---- the peers, the provisioning directory, the guest's player -------------
start_peers
SAS=$("$PEERS" container "$P" audio)

sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth "$SECONDS_PLAYED" sine 300-900 vol 0.5
sox -q "$T/tone.wav" -t raw "$T/tone.raw"

PROV=$T/prov
mkdir -p "$PROV/tls"
cp "$CA_FILE" "$PROV/tls/ca.pem"
cp "$CLIENT_CERT" "$PROV/tls/client.pem"
cp "$CLIENT_KEY" "$PROV/tls/client.key"
cat >"$PROV/edgecap.conf" <<CONF
[device]
id = img-0001
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
connect_to = $BLOB_HOST:443:10.0.2.2:$NGINX_PORT
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
sas_token = $SAS
CONF

# What the boot chain adds for this test: the player, the tone and a hook
# (run by the guest's rc.boot) that plays it once edgecap's capture runs, then
# reports when the spool is empty.
EX=$T/extra/extra
mkdir -p "$EX/rc.d"
cp "$AB/tools/alsa_play" "$EX/alsa_play"
cp "$T/tone.raw" "$EX/tone.raw"
cat >"$EX/rc.d/50-play" <<'HOOK'
#!/bin/sh
say() { echo "edgecap-test: $*"; }
st=/proc/asound/Loopback/pcm1c/sub0/status
n=0
until grep -q RUNNING "$st" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 1200 ] || { say "capture never started"; exit 1; }
    sleep 0.1
done
say "capture running; playing"
/run/extra/alsa_play hw:Loopback,0,0 /run/extra/tone.raw 16000 1 | sed 's/^/edgecap-test: /'
n=0
while :; do
    segs=$(find /var/lib/edgecap/spool -name '*.seg' 2>/dev/null | wc -l)
    parts=$(find /var/lib/edgecap/spool -name '*.part' 2>/dev/null | wc -l)
    # The open segment closes after VAD's hangover and segment_seconds.
    if [ "$n" -gt 30 ] && [ "$segs" = 0 ]; then
        say "spool empty ($parts open)"
        break
    fi
    n=$((n + 1))
    [ "$n" -lt 1200 ] || { say "spool still holds $segs segments"; exit 1; }
    sleep 0.1
done
# The supervisor restarts edgecap when it dies.
kill -KILL "$(pidof edgecap)" && say "killed edgecap"
HOOK
chmod 0755 "$EX/rc.d/50-play" "$EX/alsa_play"
(cd "$T/extra" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -n >"$T/extra.cpio.gz"

# Sends one command to a board's QEMU monitor and waits for its prompt back.
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
sys.exit(0 if seen.count(b"(qemu)") >= 2 else 1)
PY
}

boot() { # NAME PROVISION [EXTRA-CPIO [QEMU-RUN OPTIONS...]]
    local name=$1 prov=$2 extra=${3:-}
    shift 3 2>/dev/null || shift $#
    "$EC_SRCDIR/toolchain/qemu-run.sh" --scratch "$T/$name.img" --console "$T/$name.console" \
        --monitor "$T/$name.mon" ${extra:+--extra-initrd "$extra"} "$@" "$IMG" $prov \
        >"$T/$name.qemu" 2>&1 </dev/null &
    QEMU_PID=$!
    EC_PIDS+=("$QEMU_PID")
}

# ---- 2-5: a provisioned board captures and uploads --------------------------
boot dev "$PROV" "$T/extra.cpio.gz"
C=$T/dev.console
t0=$SECONDS
wait_for_log "$C" "edgecap-boot: eth0 10\.0\.2\.15/" "$QEMU_PID" 120 ||
    fail_because "no DHCP lease on eth0 within 120 s"
wait_for_log "$C" "event=alsa_open device=hw:Loopback,1,0 rate_hz=16000 channels=1" "$QEMU_PID" 60 ||
    fail_because "edgecap did not open hw:Loopback,1,0"
diag "boot to edgecap's capture under TCG: $((SECONDS - t0)) s (not a check)"
want_no_re "$C" "edgecap-supervise: (no provisioning|provisioning file .* rejected|clock)"
want_re "$C" "edgecap-watchdog: feeding /dev/watchdog \\(i6300ESB"
verdict "the board boots: modules, root, EC-PROV and EC-DATA mounted, DHCP, edgecap started on the loopback card" "$C" "$T/dev.qemu"

wait_for_log "$C" "edgecap-test: played $((SECONDS_PLAYED * 16000)) frames" "$QEMU_PID" 60 ||
    fail_because "the guest's player did not play the tone into hw:Loopback,0,0"
want_fixed "$C" "edgecap-test: played $((SECONDS_PLAYED * 16000)) frames, 0 underruns"
verdict "a player inside the guest writes ${SECONDS_PLAYED} s to hw:Loopback,0,0 (paced by the kernel)" "$C"

wait_for_log "$C" "event=segment_uploaded" "$QEMU_PID" 120 &&
    diag "boot to the first upload under TCG: $((SECONDS - t0)) s (not a check)"
wait_for_log "$C" "edgecap-test: spool (empty|still)" "$QEMU_PID" 150
want_fixed "$C" "edgecap-test: spool empty"
want_re "$C" "event=segment_uploaded"
verdict "the guest seals, uploads and empties its spool after the acknowledgments" "$C"

REASONS=()
"$PEERS" readback "$P" --container audio >"$T/readback.json" 2>"$T/readback.err" ||
    fail_because "readback failed: $(tail -n 2 "$T/readback.err")"
mapfile -t BLOBS < <(grep -oE '"name":"edgecap/img-0001/[^"]*\.ogg"' "$T/readback.json" |
    sed 's/"name":"//; s/"$//' | sort)
uploads=$(grep -c "event=segment_uploaded" "$C")
[ "${#BLOBS[@]}" -ge 2 ] || fail_because "${#BLOBS[@]} blobs for img-0001"
[ "${#BLOBS[@]}" = "$uploads" ] || fail_because "${#BLOBS[@]} blobs, $uploads uploads logged"
: >"$T/all.raw"
for b in "${BLOBS[@]}"; do
    f=$T/$(basename "$b")
    "$PEERS" readback "$P" --container audio --cat "$b" >"$f" 2>/dev/null || fail_because "cannot read $b"
    opusdec --quiet --rate 16000 "$f" "$f.wav" 2>/dev/null || fail_because "opusdec rejects $b"
    sox -q "$f.wav" -t raw - >>"$T/all.raw"
done
"$TOOL" pcm_compare "$T/tone.raw" "$T/all.raw" 0.8 960 >"$T/cmp.out" 2>&1 ||
    fail_because "the decoded blobs do not match the tone: $(cat "$T/cmp.out")"
diag "$(cat "$T/cmp.out" 2>/dev/null)"
verdict "blobs read back with @azure/storage-blob decode with opusdec and match the tone played in the guest" \
    "$T/readback.json" "$T/cmp.out"

wait_for_log "$C" "edgecap-test: killed edgecap" "$QEMU_PID" 30 || fail_because "the hook did not kill edgecap"
wait_for_log "$C" "edgecap-supervise: edgecap exited with status 137; restarting in [0-9]+ s" "$QEMU_PID" 30 ||
    fail_because "the supervisor did not see edgecap die"
n=$(grep -c "event=alsa_open device=hw:Loopback,1,0" "$C")
i=0
while [ "$n" -lt 2 ] && [ "$i" -lt 300 ] && running "$QEMU_PID"; do
    sleep 0.1
    i=$((i + 1))
    n=$(grep -c "event=alsa_open device=hw:Loopback,1,0" "$C")
done
[ "$n" -ge 2 ] || fail_because "edgecap was not started again ($n alsa_open lines)"
verdict "edgecap killed inside the guest is restarted by the supervisor" "$C"

monitor dev system_powerdown || fail_because "no QEMU monitor"
wait_exit "$QEMU_PID" 60 || fail_because "the board did not power off within 60 s"
want_fixed "$C" "edgecap-power: power button: shutting down"
want_re "$C" "event=stopped"
want_fixed "$C" "edgecap-shutdown: partitions synced"
want_no_re "$C" "did not stop within"
verdict "the power button (system_powerdown) stops edgecap cleanly, syncs and powers off" "$C"

# ---- 7: a broken provisioning file: said on the console, nothing uploaded --
sed 's/^rate_hz = 16000$/rate_hz = 44100/' "$PROV/edgecap.conf" >"$T/bad.conf"
sed -i 's/^id = img-0001$/id = img-0002/' "$T/bad.conf"
boot bad "$T/bad.conf" ""
B=$T/bad.console
wait_for_log "$B" "edgecap-supervise: provisioning file /etc/edgecap/edgecap.conf rejected" "$QEMU_PID" 120 ||
    fail_because "the board did not reject the broken provisioning file"
want_re "$B" "/etc/edgecap/edgecap.conf:[0-9]+: \[capture\] rate_hz: "
want_no_re "$B" "event=(alsa_open|segment_uploaded)"
"$PEERS" readback "$P" --container audio >"$T/readback2.json" 2>/dev/null
want_no_re "$T/readback2.json" "img-0002"
verdict "a broken provisioning file: the board logs FILE:LINE and the key, starts nothing, uploads nothing" "$B"
kill -KILL "$QEMU_PID" 2>/dev/null
wait "$QEMU_PID" 2>/dev/null

# ---- 8-9: an unprovisioned board, and a board whose clock is behind ---------
# (side by side: both only boot and wait)
sed 's/^id = img-0001$/id = img-0003/' "$PROV/edgecap.conf" >"$PROV/edgecap.conf.new"
mv "$PROV/edgecap.conf.new" "$PROV/edgecap.conf"
boot empty ""
EMPTY_PID=$QEMU_PID
boot past "$PROV" "" --rtc-base 2020-01-01T00:00:00
PAST_PID=$QEMU_PID
E=$T/empty.console
wait_for_log "$E" "edgecap-supervise: no provisioning file \(/etc/edgecap/edgecap.conf\): nothing is captured or uploaded" \
    "$EMPTY_PID" 120 || fail_because "the unprovisioned board did not say so"
want_no_re "$E" "event="
verdict "an unprovisioned board (empty EC-PROV, as built) says so and starts nothing" "$E"

PC=$T/past.console
wait_for_log "$PC" "edgecap-supervise: clock 2020-01-01T[0-9:]+Z is before the build date [0-9T:-]+Z: not starting" \
    "$PAST_PID" 120 || fail_because "the board with its clock in 2020 did not refuse"
want_no_re "$PC" "event="
"$PEERS" readback "$P" --container audio >"$T/readback3.json" 2>/dev/null
want_no_re "$T/readback3.json" "img-0003"
verdict "a board whose clock is before the build date refuses to capture or upload" "$PC"

finish
