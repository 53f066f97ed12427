#!/bin/bash
# The PKCS#11 key store ([device] keystore = pkcs11) against a real token:
# SoftHSM2 from Debian, its token directory in this test's scratch directory
# (SOFTHSM2_CONF), never the system one. The spool KEK is created on the token
# as a non-extractable AES-256 key (opensc's pkcs11-tool cannot read it out),
# segments are sealed and unwrapped on the token, tampering is quarantined.
# The device's EC P-256 key is generated on the token by `edgecap provision
# init` (C_GenerateKeyPair; pkcs11-tool, from outside, sees it sensitive and
# never extractable), whose CSR it signs through the token; the device CA
# signs the CSR, `provision install-cert` installs the certificate and nginx
# admits it: the daemon uploads through the nginx/Azurite peers with the
# token signing the TLS handshake, and the token's ES256 client assertion
# verifies with PyJWT. A second init is refused with the token unchanged. A
# wrong PIN, a missing module, token or key, a certificate that is not the
# token key's, are clear errors that never show the PIN. `wipe --all`
# destroys the device key pair and the KEK on the token (C_DestroyObject;
# pkcs11-tool then lists no object under either label; a token that refuses,
# its directory mounted read-only, is reported with exit 74) and mints no KEK
# when run again.
#
# The module is a native shared object: under qemu-user (board builds) the
# binary cannot load it, so everything is skipped there; under valgrind only
# the token checks run, not the peers.
. "$(dirname "$0")/lib/tap.sh"

plan 24

TOOL=${TOOL:-$BUILD/results/tool-run}

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

# A config whose device key is the token's: client_cert is the token key's
# certificate, no client_key.
token_config() { # FILE SPOOL [CERT]
    pkcs11_config "$1" "$2" "key_label = edgecap-device"
    sed -i -e "s|^client_cert = .*|client_cert = ${3:-$T/device.pem}|" -e '/^client_key = /d' "$1"
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
flip_byte "$T/spool1/${S1[0]}.seg" 45
ec spool verify --config "$C1"
want_rc 0
want_err_re "event=segment_quarantined segment=${S1[0]}.seg reason=\"header does not authenticate\""
want_out_re "verified $((${#S1[@]} - 1)) segments: $((${#S1[@]} - 1)) authentic, 0 failed"
[ -f "$T/spool1/quarantine/${S1[0]}.seg" ] || fail_because "the tampered segment is not in quarantine/"
want_no_secret "$PIN" "$OUT" "$ERR"
verdict "spool verify: segments unwrap on the token; a flipped bit in a wrapped key is quarantined"

# ---- 4-8: negative cases --------------------------------------------------------
negative() { # DESCRIPTION SED-EXPRESSION RC ERR-REGEX WHY
    local f=$T/neg.conf
    REASONS=()
    pkcs11_config "$f" "$T/spool-neg"
    sed -i "$2" "$f"
    ec capture --config "$f" --seconds 1
    want_rc "$3"
    want_err_re "$4"
    want_err_re "^edgecap: cannot open the PKCS#11 key store \(token \"[^\"]+\" through /[^)]+\): $5\$"
    want_no_secret "$PIN" "$OUT" "$ERR"
    verdict "$1"
}
negative "a wrong PIN: refused (77), the PIN not shown" "s|^pin_file = .*|pin_file = $T/wrong-pin|" 77 \
    'event=pkcs11_login_refused reason="the token refused the PIN" pkcs11_error=CKR_PIN_INCORRECT' \
    "credentials refused"
negative "a missing module: clear error (69)" "s|^module = .*|module = $T/no-such-pkcs11.so|" 69 \
    "event=pkcs11_module_unloadable module=$T/no-such-pkcs11.so" "not found"
negative "a missing token label: clear error (69)" "s|^token_label = .*|token_label = no-such-token|" 69 \
    'event=pkcs11_token_not_found token_label=no-such-token' "not found"
negative "a missing key label: clear error (69)" \
    "s|^pin_file = .*|&\nkey_label = no-such-key|; /^client_key = /d" 69 \
    'event=pkcs11_key_not_found key_label=no-such-key reason="no private key with this label on the token"' \
    "not found"
p11 --login --pin "$PIN" --keygen --key-type GENERIC:32 --label not-aes >>"$T/keygen.log" 2>&1 ||
    diag_file "$T/keygen.log"
negative "a KEK label that is not an AES key: refused (74)" \
    "s|^pin_file = .*|&\nkek_label = not-aes|" 74 \
    'event=pkcs11_object_refused label=not-aes reason="it is not an AES key"' "cryptographic failure"

# ---- 9-12: provision init makes the device key on the token ----------------------
REASONS=()
CI=$T/init.conf
token_config "$CI" "$T/spool-init"
ec provision show --config "$CI"
want_rc 66
want_out_re '^key: no device key at label "edgecap-device" on token "edgecap-sys" \(run edgecap provision init first\)$'
ec provision init --config "$CI"
want_rc 0
want_out_re '^device key: label "edgecap-device" on token "edgecap-sys" \(ec-p256, generated on the token, not extractable, key store pkcs11\)$'
want_out_re "^csr: $T/device\.csr \(subject O=edgecap, CN=p11-0001\)$"
want_err_re 'event=identity_key_created backend=pkcs11 key_label=edgecap-device type=ec-p256'
openssl req -in "$T/device.csr" -verify -noout >/dev/null 2>&1 ||
    fail_because "openssl req -verify refuses the CSR the token signed"
DEVICE_PIN=$(openssl req -in "$T/device.csr" -pubkey -noout | openssl pkey -pubin -outform DER |
    openssl dgst -sha256 -binary | base64 | sed 's|^|sha256//|')
want_out_re "^pin: ${DEVICE_PIN//+/\\+}$"
want_re "$T/audit.log" "\"event\":\"provision_init\".*\"key_type\":\"ec-p256\".*\"pin\":\"${DEVICE_PIN//+/\\+}\""
# the public half pkcs11-tool reads from the token is the CSR's key
p11 --read-object --type pubkey --label edgecap-device --output-file "$T/device-pub.der" \
    >"$T/readpub.log" 2>&1 || fail_because "no public key object edgecap-device"
[ "$(openssl pkey -pubin -inform DER -in "$T/device-pub.der" -outform DER 2>/dev/null |
    openssl dgst -sha256 -binary | base64 | sed 's|^|sha256//|')" = "$DEVICE_PIN" ] ||
    fail_because "the token's public key is not the CSR's"
want_no_secret "$PIN" "$OUT" "$ERR" "$T/audit.log"
ec provision show --config "$CI"
want_rc 66
want_out_re "^key: label \"edgecap-device\" on token \"edgecap-sys\" \(ec-p256\), pin ${DEVICE_PIN//+/\\+}$"
verdict "provision init: EC P-256 key pair made on the token (none before), CSR signed by it (openssl verifies), pin printed, audited, shown" \
    "$OUT" "$ERR"

REASONS=()
p11 --login --pin "$PIN" --list-objects >"$T/objects-before" 2>/dev/null
csr_hash=$(sha256sum <"$T/device.csr")
ec provision init --config "$CI"
want_rc 73
want_err_fixed 'edgecap provision init: a device key already exists at label "edgecap-device" on token "edgecap-sys"; it is left as it is (init never replaces a key)'
p11 --login --pin "$PIN" --list-objects >"$T/objects-after" 2>/dev/null
cmp -s "$T/objects-before" "$T/objects-after" || fail_because "the token's objects changed"
[ "$(sha256sum <"$T/device.csr")" = "$csr_hash" ] || fail_because "the CSR changed"
want_no_secret "$PIN" "$OUT" "$ERR"
verdict "provision init again: refused (73), the token's objects and the CSR unchanged" "$ERR"

# RSA 3072 on the token (SoftHSM's prime search takes minutes under valgrind)
CR=$T/rsa.conf
token_config "$CR" "$T/spool-rsa" "$T/device-rsa.pem"
sed -i 's|^key_label = .*|key_label = edgecap-rsa|' "$CR"
if is_native; then
    REASONS=()
    ec provision init --config "$CR" --key-type rsa-3072
    want_rc 0
    want_out_re '^device key: label "edgecap-rsa" on token "edgecap-sys" \(rsa-3072, generated on the token, not extractable, key store pkcs11\)$'
    want_out_re "^csr: $T/device-rsa\.csr "
    openssl req -in "$T/device-rsa.csr" -verify -noout -text >"$T/rsa-csr.txt" 2>&1 ||
        fail_because "openssl req -verify refuses the RSA CSR the token signed"
    want_fixed "$T/rsa-csr.txt" 'Public-Key: (3072 bit)'
    want_fixed "$T/rsa-csr.txt" 'Exponent: 65537 (0x10001)'
    want_fixed "$T/rsa-csr.txt" 'Signature Algorithm: sha256WithRSAEncryption'
    p11 --login --pin "$PIN" --list-objects --type privkey >"$T/rsa-priv" 2>&1
    want_re "$T/rsa-priv" 'Private Key Object; RSA'
    grep -A4 'label: *edgecap-rsa' "$T/rsa-priv" | grep -qE 'Access: +sensitive, always sensitive, never extractable' ||
        fail_because "the RSA key is not sensitive and never extractable"
    want_no_secret "$PIN" "$OUT" "$ERR"
    verdict "provision init --key-type rsa-3072: the RSA key pair is made on the token (never extractable), CSR verified" \
        "$OUT" "$ERR" "$T/rsa-csr.txt"
else
    skip "provision init --key-type rsa-3072 on the token" "natively only (RSA key generation)"
fi
p11 --login --pin "$PIN" --list-objects >"$T/objects-before" 2>/dev/null

REASONS=()
sed "s|^pin_file = .*|pin_file = $T/wrong-pin|; s|^key_label = .*|key_label = edgecap-other|" \
    "$CI" >"$T/wrong.conf"
ec provision init --config "$T/wrong.conf"
want_rc 77
want_err_re "^edgecap: cannot open the PKCS#11 key store \(token \"edgecap-sys\" through $MODULE\): credentials refused$"
want_err_re 'event=pkcs11_login_refused reason="the token refused the PIN" pkcs11_error=CKR_PIN_INCORRECT'
want_no_secret "$PIN" "$OUT" "$ERR"
p11 --login --pin "$PIN" --list-objects >"$T/objects-after" 2>/dev/null
cmp -s "$T/objects-before" "$T/objects-after" || fail_because "the token's objects changed"
# the token key store without [pkcs11] key_label: the device key would be a file
csr_hash=$(sha256sum <"$T/device.csr")
files_before=$(ls -A "$T")
ec provision init --config "$C1"
want_rc 78
want_err_fixed 'edgecap provision init: the pkcs11 key store makes the device key on the token: set [pkcs11] key_label (and remove [tls] client_key)'
[ -e "$T/client.key" ] && fail_because "a key file was made"
[ "$(ls -A "$T")" = "$files_before" ] || fail_because "files were made or removed in $T (a CSR?)"
[ "$(sha256sum <"$T/device.csr")" = "$csr_hash" ] || fail_because "the CSR changed"
p11 --login --pin "$PIN" --list-objects >"$T/objects-after" 2>/dev/null
cmp -s "$T/objects-before" "$T/objects-after" || fail_because "the token's objects changed"
verdict "provision init refused: a wrong PIN (77, the PIN not shown), no [pkcs11] key_label (78); nothing created, the CSR and the token's objects unchanged" "$ERR"

# ---- 13: the device key stays in the token --------------------------------------
REASONS=()
p11 --login --pin "$PIN" --list-objects --type privkey >"$T/privkeys" 2>&1
want_fixed "$T/privkeys" 'label:      edgecap-device'
want_re "$T/privkeys" 'Access: +sensitive, always sensitive, never extractable'
p11 --login --pin "$PIN" --read-object --type privkey --label edgecap-device \
    --output-file "$T/priv.out" >"$T/read-priv.log" 2>&1
[ -s "$T/priv.out" ] && fail_because "pkcs11-tool wrote private key bytes"
verdict "the device key is on the token: sensitive, never extractable, nothing read out" \
    "$T/privkeys" "$T/read-priv.log"

# ---- 14-21: with the peers ------------------------------------------------------
if ! is_native; then
    for ((i = TAP_N; i < TAP_PLANNED; i++)); do
        skip "peers and PyJWT with the token" "natively only (valgrind: the token checks above)"
    done
    finish
fi
start_peers
SAS=$("$PEERS" container "$P" audio)
(umask 077 && printf '%s\n' "$SAS" >"$T/sas")
# The device CA signs the CSR init wrote; install-cert installs the
# certificate (it checks it against the token's key); nginx admits it.
REASONS=()
PEERS_CADIR=$P/pki/device-ca.db PEERS_SAN=DNS:unused openssl x509 -req -in "$T/device.csr" \
    -CA "$DEVICE_CA" -CAkey "$P/pki/device-ca.key" -days 2 -extfile "$P/pki/openssl.cnf" \
    -extensions client -out "$T/signed.pem" >"$T/x509.log" 2>&1 ||
    { diag_file "$T/x509.log"; exit 1; }
sed -i "s|^ca_file = .*|&\nclient_ca_file = $DEVICE_CA|" "$CI"
ec provision install-cert --config "$CI" "$T/signed.pem"
want_rc 0
want_out_re "^installed $T/signed\.pem as $T/device\.pem$"
want_out_re "^  pin: ${DEVICE_PIN//+/\\+}$"
ec provision show --config "$CI"
want_rc 0
want_out_re '^key: label "edgecap-device" on token "edgecap-sys" \(ec-p256\) matches the certificate$'
want_no_secret "$PIN" "$OUT" "$ERR"
verdict "install-cert: the device CA's certificate for the token's CSR is installed; show: the key matches" \
    "$OUT" "$ERR"
TOKEN_CLIENT_ID=$("$PEERS" admit "$P" "$T/device.pem" 2>"$T/admit.log") ||
    { diag_file "$T/admit.log"; exit 1; }
# shellcheck source=/dev/null
. "$P/peers.env"
DEVICE_FP=$(openssl x509 -in "$T/device.pem" -noout -fingerprint -sha1 | sed 's/^.*=//; s/://g' |
    tr 'A-F' 'a-f')

C10=$T/c10.conf
token_config "$C10" "$T/spool10"
ec capture --config "$C10" --seconds 6
mapfile -t S10 < <(segments "$C10")
ec upload-once --config "$C10"
want_rc 0
want_out_re "^uploaded ${#S10[@]} segments "
[ "${#S10[@]}" -eq 2 ] || fail_because "${#S10[@]} segments, expected 2"
[ -z "$(segments "$C10")" ] || fail_because "the spool is not empty"
for name in "${S10[@]}"; do
    ts=${name#p11-0001-}
    blob="edgecap/p11-0001/${ts:0:4}/${ts:4:2}/${ts:6:2}/$name.ogg"
    "$PEERS" readback "$P" --container audio --cat "$blob" >"$T/got.ogg" 2>/dev/null
    opusinfo "$T/got.ogg" >/dev/null 2>&1 || fail_because "$blob is not Ogg Opus"
done
want_re "$ACCESS_LOG" "\"method\":\"PUT\".*\"client_verify\":\"SUCCESS\",\"client_fp\":\"$DEVICE_FP\""
want_no_secret "$PIN" "$OUT" "$ERR"
verdict "upload-once: KEK and TLS client key (made by provision init) in the token; nginx verified its certificate" \
    "$ERR" "$OUT"

# The certificate nginx would admit (CLIENT_CERT), but not the token key's.
REASONS=()
token_config "$T/c11.conf" "$T/spool11" "$CLIENT_CERT"
before=$(grep -c '"method":"PUT"' "$ACCESS_LOG")
ec upload-once --config "$T/c11.conf"
want_rc 78
want_err_re "event=delivery_unavailable .*the token's device key \(\[pkcs11\] key_label = edgecap-device\): the token's key does not belong to the device certificate"
[ "$(grep -c '"method":"PUT"' "$ACCESS_LOG")" -eq "$before" ] || fail_because "a PUT reached the peer"
want_no_secret "$PIN" "$OUT" "$ERR"
token_config "$T/c11.conf" "$T/spool11" "$RSA_CLIENT_CERT"
ec upload-once --config "$T/c11.conf"
want_rc 78
want_err_re "event=delivery_unavailable .*: the device certificate's key is not EC P-256 \(the token key is\)"
[ "$(grep -c '"method":"PUT"' "$ACCESS_LOG")" -eq "$before" ] || fail_because "a PUT reached the peer"
verdict "a client certificate that is not the token key's (EC, RSA): refused before any connection"

# ---- 17-18: the client assertion signed by the token ------------------------------
PY=/usr/bin/python3
AUD=https://login.microsoftonline.com/$TENANT_ID/oauth2/v2.0/token
cat >"$T/verify.py" <<'PY'
import base64, sys
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
cert = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
token = open(sys.argv[2]).read().strip()
thumb = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
header = jwt.get_unverified_header(token)
if header != {"alg": "ES256", "typ": "JWT", "x5t#S256": thumb}:
    sys.exit("header %r" % header)
claims = jwt.decode(token, cert.public_key(), algorithms=["ES256"], audience=sys.argv[4],
                    issuer=sys.argv[3], options={"require": ["aud", "iss", "sub", "jti", "exp"]})
print("verified ES256", claims["jti"])
PY
token_assertion() { # ALG OUT ERR
    EC_P11_MODULE=$MODULE EC_P11_TOKEN=$TOKEN EC_P11_KEY_LABEL=edgecap-device \
        EC_P11_PIN_FILE=$T/pin "$TOOL" jwt_assert "$1" "$T/device.pem" pkcs11 "$CLIENT_ID" \
        "$AUD" "$(date +%s)" 300 >"$2" 2>"$3"
}

REASONS=()
token_assertion ES256 "$T/token.jwt" "$T/jwt.err" || fail_because "jwt_assert exited $?"
"$PY" "$T/verify.py" "$T/device.pem" "$T/token.jwt" "$CLIENT_ID" "$AUD" >"$T/pyjwt.out" 2>&1 ||
    fail_because "PyJWT refused the token's assertion"
# and the same check refuses another key's signature
"$PY" "$T/verify.py" "$CLIENT_CERT" "$T/token.jwt" "$CLIENT_ID" "$AUD" >"$T/pyjwt-other.out" 2>&1 &&
    fail_because "PyJWT accepted the assertion under another certificate"
want_no_secret "$PIN" "$T/jwt.err" "$T/token.jwt"
verdict "PyJWT verifies the ES256 assertion the token signed (header, x5t#S256, claims)" \
    "$T/jwt.err" "$T/pyjwt.out"

REASONS=()
token_assertion PS256 "$T/ps.jwt" "$T/ps.err"
rc=$?
[ "$rc" -eq 65 ] || fail_because "jwt_assert PS256 exited $rc, expected 65"
want_fixed "$T/ps.err" "the token's device key is EC P-256: set [auth] assertion_alg = ES256"
[ -s "$T/ps.jwt" ] && fail_because "a PS256 assertion was printed"
verdict "PS256 with the token's EC key: refused with the reason" "$T/ps.err"

# ---- 19-20: the daemon's Entra ID assertion, signed by the token -------------------
# [auth] mode = entra: the Speech peer's token endpoint verifies the ES256
# assertion (jose) against the token key's certificate, registered as
# TOKEN_CLIENT_ID; Azurite takes the bearer token.
entra_token_config() { # FILE SPOOL ALG
    token_config "$1" "$2"
    sed -i -e "s|^connect_to = .*|&\nconnect_to = $CONNECT_TO_LOGIN|" \
        -e "s|^allowed_hosts = .*|&, $LOGIN_HOST|" -e '/^sas_token_file = /d' \
        -e "s|^mode = sas|mode = entra\ntenant_id = $TENANT_ID\nclient_id = $TOKEN_CLIENT_ID\nassertion_alg = $3|" \
        "$1"
}
REASONS=()
entra_token_config "$T/c14.conf" "$T/spool14" ES256
ec capture --config "$T/c14.conf" --seconds 3
ec upload-once --config "$T/c14.conf"
want_rc 0
want_out_re "^uploaded 1 segments "
"$PEERS" speech "$P" '/requests?op=token' >"$T/tokens.json" 2>&1 || fail_because "no token records"
for want in '"alg":"ES256"' '"x5t_match":true' '"result":"issued"' \
    "\"client_id\":\"$TOKEN_CLIENT_ID\""; do
    grep -qF -- "$want" "$T/tokens.json" || fail_because "the token request lacks $want"
done
want_re "$ACCESS_LOG" '"method":"PUT".*"auth_scheme":"Bearer"'
want_no_secret "$PIN" "$OUT" "$ERR"
verdict "upload-once with [auth] mode = entra: the token's ES256 assertion is accepted, bearer upload" \
    "$ERR" "$T/tokens.json"

REASONS=()
entra_token_config "$T/c15.conf" "$T/spool15" PS256
ec capture --config "$T/c15.conf" --seconds 3
ec upload-once --config "$T/c15.conf"
want_rc 78
want_err_re "event=delivery_unavailable .*the token's device key is EC P-256: set \[auth\] assertion_alg = ES256"
verdict "[auth] assertion_alg = PS256 with the token's EC key: refused with the reason"

# ---- 21: the daemon with the token key, through a reload ---------------------------
# A reload whose client_cert is not the token key's is refused (the running
# delivery stays); the right one is accepted, and the daemon uploads with it.
REASONS=()
C16=$T/c16.conf
token_config "$C16" "$T/spool16"
LOG=$T/daemon16.log
start_bg "$LOG" run --config "$C16"
pid=$DAEMON_PID
wait_for_log "$LOG" 'event=segment_uploaded' "$pid" ||
    fail_because "no segment uploaded by the running daemon"
sed -i "s|^client_cert = .*|client_cert = $CLIENT_CERT|" "$C16"
kill -HUP "$pid"
wait_for_log "$LOG" 'event=reload_refused' "$pid" || fail_because "no reload_refused"
want_re "$LOG" "event=reload_refused reason=\"the token's device key \(\[pkcs11\] key_label = edgecap-device\): the token's key does not belong to the device certificate\""
sed -i "s|^client_cert = .*|client_cert = $T/device.pem|" "$C16"
kill -HUP "$pid"
wait_for_log "$LOG" 'event=reload_accepted' "$pid" || fail_because "no reload_accepted"
kill -TERM "$pid"
wait_exit "$pid" || fail_because "the daemon did not stop"
want_no_secret "$PIN" "$LOG" "$LOG.out"
verdict "run: uploads with the token key; a reload to a certificate not the token key's is refused" \
    "$LOG"

# ---- 22: TLS 1.2 client authentication with the token's RSA key ------------------
# CertificateVerify is PKCS#1 v1.5, signed by C_Sign(CKM_RSA_PKCS) over the
# DigestInfo. A client assertion cannot be signed with it (PS256 would need
# PSS on the token): refused with the reason.
REASONS=()
PEERS_CADIR=$P/pki/device-ca.db PEERS_SAN=DNS:unused openssl x509 -req -in "$T/device-rsa.csr" \
    -CA "$DEVICE_CA" -CAkey "$P/pki/device-ca.key" -days 2 -extfile "$P/pki/openssl.cnf" \
    -extensions client -out "$T/signed-rsa.pem" >"$T/x509.log" 2>&1 ||
    fail_because "openssl x509 -req failed: $(tail -n 3 "$T/x509.log")"
# the peers' values now
token_config "$CR" "$T/spool-rsa" "$T/device-rsa.pem"
sed -i -e 's|^key_label = .*|key_label = edgecap-rsa|' \
    -e "s|^ca_file = .*|&\nclient_ca_file = $DEVICE_CA|" "$CR"
ec provision install-cert --config "$CR" "$T/signed-rsa.pem"
want_rc 0
"$PEERS" admit "$P" "$T/device-rsa.pem" >/dev/null 2>"$T/admit.log" ||
    fail_because "peers.sh admit failed: $(cat "$T/admit.log")"
RSA_FP=$(openssl x509 -in "$T/device-rsa.pem" -noout -fingerprint -sha1 | sed 's/^.*=//; s/://g' |
    tr 'A-F' 'a-f')
ec capture --config "$CR" --seconds 3
ec upload-once --config "$CR"
want_rc 0
want_out_re "^uploaded 1 segments "
want_re "$ACCESS_LOG" "\"method\":\"PUT\".*\"client_verify\":\"SUCCESS\",\"client_fp\":\"$RSA_FP\""
want_no_secret "$PIN" "$OUT" "$ERR"
sed -e "s|^connect_to = .*|&\nconnect_to = $CONNECT_TO_LOGIN|" -e "s|^allowed_hosts = .*|&, $LOGIN_HOST|" \
    -e '/^sas_token_file = /d' \
    -e "s|^mode = sas|mode = entra\ntenant_id = $TENANT_ID\nclient_id = $TOKEN_CLIENT_ID\nassertion_alg = PS256|" \
    "$CR" >"$T/rsa-entra.conf"
ec upload-once --config "$T/rsa-entra.conf"
want_rc 78
want_err_re "event=delivery_unavailable .*the token's device key is RSA: a client assertion signed on the token needs an EC P-256 key \(ES256\)"
verdict "upload-once with the token's RSA 3072 key (made by provision init): nginx verified its certificate; assertions refused" \
    "$ERR" "$OUT"

# ---- 23-24: wipe --all destroys the device key and the KEK on the token -----------
# A token of its own, so the checks above keep theirs.
REASONS=()
softhsm2-util --init-token --free --label edgecap-wipe --pin "$PIN" --so-pin "$SO_PIN" \
    >>"$T/init.log" 2>&1 || fail_because "softhsm2-util --init-token edgecap-wipe failed"
CW=$T/wipe.conf
pkcs11_config "$CW" "$T/spool-wipe" "key_label = wipe-device"
sed -i -e "s|^token_label = .*|token_label = edgecap-wipe|" -e '/^client_key = /d' \
    -e "s|^client_cert = .*|client_cert = $T/wipe.pem|" "$CW"
ec provision init --config "$CW" --csr "$T/wipe.csr"
want_rc 0
wp11() { pkcs11-tool --module "$MODULE" --token-label edgecap-wipe --login --pin "$PIN" --list-objects; }
wp11 >"$T/wipe-before" 2>&1
want_fixed "$T/wipe-before" 'label:      wipe-device'
want_fixed "$T/wipe-before" 'label:      edgecap-kek'
verdict "provision init on a token for the wipe: its device key and KEK are there" "$OUT" "$ERR"

# ---- 24: a token that refuses, then wipe --all --------------------------------------
# The token directory mounted read-only (a mount namespace, root only):
# SoftHSM logs in but C_DestroyObject fails; wipe says so for the KEK and the
# device key, exits 74, and the objects are still there.
REASONS=()
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
    timeout "$EC_CMD_TIMEOUT_S" unshare -m sh -c \
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"' \
        sh "$T/tokens" "$EDGECAP" wipe --config "$CW" --all >"$OUT" 2>"$ERR" </dev/null
    RC=$?
    want_rc 74
    want_err_fixed "edgecap wipe: cannot destroy the KEK in token edgecap-wipe: input/output error"
    want_err_fixed "edgecap wipe: cannot destroy the device key wipe-device on token edgecap-wipe: input/output error"
    want_err_fixed "edgecap wipe: incomplete: see the log above"
    want_err_re 'event=pkcs11_failed operation="destroy the KEK \(C_DestroyObject\)"'
    want_re "$T/audit.log" '"event":"wipe_device_key","key":"wipe-device on token edgecap-wipe","result":"failed"'
    wp11 >"$T/wipe-refused" 2>&1
    want_fixed "$T/wipe-refused" 'label:      wipe-device'
    want_fixed "$T/wipe-refused" 'label:      edgecap-kek'
    want_no_secret "$PIN" "$OUT" "$ERR"
fi
(umask 077 && mkdir -p "$T/spool-wipe")
printf '{"pending":["edgecap/p11-0001/x.ogg"]}' >"$T/spool-wipe/speech-jobs.json"
ec wipe --config "$CW" --all
want_rc 0
want_out_re '^KEK [0-9a-f]{32} destroyed \(object edgecap-kek on token edgecap-wipe\)$'
want_out_re '^destroyed: device key wipe-device on token edgecap-wipe \(private and public key objects\)$'
want_no_re "$OUT" '^kept: certificate' # none was installed
want_out_re "^speech job state $T/spool-wipe/speech-jobs.json: overwritten and removed \(38 bytes\)$"
want_re "$T/audit.log" '"event":"wipe_device_key","key":"wipe-device on token edgecap-wipe","result":"destroyed"'
want_re "$T/audit.log" '"event":"wipe_finished",.*"complete":true'
wp11 >"$T/wipe-after" 2>&1
grep -qE 'label: +(wipe-device|edgecap-kek)$' "$T/wipe-after" &&
    fail_because "an object under wipe-device or edgecap-kek is left on the token"
[ -e "$T/spool-wipe/speech-jobs.json" ] && fail_because "the speech job state is left"
ec wipe --config "$CW" --all
want_rc 0
want_out_re '^KEK: none in token edgecap-wipe \(already destroyed\?\)$'
want_out_re '^device key: none under wipe-device on token edgecap-wipe \(already destroyed\?\)$'
wp11 >"$T/wipe-again" 2>&1
grep -qE 'label: +edgecap-kek$' "$T/wipe-again" && fail_because "a second wipe minted a KEK"
want_no_secret "$PIN" "$OUT" "$ERR" "$T/audit.log"
verdict "wipe --all: a token that refuses C_DestroyObject is reported (74)$( [ "$(id -u)" = 0 ] || echo ': not checked without root'); then the device key pair and the KEK destroyed on the token (pkcs11-tool lists neither), job state shredded, said and audited; a second wipe mints no KEK" \
    "$OUT" "$ERR" "$T/wipe-after"

finish
