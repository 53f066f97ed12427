#!/bin/bash
# The test peers themselves (Azurite and the Speech + Entra ID token peer
# behind nginx, tests/peers/): their own self-test with standard tools, so
# that an upload or Speech test that fails points at edgecap, not at the peer. It does not depend on the build under test, so it
# runs once, in the native configuration.
if [ "${ARCH:-x86_64}" != x86_64 ] || [ "${EC_VALGRIND:-0}" = 1 ] || [[ "${BUILD:-}" == *-san ]]; then
    echo "1..1"
    echo "ok 1 - peers self-test # SKIP runs in the native configuration only"
    exit 0
fi
exec bash "$(dirname "$0")/../peers/selftest.sh"
