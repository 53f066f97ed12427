#!/bin/sh
# Installs what the test peers (tests/peers/peers.sh) need, and nothing when it
# is already there: nginx (Debian nginx-light, which brings its echo module),
# openssl, curl and opus-tools (opusinfo, opusdec: the Speech peer checks and
# measures Ogg Opus with them) from Debian, node and npm (Debian's nodejs 18
# will do; a node that is already installed is kept), and Azurite, the Azure
# Storage Blob SDK, ajv + ajv-formats and jose (the Speech peer's contract
# and client-assertion checks) from tests/peers/package-lock.json with
# `npm ci`.
#
# `npm ci` runs only when tests/peers/node_modules does not match the lock:
# after a successful install the lock's SHA-256 is written to
# node_modules/.edgecap-lock.sha256, and a later run with the same lock and
# every direct dependency present does nothing; a changed lock (a package
# added or updated) changes the hash, so the next run installs again. (The
# modules have no native parts, so the node version does not matter for the
# stamp.)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS_DIR=$ROOT/tests/peers

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

installed() {
    dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qx installed
}

missing=""
for p in nginx-light openssl curl ca-certificates opus-tools; do
    installed "$p" || missing="$missing $p"
done
# A node from elsewhere (NodeSource, nvm) counts; Debian's npm conflicts
# with NodeSource's nodejs, which carries its own npm.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
    echo "install-peers: installing$missing" >&2
    n=0
    until $SUDO apt-get update -qq; do
        n=$((n + 1))
        if [ "$n" -ge 3 ]; then
            echo "install-peers: apt-get update incomplete, trying anyway" >&2
            break
        fi
        sleep 5
    done
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
    echo "install-peers: node $(node --version) is too old (18 or later needed)" >&2
    exit 1
fi

stamp=$PEERS_DIR/node_modules/.edgecap-lock.sha256
want=$(sha256sum "$PEERS_DIR/package-lock.json" | cut -d' ' -f1)
have_modules() {
    for m in $(node -p 'Object.keys(require(process.argv[1]).dependencies).join(" ")' \
        "$PEERS_DIR/package.json"); do
        [ -f "$PEERS_DIR/node_modules/$m/package.json" ] || return 1
    done
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && have_modules; then
    exit 0
fi
echo "install-peers: npm ci --prefix tests/peers" >&2
npm ci --prefix "$PEERS_DIR" --no-audit --no-fund --prefer-offline --loglevel=error
echo "$want" >"$stamp"
