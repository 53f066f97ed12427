#!/bin/bash
# `make demo`: the whole job on one machine. It starts the local peers
# (Azurite behind nginx as the private endpoint, certificates generated now,
# free loopback ports), provisions a demo device in a temporary directory
# (client key and certificate, server pin, SAS token; the provisioning file
# mode 600), synthesises speech and captures it through ALSA (alsa-lib's
# file-backed PCM: this machine has no sound card), encodes, seals and spools
# it, uploads it over pinned mutual TLS, reads the blobs back with the
# official @azure/storage-blob SDK, decodes them with opusdec, shows that the
# spool is empty, prints a summary and stops every peer by PID.
#
#   toolchain/demo.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/x86_64}
EDGECAP=$PWD/$BUILD/edgecap
PEERS=$PWD/tests/peers/peers.sh
DEMO=$(mktemp -d "${TMPDIR:-/tmp}/edgecap-demo.XXXXXX")
chmod 700 "$DEMO"
cleanup() {
    "$PEERS" stop "$DEMO/peers" >/dev/null 2>&1 || true
    rm -rf "$DEMO"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

say "edgecap and the libraries it runs on"
"$EDGECAP" version

say "the shipped example provisioning file validates"
"$EDGECAP" check-config config/edgecap.conf.example | head -n 1

say "peers: Azurite behind nginx (client certificate required, device fingerprint pinned)"
"$PEERS" start "$DEMO/peers" >"$DEMO/peers.log" 2>&1 || {
    tail -n 20 "$DEMO/peers.log"
    exit 1
}
# shellcheck source=/dev/null
. "$DEMO/peers/peers.env"
SAS=$("$PEERS" container "$DEMO/peers" audio)
echo "nginx 127.0.0.1:$NGINX_PORT (pid $NGINX_PID) -> Azurite 127.0.0.1:$AZURITE_PORT (pid $AZURITE_PID)"
echo "device reaches $BLOB_HOST through connect_to; server pin $SERVER_PIN"

say "a demo device: $DEMO/edgecap.conf (mode 600: it holds the SAS token)"
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
endpoint = $BLOB_ENDPOINT
container = audio
connect_to = $CONNECT_TO
connect_to = $CONNECT_TO_SPEECH
connect_to = $CONNECT_TO_LOGIN
encryption_scope = demoscope
index_tags = on

[tls]
ca_file = $CA_FILE
client_cert = $CLIENT_CERT
client_key = $CLIENT_KEY
pin_current = $SERVER_PIN
allowed_hosts = $BLOB_HOST, $SPEECH_HOST, $LOGIN_HOST

[auth]
mode = sas
sas_token = $SAS
; Speech takes Entra ID: a client assertion signed with the device key
tenant_id = $TENANT_ID
client_id = $CLIENT_ID
assertion_alg = ES256

[speech]
batch = on
endpoint = $SPEECH_ENDPOINT
time_to_live_hours = 12

[logging]
audit_file = $DEMO/audit/audit.log
CONF
"$EDGECAP" check-config "$DEMO/edgecap.conf" | grep -E '^(# |id |device |endpoint |connect_to |pin_current |sas_token )'
echo "pin of the server certificate, as the device computes it: $("$EDGECAP" pin "$SERVER_CERT")"

say "speech (espeak-ng, 16 kHz mono) played through an ALSA file PCM"
espeak-ng -w "$DEMO/speech.wav" "This is the edgecap demo. Audio is captured, encoded as Opus, \
sealed in memory with AES 256 GCM, spooled encrypted, and uploaded over pinned mutual TLS. \
The device deletes it only after the storage service proves it holds exactly these bytes." \
    2>/dev/null
sox -q "$DEMO/speech.wav" -r 16000 -c 1 -b 16 -e signed-integer -t raw "$DEMO/speech.raw"
seconds=$(($(stat -c %s "$DEMO/speech.raw") / 32000))
head -c 64000 /dev/zero >>"$DEMO/speech.raw" # alsa's file PCM repeats stale bytes past the end
cat >"$DEMO/asound.conf" <<ALSA
pcm.demo_file { type file slave.pcm { type null } file "/dev/null" infile "$DEMO/speech.raw" format "raw" }
pcm.demo_mic { type plug slave { pcm "demo_file" channels 1 rate 16000 format S16_LE } }
ALSA
export ALSA_CONFIG_PATH=$DEMO/asound.conf

say "edgecap capture --seconds $seconds"
"$EDGECAP" capture --config "$DEMO/edgecap.conf" --seconds "$seconds" 2>"$DEMO/capture.log"
"$EDGECAP" spool ls --config "$DEMO/edgecap.conf" 2>/dev/null
"$EDGECAP" spool verify --config "$DEMO/edgecap.conf" 2>/dev/null
sealed=$(grep -c 'event=segment_sealed' "$DEMO/capture.log")

say "no plaintext on disk"
hits=0
for f in "$DEMO"/spool/*.seg "$DEMO"/keys/*; do
    if grep -qaE 'OggS|OpusHead|RIFF' "$f"; then
        echo "PLAINTEXT in $f"
        hits=$((hits + 1))
    fi
done
echo "$sealed sealed segments and the key store scanned: $hits with Ogg/Opus/RIFF markers"

say "edgecap upload-once (the daemon's uploader, once)"
"$EDGECAP" upload-once --config "$DEMO/edgecap.conf" 2>"$DEMO/upload.log"
awk '/event=segment_uploaded/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) }
    printf "  %s  %s bytes  md5 %s  %s %s  wiped=%s\n", f["blob"], f["bytes"], f["content_md5"],
        f["tls_version"], f["tls_cipher"], f["wiped"] }' "$DEMO/upload.log"

say "the spool afterwards"
"$EDGECAP" spool ls --config "$DEMO/edgecap.conf" 2>/dev/null | tail -n 1

say "read back with @azure/storage-blob, decoded with opusdec"
"$PEERS" readback "$DEMO/peers" --container audio >"$DEMO/readback.json"
decoded=0
total_bytes=0
while read -r blob size; do
    "$PEERS" readback "$DEMO/peers" --container audio --cat "$blob" >"$DEMO/blob.ogg"
    opusdec --quiet "$DEMO/blob.ogg" "$DEMO/blob.wav" 2>/dev/null
    printf '  %-72s %7d bytes  %s\n' "$blob" "$size" "$(soxi -d "$DEMO/blob.wav") decoded"
    decoded=$((decoded + 1))
    total_bytes=$((total_bytes + size))
done < <(sed -E 's/.*"name":"([^"]+)","size":([0-9]+).*/\1 \2/' "$DEMO/readback.json")
grep -oE '"metadata":\{[^}]*\}' "$DEMO/readback.json" | head -n 1 | sed 's/^/  first blob /'

say "batch transcription (BYOS): edgecap speech submit-now, followed to Succeeded"
for _ in $(seq 15); do
    "$EDGECAP" speech submit-now --config "$DEMO/edgecap.conf" >"$DEMO/jobs.txt" 2>>"$DEMO/speech.log"
    grep -qE 'state=(Submitting|NotStarted|Running|Failed)' "$DEMO/jobs.txt" || break
    sleep 1
done
sed 's/^/  /' "$DEMO/jobs.txt"
job_blobs=$(sed -n 's/.* state=Succeeded .* blobs=\([0-9]*\) .*/\1/p' "$DEMO/jobs.txt" | head -n 1)

say "audit trail ($DEMO/audit/audit.log)"
head -n 1 "$DEMO/audit/audit.log" | cut -c1-200

say "what happened"
acked=$(grep -c '"event":"segment_acknowledged"' "$DEMO/audit/audit.log")
wiped=$(grep -c '"wiped":true' "$DEMO/audit/audit.log")
left=$(find "$DEMO/spool" -maxdepth 1 -name '*.seg*' | wc -l)
if grep -qF "$SAS" "$DEMO"/*.log; then
    echo "FAIL: the SAS token reached a log"
    exit 1
fi
echo "segments: $sealed sealed, $acked acknowledged, $wiped wiped, $left left in the spool"
echo "blobs:    $decoded read back and decoded, $total_bytes bytes"
echo "speech:   one batch job for ${job_blobs:-0} blobs, Succeeded (Entra ID token from a device-signed assertion)"
echo "secrets:  the SAS token appears in no log"
[ "$hits" -eq 0 ] && [ "$sealed" -gt 0 ] && [ "$acked" -eq "$sealed" ] && [ "$wiped" -eq "$sealed" ] &&
    [ "$left" -eq 0 ] && [ "$decoded" -eq "$sealed" ] && [ "${job_blobs:-0}" -eq "$sealed" ] || {
    echo "FAIL: the numbers above do not add up"
    exit 1
}
echo "peers stopped by PID on exit."
