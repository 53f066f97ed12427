#!/bin/bash
# Device identity (issue 6 item 1, file key store): `edgecap provision init`
# makes the key pair (0600, never replaced) and a CSR that openssl verifies;
# the peers' device CA (openssl ca, keys made at test time by peers.sh) signs
# it; `provision install-cert` installs it only after its checks and
# `provision show` reports it; the device then uploads to the real nginx +
# Azurite peer with that certificate. Every refused certificate (another key,
# another CA, expired, serverAuth only, garbage) leaves the installed one byte
# for byte as it was, with the reason asserted. RSA 3072 (slow to generate
# under valgrind and qemu) and the upload (the peers take long to start there)
# run natively and under ASan only; under valgrind only the core checks run.
. "$(dirname "$0")/lib/tap.sh"

plan 16

# Natively (and under ASan) the real peers run: their device CA signs and
# nginx takes the upload. Under valgrind and qemu, where every run is slow,
# peers.sh's own PKI functions make the device CA here, nothing is started,
# and the upload (shown natively) is skipped.
if is_native; then
    start_peers
    SAS=$("$PEERS" container "$P" audio)
else
    # shellcheck source=/dev/null
    . "$EC_SRCDIR/tests/peers/peers.sh"
    P=$T/peers
    if ! (
        umask 077
        mkdir -p "$P/pki"
        export PEERS_CADIR=$P/pki PEERS_SAN=DNS:unused
        peers__openssl_cnf "$P/pki/openssl.cnf" &&
            peers__ca "$P/pki" device-ca "edgecap test device CA" &&
            peers__leaf "$P/pki" device-ca other-client "$P/pki/other-client.key" \
                edgecap-other-device client DNS:unused -86400 2592000
    ) >"$T/pki.log" 2>&1; then
        diag_file "$T/pki.log"
        while [ "$TAP_N" -lt "$TAP_PLANNED" ]; do not_ok "test PKI made"; done
        finish
    fi
    DEVICE_CA=$P/pki/device-ca.pem CA_FILE=$P/pki/device-ca.pem
    OTHER_CLIENT_CERT=$P/pki/other-client.pem
    BLOB_HOST=devstoreaccount1.blob.core.windows.net
    BLOB_ENDPOINT=https://$BLOB_HOST CONNECT_TO=$BLOB_HOST:443:127.0.0.1:9
    SERVER_PIN=sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
    SAS='sv=2025-01-05&sig=unused'
fi
D=$T/dev
mkdir -p "$D" && chmod 700 "$D"
sox -q -n -r 16000 -c 1 -b 16 "$T/tone.wav" synth 2 sine 300

# A provisioning file whose identity lives in $D: KEY and CERT names.
provision_config() { # FILE KEY CERT
    (
        umask 077
        cat >"$1" <<CONF
[device]
id = prov-0001
require_mlock = off
keystore_dir = $T/keys

[capture]
source = file
file = $T/tone.wav
segment_seconds = 2

[spool]
dir = $T/spool

[upload]
endpoint = $BLOB_ENDPOINT
container = audio
connect_to = $CONNECT_TO
retry_base_ms = 10
retry_max_ms = 200

[tls]
ca_file = $CA_FILE
client_ca_file = $DEVICE_CA
client_cert = $D/$3
client_key = $D/$2
pin_current = $SERVER_PIN
allowed_hosts = $BLOB_HOST

[auth]
mode = sas
sas_token = $SAS

[logging]
audit_file = $T/audit.log
CONF
    )
}

# UTC time SECONDS from now in the form openssl ca takes.
when() { date -u -d "@$(($(date +%s) + $1))" +%Y%m%d%H%M%SZ; }

# Has CA (a peers CA: device-ca) sign CSR into OUT, valid from START to END
# seconds from now, with the peers' openssl.cnf EXT section (client, server).
sign() { # CSR OUT CA START END EXT
    PEERS_CADIR=$P/pki/$3.db PEERS_SAN=DNS:unused openssl ca -batch -notext -preserveDN \
        -config "$P/pki/openssl.cnf" -cert "$P/pki/$3.pem" -keyfile "$P/pki/$3.key" \
        -in "$1" -out "$2" -rand_serial -startdate "$(when "$4")" -enddate "$(when "$5")" \
        -extensions "$6" >>"$T/openssl.log" 2>&1 || fail_because "openssl ca failed: $(tail -n 3 "$T/openssl.log")"
}

spki_pin() { # CERT-or-CSR (x509 | req)
    openssl "$1" -in "$2" -pubkey -noout | openssl pkey -pubin -outform DER |
        openssl dgst -sha256 -binary | base64 | sed 's|^|sha256//|'
}

mode_of() { stat -c %a "$1"; }

# Under valgrind, where every edgecap run costs seconds, only the core paths
# run (init, init twice, install, show, one refusal); everything runs
# natively, under ASan and under qemu.
skip_n() { # N DESCRIPTION
    local i
    for ((i = 0; i < $1; i++)); do skip "$2" "valgrind: core checks only"; done
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

C=$T/prov.conf
provision_config "$C" client.key client.pem

# ---- 1: init ------------------------------------------------------------------
ec provision init --config "$C"
want_rc 0
want_out_re "^device key: $D/client\.key \(ec-p256, mode 0600, key store file\)$"
want_out_re "^csr: $D/client\.csr \(subject O=edgecap, CN=prov-0001\)$"
[ "$(mode_of "$D/client.key" 2>/dev/null)" = 600 ] || fail_because "key mode $(mode_of "$D/client.key")"
[ "$(mode_of "$T/keys/kek" 2>/dev/null)" = 600 ] || fail_because "no 0600 KEK in the key store"
openssl pkey -in "$D/client.key" -noout -check >/dev/null 2>&1 || fail_because "openssl cannot read the key"
openssl req -in "$D/client.csr" -verify -noout >/dev/null 2>&1 ||
    fail_because "openssl req -verify refuses the CSR"
subject=$(openssl req -in "$D/client.csr" -noout -subject 2>/dev/null)
[ "$subject" = "subject=O = edgecap, CN = prov-0001" ] || fail_because "CSR subject: $subject"
PIN=$(spki_pin req "$D/client.csr")
want_out_re "^pin: ${PIN//+/\\+}$"
KEK=$(sed -n 's/^kek id: \([0-9a-f]\{32\}\)$/\1/p' "$OUT")
[ -n "$KEK" ] || fail_because "no kek id printed"
# the private key appears nowhere but in its file
KEY_B64=$(grep -v -- '-----' "$D/client.key" | tr -d '\n')
want_no_secret "$KEY_B64" "$OUT" "$ERR" "$T/audit.log"
want_re "$T/audit.log" "\"event\":\"provision_init\".*\"key_type\":\"ec-p256\".*\"pin\":\"${PIN//+/\\+}\""
verdict "init: 0600 EC P-256 key, 0600 KEK, CSR verified by openssl with CN=device id, pin printed and audited"

# ---- 2: init never replaces a key ------------------------------------------------
key_hash=$(sha "$D/client.key") csr_hash=$(sha "$D/client.csr")
ec provision init --config "$C"
want_rc 73
want_err_fixed "edgecap provision init: a device key already exists at $D/client.key; it is left as it is (init never replaces a key)"
[ "$(sha "$D/client.key")" = "$key_hash" ] || fail_because "the key changed"
[ "$(sha "$D/client.csr")" = "$csr_hash" ] || fail_because "the CSR changed"
[ -z "$(find "$D" -name '*.tmp')" ] || fail_because "a temporary file was left"
verdict "init twice: refused, key and CSR byte-identical"

# ---- 3: show before a certificate is installed -------------------------------------
if full_run; then
    ec provision show --config "$C"
    want_rc 66
    want_out_re "^  none installed "
    want_out_re "^key: $D/client\.key \(ec-p256\), pin ${PIN//+/\\+}$"
    want_out_re "^kek id: $KEK \(key store file\)$"
    verdict "show without a certificate: says none installed, the key's pin and the KEK id (exit 66)"
else
    skip_n 1 "show without a certificate"
fi

# ---- 4: install the certificate the device CA signed ---------------------------------
sign "$D/client.csr" "$T/signed.pem" device-ca -3600 $((30 * 86400 - 3600)) client
ec provision install-cert --config "$C" "$T/signed.pem"
want_rc 0
want_out_re "^installed $T/signed\.pem as $D/client\.pem$"
[ "$(mode_of "$D/client.pem" 2>/dev/null)" = 644 ] || fail_because "cert mode $(mode_of "$D/client.pem")"
[ "$(spki_pin x509 "$D/client.pem" 2>/dev/null)" = "$PIN" ] || fail_because "the installed certificate is not the device key's"
SERIAL=$(openssl x509 -in "$T/signed.pem" -noout -serial | sed 's/^serial=//')
SERIAL_COLONS=$(echo "$SERIAL" | sed 's/../&:/g; s/:$//')
want_re "$T/audit.log" "\"event\":\"cert_installed\".*\"subject\":\"O=edgecap, CN=prov-0001\".*\"serial\":\"$SERIAL_COLONS\".*\"pin\":\"${PIN//+/\\+}\""
verdict "install-cert: the signed certificate is installed (0644) and audited with subject, serial and pin"

# ---- 5: show ------------------------------------------------------------------------
ec provision show --config "$C"
want_rc 0
want_out_re "^certificate: $D/client\.pem$"
want_out_re "^  subject: O=edgecap, CN=prov-0001$"
want_out_re "^  issuer: CN=edgecap test device CA, O=edgecap tests$"
want_out_re "^  serial: $SERIAL_COLONS$"
want_out_re "^  not after: $(openssl x509 -in "$T/signed.pem" -noout -enddate -dateopt iso_8601 |
    sed 's/^notAfter=//; s/ /T/; s/Z$//')Z \(expires in 29 days\)$"
want_out_re "^  pin: ${PIN//+/\\+}$"
want_out_re "^key: $D/client\.key \(ec-p256\) matches the certificate$"
want_out_re "^kek id: $KEK \(key store file\)$"
verdict "show: subject, issuer, serial, validity (expires in 29 days), pin, key match, KEK id"

# ---- 6: the device uploads with its new certificate ----------------------------------
if is_native; then
    "$PEERS" admit "$P" "$D/client.pem" >/dev/null 2>"$T/admit.err" ||
        fail_because "peers.sh admit failed: $(cat "$T/admit.err")"
    FP=$(openssl x509 -in "$D/client.pem" -noout -fingerprint -sha1 | sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f')
    ec capture --config "$C" --seconds 2
    ec upload-once --config "$C"
    want_rc 0
    want_out_re "^uploaded 1 segments "
    want_re "$ACCESS_LOG" "\"method\":\"PUT\".*\"status\":201.*\"client_verify\":\"SUCCESS\",\"client_fp\":\"$FP\""
    verdict "upload-once: nginx (device CA, admitted fingerprint) takes the segment over mTLS with the new certificate" \
        "$ERR" "$ACCESS_LOG"
else
    skip "upload with the new certificate" "natively and under ASan only (peers not started)"
fi

# ---- 7-11: refused certificates leave the installed one byte for byte ------------------
cp "$D/client.pem" "$T/installed.pem"
refused() { # CERT DESCRIPTION MESSAGE [EXIT]
    ec provision install-cert --config "$C" "$1"
    want_rc "${4:-65}"
    want_err_fixed "edgecap provision install-cert: refused: $3"
    want_err_re "; $D/client\.pem is unchanged$"
    cmp -s "$D/client.pem" "$T/installed.pem" || fail_because "the installed certificate changed"
    [ -z "$(find "$D" -name '*.tmp')" ] || fail_because "a temporary file was left"
    verdict "$2"
}

refused "$OTHER_CLIENT_CERT" "install-cert refuses a certificate for another key" \
    "the certificate is for another key (its pin $(spki_pin x509 "$OTHER_CLIENT_CERT"), the device key $D/client.key has $PIN)"

if full_run; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/other-ca.key" \
        -subj "/CN=provision test other CA" -days 2 -out "$T/other-ca.pem" >>"$T/openssl.log" 2>&1
    openssl x509 -req -in "$D/client.csr" -CA "$T/other-ca.pem" -CAkey "$T/other-ca.key" -days 5 \
        -out "$T/other-ca-signed.pem" >>"$T/openssl.log" 2>&1
    refused "$T/other-ca-signed.pem" "install-cert refuses the device key's certificate from another CA" \
        "the certificate does not chain to the device CA in [tls] client_ca_file ($DEVICE_CA); its issuer is CN=provision test other CA"

    sign "$D/client.csr" "$T/expired.pem" device-ca $((-30 * 86400)) -86400 client
    refused "$T/expired.pem" "install-cert refuses an expired certificate of the device key" \
        "the certificate expired on $(openssl x509 -in "$T/expired.pem" -noout -enddate -dateopt iso_8601 |
            sed 's/^notAfter=//; s/ /T/')"

    sign "$D/client.csr" "$T/server-only.pem" device-ca -3600 86400 server
    refused "$T/server-only.pem" "install-cert refuses a certificate whose EKU is serverAuth only" \
        "the certificate's extended key usage does not include TLS client authentication (clientAuth)"

    head -c 600 /dev/urandom | base64 >"$T/garbage.pem"
    refused "$T/garbage.pem" "install-cert refuses a garbage file" \
        "$T/garbage.pem is not a PEM or DER certificate"
else
    skip_n 4 "install-cert refusals: another CA, expired, serverAuth only, garbage"
fi

# ---- 12: the audit log ---------------------------------------------------------------
if full_run; then
    ec audit verify "$T/audit.log"
    want_rc 0
    n=$(grep -c '"event":"cert_install_refused"' "$T/audit.log")
    [ "$n" -eq 5 ] || fail_because "$n cert_install_refused lines, expected 5"
    want_no_secret "$KEY_B64" "$T/audit.log"
    verdict "audit: chain intact, init / install / 5 refusals recorded, no key material" "$T/audit.log"
else
    skip_n 1 "audit log after the refusals"
fi

# ---- 13: show spots a certificate that is not the key's (installed behind its back) ---
if full_run; then
    cp "$OTHER_CLIENT_CERT" "$D/client.pem"
    ec provision show --config "$C"
    want_rc 65
    want_out_re "^key: $D/client\.key \(ec-p256\) does NOT match the certificate \(key pin ${PIN//+/\\+}\)$"
    cp "$T/installed.pem" "$D/client.pem"
    verdict "show: a certificate for another key is reported (exit 65)"
else
    skip_n 1 "show with a certificate for another key"
fi

# ---- 14: usage errors ----------------------------------------------------------------
if full_run; then
    ec provision
    want_rc 64
    want_err_fixed "edgecap provision: expected init, show or install-cert"
    ec provision init
    want_rc 64
    want_err_fixed "edgecap provision init: --config FILE is required"
    ec provision install-cert --config "$C"
    want_rc 64
    want_err_fixed "edgecap provision install-cert: --config FILE and one CERT.pem is required"
    ec provision init --config "$C" --key-type dsa
    want_rc 64
    want_err_fixed "edgecap provision init: --key-type expects ec-p256 or rsa-3072, got 'dsa'"
    ec provision show --config "$C" --csr "$T/x.csr"
    want_rc 64
    want_err_fixed "edgecap provision show: --csr applies to init only"
    ec provision show --config "$C" --frobnicate
    want_rc 64
    want_err_fixed "edgecap provision show: unknown or incomplete option '--frobnicate'"
    ec provision --help
    want_rc 0
    want_out_re "^usage: edgecap provision init\|show\|install-cert --config FILE$"
    verdict "usage: missing subcommand, --config, CERT, bad --key-type, init-only options, unknown option"
else
    skip_n 1 "usage errors"
fi

# ---- 15: what is missing is named ------------------------------------------------------
if full_run; then
    ec provision install-cert --config "$C" "$T/nope.pem"
    want_rc 66
    want_err_fixed "edgecap provision install-cert: refused: cannot read $T/nope.pem: No such file or directory; $D/client.pem is unchanged"
    M=$T/missing.conf
    provision_config "$M" nokey.key nocert.pem
    ec provision install-cert --config "$M" "$T/signed.pem"
    want_rc 66
    want_err_fixed "refused: no device key at $D/nokey.key (run edgecap provision init first); $D/nocert.pem is unchanged"
    [ ! -e "$D/nocert.pem" ] || fail_because "a certificate was installed without a key"
    ec provision show --config "$M"
    want_rc 66
    want_out_re "^key: no device key at $D/nokey\.key \(run edgecap provision init first\)$"
    sed "s|^client_ca_file = .*|client_ca_file = $T/no-ca.pem|" "$C" >"$T/noca.conf"
    chmod 600 "$T/noca.conf"
    ec provision install-cert --config "$T/noca.conf" "$T/signed.pem"
    want_rc 78
    want_err_fixed "refused: cannot read the device CA [tls] client_ca_file ($T/no-ca.pem); $D/client.pem is unchanged"
    cmp -s "$D/client.pem" "$T/installed.pem" || fail_because "the installed certificate changed"
    sed "s|^client_key = .*|client_key = $T/nodir/dev.key|" "$C" >"$T/nodir.conf"
    chmod 600 "$T/nodir.conf"
    ec provision init --config "$T/nodir.conf"
    want_rc 74
    want_err_fixed "edgecap provision init: cannot write the CSR $T/nodir/dev.csr: No such file or directory"
    ec provision init --config "$T/nodir.conf" --csr "$T/nodir.csr"
    want_rc 73
    want_err_fixed "edgecap provision init: cannot create the device key $T/nodir/dev.key: not found"
    [ ! -e "$T/nodir.csr" ] || fail_because "a CSR was left without a key"
    sed "s|^audit_file = .*|audit_file = /proc/self/no-audit/audit.log|" "$M" >"$T/noaudit.conf"
    chmod 600 "$T/noaudit.conf"
    ec provision init --config "$T/noaudit.conf"
    want_rc 74
    want_err_fixed "edgecap provision init: cannot open the audit log /proc/self/no-audit/audit.log: "
    [ ! -e "$D/nokey.key" ] || fail_because "a key was made without an audit log"
    verdict "missing CERT, device key, device CA, key directory and audit log: each named, nothing changed"
else
    skip_n 1 "missing inputs named"
fi

# ---- 16: RSA 3072 (natively only: slow under valgrind and qemu) ------------------------
if is_native; then
    R=$T/rsa.conf
    provision_config "$R" rsa.key rsa.pem
    ec provision init --config "$R" --key-type rsa-3072 --csr "$T/rsa-request.pem"
    want_rc 0
    want_out_re "^device key: $D/rsa\.key \(rsa-3072, mode 0600, key store file\)$"
    openssl req -in "$T/rsa-request.pem" -verify -noout >/dev/null 2>&1 ||
        fail_because "openssl req -verify refuses the RSA CSR"
    openssl req -in "$T/rsa-request.pem" -noout -text 2>/dev/null | grep -q 'Public-Key: (3072 bit)' ||
        fail_because "the CSR's key is not RSA 3072"
    sign "$T/rsa-request.pem" "$T/rsa-signed.pem" device-ca -3600 86400 client
    ec provision install-cert --config "$R" "$T/rsa-signed.pem"
    want_rc 0
    ec provision show --config "$R"
    want_rc 0
    want_out_re "^key: $D/rsa\.key \(rsa-3072\) matches the certificate$"
    verdict "RSA 3072: init (--csr PATH), CSR verified, signed, installed, shown as matching"
else
    skip "RSA 3072 provisioning" "RSA key generation is slow under valgrind/qemu"
fi

finish
