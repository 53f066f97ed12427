# shellcheck shell=bash
# What an emulated field board (toolchain/qemu-run.sh) is provisioned with,
# shared by tests/system/image.sh and toolchain/bench-image.sh: an
# edgecap.conf for a board that captures hw:Loopback,1,0 (16 kHz mono, 2 s
# segments, VAD) and uploads to the peers' Blob front (tests/peers/peers.sh,
# whose peers.env must be sourced) through connect_to, and the TLS files it
# names beside it.

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
