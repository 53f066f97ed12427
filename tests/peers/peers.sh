#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions are reached through the CLI dispatch
# shellcheck disable=SC2030,SC2031  # the peers_* commands run in subshells on purpose
#
# The real peers of edgecap's upload tests and of `make demo`: Azurite (the
# Azure Storage emulator, from tests/peers/node_modules) and the Speech +
# Entra ID token peer (speech/server.js, checked against speech/contract.json)
# behind nginx acting as the private endpoint, with every key and certificate
# generated at run time, on free loopback ports, every process recorded and
# stopped by PID.
#
#   device --TLS1.2+, client cert--> nginx 127.0.0.1:NGINX_PORT --TLS--> Azurite 127.0.0.1:AZURITE_PORT
#            (connect_to: devstoreaccount1.blob.core.windows.net:443 -> 127.0.0.1:NGINX_PORT)
#                                        \--HTTP--> speech/server.js 127.0.0.1:SPEECH_PORT
#            (connect_to: edgecap-speech.cognitiveservices.azure.com:443 and
#             login.microsoftonline.com:443 -> 127.0.0.1:NGINX_PORT)
#
# nginx picks the upstream by Host: the Speech and login hosts go to the
# Speech peer (with X-Edgecap-Client-FP, -TLS, -Front headers added), every
# other host to Azurite. Fault fronts (below) do the same, so a fault applies
# to Speech traffic too (their injected bodies are Azure Storage XML).
#
# Azurite authorises a request by shared key, SAS (account or service) or,
# since it runs with --oauth basic (HTTPS only), an Entra bearer token. Its
# "basic" check (dist/src/blob/authentication/BlobTokenAuthenticator.js)
# decodes the JWT without verifying the signature, the tenant or the scope,
# and wants: iat, nbf and exp present and nbf <= now <= exp (no skew); iss
# starting https://sts.windows.net/ (or the sovereign clouds' sts hosts); aud
# exactly https://storage.azure.com[/], the storage app id
# e406a681-f3d4-42a8-90b6-c2b029497af1 or https://ACCOUNT.blob.core.windows.net[/]
# of this account. The Speech peer's token endpoint issues such tokens for
# https://storage.azure.com/.default (setting storage_token_mode makes them
# expired, wrong_aud or wrong_iss). Azurite refuses a token with 403
# AuthenticationFailed (its AuthenticationErrorDetail says why); Azure Storage
# answers 401 InvalidAuthenticationInfo with a challenge for x-ms-version
# 2019-12-12 and later, so every front answers for Azurite there: a Bearer
# request to Azurite with such a version whose answer is 403
# AuthenticationFailed gets 401, x-ms-error-code InvalidAuthenticationInfo,
# Azurite's x-ms-request-id and
#   WWW-Authenticate: Bearer authorization_uri=https://login.microsoftonline.com/TENANT_ID/oauth2/authorize resource_id=https://storage.azure.com
# (Azurite's body, with its reason, is not kept; the access log has
# upstream_status 403 and upstream_error_code AuthenticationFailed.) Any other
# 403 to a Bearer request keeps its status and x-ms-error-code. Nothing else
# is changed: SAS and shared-key requests, and older versions, get Azurite's
# own answers.
#
# Use it as a command, or source it and call the peers_* functions (each runs
# in a subshell, so it never exits or changes the caller's shell):
#
#   peers.sh start DIR              peers_start DIR
#       Makes DIR (absolute or relative; no blanks), generates the PKI in
#       DIR/pki, starts Azurite, the Speech peer and nginx, waits until all
#       answer (bounded poll, PEERS_WAIT_S, default 60 s) and writes
#       DIR/peers.env. On failure it stops what it started, prints the last
#       log lines, exits non-zero.
#   peers.sh stop DIR               peers_stop DIR
#       Stops every process recorded in DIR/run/*.pid (nginx, the Speech peer,
#       Azurite, fault servers): TERM, bounded wait, then KILL. Removes only
#       the pid files.
#   peers.sh container DIR NAME [PERMS [HOURS]]
#       Creates container NAME on Azurite when missing; prints a container SAS
#       (default permissions "rcwt": HEAD, Put Blob, Put Block (List), tags;
#       valid from 15 min ago for HOURS, default 24; https only).
#   peers.sh sas DIR NAME [PERMS [HOURS]]
#       The same SAS without creating anything.
#   peers.sh readback DIR --container NAME [--prefix P] [--out-dir D] [--no-tags]
#   peers.sh readback DIR --container NAME --cat BLOB
#       Runs readback.js (see there): one JSON line per blob, or the bytes.
#   peers.sh fault DIR KIND [ARG...]  peers_fault DIR KIND [ARG...]
#       Starts one more nginx front on its own free port in front of the same
#       Azurite and prints that port. Its files are in DIR/fault-PORT/, and
#       DIR/fault-PORT/fault.env holds FAULT_KIND FAULT_PORT FAULT_PID
#       FAULT_DIR FAULT_LOG FAULT_ERROR_LOG FAULT_CONNECT_TO FAULT_CERT
#       FAULT_PIN (plus OTHER_PORT OTHER_LOG OTHER_ERROR_LOG for redirect,
#       FAULT_PROXY_URL for proxy). Unless a kind says otherwise it
#       is configured like the main front (TLS >= 1.2, client certificate from
#       the device CA, fingerprint pinned, proxy to Azurite). Kinds:
#         ok                 a second healthy front (e.g. a "secondary region")
#         busy [N [CODE]]    the first N (default 2) connections get CODE
#                            (503, or 429) with Retry-After: 1 and an Azure
#                            error body (Code ServerBusy); later ones are
#                            proxied. Keep-alive is off, so each connection
#                            carries one request: N connections = N requests.
#         error500 [N]       500 (Code InternalError) for the first N
#                            connections, or for every request without N
#         redirect [CODE]    answers CODE (301, 302, 307 (default), 308) with
#                            Location: https://localhost:OTHER_PORT<same URI>;
#                            OTHER_PORT is a second listener in the same nginx
#                            that would accept any client and proxy to Azurite,
#                            logging to OTHER_LOG (empty = nothing arrived;
#                            handshakes show in OTHER_ERROR_LOG at level info)
#         stall              reads the request (body included) and never
#                            answers (nginx echo module, echo_sleep 1 h);
#                            FAULT_LOG shows the request (499) once the client
#                            gives up
#         expired            server cert (same key, so the pin matches) that
#                            expired yesterday, from the server CA
#         wronghost          server cert (same key) from the server CA for
#                            otheraccount.blob.core.windows.net only
#         unknownca          server cert (same key, same names) from a CA the
#                            device does not know
#         tls10              TLS 1.0 and 1.1 only (ssl_ciphers
#                            DEFAULT:@SECLEVEL=0, else OpenSSL 3 refuses them),
#                            valid certificate
#         rekeyed            server cert from the server CA for the right names
#                            with the *next* key: its pin is NEXT_PIN (a device
#                            that pins only SERVER_PIN refuses it; one that also
#                            has NEXT_PIN as its next pin accepts it)
#         proxy              not TLS: a plain HTTP listener that logs and
#                            refuses (403) whatever comes, for
#                            https_proxy=$FAULT_PROXY_URL; an empty FAULT_LOG
#                            shows the proxy was not used (a CONNECT is
#                            logged as status 400 with an empty method)
#   peers.sh admit DIR CERT.pem     peers_admit DIR CERT.pem
#       Admits one more device certificate (already issued by DEVICE_CA, e.g.
#       for a key that lives in a PKCS#11 token) at the main front and at
#       fault fronts started later: adds its SHA-1 fingerprint to
#       EXTRA_CLIENT_FINGERPRINTS in peers.env, rewrites nginx.conf and
#       restarts nginx on the same port. The certificate is also registered
#       with the Speech peer's token endpoint as a new client (the Speech
#       peer restarts: its tokens and jobs are gone); prints that client id.
#   peers.sh fault-stop DIR PORT    stops one fault server
#   peers.sh kill DIR nginx|azurite|speech     SIGKILL (a crash), pid file kept
#   peers.sh restart DIR nginx|azurite|speech  stops (TERM) if running, starts
#       again on the same port with the same config and data, updates
#       peers.env. The Speech peer keeps its jobs, issued tokens and seen jtis
#       in memory only: after its restart they are gone (a device's cached
#       token then gets 401), the registration and keys stay.
#   peers.sh speech DIR PATH [JSON]
#       The Speech peer's control API (SPEECH_CONTROL): GET PATH, or POST the
#       JSON to PATH; prints the answer, fails on an HTTP error. PATH is one of
#         /requests[?op=OP&since=SEQ&last=N]  request records, oldest first
#         /jobs  /config  /registration  /health
#         /config JSON    change settings (below)     /reset '{}'
#         /keys/regenerate '{"slot":"primary"}'  a new value for that
#                         subscription key in SPEECH_KEY_PRIMARY_FILE (or
#                         _SECONDARY_); the old value is refused from then on
#       Settings (POST /config; GET /config shows them; /reset restores them):
#         token_lifetime_s N     lifetime of issued tokens (default 3600)
#         storage_token_mode M   storage-scope tokens that Azurite refuses:
#                                expired (exp 60 s ago; expires_in still
#                                token_lifetime_s), wrong_aud (aud
#                                https://cognitiveservices.azure.com),
#                                wrong_iss (not an sts issuer); valid (default)
#         storage_token_mode_count N   only the next N storage tokens get the
#                                mode, then it is valid again (0, the default,
#                                and when storage_token_mode is set alone:
#                                every one)
#         retry_after_s N        Retry-After of polls and injected 429/503 (1)
#         fail_jobs N            the next N submitted jobs end Failed
#                                (properties.error.code InvalidData)
#         revoke_primary_key B   revoke_secondary_key B   (false)
#         unauthorized_next N    the next N Speech requests with good
#                                credentials get 401 (token refresh tests)
#         transcribe_status S [transcribe_status_count N]
#                                the next N (1) fast transcriptions get S
#         inject {"op":OP,"status":S,"count":N} (or a list; [] clears)
#                                OP submit|get|delete|files|file|transcribe|token|any
#         strict B               unknown / readOnly properties in requests are
#                                400 (default true)
#         transcript_text T      the text every transcription returns
#       speech/README.md has the whole interface and the contract's limits.
#   peers.sh server-key DIR current|next
#       Moves the main front (nginx: a graceful stop, requests in progress
#       finish, and a start on the same port) to the next server key, certified by the
#       next server CA (NEXT_PIN, NEXT_CA_FILE), or back to the current one
#       (SERVER_PIN, CA_FILE); returns when a new connection sees it. A
#       `restart DIR nginx` keeps the choice. For live rotation tests.
#   peers.sh pin CERT.pem           prints sha256//BASE64 of CERT's SPKI
#   peers.sh env DIR                prints DIR/peers.env
#
# DIR/peers.env (shell-sourceable, printf %q quoted):
#   PEERS_DIR        DIR, absolute
#   NGINX_PORT NGINX_PID AZURITE_PORT AZURITE_PID
#   BLOB_HOST        devstoreaccount1.blob.core.windows.net
#   SECONDARY_HOST   devstoreaccount1-secondary.blob.core.windows.net (also in
#                    the server certificate)
#   BLOB_ENDPOINT    https://devstoreaccount1.blob.core.windows.net
#   CONNECT_TO       devstoreaccount1.blob.core.windows.net:443:127.0.0.1:NGINX_PORT
#   CA_FILE          server CA (PEM) the device trusts
#   SERVER_CERT      the main front's certificate
#   SERVER_PIN       sha256//... of SERVER_CERT's public key
#   NEXT_PIN         sha256//... of the next server key (fault kind rekeyed,
#                    and the main front after `server-key DIR next`)
#   NEXT_CA_FILE     the next server CA (PEM): it certifies the next key for
#                    the main front after `server-key DIR next`
#   CLIENT_CERT CLIENT_KEY CLIENT_KEY_DER   the provisioned device identity
#                    (EC P-256; the key as PKCS#8 PEM and as SEC1 DER, RFC 5915,
#                    which mbedTLS parses as well as PKCS#8)
#   CLIENT_FINGERPRINT  its SHA-1 (lower-case hex), the only one nginx admits
#   OTHER_CLIENT_CERT OTHER_CLIENT_KEY      device CA, not provisioned (403)
#   FOREIGN_CLIENT_CERT FOREIGN_CLIENT_KEY  from another CA (400)
#   DEVICE_CA        the device CA (PEM) nginx verifies clients against
#   ACCOUNT ACCOUNT_KEY  devstoreaccount1 and Azurite's well-known key
#   AZURITE_URL      https://127.0.0.1:AZURITE_PORT/devstoreaccount1 (direct)
#   AZURITE_CA       CA of Azurite's own certificate (for NODE_EXTRA_CA_CERTS)
#   ACCESS_LOG ERROR_LOG AZURITE_LOG
#   SPEECH_HOST      edgecap-speech.cognitiveservices.azure.com (a Speech custom
#                    domain; in the server certificate)
#   SPEECH_ENDPOINT  https://edgecap-speech.cognitiveservices.azure.com
#   LOGIN_HOST       login.microsoftonline.com (in the server certificate)
#   AUTHORITY_HOST   https://login.microsoftonline.com
#   TENANT_ID        the tenant GUID (random per start); the token endpoint is
#                    $AUTHORITY_HOST/$TENANT_ID/oauth2/v2.0/token
#   CLIENT_ID        app registration (GUID) whose certificate is CLIENT_CERT
#                    (EC P-256: assertions signed ES256)
#   RSA_CLIENT_ID    app registration (GUID) whose certificate is RSA_CLIENT_CERT
#   RSA_CLIENT_CERT RSA_CLIENT_KEY RSA_CLIENT_KEY_DER   a second device identity,
#                    RSA 3072 from the device CA (PS256 assertions); the key as
#                    PKCS#8 PEM and as PKCS#1 DER. nginx admits it too.
#   RSA_CLIENT_FINGERPRINT  its SHA-1, as CLIENT_FINGERPRINT
#   SPEECH_KEY_PRIMARY_FILE SPEECH_KEY_SECONDARY_FILE   the two subscription
#                    keys (32 hex digits, no newline), mode 0600
#   SPEECH_PORT SPEECH_PID   the Speech peer (plain HTTP, reached via nginx)
#   SPEECH_CONTROL   http://127.0.0.1:PORT, its control API (tests only)
#   SPEECH_LOG       its request records, one JSON object a line
#   CONNECT_TO_SPEECH  edgecap-speech.cognitiveservices.azure.com:443:127.0.0.1:NGINX_PORT
#   CONNECT_TO_LOGIN   login.microsoftonline.com:443:127.0.0.1:NGINX_PORT
#
# Access logs (ACCESS_LOG, FAULT_LOG, OTHER_LOG) have one JSON object per
# request: time conn conn_req remote method uri (the SAS signature shown as
# sig=REDACTED) path status bytes_sent body_bytes_sent request_length
# content_length host sni tls cipher client_verify client_fp client_dn
# x_ms_version x_ms_blob_type content_md5 x_ms_blob_content_md5
# x_ms_blob_content_type if_none_match x_ms_encryption_scope x_ms_tags
# x_ms_meta_device x_ms_meta_seq x_ms_meta_start x_ms_meta_duration_ms
# x_ms_meta_codec auth_scheme sas expect user_agent upstream_status
# resp_content_md5 resp_error_code upstream_error_code (the upstream's
# x-ms-error-code) msec (when the request ended: epoch seconds, ms
# resolution; nginx logs a request when it ends, so msec - request_time
# orders requests by start) request_time front (main|KIND|other).
# The readiness probe of `start` (header X-Edgecap-Peers-Probe) is not logged.
# Only the access logs are free of the SAS: ERROR_LOG (level info, so that
# failed handshakes show) quotes request lines of rejected requests whole, and
# AZURITE_LOG has every URL; a test that scans for leaked secrets must look
# at the device's output, not at these.
#
# Azurite keeps its data in DIR/azurite: a later start in the same DIR (new
# certificates, new ports) still has the old containers and blobs. Azurite
# takes SECONDARY_HOST as the same account and accepts writes there too, so a
# secondary endpoint with the same SAS reaches the same container.
#
# SPEECH_LOG (and GET /requests) has one JSON object per request to the Speech
# peer: seq time request_id host method path query (secret-looking values
# REDACTED) front tls client_fp client_cert (ec|rsa|unknown) op auth
# (bearer|key-primary|key-secondary|none|invalid|expired) auth_reason key_id
# (a subscription key's SHA-256, first 12 hex digits)
# schema_valid strict_valid errors status duration_ms, and per operation:
# submit: body (contentUrls without query) content_urls [{url host container
# blob sas found size ogg_opus reason samples duration_ms}] job_id
# job_outcome; get/files: job_id job_status; transcribe: parts definition
# audio_bytes audio_content_type audio_filename ogg_opus samples duration_ms
# opusinfo_ms;
# token: client_id scope grant_type alg x5t_match jti assertion_lifetime_s
# result (issued|refused) reason error error_code expires_in, token_mode
# (storage scope: valid|expired|wrong_aud|wrong_iss). Never a token, key,
# assertion or SAS signature.
#
# Needs: bash, openssl, curl, node, nginx (Debian nginx-light, with its echo
# module for `stall`), opusinfo and opusdec (opus-tools), and
# `npm ci --prefix tests/peers` done.

PEERS_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEERS_ACCOUNT=devstoreaccount1
# Azurite's documented development key (public, the same on every install).
PEERS_ACCOUNT_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
PEERS_BLOB_HOST=$PEERS_ACCOUNT.blob.core.windows.net
PEERS_SECONDARY_HOST=$PEERS_ACCOUNT-secondary.blob.core.windows.net
PEERS_WRONG_HOST=otheraccount.blob.core.windows.net
PEERS_SPEECH_HOST=edgecap-speech.cognitiveservices.azure.com
PEERS_LOGIN_HOST=login.microsoftonline.com
PEERS_WAIT_S=${PEERS_WAIT_S:-60}
PEERS_STOP_WAIT_S=${PEERS_STOP_WAIT_S:-10}
PEERS_ECHO_MODULE=${PEERS_ECHO_MODULE:-/usr/lib/nginx/modules/ngx_http_echo_module.so}

# ---- small helpers ----------------------------------------------------------

peers__say() { printf 'peers.sh: %s\n' "$*" >&2; }

peers__nginx_bin() {
    if [ -n "${PEERS_NGINX:-}" ]; then
        echo "$PEERS_NGINX"
    elif command -v nginx >/dev/null 2>&1; then
        command -v nginx
    else
        echo /usr/sbin/nginx # not on a non-root user's PATH
    fi
}

peers__check_tools() {
    local t missing=""
    for t in openssl curl node opusinfo opusdec; do
        command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
    done
    [ -x "$(peers__nginx_bin)" ] || missing="$missing nginx"
    if [ -n "$missing" ]; then
        peers__say "missing:$missing (toolchain/install-deps.sh peers)"
        return 1
    fi
    for t in azurite @azure/storage-blob ajv ajv-formats jose; do
        if [ ! -f "$PEERS_HOME/node_modules/$t/package.json" ]; then
            peers__say "node module $t missing: npm ci --prefix tests/peers (toolchain/install-deps.sh peers)"
            return 1
        fi
    done
}

# DIR made absolute; refuses names that would need quoting in nginx.conf.
peers__absdir() { # DIR [create]
    local d=$1
    case "$d" in
    '' | *[[:space:]\"\'\;\{\}\$\\]*)
        peers__say "unusable directory name: '$d'"
        return 1
        ;;
    esac
    [ "${2:-}" = create ] && mkdir -p "$d"
    [ -d "$d" ] || { peers__say "no such directory: $d"; return 1; }
    (cd "$d" && pwd -P)
}

# True while PID runs (a zombie does not count).
peers__running() { # PID
    local state
    [ -n "$1" ] || return 1
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# True when PID runs and its command line mentions DIR: a recorded PID that
# the kernel has since given to another process is never signalled.
peers__ours() { # PID DIR
    peers__running "$1" || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# True when something listens on 127.0.0.1:PORT (read from /proc, so it
# opens no connection: fault servers count connections).
peers__listening() { # PORT
    local hex
    hex=$(printf '%04X' "$1")
    grep -qE "^ *[0-9]+: 0100007F:$hex 00000000:0000 0A " /proc/net/tcp 2>/dev/null
}

# Polls CMD every 50 ms for at most SECONDS while PID runs.
peers__poll() { # SECONDS PID CMD...
    local limit=$1 pid=$2 i
    shift 2
    for ((i = 0; i < limit * 20; i++)); do
        "$@" && return 0
        peers__running "$pid" || return 1
        sleep 0.05
    done
    return 1
}

peers__freeports() { # COUNT
    node "$PEERS_HOME/freeport.js" "${1:-1}"
}

# Starts CMD in the background with stdin from /dev/null, stdout and stderr
# appended to LOG and no other inherited descriptor (a caller's pipe must not
# be held open), and records its PID (CMD is exec'd: the PID is its own) in
# DIR/run/NAME.pid. Prints the PID.
peers__spawn() { # DIR NAME LOG CMD...
    local dir=$1 name=$2 log=$3 pid
    shift 3
    mkdir -p "$dir/run"
    (
        for fd in "/proc/$BASHPID/fd"/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
        done
        exec "$@"
    ) </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/run/$name.pid"
    echo "$pid"
}

# TERM, bounded wait, KILL; then the pid file goes.
peers__stop_pidfile() { # DIR PIDFILE
    local dir=$1 f=$2 pid i
    pid=$(cat "$f" 2>/dev/null)
    if peers__ours "$pid" "$dir"; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < PEERS_STOP_WAIT_S * 20; i++)); do
            peers__running "$pid" || break
            sleep 0.05
        done
        if peers__running "$pid"; then
            peers__say "$(basename "$f" .pid) (pid $pid) ignored TERM for ${PEERS_STOP_WAIT_S} s: KILL"
            kill -KILL "$pid" 2>/dev/null
            for ((i = 0; i < 100; i++)); do
                peers__running "$pid" || break
                sleep 0.05
            done
        fi
        if peers__running "$pid"; then
            peers__say "$(basename "$f" .pid) (pid $pid) still runs"
            return 1
        fi
    fi
    rm -f "$f"
}

# The last lines of the logs of DIR's main peers, or of one fault server's.
peers__tail_logs() { # DIR | FAULT_ROOT
    local f
    for f in "$1"/nginx.out "$1"/error.log "$1"/other-error.log "$1"/azurite.log "$1"/speech.out; do
        [ -s "$f" ] || continue
        echo "---- last lines of $f" >&2
        tail -n 15 "$f" | cut -c1-300 >&2
    done
}

peers__pin() { # CERT
    openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform DER |
        openssl dgst -sha256 -binary | base64 | sed 's|^|sha256//|'
}

# nginx's $ssl_client_fingerprint: SHA-1 of the DER certificate, lower-case hex.
peers__fingerprint() { # CERT
    openssl x509 -in "$1" -noout -fingerprint -sha1 | sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f'
}

# Replaces (or adds) NAME=VALUE in an env file.
peers__setenv() { # FILE NAME VALUE
    local f=$1 name=$2 line
    line=$(printf '%s=%q' "$name" "$3")
    if grep -q "^$name=" "$f"; then
        grep -v "^$name=" "$f" >"$f.new"
        echo "$line" >>"$f.new"
        mv "$f.new" "$f"
    else
        echo "$line" >>"$f"
    fi
}

# ---- PKI ----------------------------------------------------------------------

# One openssl configuration for every CA; the CA directory and the SAN of the
# certificate being issued come from the environment.
peers__openssl_cnf() { # FILE
    cat >"$1" <<'EOF'
PEERS_CADIR = $ENV::PEERS_CADIR
PEERS_SAN = $ENV::PEERS_SAN

[ ca ]
default_ca = peers_ca

[ peers_ca ]
database = $PEERS_CADIR/index.txt
serial = $PEERS_CADIR/serial
new_certs_dir = $PEERS_CADIR
default_md = sha256
policy = peers_policy
unique_subject = no
email_in_dn = no
copy_extensions = none

[ peers_policy ]
commonName = supplied
organizationName = optional

[ req ]
distinguished_name = peers_dn
prompt = no

[ peers_dn ]
CN = unused

[ v3_ca ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $PEERS_SAN

[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
}

# UTC time SECONDS from now in the form openssl ca takes.
peers__when() { date -u -d "@$(($(date +%s) + $1))" +%Y%m%d%H%M%SZ; }

peers__key() { # FILE
    [ -f "$1" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# A self-signed CA valid from two days ago for 60 days: PKI/NAME.{key,pem}.
peers__ca() { # PKI NAME CN
    local pki=$1 name=$2 cn=$3
    mkdir -p "$pki/$name.db" || return 1
    : >"$pki/$name.db/index.txt" || return 1
    peers__key "$pki/$name.key" || return 1
    openssl req -new -config "$pki/openssl.cnf" -key "$pki/$name.key" -subj "/O=edgecap tests/CN=$cn" \
        -out "$pki/$name.csr" || return 1
    PEERS_CADIR=$pki/$name.db openssl ca -batch -notext -config "$pki/openssl.cnf" -selfsign \
        -keyfile "$pki/$name.key" -in "$pki/$name.csr" -out "$pki/$name.pem" -rand_serial \
        -startdate "$(peers__when -172800)" -enddate "$(peers__when 5184000)" -extensions v3_ca
}

# A leaf certificate PKI/OUT.pem for KEY, issued by CA, with a SAN (server)
# or none (client), valid from START to END seconds from now.
peers__leaf() { # PKI CA OUT KEY CN EXT SAN START END
    local pki=$1 ca=$2 out=$3 key=$4 cn=$5 ext=$6 san=$7 start=$8 end=$9
    peers__key "$key" || return 1
    openssl req -new -config "$pki/openssl.cnf" -key "$key" -subj "/O=edgecap tests/CN=$cn" \
        -out "$pki/$out.csr" || return 1
    PEERS_CADIR=$pki/$ca.db PEERS_SAN=$san openssl ca -batch -notext -config "$pki/openssl.cnf" \
        -cert "$pki/$ca.pem" -keyfile "$pki/$ca.key" -in "$pki/$out.csr" -out "$pki/$out.pem" \
        -rand_serial -startdate "$(peers__when "$start")" -enddate "$(peers__when "$end")" \
        -extensions "$ext"
}

# Azurite's own HTTPS first (Azurite boots while the rest is generated): a
# DNS name for nginx's proxy_ssl_name (an IP SAN alone gives 502) and the IP
# for readback.js.
peers__pki_azurite() { # DIR
    local pki=$1/pki day=86400
    mkdir -p "$pki" && chmod 700 "$pki" || return 1
    # (`set -e` would be ignored here: the caller tests the status.)
    (
        umask 077
        export PEERS_CADIR=$pki PEERS_SAN=DNS:localhost
        peers__openssl_cnf "$pki/openssl.cnf" || exit 1
        peers__ca "$pki" azurite-ca "edgecap test Azurite CA" || exit 1
        peers__leaf "$pki" azurite-ca azurite "$pki/azurite.key" localhost server \
            "DNS:localhost,IP:127.0.0.1" $((-day)) $((30 * day)) || exit 1
    ) >>"$pki/openssl.log" 2>&1
}

peers__pki() { # DIR
    local pki=$1/pki day=86400 names
    names="DNS:$PEERS_BLOB_HOST,DNS:$PEERS_SECONDARY_HOST,DNS:$PEERS_SPEECH_HOST,DNS:$PEERS_LOGIN_HOST,DNS:localhost"
    (
        umask 077
        export PEERS_CADIR=$pki PEERS_SAN=DNS:localhost
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$pki/client-rsa.key" &
        rsa_keygen=$!
        # What the device trusts, and the main front's certificate.
        peers__ca "$pki" server-ca "edgecap test server CA" || exit 1
        peers__leaf "$pki" server-ca server "$pki/server.key" "$PEERS_BLOB_HOST" server "$names" \
            $((-day)) $((30 * day)) || exit 1
        # Same key, so only the property under test is wrong.
        peers__leaf "$pki" server-ca server-expired "$pki/server.key" "$PEERS_BLOB_HOST" server \
            "$names" $((-30 * day)) $((-day)) || exit 1
        peers__leaf "$pki" server-ca server-wronghost "$pki/server.key" "$PEERS_WRONG_HOST" server \
            "DNS:$PEERS_WRONG_HOST" $((-day)) $((30 * day)) || exit 1
        peers__leaf "$pki" server-ca server-next "$pki/server-next.key" "$PEERS_BLOB_HOST" server \
            "$names" $((-day)) $((30 * day)) || exit 1
        # Where the main front moves with `server-key DIR next`: the next
        # key, certified by a next server CA (a CA rotation and a key
        # rotation at once, as when a private endpoint's certificate is renewed).
        peers__ca "$pki" server-ca-next "edgecap test next server CA" || exit 1
        peers__leaf "$pki" server-ca-next server-rotated "$pki/server-next.key" "$PEERS_BLOB_HOST" \
            server "$names" $((-day)) $((30 * day)) || exit 1
        peers__ca "$pki" unknown-ca "edgecap test unknown CA" || exit 1
        peers__leaf "$pki" unknown-ca server-unknownca "$pki/server.key" "$PEERS_BLOB_HOST" server \
            "$names" $((-day)) $((30 * day)) || exit 1
        # The device identity nginx admits, one from the same CA that it
        # does not admit, and one from a CA it does not know.
        peers__ca "$pki" device-ca "edgecap test device CA" || exit 1
        peers__leaf "$pki" device-ca client "$pki/client.key" "edgecap-test-device" client \
            DNS:unused $((-day)) $((30 * day)) || exit 1
        openssl pkey -in "$pki/client.key" -outform DER -out "$pki/client.key.der" || exit 1
        # The second identity, RSA (PS256 client assertions); nginx admits it.
        # (Its key, slow to make, was started in the background above.)
        wait "$rsa_keygen" || exit 1
        peers__leaf "$pki" device-ca client-rsa "$pki/client-rsa.key" "edgecap-test-device-rsa" client \
            DNS:unused $((-day)) $((30 * day)) || exit 1
        openssl pkey -in "$pki/client-rsa.key" -outform DER -out "$pki/client-rsa.key.der" || exit 1
        # The Speech resource's two subscription keys.
        for k in primary secondary; do
            printf '%s' "$(openssl rand -hex 16)" >"$pki/speech-key-$k" || exit 1
        done
        peers__leaf "$pki" device-ca other-client "$pki/other-client.key" "edgecap-other-device" \
            client DNS:unused $((-day)) $((30 * day)) || exit 1
        peers__ca "$pki" foreign-ca "edgecap test foreign CA" || exit 1
        peers__leaf "$pki" foreign-ca foreign-client "$pki/foreign-client.key" \
            "edgecap-test-device" client DNS:unused $((-day)) $((30 * day)) || exit 1
        rm -f "$pki"/*.csr
    ) >>"$pki/openssl.log" 2>&1
}

# ---- nginx configuration ------------------------------------------------------

# The top of every nginx.conf: one process (master_process off: the recorded
# PID is the whole server, and a KILL leaves no orphaned worker), every path
# inside ROOT, the JSON access log.
peers__nginx_head() { # ROOT FRONT [load_echo]
    local root=$1 front=$2
    [ "${3:-}" = load_echo ] && echo "load_module $PEERS_ECHO_MODULE;"
    cat <<EOF
master_process off;
worker_processes 1;
pid $root/nginx.pid;
error_log $root/error.log info;
events { worker_connections 256; }
http {
    default_type application/octet-stream;
    server_tokens off;
    client_body_temp_path $root/tmp/client_body;
    proxy_temp_path $root/tmp/proxy;
    fastcgi_temp_path $root/tmp/fastcgi;
    uwsgi_temp_path $root/tmp/uwsgi;
    scgi_temp_path $root/tmp/scgi;
    client_max_body_size 100m;

    # The SAS signature never reaches a log.
    map \$request_uri \$peers_uri {
        "~^(?<peers_a>[^?]*\\?(?:.*&)?sig=)[^&]*(?<peers_b>.*)\$" "\${peers_a}REDACTED\${peers_b}";
        default \$request_uri;
    }
    map \$http_authorization \$peers_auth_scheme {
        "~^(?<peers_s>[^ ]+)" \$peers_s;
        default "";
    }
    # peers.sh's own readiness probe is not logged.
    map \$http_x_edgecap_peers_probe \$peers_loggable {
        "" 1;
        default 0;
    }
    map \$arg_sig \$peers_sas {
        "" no;
        default yes;
    }
    log_format peers escape=json '{"time":"\$time_iso8601","conn":\$connection,'
        '"conn_req":\$connection_requests,"remote":"\$remote_addr",'
        '"method":"\$request_method","uri":"\$peers_uri","path":"\$uri","status":\$status,'
        '"bytes_sent":\$bytes_sent,"body_bytes_sent":\$body_bytes_sent,'
        '"request_length":\$request_length,"content_length":"\$http_content_length",'
        '"host":"\$host","sni":"\$ssl_server_name","tls":"\$ssl_protocol",'
        '"cipher":"\$ssl_cipher","client_verify":"\$ssl_client_verify",'
        '"client_fp":"\$ssl_client_fingerprint","client_dn":"\$ssl_client_s_dn",'
        '"x_ms_version":"\$http_x_ms_version","x_ms_blob_type":"\$http_x_ms_blob_type",'
        '"content_md5":"\$http_content_md5","x_ms_blob_content_md5":"\$http_x_ms_blob_content_md5",'
        '"x_ms_blob_content_type":"\$http_x_ms_blob_content_type",'
        '"if_none_match":"\$http_if_none_match",'
        '"x_ms_encryption_scope":"\$http_x_ms_encryption_scope","x_ms_tags":"\$http_x_ms_tags",'
        '"x_ms_meta_device":"\$http_x_ms_meta_device","x_ms_meta_seq":"\$http_x_ms_meta_seq",'
        '"x_ms_meta_start":"\$http_x_ms_meta_start",'
        '"x_ms_meta_duration_ms":"\$http_x_ms_meta_duration_ms",'
        '"x_ms_meta_codec":"\$http_x_ms_meta_codec","auth_scheme":"\$peers_auth_scheme",'
        '"sas":"\$peers_sas","expect":"\$http_expect","user_agent":"\$http_user_agent",'
        '"upstream_status":"\$upstream_status","resp_content_md5":"\$sent_http_content_md5",'
        '"resp_error_code":"\$sent_http_x_ms_error_code",'
        '"upstream_error_code":"\$upstream_http_x_ms_error_code","msec":\$msec,'
        '"request_time":\$request_time,'
        '"front":"$front"}';
    access_log $root/access.log peers if=\$peers_loggable;

    # The provisioned device identities (EC and RSA), not just any from the
    # device CA: the server side of "mutually pinned".
    map \$ssl_client_fingerprint \$peers_client_ok {
        "$PEERS_CLIENT_FP" 1;
$([ -n "${PEERS_RSA_CLIENT_FP:-}" ] && echo "        \"$PEERS_RSA_CLIENT_FP\" 1;")
$(for fp in ${PEERS_EXTRA_CLIENT_FPS:-}; do echo "        \"$fp\" 1;"; done)
        default 0;
    }
    # Upstream by Host: the Speech and login hosts to the Speech peer, the
    # rest (blob hosts) to Azurite.
    map \$host \$peers_upstream {
$([ -n "${PEERS_SPEECH_PORT:-}" ] && echo "        $PEERS_SPEECH_HOST http://127.0.0.1:$PEERS_SPEECH_PORT;
        $PEERS_LOGIN_HOST http://127.0.0.1:$PEERS_SPEECH_PORT;")
        default https://127.0.0.1:$PEERS_AZURITE_PORT;
    }
    # A Bearer request to Azurite with x-ms-version 2019-12-12 or later:
    # Azure Storage answers a token it refuses with 401 and a challenge,
    # Azurite with 403 AuthenticationFailed (see @peers_bearer_refused).
    map "\$peers_auth_scheme \$peers_upstream \$http_x_ms_version" \$peers_bearer_challenge {
        "~^Bearer https://[^ ]+ (2019-12-(1[2-9]|[23][0-9])|20[2-9][0-9]-[0-9][0-9]-[0-9][0-9])\$" 1;
        default 0;
    }
EOF
}

# TLS toward the device. PROTOCOLS/CIPHERS differ only for the tls10 fault.
peers__nginx_tls() { # CERT KEY PROTOCOLS CIPHERS VERIFY
    local cert=$1 key=$2 protocols=$3 ciphers=$4 verify=$5
    cat <<EOF
        ssl_certificate $cert;
        ssl_certificate_key $key;
        ssl_protocols $protocols;
        ssl_ciphers "$ciphers";
        ssl_client_certificate $PEERS_PKI/device-ca.pem;
        ssl_verify_client $verify;
        ssl_verify_depth 1;
EOF
}

# Only the provisioned device certificates ($peers_client_ok, see
# peers__nginx_head), not just any from the device CA.
peers__nginx_pin_client() {
    cat <<EOF
        if (\$peers_client_ok = 0) {
            return 403;
        }
EOF
}

# Proxy to Azurite, or to the Speech peer for its hosts ($peers_upstream),
# with the Host header passed on (Azurite takes the account from a
# production-style host name), or HOST instead. The Speech peer learns the
# client certificate, TLS version and front from X-Edgecap-* headers (set
# here, so a client cannot forge them).
peers__nginx_proxy() { # [HOST]
    cat <<EOF
            proxy_pass \$peers_upstream;
            proxy_http_version 1.1;
            proxy_set_header Host ${1:-\$host};
            proxy_set_header X-Edgecap-Client-FP \$ssl_client_fingerprint;
            proxy_set_header X-Edgecap-TLS \$ssl_protocol;
            proxy_set_header X-Edgecap-Front ${kind:-main};
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 1;
            proxy_ssl_trusted_certificate $PEERS_PKI/azurite-ca.pem;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            # Only where an error_page says so (the bearer challenge below);
            # every other answer passes through as the upstream sent it.
            proxy_intercept_errors on;
            if (\$peers_bearer_challenge) {
                error_page 403 = @peers_bearer_refused;
            }
EOF
}

# Azure Storage's answer to a bearer token it refuses (x-ms-version
# 2019-12-12 and later): 401 InvalidAuthenticationInfo with a challenge that
# names the tenant's authority and the resource. Azurite (--oauth basic)
# answers 403 AuthenticationFailed, its "bearer challenge" being a TODO in
# BlobTokenAuthenticator.js: nginx answers for it, as Azure would. Azurite's
# body (its AuthenticationErrorDetail) is not kept; the access log has its
# status and code (upstream_status 403, upstream_error_code). Any other 403
# of a bearer request keeps its status and code, with a short body.
peers__nginx_bearer_refused() {
    local challenge="Bearer authorization_uri=https://$PEERS_LOGIN_HOST/${PEERS_TENANT_ID:-common}/oauth2/authorize resource_id=https://storage.azure.com"
    cat <<EOF
        location @peers_bearer_refused {
            default_type application/xml;
            if (\$upstream_http_x_ms_error_code != AuthenticationFailed) {
                add_header x-ms-request-id \$upstream_http_x_ms_request_id always;
                add_header x-ms-error-code \$upstream_http_x_ms_error_code always;
                return 403 '<?xml version="1.0" encoding="utf-8"?><Error><Code>\$upstream_http_x_ms_error_code</Code><Message>edgecap test peer: Azurite answered 403 to a bearer request</Message></Error>';
            }
            add_header x-ms-request-id \$upstream_http_x_ms_request_id always;
            add_header x-ms-error-code InvalidAuthenticationInfo always;
            add_header WWW-Authenticate "$challenge" always;
            return 401 '<?xml version="1.0" encoding="utf-8"?><Error><Code>InvalidAuthenticationInfo</Code><Message>Server failed to authenticate the request. Please refer to the information in the www-authenticate header.</Message><AuthenticationErrorDetail>edgecap test peer: Azurite refused the token (403 AuthenticationFailed)</AuthenticationErrorDetail></Error>';
        }
EOF
}

PEERS_TLS12="TLSv1.2 TLSv1.3"
# TLS 1.2 suites: ECDHE with AEAD only (TLS 1.3 suites are all AEAD).
PEERS_CIPHERS="ECDHE+AESGCM:ECDHE+CHACHA20"

# An Azure-style error answer.
peers__nginx_error() { # CODE AZURE_CODE RETRY_AFTER(0 = none)
    [ "$3" != 0 ] && echo "                add_header Retry-After $3 always;"
    cat <<EOF
                add_header x-ms-error-code $2 always;
                return $1 '<?xml version="1.0" encoding="utf-8"?><Error><Code>$2</Code><Message>edgecap test peer: injected $1</Message></Error>';
EOF
}

# Writes ROOT/nginx.conf for the main front (KIND main) or a fault KIND.
# Uses PEERS_PKI, PEERS_AZURITE_PORT, PEERS_SPEECH_PORT, PEERS_CLIENT_FP,
# PEERS_RSA_CLIENT_FP; PORT and OTHER_PORT.
peers__nginx_conf() { # ROOT KIND PORT [ARG...]
    local root=$1 kind=$2 port=$3 pki=$PEERS_PKI n code re i
    shift 3
    local cert=$pki/server.pem key=$pki/server.key protocols=$PEERS_TLS12 ciphers=$PEERS_CIPHERS
    local echo_module="" keepalive="" location="" plain=0
    case "$kind" in
    main)
        # `server-key DIR next` moved it to the next key and CA
        [ "$(cat "$root/server-key" 2>/dev/null)" = next ] &&
            cert=$pki/server-rotated.pem key=$pki/server-next.key
        ;;
    ok) ;;
    proxy) plain=1 ;;
    expired) cert=$pki/server-expired.pem ;;
    wronghost) cert=$pki/server-wronghost.pem ;;
    unknownca) cert=$pki/server-unknownca.pem ;;
    rekeyed) cert=$pki/server-next.pem key=$pki/server-next.key ;;
    tls10)
        # OpenSSL 3 allows TLS 1.0/1.1 only at security level 0.
        protocols="TLSv1 TLSv1.1" ciphers="DEFAULT:@SECLEVEL=0"
        ;;
    busy | error500)
        if [ "$kind" = busy ]; then
            n=${1:-2} code=${2:-503}
            case "$code" in 503 | 429) ;; *) peers__say "busy: CODE must be 503 or 429"; return 1 ;; esac
        else
            n=${1:-} code=500
        fi
        keepalive="        keepalive_timeout 0;"
        if [ -n "$n" ]; then
            if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 1000 ]; then
                peers__say "$kind: N must be 1..1000"
                return 1
            fi
            # $connection numbers this process's connections from 1.
            re=1
            for ((i = 2; i <= n; i++)); do re="$re|$i"; done
            location="            if (\$peers_fault) {
$(if [ "$kind" = busy ]; then peers__nginx_error "$code" ServerBusy 1; else peers__nginx_error 500 InternalError 0; fi)
            }"
            PEERS_FAULT_MAP="    map \$connection \$peers_fault {
        \"~^($re)\$\" 1;
        default 0;
    }"
        else
            location="$(peers__nginx_error 500 InternalError 0)"
        fi
        ;;
    redirect)
        code=${1:-307}
        case "$code" in 301 | 302 | 307 | 308) ;; *) peers__say "redirect: CODE must be 301, 302, 307 or 308"; return 1 ;; esac
        location="            return $code https://localhost:$PEERS_OTHER_PORT\$request_uri;"
        ;;
    stall)
        [ -f "$PEERS_ECHO_MODULE" ] ||
            { peers__say "stall needs nginx's echo module ($PEERS_ECHO_MODULE, Debian libnginx-mod-http-echo)"; return 1; }
        echo_module=load_echo
        # The front proxies to an inner server that reads the body and then
        # sleeps: when the client gives up, the front logs it at once (499).
        location="            proxy_pass http://unix:$root/stall.sock;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;"
        ;;
    *)
        peers__say "unknown fault kind: $kind"
        return 1
        ;;
    esac
    mkdir -p "$root/tmp"
    {
        peers__nginx_head "$root" "$kind" $echo_module
        [ -n "${PEERS_FAULT_MAP:-}" ] && echo "$PEERS_FAULT_MAP"
        if [ "$plain" = 1 ]; then
            # Plain HTTP: what a client that used it as a proxy would send
            # (CONNECT host:443, or a plain request) is logged and refused.
            cat <<EOF
    server {
        listen 127.0.0.1:$port;
        location / {
            return 403;
        }
    }
}
EOF
            return 0
        fi
        cat <<EOF
    server {
        listen 127.0.0.1:$port ssl;
$(peers__nginx_tls "$cert" "$key" "$protocols" "$ciphers" on)
$keepalive
        default_type application/xml;
$(peers__nginx_pin_client)
$(peers__nginx_bearer_refused)
        location / {
EOF
        if [ -n "$location" ]; then
            echo "$location"
            case "$kind" in busy | error500) [ -n "$n" ] && peers__nginx_proxy ;; esac
        else
            peers__nginx_proxy
        fi
        echo "        }"
        echo "    }"
        if [ "$kind" = stall ]; then
            cat <<EOF
    server {
        listen unix:$root/stall.sock;
        access_log $root/stall-inner.log peers if=\$peers_loggable;
        location / {
            echo_read_request_body;
            echo_sleep 3600;
        }
    }
EOF
        fi
        if [ "$kind" = redirect ]; then
            # Where the redirect points: admits anyone and stores the blob in
            # the same account, so an empty log proves that nothing was sent.
            cat <<EOF
    server {
        listen 127.0.0.1:$PEERS_OTHER_PORT ssl;
        access_log $root/other.log peers if=\$peers_loggable;
        error_log $root/other-error.log info;
$(peers__nginx_tls "$pki/server.pem" "$pki/server.key" "$PEERS_TLS12" "$PEERS_CIPHERS" optional_no_ca)
$(peers__nginx_bearer_refused)
        location / {
$(peers__nginx_proxy "$PEERS_BLOB_HOST")
        }
    }
EOF
        fi
        echo "}"
    } >"$root/nginx.conf"
}

# Starts nginx on ROOT/nginx.conf; NAME is its pid file's name. Waits until
# every PORT listens. Returns 2 when a port was taken (the caller picks
# another), 1 on any other failure.
peers__nginx_run() { # DIR NAME ROOT PORT...
    local dir=$1 name=$2 root=$3 nginx pid p
    shift 3
    nginx=$(peers__nginx_bin)
    : >"$root/error.log"
    # -e: the error log from the very start (before the configuration is read).
    pid=$(peers__spawn "$dir" "$name" "$root/nginx.out" \
        "$nginx" -e "$root/error.log" -p "$root" -c "$root/nginx.conf" -g 'daemon off;')
    for p in "$@"; do
        if ! peers__poll "$PEERS_WAIT_S" "$pid" peers__listening "$p"; then
            peers__stop_pidfile "$dir" "$dir/run/$name.pid"
            grep -q 'Address already in use' "$root/error.log" "$root/nginx.out" 2>/dev/null && return 2
            peers__say "nginx ($name) exited, or did not listen on 127.0.0.1:$p within ${PEERS_WAIT_S} s"
            return 1
        fi
    done
}

# ---- Azurite ------------------------------------------------------------------

peers__azurite_ready() { # PORT CA
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$2" \
        "https://127.0.0.1:$1/$PEERS_ACCOUNT?comp=list" 2>/dev/null)
    [ -n "$code" ] && [ "$code" != 000 ]
}

# Starts Azurite on PORT in the background; peers__azurite_wait waits for it.
peers__azurite_spawn() { # DIR PORT
    local dir=$1 port=$2
    mkdir -p "$dir/azurite"
    # --disableTelemetry: otherwise Azurite ignores SIGTERM. --loose and
    # --skipApiVersionCheck: the device and the SDK send newer x-ms-version
    # values than the emulator knows. --oauth basic (HTTPS only): bearer
    # tokens are taken besides SAS and shared key (see the header).
    peers__spawn "$dir" azurite "$dir/azurite.log" \
        node "$PEERS_HOME/node_modules/azurite/dist/src/blob/main.js" \
        --blobHost 127.0.0.1 --blobPort "$port" --location "$dir/azurite" \
        --disableTelemetry --loose --skipApiVersionCheck --oauth basic \
        --cert "$dir/pki/azurite.pem" --key "$dir/pki/azurite.key" >/dev/null
}

# Returns 2 when the port was taken (the caller picks another), 1 on any
# other failure; a failed Azurite is stopped.
peers__azurite_wait() { # DIR PORT
    local dir=$1 port=$2
    if ! peers__poll "$PEERS_WAIT_S" "$(cat "$dir/run/azurite.pid")" \
        peers__azurite_ready "$port" "$dir/pki/azurite-ca.pem"; then
        peers__stop_pidfile "$dir" "$dir/run/azurite.pid"
        grep -q EADDRINUSE "$dir/azurite.log" 2>/dev/null && return 2
        peers__say "Azurite exited, or did not answer on https://127.0.0.1:$port within ${PEERS_WAIT_S} s"
        return 1
    fi
}

peers__azurite_run() { # DIR PORT
    peers__azurite_spawn "$1" "$2" && peers__azurite_wait "$1" "$2"
}

# ---- the Speech peer ------------------------------------------------------------

peers__uuid() { cat /proc/sys/kernel/random/uuid; }

# DIR/speech/config.json for speech/server.js (kept across its restarts).
peers__speech_conf() { # DIR PORT CONTROL_PORT TENANT_ID CLIENT_ID RSA_CLIENT_ID
    local dir=$1 pki=$1/pki
    mkdir -p "$dir/speech" || return 1
    cat >"$dir/speech/config.json.new" <<EOF || return 1
{
  "dir": "$dir",
  "port": $2,
  "controlPort": $3,
  "speechHost": "$PEERS_SPEECH_HOST",
  "loginHost": "$PEERS_LOGIN_HOST",
  "blobHosts": ["$PEERS_BLOB_HOST", "$PEERS_SECONDARY_HOST"],
  "tenantId": "$4",
  "clients": [
    { "id": "$5", "cert": "$pki/client.pem" },
    { "id": "$6", "cert": "$pki/client-rsa.pem" }
  ],
  "clientFingerprints": {
    "$(peers__fingerprint "$pki/client.pem")": "ec",
    "$(peers__fingerprint "$pki/client-rsa.pem")": "rsa"
  },
  "keyFiles": { "primary": "$pki/speech-key-primary", "secondary": "$pki/speech-key-secondary" },
  "log": "$dir/speech.log",
  "tmpDir": "$dir/speech/tmp"
}
EOF
    mv "$dir/speech/config.json.new" "$dir/speech/config.json"
}

# The peer reads blobs straight from Azurite (AZURITE_PORT) with the account
# key, as the service's managed identity would read a BYOS account.
peers__speech_spawn() { # DIR AZURITE_PORT
    local dir=$1
    peers__spawn "$dir" speech "$dir/speech.out" env NODE_EXTRA_CA_CERTS="$dir/pki/azurite-ca.pem" \
        AZURITE_URL="https://127.0.0.1:$2/$PEERS_ACCOUNT" ACCOUNT="$PEERS_ACCOUNT" \
        ACCOUNT_KEY="$PEERS_ACCOUNT_KEY" node "$PEERS_HOME/speech/server.js" \
        --config "$dir/speech/config.json" >/dev/null
}

peers__speech_ready() { # CONTROL_PORT
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null)" = 200 ]
}

# Returns 2 when a port was taken (the caller picks others), 1 on any other
# failure; a failed peer is stopped.
peers__speech_wait() { # DIR CONTROL_PORT
    local dir=$1
    if ! peers__poll "$PEERS_WAIT_S" "$(cat "$dir/run/speech.pid")" peers__speech_ready "$2"; then
        peers__stop_pidfile "$dir" "$dir/run/speech.pid"
        grep -q EADDRINUSE "$dir/speech.out" 2>/dev/null && return 2
        peers__say "the Speech peer exited, or did not answer on 127.0.0.1:$2 within ${PEERS_WAIT_S} s"
        return 1
    fi
}

# Through nginx with the device identity to the Speech peer: its 401 (the
# probe has no credential) carries the peer's apim-request-id.
peers__speech_front_ready() { # DIR PORT
    local pki=$1/pki
    curl -s -o /dev/null -D - --max-time 3 --cacert "$pki/server-ca.pem" -H "X-Edgecap-Peers-Probe: 1" \
        --cert "$pki/client.pem" --key "$pki/client.key" \
        --connect-to "$PEERS_SPEECH_HOST:443:127.0.0.1:$2" \
        "https://$PEERS_SPEECH_HOST/speechtotext/transcriptions/00000000-0000-0000-0000-000000000000?api-version=2024-11-15" \
        2>/dev/null | grep -qi '^apim-request-id:'
}

# ---- the main front's end-to-end check ----------------------------------------

# Through nginx with the device identity to Azurite: an answer that carries
# Azurite's x-ms-request-id (a 403, as the probe has no SAS) shows the whole
# chain works.
peers__front_ready() { # DIR PORT
    local pki=$1/pki
    curl -s -o /dev/null -D - --max-time 3 --cacert "$pki/server-ca.pem" -H "X-Edgecap-Peers-Probe: 1" \
        --cert "$pki/client.pem" --key "$pki/client.key" \
        --connect-to "$PEERS_BLOB_HOST:443:127.0.0.1:$2" \
        "https://$PEERS_BLOB_HOST/?comp=list" 2>/dev/null | grep -qi '^x-ms-request-id:'
}

peers__load_env() { # DIR
    if [ ! -f "$1/peers.env" ]; then
        peers__say "$1/peers.env not found: run peers.sh start $1 first"
        return 1
    fi
    # shellcheck disable=SC1091
    . "$1/peers.env"
    # shellcheck disable=SC2153  # PEERS_DIR comes from peers.env
    PEERS_PKI=$PEERS_DIR/pki
    PEERS_AZURITE_PORT=$AZURITE_PORT
    PEERS_CLIENT_FP=$CLIENT_FINGERPRINT
    PEERS_RSA_CLIENT_FP=$RSA_CLIENT_FINGERPRINT
    PEERS_EXTRA_CLIENT_FPS=${EXTRA_CLIENT_FINGERPRINTS:-}
    PEERS_SPEECH_PORT=$SPEECH_PORT
    # shellcheck disable=SC2153  # TENANT_ID comes from peers.env
    PEERS_TENANT_ID=$TENANT_ID
}

# ---- commands -----------------------------------------------------------------

peers_start() ( # DIR
    set -u
    peers__check_tools || exit 1
    dir=$(peers__absdir "$1" create) || exit 1
    for f in "$dir"/run/*.pid; do
        if [ -f "$f" ] && peers__ours "$(cat "$f")" "$dir"; then
            peers__say "peers already running in $dir ($(basename "$f" .pid)); stop them first"
            exit 1
        fi
    done
    rm -f "$dir/peers.env"
    fail() {
        peers__say "start failed: $*"
        peers__tail_logs "$dir"
        for f in "$dir"/run/*.pid; do
            [ -f "$f" ] && peers__stop_pidfile "$dir" "$f"
        done
        exit 1
    }
    trap 'fail "interrupted"' INT TERM

    rm -rf "$dir/pki"
    pki_fail() {
        tail -n 15 "$dir/pki/openssl.log" >&2
        fail "certificate generation (see $dir/pki/openssl.log)"
    }
    peers__pki_azurite "$dir" || pki_fail
    for try in 1 2 3 4 5; do
        PEERS_AZURITE_PORT=$(peers__freeports 1) || fail "no free port"
        peers__azurite_spawn "$dir" "$PEERS_AZURITE_PORT" || fail "Azurite"
        # Azurite takes seconds to load: the rest of the PKI meanwhile.
        if [ "$try" = 1 ]; then
            peers__pki "$dir" || pki_fail
        fi
        peers__azurite_wait "$dir" "$PEERS_AZURITE_PORT"
        case $? in 0) break ;; 2) [ "$try" -lt 5 ] && continue ;; esac
        fail "Azurite"
    done
    PEERS_PKI=$dir/pki
    PEERS_CLIENT_FP=$(peers__fingerprint "$dir/pki/client.pem")
    PEERS_RSA_CLIENT_FP=$(peers__fingerprint "$dir/pki/client-rsa.pem")

    tenant_id=$(peers__uuid) client_id=$(peers__uuid) rsa_client_id=$(peers__uuid)
    PEERS_TENANT_ID=$tenant_id
    for try in 1 2 3 4 5; do
        ports=$(peers__freeports 2) || fail "no free port"
        PEERS_SPEECH_PORT=$(echo "$ports" | sed -n 1p)
        control_port=$(echo "$ports" | sed -n 2p)
        peers__speech_conf "$dir" "$PEERS_SPEECH_PORT" "$control_port" "$tenant_id" "$client_id" \
            "$rsa_client_id" || fail "writing $dir/speech/config.json"
        peers__speech_spawn "$dir" "$PEERS_AZURITE_PORT" || fail "the Speech peer"
        peers__speech_wait "$dir" "$control_port"
        case $? in 0) break ;; 2) [ "$try" -lt 5 ] && continue ;; esac
        fail "the Speech peer"
    done

    for try in 1 2 3 4 5; do
        port=$(peers__freeports 1) || fail "no free port"
        peers__nginx_conf "$dir" main "$port" || fail "nginx.conf"
        peers__nginx_run "$dir" nginx "$dir" "$port"
        case $? in 0) break ;; 2) [ "$try" -lt 5 ] && continue ;; esac
        fail "nginx"
    done
    peers__poll "$PEERS_WAIT_S" "$(cat "$dir/run/nginx.pid")" peers__front_ready "$dir" "$port" ||
        fail "no answer from Azurite through nginx on 127.0.0.1:$port"
    peers__poll "$PEERS_WAIT_S" "$(cat "$dir/run/nginx.pid")" peers__speech_front_ready "$dir" "$port" ||
        fail "no answer from the Speech peer through nginx on 127.0.0.1:$port"

    pki=$dir/pki
    {
        echo "# written by tests/peers/peers.sh start; stop with: tests/peers/peers.sh stop $dir"
        for kv in \
            "PEERS_DIR=$dir" \
            "NGINX_PORT=$port" \
            "NGINX_PID=$(cat "$dir/run/nginx.pid")" \
            "AZURITE_PORT=$PEERS_AZURITE_PORT" \
            "AZURITE_PID=$(cat "$dir/run/azurite.pid")" \
            "BLOB_HOST=$PEERS_BLOB_HOST" \
            "SECONDARY_HOST=$PEERS_SECONDARY_HOST" \
            "BLOB_ENDPOINT=https://$PEERS_BLOB_HOST" \
            "CONNECT_TO=$PEERS_BLOB_HOST:443:127.0.0.1:$port" \
            "CA_FILE=$pki/server-ca.pem" \
            "SERVER_CERT=$pki/server.pem" \
            "SERVER_PIN=$(peers__pin "$pki/server.pem")" \
            "NEXT_PIN=$(peers__pin "$pki/server-next.pem")" \
            "NEXT_CA_FILE=$pki/server-ca-next.pem" \
            "CLIENT_CERT=$pki/client.pem" \
            "CLIENT_KEY=$pki/client.key" \
            "CLIENT_KEY_DER=$pki/client.key.der" \
            "CLIENT_FINGERPRINT=$PEERS_CLIENT_FP" \
            "OTHER_CLIENT_CERT=$pki/other-client.pem" \
            "OTHER_CLIENT_KEY=$pki/other-client.key" \
            "FOREIGN_CLIENT_CERT=$pki/foreign-client.pem" \
            "FOREIGN_CLIENT_KEY=$pki/foreign-client.key" \
            "DEVICE_CA=$pki/device-ca.pem" \
            "ACCOUNT=$PEERS_ACCOUNT" \
            "ACCOUNT_KEY=$PEERS_ACCOUNT_KEY" \
            "AZURITE_URL=https://127.0.0.1:$PEERS_AZURITE_PORT/$PEERS_ACCOUNT" \
            "AZURITE_CA=$pki/azurite-ca.pem" \
            "ACCESS_LOG=$dir/access.log" \
            "ERROR_LOG=$dir/error.log" \
            "AZURITE_LOG=$dir/azurite.log" \
            "SPEECH_HOST=$PEERS_SPEECH_HOST" \
            "SPEECH_ENDPOINT=https://$PEERS_SPEECH_HOST" \
            "LOGIN_HOST=$PEERS_LOGIN_HOST" \
            "AUTHORITY_HOST=https://$PEERS_LOGIN_HOST" \
            "TENANT_ID=$tenant_id" \
            "CLIENT_ID=$client_id" \
            "RSA_CLIENT_ID=$rsa_client_id" \
            "RSA_CLIENT_CERT=$pki/client-rsa.pem" \
            "RSA_CLIENT_KEY=$pki/client-rsa.key" \
            "RSA_CLIENT_KEY_DER=$pki/client-rsa.key.der" \
            "RSA_CLIENT_FINGERPRINT=$PEERS_RSA_CLIENT_FP" \
            "SPEECH_KEY_PRIMARY_FILE=$pki/speech-key-primary" \
            "SPEECH_KEY_SECONDARY_FILE=$pki/speech-key-secondary" \
            "SPEECH_PORT=$PEERS_SPEECH_PORT" \
            "SPEECH_PID=$(cat "$dir/run/speech.pid")" \
            "SPEECH_CONTROL=http://127.0.0.1:$control_port" \
            "SPEECH_LOG=$dir/speech.log" \
            "CONNECT_TO_SPEECH=$PEERS_SPEECH_HOST:443:127.0.0.1:$port" \
            "CONNECT_TO_LOGIN=$PEERS_LOGIN_HOST:443:127.0.0.1:$port"; do
            printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
        done
    } >"$dir/peers.env.new" || fail "writing peers.env"
    mv "$dir/peers.env.new" "$dir/peers.env" || fail "writing peers.env"
)

peers_stop() ( # DIR
    dir=$(peers__absdir "$1") || exit 1
    rc=0
    # Fault fronts first, Azurite last (nothing proxies to a stopped Azurite,
    # and the Speech peer reads from it).
    for f in "$dir"/run/fault-*.pid "$dir"/run/nginx.pid "$dir"/run/speech.pid "$dir"/run/azurite.pid; do
        [ -f "$f" ] || continue
        peers__stop_pidfile "$dir" "$f" || rc=1
    done
    exit $rc
)

peers_fault() ( # DIR KIND [ARG...]
    set -u
    dir=$(peers__absdir "$1") || exit 1
    kind=${2:-}
    shift 2 || { peers__say "usage: peers.sh fault DIR KIND [ARG...]"; exit 64; }
    peers__load_env "$dir" || exit 1
    [ -x "$(peers__nginx_bin)" ] || { peers__say "nginx not found"; exit 1; }
    for try in 1 2 3 4 5; do
        ports=$(peers__freeports 2) || exit 1
        port=$(echo "$ports" | sed -n 1p)
        PEERS_OTHER_PORT=$(echo "$ports" | sed -n 2p)
        root=$dir/fault-$port
        rm -rf "$root"
        mkdir -p "$root"
        peers__nginx_conf "$root" "$kind" "$port" "$@" || exit 64
        listen=("$port")
        [ "$kind" = redirect ] && listen+=("$PEERS_OTHER_PORT")
        peers__nginx_run "$dir" "fault-$port" "$root" "${listen[@]}"
        rc=$?
        [ "$rc" = 0 ] && break
        if [ "$rc" = 2 ] && [ "$try" -lt 5 ]; then
            continue
        fi
        peers__tail_logs "$root"
        exit 1
    done
    case "$kind" in
    expired) cert=$PEERS_PKI/server-expired.pem ;;
    wronghost) cert=$PEERS_PKI/server-wronghost.pem ;;
    unknownca) cert=$PEERS_PKI/server-unknownca.pem ;;
    rekeyed) cert=$PEERS_PKI/server-next.pem ;;
    *) cert=$PEERS_PKI/server.pem ;;
    esac
    {
        for kv in \
            "FAULT_KIND=$kind" \
            "FAULT_ARGS=$*" \
            "FAULT_PORT=$port" \
            "FAULT_PID=$(cat "$dir/run/fault-$port.pid")" \
            "FAULT_DIR=$root" \
            "FAULT_LOG=$root/access.log" \
            "FAULT_ERROR_LOG=$root/error.log" \
            "FAULT_CONNECT_TO=$PEERS_BLOB_HOST:443:127.0.0.1:$port" \
            "FAULT_CERT=$cert" \
            "FAULT_PIN=$(peers__pin "$cert")"; do
            printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
        done
        [ "$kind" = proxy ] && printf '%s=%q\n' FAULT_PROXY_URL "http://127.0.0.1:$port"
        if [ "$kind" = redirect ]; then
            printf '%s=%q\n' OTHER_PORT "$PEERS_OTHER_PORT" OTHER_LOG "$root/other.log" \
                OTHER_ERROR_LOG "$root/other-error.log"
        fi
    } >"$root/fault.env"
    echo "$port"
)

peers_admit() ( # DIR CERT.pem
    set -u
    dir=$(peers__absdir "$1") || exit 1
    peers__load_env "$dir" || exit 1
    fp=$(peers__fingerprint "$2") && [ -n "$fp" ] || { peers__say "admit: cannot read $2"; exit 1; }
    PEERS_EXTRA_CLIENT_FPS="$PEERS_EXTRA_CLIENT_FPS $fp"
    peers__setenv "$dir/peers.env" EXTRA_CLIENT_FINGERPRINTS "${PEERS_EXTRA_CLIENT_FPS# }"
    peers__nginx_conf "$dir" main "$NGINX_PORT" || exit 1
    peers_restart "$dir" nginx >&2 || exit 1
    id=$(peers__uuid) kind=ec
    openssl x509 -in "$2" -noout -text | grep -q rsaEncryption && kind=rsa
    cert=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
    node -e '
        const fs = require("fs");
        const [f, id, cert, fp, kind] = process.argv.slice(1);
        const c = JSON.parse(fs.readFileSync(f, "utf8"));
        c.clients.push({ id, cert });
        c.clientFingerprints[fp] = kind;
        fs.writeFileSync(f + ".new", JSON.stringify(c, null, 2));
        fs.renameSync(f + ".new", f);' "$dir/speech/config.json" "$id" "$cert" "$fp" "$kind" ||
        exit 1
    peers_restart "$dir" speech >&2 || exit 1
    echo "$id"
)

peers_fault_stop() ( # DIR PORT
    dir=$(peers__absdir "$1") || exit 1
    [ -f "$dir/run/fault-$2.pid" ] || { peers__say "no fault server on port $2 in $dir"; exit 1; }
    peers__stop_pidfile "$dir" "$dir/run/fault-$2.pid"
)

peers_kill() ( # DIR nginx|azurite|speech
    dir=$(peers__absdir "$1") || exit 1
    case "${2:-}" in nginx | azurite | speech) ;; *) peers__say "usage: peers.sh kill DIR nginx|azurite|speech"; exit 64 ;; esac
    pid=$(cat "$dir/run/$2.pid" 2>/dev/null)
    peers__ours "$pid" "$dir" || { peers__say "$2 is not running"; exit 1; }
    kill -KILL "$pid"
    for ((i = 0; i < 100; i++)); do
        peers__running "$pid" || exit 0
        sleep 0.05
    done
    exit 1
)

peers_restart() ( # DIR nginx|azurite|speech
    set -u
    dir=$(peers__absdir "$1") || exit 1
    what=${2:-}
    peers__load_env "$dir" || exit 1
    case "$what" in
    nginx)
        [ -f "$dir/run/nginx.pid" ] && peers__stop_pidfile "$dir" "$dir/run/nginx.pid"
        peers__nginx_run "$dir" nginx "$dir" "$NGINX_PORT" || { peers__tail_logs "$dir"; exit 1; }
        peers__poll "$PEERS_WAIT_S" "$(cat "$dir/run/nginx.pid")" peers__front_ready "$dir" "$NGINX_PORT" ||
            { peers__tail_logs "$dir"; exit 1; }
        peers__setenv "$dir/peers.env" NGINX_PID "$(cat "$dir/run/nginx.pid")"
        ;;
    azurite)
        [ -f "$dir/run/azurite.pid" ] && peers__stop_pidfile "$dir" "$dir/run/azurite.pid"
        peers__azurite_run "$dir" "$AZURITE_PORT" || { peers__tail_logs "$dir"; exit 1; }
        peers__setenv "$dir/peers.env" AZURITE_PID "$(cat "$dir/run/azurite.pid")"
        ;;
    speech)
        [ -f "$dir/run/speech.pid" ] && peers__stop_pidfile "$dir" "$dir/run/speech.pid"
        if ! peers__speech_spawn "$dir" "$AZURITE_PORT" || ! peers__speech_wait "$dir" "${SPEECH_CONTROL##*:}"; then
            peers__tail_logs "$dir"
            exit 1
        fi
        peers__setenv "$dir/peers.env" SPEECH_PID "$(cat "$dir/run/speech.pid")"
        ;;
    *)
        peers__say "usage: peers.sh restart DIR nginx|azurite|speech"
        exit 64
        ;;
    esac
)

# Whether the front on PORT presents a certificate that chains to CA and
# whose key is PIN (the device identity as client; the probe is not logged).
peers__front_presents() { # DIR PORT CA PIN
    local pki=$1/pki
    curl -s -o /dev/null --max-time 3 --cacert "$3" --pinnedpubkey "$4" \
        -H "X-Edgecap-Peers-Probe: 1" --cert "$pki/client.pem" --key "$pki/client.key" \
        --connect-to "$PEERS_BLOB_HOST:443:127.0.0.1:$2" "https://$PEERS_BLOB_HOST/?comp=list" \
        2>/dev/null
}

peers_server_key() ( # DIR current|next
    set -u
    dir=$(peers__absdir "$1") || exit 1
    case "${2:-}" in
    current) which=current ;;
    next) which=next ;;
    *) peers__say "usage: peers.sh server-key DIR current|next"; exit 64 ;;
    esac
    peers__load_env "$dir" || exit 1
    pid=$(cat "$dir/run/nginx.pid" 2>/dev/null)
    peers__ours "$pid" "$dir" || { peers__say "nginx is not running"; exit 1; }
    echo "$which" >"$dir/server-key"
    peers__nginx_conf "$dir" main "$NGINX_PORT" || exit 1
    ca=$CA_FILE pin=$SERVER_PIN
    [ "$which" = next ] && ca=$NEXT_CA_FILE pin=$NEXT_PIN
    # A graceful stop (QUIT: requests in progress finish, nothing is cut
    # half-way) and a start on the same port. (SIGHUP does not work with
    # master_process off: the reconfigured listener stops speaking TLS.)
    kill -QUIT "$pid"
    peers__poll "$PEERS_WAIT_S" "$pid" false
    if peers__running "$pid"; then
        peers__say "nginx (pid $pid) did not stop within ${PEERS_WAIT_S} s"
        exit 1
    fi
    rm -f "$dir/run/nginx.pid"
    peers__nginx_run "$dir" nginx "$dir" "$NGINX_PORT" || { peers__tail_logs "$dir"; exit 1; }
    pid=$(cat "$dir/run/nginx.pid")
    peers__setenv "$dir/peers.env" NGINX_PID "$pid"
    if ! peers__poll "$PEERS_WAIT_S" "$pid" peers__front_presents "$dir" "$NGINX_PORT" "$ca" "$pin"; then
        peers__say "the main front does not present the $which key within ${PEERS_WAIT_S} s"
        peers__tail_logs "$dir"
        exit 1
    fi
)

# Runs a node script of this directory with peers.env exported and Azurite's
# CA trusted.
peers__node() { # DIR SCRIPT ARGS...
    local dir script=$2
    dir=$(peers__absdir "$1") || return 1
    shift 2
    (
        set -a
        peers__load_env "$dir" || exit 1
        set +a
        NODE_EXTRA_CA_CERTS=$AZURITE_CA exec node "$PEERS_HOME/$script" "$@"
    )
}

peers_container() { # DIR NAME [PERMS [HOURS]]
    peers__node "$1" sas.js --container "$2" --create --permissions "${3:-rcwt}" --hours "${4:-24}"
}

peers_sas() { # DIR NAME [PERMS [HOURS]]
    peers__node "$1" sas.js --container "$2" --permissions "${3:-rcwt}" --hours "${4:-24}"
}

peers_readback() { # DIR ARGS...
    local dir=$1
    shift
    peers__node "$dir" readback.js "$@"
}

peers_pin() { peers__pin "$1"; }

peers_speech() ( # DIR PATH [JSON]
    dir=$(peers__absdir "$1") || exit 1
    peers__load_env "$dir" || exit 1
    case "$2" in /*) ;; *) peers__say "speech: PATH must start with /"; exit 64 ;; esac
    if [ $# -ge 3 ]; then
        curl -sS --fail-with-body --max-time 30 -H 'Content-Type: application/json' \
            --data-binary "$3" "$SPEECH_CONTROL$2"
    else
        curl -sS --fail-with-body --max-time 30 "$SPEECH_CONTROL$2"
    fi
)

peers__usage() {
    cat >&2 <<'EOF'
usage: peers.sh start DIR | stop DIR | env DIR
       peers.sh fault DIR KIND [ARG...] | fault-stop DIR PORT
       peers.sh kill DIR nginx|azurite|speech | restart DIR nginx|azurite|speech
       peers.sh admit DIR CERT.pem
       peers.sh speech DIR PATH [JSON]
       peers.sh container DIR NAME [PERMS [HOURS]] | sas DIR NAME [PERMS [HOURS]]
       peers.sh readback DIR --container NAME [--prefix P] [--out-dir D | --cat BLOB]
       peers.sh pin CERT.pem | server-key DIR current|next
(the comment at the top of tests/peers/peers.sh says more)
EOF
    return 64
}

peers_main() {
    local cmd=${1:-} n
    shift || true
    n=$#
    case "$cmd" in
    start | stop | env) [ "$n" -eq 1 ] || peers__usage || return ;;
    fault) [ "$n" -ge 2 ] || peers__usage || return ;;
    fault-stop | kill | restart | admit) [ "$n" -eq 2 ] || peers__usage || return ;;
    container | sas) [ "$n" -ge 2 ] && [ "$n" -le 4 ] || peers__usage || return ;;
    readback) [ "$n" -ge 2 ] || peers__usage || return ;;
    pin) [ "$n" -eq 1 ] || peers__usage || return ;;
    server-key) [ "$n" -eq 2 ] || peers__usage || return ;;
    speech) [ "$n" -ge 2 ] && [ "$n" -le 3 ] || peers__usage || return ;;
    *) peers__usage || return ;;
    esac
    case "$cmd" in
    start) peers_start "$1" ;;
    stop) peers_stop "$1" ;;
    env) cat "$1/peers.env" ;;
    fault) peers_fault "$@" ;;
    fault-stop) peers_fault_stop "$@" ;;
    kill) peers_kill "$@" ;;
    restart) peers_restart "$@" ;;
    admit) peers_admit "$@" ;;
    container) peers_container "$@" ;;
    sas) peers_sas "$@" ;;
    readback) peers_readback "$@" ;;
    pin) peers_pin "$1" ;;
    server-key) peers_server_key "$@" ;;
    speech) peers_speech "$@" ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    peers_main "$@"
    exit
fi
