#!/bin/bash
# The daemon binary of this configuration carries the hardening the build
# promises: PIE, full RELRO (GNU_RELRO + BIND_NOW), stack protector, FORTIFY
# (_chk variants; not in sanitizer builds, which replace it), no executable
# stack, and no libcurl/OpenSSL/GnuTLS shared library (one TLS stack: libcurl
# is static on mbedTLS). Reads the ELF with readelf, which handles every ARCH.
set -u
BIN=$BUILD/edgecap
n=0 fails=0
check() { # $1 description, rest: command that must succeed
    local d=$1
    shift
    n=$((n + 1))
    if "$@" >/dev/null 2>&1; then
        echo "ok $n - $d"
    else
        echo "not ok $n - $d"
        fails=$((fails + 1))
    fi
}
skip() {
    n=$((n + 1))
    echo "ok $n - $1 # SKIP $2"
}

echo "1..8"
hdr=$(readelf -h -l -d -W "$BIN")
syms=$(readelf --dyn-syms -W "$BIN")
check "position-independent executable (ELF type DYN, FLAGS_1 PIE)" \
    bash -c 'grep -q "Type:.*DYN" <<<"$0" && grep -q "Flags:.*PIE" <<<"$0"' "$hdr"
check "GNU_RELRO segment present" grep -q GNU_RELRO <<<"$hdr"
check "BIND_NOW (full RELRO)" grep -qE 'BIND_NOW|Flags:.*NOW' <<<"$hdr"
check "stack protector referenced" grep -q '__stack_chk_fail' <<<"$syms"
if [[ "$BUILD" == *-san ]]; then
    skip "FORTIFY_SOURCE _chk functions referenced" "sanitizer build replaces FORTIFY"
else
    check "FORTIFY_SOURCE _chk functions referenced" grep -qE '__[a-z]+_chk' <<<"$syms"
fi
check "stack not executable (GNU_STACK RW)" \
    bash -c 'grep GNU_STACK <<<"$0" | grep -qv "RWE"' "$hdr"
check "no shared libcurl, OpenSSL or GnuTLS (one TLS stack)" \
    bash -c '! grep -qE "NEEDED.*(libcurl|libssl|libcrypto\.so|libgnutls)" <<<"$0"' "$hdr"
check "links mbedTLS" grep -qE 'NEEDED.*libmbedtls' <<<"$hdr"
[ "$fails" -eq 0 ]
