#!/bin/sh
# Installs exactly what a build, the tests or the demo need, and nothing when it
# is already there. Idempotent: `apt-get update` runs only when a package is
# missing, foreign architectures are added only when asked for.
#
#   toolchain/install-deps.sh [host|aarch64|armhf|curl-src|tools|peers|image|all] ...
set -eu

HOST_PKGS="build-essential pkg-config libasound2-dev libopus-dev libopusenc-dev
 libinih-dev libcmocka-dev libmbedtls-dev libcjson-dev opus-tools
 dpkg-dev autoconf automake libtool ca-certificates libp11-kit-dev"

cross_pkgs() { # $1 = debian arch, $2 = gnu triplet
    echo "gcc-$2 libc6-dev-$1-cross qemu-user-static
 libasound2-dev:$1 libopus-dev:$1 libopusenc-dev:$1 libinih-dev:$1
 libcmocka-dev:$1 libmbedtls-dev:$1 libcjson-dev:$1 libp11-kit-dev:$1"
}

# The test peers: nginx (with its echo module, for a stalling peer) in front of
# Azurite (npm, pinned in tests/peers/package-lock.json), openssl for the
# test PKI, curl for the peer self-test and the upload benchmark.
PEER_PKGS="nginx-light libnginx-mod-http-echo openssl curl ca-certificates"

# Lint and test tools: formatting check, static analysis, memory checking,
# speech synthesis plus sox for test and demo audio, and PyJWT (on
# cryptography) to verify the client assertion independently; faketime to seal
# segments "in the past" for the retention test; systemd for systemd-analyze
# (verify and security of config/edgecap.service, offline). SoftHSM2 is the
# PKCS#11 token of the key store tests, opensc's pkcs11-tool their outside view.
TOOL_PKGS="clang-format cppcheck valgrind espeak-ng sox time python3-jwt python3-cryptography
 python3-prometheus-client faketime systemd softhsm2 opensc"

# The field image (toolchain/image.sh, qemu-run.sh, tests/system/image.sh,
# image_armhf.sh) and flashing (toolchain/flash.sh): qemu-system-aarch64 and
# qemu-system-arm (both in Debian's qemu-system-arm) to boot it, the
# filesystem and partition tools that build it without root or loop devices,
# mtools to write the provisioning partition unmounted, kmod's depmod/modinfo
# on the unpacked Debian kernel, util-linux (losetup, partx, lsblk) and openssl
# for flash.sh's checks. The arm64 and armmp kernels and busybox are fetched
# with apt-get download, never installed here.
IMAGE_PKGS="qemu-system-arm squashfs-tools dosfstools mtools e2fsprogs fdisk cpio kmod
 gzip opus-tools util-linux openssl"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

NATIVE=$(dpkg --print-architecture)

# A bare name means the native (or arch: all) package; `name:arch` a foreign
# one. dpkg-query lists every installed architecture of a bare name.
installed() {
    case "$1" in
    *:*) want=${1#*:} name=${1%%:*} ;;
    *) want=$NATIVE name=$1 ;;
    esac
    dpkg-query -W -f='${Architecture} ${db:Status-Status}\n' "$name" 2>/dev/null |
        grep -qE "^($want|all) installed$"
}

missing() {
    out=""
    for p in "$@"; do
        installed "$p" || out="$out $p"
    done
    echo "$out"
}

UPDATED=0
apt_update() {
    if [ "$UPDATED" -eq 0 ]; then
        # A mirror caught mid-sync fails one index; retry, then go on with
        # what was fetched and let the install itself decide.
        n=0
        until $SUDO apt-get update -qq; do
            n=$((n + 1))
            if [ "$n" -ge 3 ]; then
                echo "install-deps: apt-get update incomplete, trying anyway" >&2
                break
            fi
            sleep 5
        done
        UPDATED=1
    fi
}

need() {
    m=$(missing "$@")
    [ -n "$m" ] || return 0
    echo "install-deps: installing$m" >&2
    apt_update
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $m >/dev/null
}

add_arch() {
    if ! dpkg --print-foreign-architectures | grep -qx "$1"; then
        $SUDO dpkg --add-architecture "$1"
        UPDATED=0
    fi
}

# `apt-get source curl` needs a deb-src entry signed like the deb one.
curl_src() {
    src=/etc/apt/sources.list.d/edgecap-src.sources
    if [ ! -f "$src" ]; then
        main=/etc/apt/sources.list.d/debian.sources
        [ -f "$main" ] || { echo "install-deps: $main not found" >&2; exit 1; }
        sed -e 's/^Types: deb$/Types: deb-src/' "$main" | $SUDO tee "$src" >/dev/null
        UPDATED=0
    fi
}

for what in "${@:-host}"; do
    case "$what" in
    host) need $HOST_PKGS ;;
    curl-src)
        curl_src
        apt-cache showsrc curl 2>/dev/null | grep -q '^Package: curl' || apt_update
        ;;
    aarch64) add_arch arm64; need $(cross_pkgs arm64 aarch64-linux-gnu) ;;
    armhf) add_arch armhf; need $(cross_pkgs armhf arm-linux-gnueabihf) ;;
    peers)
        need $PEER_PKGS
        # Node.js: the machine's own when present (NodeSource conflicts with
        # Debian's npm), else Debian's
        command -v node >/dev/null 2>&1 || need nodejs
        command -v npm >/dev/null 2>&1 || need npm
        "$(dirname "$0")/install-peers.sh"
        ;;
    tools) need $TOOL_PKGS ;;
    image) need $IMAGE_PKGS ;;
    all) "$0" host curl-src aarch64 armhf tools peers image ;;
    *) echo "usage: $0 [host|aarch64|armhf|curl-src|tools|peers|image|all]..." >&2; exit 64 ;;
    esac
done
