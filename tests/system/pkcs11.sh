#!/bin/bash
# The PKCS#11 key store ([device] keystore = pkcs11) against a real token:
# SoftHSM2 from Debian, its token directory in this test's scratch directory
# (SOFTHSM2_CONF), never the system one. The spool KEK is created on the token
# as a non-extractable AES-256 key (opensc's pkcs11-tool cannot read it out),
# segments are sealed and unwrapped on the token, tampering is quarantined,
# and the daemon uploads through the nginx/Azurite peers. A wrong PIN, a
# missing module, token or key are clear errors that never show the PIN.
#
# The module is a native shared object: under qemu-user (board builds) the
# binary cannot load it, so everything is skipped there; under valgrind only
# the token checks run, not the peers.
. "$(dirname "$0")/lib/tap.sh"

plan 8

MODULE=/usr/lib/softhsm/libsofthsm2.so
if ! is_native && [ -n "$EC_QEMU" ]; then
    for ((i = 0; i < TAP_PLANNED; i++)); do
        skip "pkcs11" "SoftHSM2 is a native module; $ARCH under qemu-user cannot load it"
    done
    finish
fi

export SOFTHSM2_CONF=$T/softhsm2.conf
mkdir -p "$T/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$T" \
    >"$SOFTHSM2_CONF"
PIN=$(new_secret pin-)
SO_PIN=$(new_secret so-)
TOKEN=edgecap-sys
(umask 077 && printf '%s\n' "$PIN" >"$T/pin" && printf 'wrong-%s\n' "$PIN" >"$T/wrong-pin")
softhsm2-util --init-token --free --label "$TOKEN" --pin "$PIN" --so-pin "$SO_PIN" \
    >"$T/init.log" 2>&1 || { diag_file "$T/init.log"; exit 1; }
p11() { pkcs11-tool --module "$MODULE" --token-label "$TOKEN" "$@"; }

sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth 6 sine 300-600 vol 0.5

# A provisioning file with the token key store; the peers' values when they run.
pkcs11_config() { # FILE SPOOL [EXTRA-PKCS11-LINES]
    (
        umask 077
        cat >"$1" <<CONF
[device]
id = p11-0001
require_mlock = off
keystore = pkcs11
keystore_dir = $T/keys-unused

[capture]
source = file
file = $T/tone.wav
segment_seconds = 3

[spool]
dir = $2

[upload]
endpoint = ${BLOB_ENDPOINT:-https://devstoreaccount1.blob.core.windows.net}
container = audio
connect_to = ${CONNECT_TO:-devstoreaccount1.blob.core.windows.net:443:127.0.0.1:9}
retry_base_ms = 10
retry_max_ms = 200

[tls]
ca_file = ${CA_FILE:-$T/ca.pem}
client_cert = ${CLIENT_CERT:-$T/client.pem}
client_key = ${CLIENT_KEY:-$T/client.key}
pin_current = ${SERVER_PIN:-sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=}
allowed_hosts = ${BLOB_HOST:-devstoreaccount1.blob.core.windows.net}

[auth]
mode = sas
sas_token_file = $T/sas

[logging]
audit_file = $T/audit.log

[pkcs11]
module = $MODULE
token_label = $TOKEN
pin_file = $T/pin
${3:-}
CONF
    )
}

segments() { # CONFIG
    "$EDGECAP" spool ls --config "$1" 2>/dev/null | awk '$NF == "closed" {print $1}'
}

(umask 077 && echo "sv=2021-08-06&sig=placeholder" >"$T/sas")

# ---- 1: the KEK is made on the token, non-extractable; segments sealed with it
C1=$T/c1.conf
pkcs11_config "$C1" "$T/spool1"
ec capture --config "$C1" --seconds 6
want_rc 0
want_err_re 'event=kek_created backend=pkcs11 label=edgecap-kek'
[ -e "$T/keys-unused" ] && fail_because "the file key store was created"
mapfile -t S1 < <(segments "$C1")
[ "${#S1[@]}" -eq 2 ] || fail_because "${#S1[@]} segments, expected 2"
p11 --login --pin "$PIN" --list-objects --type secrkey >"$T/objects" 2>&1
want_fixed "$T/objects" 'label:      edgecap-kek'
want_re "$T/objects" 'Access: +sensitive, always sensitive, never extractable'
want_no_secret "$PIN" "$OUT" "$ERR"
verdict "capture: the KEK is created on the token (sensitive, never extractable), 2 segments" \
    "$ERR" "$T/objects"

# ---- 2: nothing reads the KEK out ---------------------------------------------
REASONS=()
if p11 --login --pin "$PIN" --read-object --type secrkey --label edgecap-kek \
    --output-file "$T/kek.out" >"$T/read.log" 2>&1; then
    fail_because "pkcs11-tool read the KEK out"
fi
[ -s "$T/kek.out" ] && fail_because "pkcs11-tool wrote KEK bytes"
want_re "$T/read.log" 'CKR_ATTRIBUTE_SENSITIVE|sensitive|not extractable|error'
ec capture --config "$C1" --seconds 3
want_rc 0
want_no_re "$ERR" 'kek_created'
n=$(p11 --login --pin "$PIN" --list-objects --type secrkey 2>/dev/null | grep -c 'label: *edgecap-kek')
[ "$n" -eq 1 ] || fail_because "$n KEKs on the token after a second start"
verdict "pkcs11-tool --read-object cannot export the KEK; a second start reuses it" "$T/read.log" \
    "$ERR"

# ---- 3: segments open on the token; a flipped wrapped key is quarantined -----
REASONS=()
mapfile -t S1 < <(segments "$C1")
# the wrapped key's ciphertext: header offset 28 + nonce 12
printf '\x01' | dd of="$T/spool1/${S1[0]}.seg" bs=1 seek=45 conv=notrunc status=none
ec spool verify --config "$C1"
want_rc 0
want_err_re "event=segment_quarantined segment=${S1[0]}.seg reason=\"header does not authenticate\""
want_out_re "verified $((${#S1[@]} - 1)) segments: $((${#S1[@]} - 1)) authentic, 0 failed"
[ -f "$T/spool1/quarantine/${S1[0]}.seg" ] || fail_because "the tampered segment is not in quarantine/"
want_no_secret "$PIN" "$OUT" "$ERR"
verdict "spool verify: segments unwrap on the token; a flipped bit in a wrapped key is quarantined"

# ---- 4-7: negative cases --------------------------------------------------------
negative() { # DESCRIPTION SED-EXPRESSION RC ERR-REGEX
    local f=$T/neg.conf
    REASONS=()
    pkcs11_config "$f" "$T/spool-neg"
    sed -i "$2" "$f"
    ec capture --config "$f" --seconds 1
    want_rc "$3"
    want_err_re "$4"
    want_no_secret "$PIN" "$OUT" "$ERR"
    verdict "$1"
}
negative "a wrong PIN: refused (77), the PIN not shown" "s|^pin_file = .*|pin_file = $T/wrong-pin|" 77 \
    'event=pkcs11_login_refused reason="the token refused the PIN" pkcs11_error=CKR_PIN_INCORRECT'
negative "a missing module: clear error (69)" "s|^module = .*|module = $T/no-such-pkcs11.so|" 69 \
    "event=pkcs11_module_unloadable module=$T/no-such-pkcs11.so"
negative "a missing token label: clear error (69)" "s|^token_label = .*|token_label = no-such-token|" 69 \
    'event=pkcs11_token_not_found token_label=no-such-token'
p11 --login --pin "$PIN" --keygen --key-type GENERIC:32 --label not-aes >"$T/keygen.log" 2>&1 ||
    diag_file "$T/keygen.log"
negative "a KEK label that is not an AES key: refused (74)" \
    "s|^pin_file = .*|&\nkek_label = not-aes|" 74 'event=pkcs11_object_refused label=not-aes'

# ---- 8: upload through the peers with the token key store ----------------------
if ! is_native; then
    skip "upload with the token key store" "peers run natively only (valgrind: token checks only)"
    finish
fi
start_peers
SAS=$("$PEERS" container "$P" audio)
(umask 077 && printf '%s\n' "$SAS" >"$T/sas")
C8=$T/c8.conf
pkcs11_config "$C8" "$T/spool8"
ec capture --config "$C8" --seconds 6
mapfile -t S8 < <(segments "$C8")
ec upload-once --config "$C8"
want_rc 0
want_out_re "^uploaded ${#S8[@]} segments "
[ -z "$(segments "$C8")" ] || fail_because "the spool is not empty"
"$PEERS" readback "$P" --container audio >"$T/readback.json" 2>"$T/readback.err" ||
    fail_because "readback failed"
for name in "${S8[@]}"; do
    ts=${name#p11-0001-}
    blob="edgecap/p11-0001/${ts:0:4}/${ts:4:2}/${ts:6:2}/$name.ogg"
    "$PEERS" readback "$P" --container audio --cat "$blob" >"$T/got.ogg" 2>/dev/null
    opusinfo "$T/got.ogg" >/dev/null 2>&1 || fail_because "$blob is not Ogg Opus"
done
want_re "$ACCESS_LOG" '"client_verify":"SUCCESS"'
want_no_secret "$PIN" "$OUT" "$ERR"
verdict "upload-once: ${#S8[@]} segments sealed under the token's KEK, stored as Ogg Opus"

finish
