#!/bin/bash
# A secret cannot reach a log by accident: passing an ec_secret (or its bytes)
# where the logger expects a string does not compile, while EC_LOG_SECRET,
# which prints "***", does. Compile-only (-fsyntax-only) with the host
# compiler ($CC, default cc); the property is the header's, not the ARCH's.
# Run from the repository root; prints TAP.
set -u
CC=${CC:-cc}
CFLAGS=(-std=c11 -Wall -Wextra -Werror -Iinclude -fsyntax-only)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/edgecap-secret-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

n=0 fails=0
ok() {
    n=$((n + 1))
    echo "ok $n - $1"
}
not_ok() {
    n=$((n + 1))
    echo "not ok $n - $1"
    fails=$((fails + 1))
    sed 's/^/# /' "$tmp/out" # the compiler's words, as TAP diagnostics
}

# snippet NAME CALL: a translation unit whose line 12 is CALL.
snippet() {
    cat >"$tmp/$1.c" <<EOF
#include "edgecap/log.h"
#include "edgecap/secret.h"

void use(const ec_secret *secret, const char *path, char *name, char buf[8]);
void use(const ec_secret *secret, const char *path, char *name, char buf[8])
{
    (void)secret;
    (void)path;
    (void)name;
    (void)buf;
    /* line 11 */
    $2;
}
EOF
}

# must_compile DESCRIPTION NAME CALL [extra flags]
must_compile() {
    local d=$1 name=$2 call=$3
    shift 3
    snippet "$name" "$call"
    if "$CC" "${CFLAGS[@]}" "$@" "$tmp/$name.c" >"$tmp/out" 2>&1; then ok "$d"; else not_ok "$d"; fi
}

# must_not_compile DESCRIPTION NAME CALL [extra flags]: it must fail, and at
# line 12 (the call), not because the snippet is broken somewhere else.
must_not_compile() {
    local d=$1 name=$2 call=$3
    shift 3
    snippet "$name" "$call"
    if "$CC" "${CFLAGS[@]}" "$@" "$tmp/$name.c" >"$tmp/out" 2>&1; then
        echo "compiled, but must not" >>"$tmp/out"
        not_ok "$d"
    elif grep -q "$name\.c:12:" "$tmp/out"; then
        ok "$d"
    else
        not_ok "$d (failed, but not at the call)"
    fi
}

echo "1..7"
if ! command -v "$CC" >/dev/null 2>&1; then
    for i in 1 2 3 4 5 6 7; do echo "not ok $i - compiler '$CC' not found"; done
    exit 1
fi

must_compile "EC_LOG_SECRET with an ec_secret compiles" secret_ok \
    'ec_log(EC_LOG_INFO, "x", EC_LOG_SECRET("k", secret))'
must_compile "EC_LOG_STR with C strings compiles (control)" strings_ok \
    'ec_log(EC_LOG_INFO, "x", EC_LOG_STR("a", path), EC_LOG_STR("b", name), EC_LOG_STR("c", buf), EC_LOG_STR("d", "lit"), EC_LOG_STR("e", (const char *)0))'
must_not_compile "EC_LOG_STR with an ec_secret does not compile" secret_as_str \
    'ec_log(EC_LOG_INFO, "x", EC_LOG_STR("k", secret))'
must_not_compile "EC_LOG_STR with an ec_secret does not compile even without -Werror" \
    secret_as_str_no_werror 'ec_log(EC_LOG_INFO, "x", EC_LOG_STR("k", secret))' -Wno-error -w
must_not_compile "EC_LOG_STR with ec_secret_bytes() does not compile" secret_bytes_as_str \
    'ec_log(EC_LOG_INFO, "x", EC_LOG_STR("k", ec_secret_bytes(secret)))' -Wno-error -w
must_not_compile "an ec_secret as the event name does not compile" secret_as_event \
    'ec_log(EC_LOG_INFO, secret, EC_LOG_STR("k", path))' -Wno-error -w
must_not_compile "EC_LOG_STR with a void * buffer does not compile" void_as_str \
    'ec_log(EC_LOG_INFO, "x", EC_LOG_STR("k", (void *)secret))' -Wno-error -w

[ "$fails" -eq 0 ]
