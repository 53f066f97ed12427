#!/bin/sh
# Builds libcurl on mbedTLS, HTTPS only, as a static library for one ARCH, from
# Debian's own curl source package with Debian's security patches applied.
# The device then carries one TLS stack (mbedTLS), not two.
#
#   toolchain/build-curl.sh ARCH OUTDIR
#
# Result: OUTDIR/curl/{include,lib/libcurl.a,bin/curl-config}. A second run
# with the result present does nothing.
set -eu

ARCH=$1
OUT=$(realpath -m "$2")
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$HERE/$ARCH.mk"

PREFIX=$OUT/curl
if [ -f "$PREFIX/lib/libcurl.a" ] && [ -f "$PREFIX/.edgecap-stamp" ]; then
    exit 0
fi

"$HERE/install-deps.sh" host curl-src

# The patched source tree is shared by every ARCH; builds are out of tree.
SRCROOT=$(realpath -m "$OUT/../../src")
mkdir -p "$SRCROOT"
if [ ! -f "$SRCROOT/.curl-ready" ]; then
    rm -rf "$SRCROOT/curl-fetch"
    mkdir -p "$SRCROOT/curl-fetch"
    (cd "$SRCROOT/curl-fetch" && apt-get source -qq curl >/dev/null 2>&1) || {
        echo "build-curl: apt-get source curl failed" >&2
        exit 1
    }
    tree=$(find "$SRCROOT/curl-fetch" -maxdepth 1 -type d -name 'curl-7*' | head -n1)
    [ -n "$tree" ] || { echo "build-curl: no curl source tree" >&2; exit 1; }
    # dpkg-source applied the whole series; the last two patches turn the
    # tree into the GnuTLS/NSS flavours. Undo them (newest first) to get the
    # plain library that Debian's OpenSSL flavour builds from.
    for p in 99_nss.patch 90_gnutls.patch; do
        patch -d "$tree" -R -p1 -s <"$tree/debian/patches/$p"
    done
    (cd "$tree" && autoreconf -fi >/dev/null 2>&1)
    rm -rf "$SRCROOT/curl"
    mv "$tree" "$SRCROOT/curl"
    rm -rf "$SRCROOT/curl-fetch"
    touch "$SRCROOT/.curl-ready"
fi

BUILD=$OUT/curl-build
rm -rf "$BUILD" "$PREFIX"
mkdir -p "$BUILD"
HOSTOPT=""
[ -z "$EC_TRIPLET" ] || HOSTOPT="--host=$EC_TRIPLET"

cd "$BUILD"
# Everything not needed to PUT/POST over HTTPS is off. Proxy support stays
# compiled in (HTTPS CONNECT through a provisioned proxy); the daemon turns it
# off per handle unless `[upload] proxy` names one.
# shellcheck disable=SC2086
WIDE=""
[ "${EC_WIDE_TIME:-0}" != 1 ] || WIDE="-D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64"
CC="${EC_CC}" CFLAGS="-O2 -fPIC -fstack-protector-strong -D_FORTIFY_SOURCE=2 $WIDE" \
"$SRCROOT/curl/configure" $HOSTOPT --prefix="$PREFIX" \
    --disable-shared --enable-static \
    --with-mbedtls --without-gnutls \
    --without-wolfssl --without-bearssl --without-rustls --without-nss \
    --without-libpsl --without-brotli --without-zstd --without-zlib \
    --without-libidn2 --without-librtmp --without-libssh --without-libssh2 \
    --without-nghttp2 --without-nghttp3 --without-ngtcp2 --without-quiche \
    --without-msh3 --without-hyper --without-libgsasl --without-gssapi \
    --without-ca-bundle --without-ca-path --without-ca-fallback \
    --disable-ftp --disable-file --disable-ldap --disable-ldaps --disable-rtsp \
    --disable-dict --disable-telnet --disable-tftp --disable-pop3 \
    --disable-imap --disable-smb --disable-smtp --disable-gopher \
    --disable-mqtt --disable-manual --disable-cookies --disable-alt-svc \
    --disable-netrc --disable-ntlm --disable-ntlm-wb --disable-tls-srp \
    --disable-crypto-auth --disable-unix-sockets --disable-doh --disable-hsts \
    --disable-websockets --disable-dateparse --disable-progress-meter \
    --disable-get-easy-options --disable-libcurl-option --disable-sspi \
    --disable-dnsshuffle --disable-verbose --enable-symbol-hiding \
    --enable-ipv6 --enable-proxy --enable-mime --enable-headers-api \
    --enable-threaded-resolver --enable-option-checking=fatal \
    >configure.log 2>&1 || { tail -30 configure.log >&2; exit 1; }

grep -q 'Protocols:.*HTTP HTTPS *$' configure.log || {
    echo "build-curl: unexpected protocol set:" >&2
    grep 'Protocols:' configure.log >&2
    exit 1
}
make -j"$(nproc)" -C lib >make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
make -C lib install >>make.log 2>&1
make -C include install >>make.log 2>&1
make install-binSCRIPTS install-pkgconfigDATA >>make.log 2>&1
touch "$PREFIX/.edgecap-stamp"
grep -E '^ *(SSL|Protocols|Features):' configure.log
