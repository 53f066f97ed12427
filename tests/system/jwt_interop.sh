#!/bin/bash
# The client assertion (firmware/jwt) checked by other implementations: PyJWT
# (Debian's python3-jwt on python3-cryptography, whose PS256 insists on a
# 32-byte PSS salt) verifies PS256 and ES256 assertions made by
# tests/tools/jwt_assert with the certificate's public key, and checks the
# header (alg, typ, x5t#S256 against cryptography's own SHA-256 fingerprint)
# and every claim; openssl verifies the PS256 signature with the salt length
# pinned to 32. Keys and certificates are made here with openssl.
. "$(dirname "$0")/lib/tap.sh"

plan 6

TOOL=${TOOL:-$BUILD/results/tool-run}
# Debian's interpreter: the packages are installed for it, whatever python3
# comes first on PATH.
PY=/usr/bin/python3
CLIENT_ID=6731de76-14a6-49ae-97bc-6eba6914391e
AUD=https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token
LIFETIME_S=300

have_openssl=1
command -v openssl >/dev/null 2>&1 || have_openssl=0
have_pyjwt=1
"$PY" -c 'import jwt, cryptography' >/dev/null 2>&1 || have_pyjwt=0

if [ "$have_openssl" = 1 ]; then
    (
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/rsa.key" -out "$T/rsa.pem" \
            -subj "/CN=edgecap-jwt-interop" -days 2 &&
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -keyout "$T/ec.key" -out "$T/ec.pem" -subj "/CN=edgecap-jwt-interop" -days 2
    ) >"$T/openssl.log" 2>&1 || {
        diag_file "$T/openssl.log"
        have_openssl=0
    }
fi

# The verifier: header, signature, audience, issuer, times, jti.
cat >"$T/verify.py" <<'EOF'
import base64, sys, time, uuid
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

alg, cert_path, token_path, client_id, aud, lifetime = sys.argv[1:7]
cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
token = open(token_path).read().strip()
thumb = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
header = jwt.get_unverified_header(token)
want = {"alg": alg, "typ": "JWT", "x5t#S256": thumb}
if header != want:
    sys.exit("header %r, expected %r" % (header, want))
claims = jwt.decode(token, cert.public_key(), algorithms=[alg], audience=aud, issuer=client_id,
                    options={"require": ["aud", "iss", "sub", "jti", "nbf", "iat", "exp"]})
if set(claims) != {"aud", "iss", "sub", "jti", "nbf", "iat", "exp"}:
    sys.exit("claims %r" % sorted(claims))
if claims["sub"] != client_id:
    sys.exit("sub %r" % claims["sub"])
if not (claims["nbf"] == claims["iat"] and abs(claims["iat"] - time.time()) < 120):
    sys.exit("nbf/iat %r/%r" % (claims["nbf"], claims["iat"]))
if claims["exp"] - claims["iat"] != int(lifetime):
    sys.exit("exp %r" % claims["exp"])
if uuid.UUID(claims["jti"]).version != 4 or str(uuid.UUID(claims["jti"])) != claims["jti"]:
    sys.exit("jti %r" % claims["jti"])
print("verified", alg)
EOF

# assertion ALG NAME: makes $T/NAME.jwt with the key pair NAME.
assertion() {
    "$TOOL" jwt_assert "$1" "$T/$2.pem" "$T/$2.key" "$CLIENT_ID" "$AUD" "$(date +%s)" \
        "$LIFETIME_S" >"$T/$2.jwt" 2>"$T/$2.err" || fail_because "jwt_assert $1 exited $?"
}

for pair in PS256:rsa ES256:ec; do
    alg=${pair%%:*} name=${pair#*:}
    desc="PyJWT verifies a $alg assertion: header, x5t#S256, signature, every claim"
    if [ "$have_openssl" = 0 ]; then
        skip "$desc" "openssl not available"
    elif [ "$have_pyjwt" = 0 ]; then
        skip "$desc" "$PY cannot import jwt (toolchain/install-deps.sh tools)"
    else
        REASONS=()
        assertion "$alg" "$name"
        if [ "${#REASONS[@]}" -eq 0 ] &&
            ! "$PY" "$T/verify.py" "$alg" "$T/$name.pem" "$T/$name.jwt" "$CLIENT_ID" "$AUD" \
                "$LIFETIME_S" >"$T/$name.py" 2>&1; then
            fail_because "PyJWT refused the $alg assertion"
        fi
        verdict "$desc" "$T/$name.err" "$T/$name.py"
    fi
done

# openssl, told the salt length, on the PS256 signing input and signature.
desc="openssl verifies the PS256 signature with a 32-byte salt, and not with 20 or max"
if [ "$have_openssl" = 0 ] || [ ! -s "$T/rsa.jwt" ]; then
    skip "$desc" "openssl or the PS256 assertion not available"
else
    REASONS=()
    token=$(cat "$T/rsa.jwt")
    printf '%s' "${token%.*}" >"$T/input"
    sig=${token##*.}
    sig=$(printf '%s' "$sig" | tr '_-' '/+')
    while [ $((${#sig} % 4)) -ne 0 ]; do sig="$sig="; done
    printf '%s' "$sig" | openssl base64 -d -A >"$T/sig"
    openssl x509 -in "$T/rsa.pem" -pubkey -noout >"$T/rsa.pub"
    pss_verify() { # SALTLEN
        openssl dgst -sha256 -verify "$T/rsa.pub" -sigopt rsa_padding_mode:pss \
            -sigopt rsa_pss_saltlen:"$1" -sigopt rsa_mgf1_md:sha256 -signature "$T/sig" \
            "$T/input" >>"$T/dgst.out" 2>&1
    }
    pss_verify 32 || fail_because "openssl refused the signature with salt length 32"
    pss_verify 20 && fail_because "openssl accepted salt length 20"
    pss_verify max && fail_because "openssl accepted the maximum salt length"
    verdict "$desc" "$T/dgst.out"
fi

desc="PyJWT refuses the assertion once a claim is changed"
if [ "$have_openssl" = 0 ] || [ "$have_pyjwt" = 0 ] || [ ! -s "$T/ec.jwt" ]; then
    skip "$desc" "openssl, PyJWT or the ES256 assertion not available"
else
    REASONS=()
    # Re-encode the claims with a longer lifetime; keep header and signature.
    "$PY" - "$T/ec.jwt" >"$T/forged.jwt" 2>"$T/forge.err" <<'EOF'
import base64, json, sys
h, c, s = open(sys.argv[1]).read().strip().split(".")
claims = json.loads(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)))
claims["exp"] += 3600
c = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=")
print(".".join([h, c.decode(), s]))
EOF
    if "$PY" "$T/verify.py" ES256 "$T/ec.pem" "$T/forged.jwt" "$CLIENT_ID" "$AUD" \
        $((LIFETIME_S + 3600)) >"$T/forged.py" 2>&1; then
        fail_because "PyJWT accepted a forged assertion"
    fi
    grep -q 'InvalidSignatureError\|Signature verification failed' "$T/forged.py" ||
        fail_because "refused, but not for its signature"
    verdict "$desc" "$T/forged.py" "$T/forge.err"
fi

desc="jwt_assert refuses an RSA key for ES256 and says why"
if [ "$have_openssl" = 0 ]; then
    skip "$desc" "openssl not available"
else
    REASONS=()
    "$TOOL" jwt_assert ES256 "$T/rsa.pem" "$T/rsa.key" "$CLIENT_ID" "$AUD" "$(date +%s)" \
        "$LIFETIME_S" >"$T/wrong.out" 2>"$T/wrong.err"
    rc=$?
    [ "$rc" -eq 65 ] || fail_because "exit status $rc, expected 65"
    want_fixed "$T/wrong.err" "ES256 needs an EC key on P-256; the private key is an RSA key"
    want_empty "$T/wrong.out"
    verdict "$desc" "$T/wrong.err"
fi

desc="jwt_assert refuses a lifetime of 601 s"
if [ "$have_openssl" = 0 ]; then
    skip "$desc" "openssl not available"
else
    REASONS=()
    "$TOOL" jwt_assert ES256 "$T/ec.pem" "$T/ec.key" "$CLIENT_ID" "$AUD" "$(date +%s)" 601 \
        >"$T/long.out" 2>"$T/long.err"
    rc=$?
    [ "$rc" -eq 70 ] || fail_because "exit status $rc, expected 70"
    want_fixed "$T/long.err" "signing: invalid argument"
    want_empty "$T/long.out"
    verdict "$desc" "$T/long.err"
fi

finish
