#!/bin/bash
# The command line: usage, --help for every command, sysexits codes for usage
# errors (64), and what `edgecap version` reports.
# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 23

COMMANDS="run check-config version help"

ec
want_rc 64
want_err_re '^usage: edgecap <command> \[options\]'
want_empty "$OUT"
verdict "no command: exit 64, usage on stderr, nothing on stdout"

ec frobnicate
want_rc 64
want_err_fixed "unknown command 'frobnicate'"
want_err_re '^usage: edgecap '
want_empty "$OUT"
verdict "unknown command: exit 64, names it, usage on stderr"

for args in "--help" "-h" "help"; do
    ec $args
    want_rc 0
    want_out_re '^usage: edgecap <command> \[options\]'
    for c in $COMMANDS; do
        want_out_re "^  $c( |$)"
    done
    want_empty "$ERR"
    verdict "edgecap $args: exit 0, usage listing every command on stdout"
done

for c in $COMMANDS; do
    case $c in
    run) usage='run --config FILE' ;;
    check-config) usage='check-config FILE' ;;
    version) usage='version' ;;
    help) usage='help [COMMAND]' ;;
    esac
    ec "$c" --help
    want_rc 0
    want_fixed "$OUT" "usage: edgecap $usage"
    want_empty "$ERR"
    verdict "edgecap $c --help: exit 0, shows 'usage: edgecap $usage'"
done

ec help run
want_rc 0
want_fixed "$OUT" "usage: edgecap run --config FILE"
verdict "edgecap help run: exit 0, shows run's usage"

ec help frobnicate
want_rc 64
want_err_fixed "unknown command 'frobnicate'"
verdict "edgecap help frobnicate: exit 64, names the command"

for c in run check-config version help; do
    ec "$c" --frobnicate
    want_rc 64
    want_err_fixed "'--frobnicate'"
    want_empty "$OUT"
    verdict "edgecap $c --frobnicate: exit 64, names the option"
done

ec run --config
want_rc 64
want_err_fixed "usage: edgecap run --config FILE"
verdict "edgecap run --config without FILE: exit 64 with run's usage"

ec check-config
want_rc 64
want_err_fixed "usage: edgecap check-config FILE"
verdict "edgecap check-config without FILE: exit 64 with its usage"

ec check-config config/edgecap.conf.example config/edgecap.conf.example
want_rc 64
want_err_fixed "usage: edgecap check-config FILE"
verdict "edgecap check-config with two FILEs: exit 64"

ec version extra
want_rc 64
want_err_fixed "usage: edgecap version"
verdict "edgecap version with an argument: exit 64"

# ---- version ----------------------------------------------------------------

ec version
cp "$OUT" "$T/version.out"
want_rc 0
want_out_re '^edgecap [0-9]+\.[0-9]+\.[0-9]+'
want_empty "$ERR"
verdict "edgecap version: exit 0, first line names edgecap's version"

REASONS=()
want_re "$T/version.out" '^libcurl/7\.88\.1 mbedTLS/2\.28\.[0-9]+'
# libcurl must run on the very mbedTLS the daemon links, not on a second stack.
curl_tls=$(sed -nE 's#^libcurl/[^ ]+ mbedTLS/([0-9.]+).*#\1#p' "$T/version.out")
mbed=$(sed -nE 's#^mbedTLS ([0-9.]+)$#\1#p' "$T/version.out")
[ -n "$mbed" ] && [ "$curl_tls" = "$mbed" ] ||
    fail_because "libcurl's TLS backend is mbedTLS '$curl_tls', the linked mbedTLS is '$mbed'"
# One TLS stack: no OpenSSL, GnuTLS or NSS anywhere in curl's line.
want_no_re "$T/version.out" '^libcurl/.*(OpenSSL|GnuTLS|NSS|wolfSSL)'
verdict "version: libcurl/7.88.1 runs on mbedTLS 2.28.x, the same mbedTLS edgecap links" \
    "$T/version.out"

REASONS=()
want_re "$T/version.out" '^mbedTLS 2\.28\.[0-9]+$'
want_re "$T/version.out" '^alsa-lib [0-9]+\.[0-9]+\.[0-9]+'
want_re "$T/version.out" '^libopus [0-9]+\.[0-9]+'
want_re "$T/version.out" '^libopusenc [0-9]+\.[0-9]+'
verdict "version: lines for mbedTLS, alsa-lib, libopus and libopusenc" "$T/version.out"

ec --version
want_rc 0
cmp -s "$OUT" "$T/version.out" || fail_because "--version differs from version"
verdict "edgecap --version: exit 0, same as edgecap version"

finish
