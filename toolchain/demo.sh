#!/bin/bash
# `make demo`: what a field engineer sees on a new device, end to end as far
# as edgecap goes today. It validates the shipped example provisioning file,
# provisions a demo device in a temporary directory (mode 600: it holds a SAS
# token), synthesises a short spoken WAV, captures it through ALSA (alsa-lib's
# file-backed PCM: this machine has no sound card), encodes, seals and spools
# it, lists and verifies the spool, shows that no plaintext reached the disk,
# and runs the daemon until SIGTERM. Uploading to local peers comes with the
# upload issue.
#
#   toolchain/demo.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/x86_64}
EDGECAP=$PWD/$BUILD/edgecap
DEMO=$(mktemp -d "${TMPDIR:-/tmp}/edgecap-demo.XXXXXX")
trap 'rm -rf "$DEMO"' EXIT
chmod 700 "$DEMO"

say() { printf '\n== %s\n' "$*"; }

say "edgecap and the libraries it runs on"
"$EDGECAP" version

say "the shipped example provisioning file validates"
"$EDGECAP" check-config config/edgecap.conf.example | head -n 1

say "a demo device: $DEMO/edgecap.conf"
TOKEN="sv=2025-11-05&sr=c&sp=cw&se=2027-01-01T00:00:00Z&sig=demo$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
umask 077
cat >"$DEMO/edgecap.conf" <<CONF
[device]
id = demo-0001
require_mlock = off
keystore_dir = $DEMO/keys
tags = site=demo

[capture]
source = alsa
device = demo_mic
rate_hz = 16000
channels = 1
segment_seconds = 4

[spool]
dir = $DEMO/spool

[upload]
target = blob
endpoint = https://edgecapdemo.blob.core.windows.net
container = audio
connect_to = edgecapdemo.blob.core.windows.net:443:127.0.0.1:8443

[tls]
ca_file = $DEMO/ca.pem
client_cert = $DEMO/client.pem
client_key = $DEMO/client.key
pin_current = sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
allowed_hosts = edgecapdemo.blob.core.windows.net

[auth]
mode = sas
sas_token = $TOKEN
CONF
"$EDGECAP" check-config "$DEMO/edgecap.conf" | grep -E '^(# |id |source |device |sas_token |endpoint )'

say "a broken copy is refused with file:line and the key (exit 78)"
sed 's/^container = audio$/container = Audio_Files/' "$DEMO/edgecap.conf" >"$DEMO/broken.conf"
rc=0
"$EDGECAP" check-config "$DEMO/broken.conf" >/dev/null || rc=$?
echo "exit status $rc"

say "speech to capture (espeak-ng, 16 kHz mono), played through an ALSA file PCM"
espeak-ng -w "$DEMO/speech.wav" "This is the edgecap demo. Audio is captured, encoded as Opus, \
sealed in memory with AES 256 GCM, and spooled encrypted until the server acknowledges it." \
    2>/dev/null
sox -q "$DEMO/speech.wav" -r 16000 -c 1 -b 16 -e signed-integer -t raw "$DEMO/speech.raw"
seconds=$(($(stat -c %s "$DEMO/speech.raw") / 32000))
head -c 64000 /dev/zero >>"$DEMO/speech.raw" # alsa's file PCM repeats stale bytes past the end
cat >"$DEMO/asound.conf" <<ALSA
pcm.demo_file { type file slave.pcm { type null } file "/dev/null" infile "$DEMO/speech.raw" format "raw" }
pcm.demo_mic { type plug slave { pcm "demo_file" channels 1 rate 16000 format S16_LE } }
ALSA
export ALSA_CONFIG_PATH=$DEMO/asound.conf
echo "$seconds s of speech"

say "edgecap capture --seconds $seconds"
"$EDGECAP" capture --config "$DEMO/edgecap.conf" --seconds "$seconds" 2>"$DEMO/capture.log"
grep -oE 'event=(kek_created|alsa_open|segment_sealed|capture_stopped).*' "$DEMO/capture.log" |
    cut -c1-150

say "edgecap spool ls"
"$EDGECAP" spool ls --config "$DEMO/edgecap.conf" 2>/dev/null

say "edgecap spool verify"
"$EDGECAP" spool verify --config "$DEMO/edgecap.conf" 2>/dev/null

say "no plaintext on disk"
hits=0
for f in "$DEMO"/spool/*.seg "$DEMO"/keys/*; do
    if grep -qaE 'OggS|OpusHead|RIFF' "$f"; then
        echo "PLAINTEXT in $f"
        hits=$((hits + 1))
    fi
done
echo "$(ls "$DEMO"/spool/*.seg | wc -l) sealed segments and the key store scanned: $hits with Ogg/Opus/RIFF markers"

say "the daemon: run, then SIGTERM"
"$EDGECAP" run --config "$DEMO/edgecap.conf" 2>"$DEMO/daemon.log" &
pid=$!
for _ in $(seq 1 100); do
    grep -q 'event=segment_sealed' "$DEMO/daemon.log" && break
    sleep 0.1
done
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
grep -oE 'event=(ready|segment_sealed|stopping|capture_stopped|stopped).*' "$DEMO/daemon.log" |
    cut -c1-150
echo "daemon exit status $rc"

say "what happened"
if grep -qF "$TOKEN" "$DEMO"/*.log; then
    echo "FAIL: the SAS token reached a log"
    exit 1
fi
[ "$hits" -eq 0 ] || exit 1
echo "provisioned, captured ${seconds} s through ALSA, sealed and verified every segment;"
echo "no plaintext on disk, the SAS token never logged; the daemon started and stopped cleanly."
