#!/bin/bash
# Runs one build configuration's tests and prints its summary.
#
#   tests/run.sh --arch ARCH --build DIR [--qemu CMD --sysroot DIR] [--valgrind]
#                [--system-only "NAME..." --system-only-why TEXT]
#                [--system-skip "NAME..." --system-skip-why TEXT] [--results NAME]
#                UNIT_BIN...
#
# --system-only runs just the named tests/system/*.sh scripts (a board whose
# emulator is slow runs a core set); every other script is reported as one
# skipped test with TEXT as the reason, so the summary shows what did not run.
# --system-skip reports the named scripts skipped the same way (they run
# elsewhere, e.g. beside this run). --results NAME: results in results-NAME/.
#
# Unit binaries (cmocka) report in TAP (CMOCKA_MESSAGE_OUTPUT=TAP); every
# tests/system/*.sh script prints TAP lines too. Board builds run under
# qemu-user explicitly (no binfmt_misc here). Results go to DIR/results/;
# DIR/results[-valgrind]/summary holds "PASSED FAILED" for tests/run-all.sh. A binary
# that crashes, or exits non-zero without a failing test line, counts as one
# failure, as does a plan that does not match the lines seen.
set -u

ARCH=x86_64 BUILD="" QEMU="" SYSROOT="" VALGRIND=0 SYSTEM_ONLY="" SYSTEM_ONLY_WHY="" SYSTEM_SKIP="" SYSTEM_SKIP_WHY="" RESULTS_NAME=""
while [ $# -gt 0 ]; do
    case "$1" in
    --arch) ARCH=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --qemu) QEMU=$2; shift 2 ;;
    --sysroot) SYSROOT=$2; shift 2 ;;
    --valgrind) VALGRIND=1; shift ;;
    --system-only) SYSTEM_ONLY=$2; shift 2 ;;
    --system-skip) SYSTEM_SKIP=$2; shift 2 ;;
    --system-skip-why) SYSTEM_SKIP_WHY=$2; shift 2 ;;
    --results) RESULTS_NAME=$2; shift 2 ;;
    --system-only-why) SYSTEM_ONLY_WHY=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 64 ;;
    *) break ;;
    esac
done
[ -n "$BUILD" ] || { echo "run.sh: --build DIR is required" >&2; exit 64; }

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
RESULTS=$BUILD/results$([ "$VALGRIND" = 1 ] && echo -valgrind)${RESULTS_NAME:+-$RESULTS_NAME}
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

# One way to start a binary of this configuration, used by every test.
RUNNER=()
if [ -n "$QEMU" ]; then
    RUNNER=("$QEMU" -L "$SYSROOT")
elif [ "$VALGRIND" = 1 ]; then
    RUNNER=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite)
    export EC_UNDER_VALGRIND=1
fi
# Wrappers live in the results directory: native and valgrind runs of the
# same build each have their own.
WRAP=$RESULTS/edgecap-run
{
    echo '#!/bin/sh'
    echo "# Starts $BUILD/edgecap the way this configuration runs it."
    printf 'exec'
    printf ' %q' "${RUNNER[@]}" "$BUILD/edgecap"
    printf ' "$@"\n'
} >"$WRAP"
chmod +x "$WRAP"
# The same for test tools: $TOOL NAME ARGS... runs $BUILD/tools/NAME.
TOOL=$RESULTS/tool-run
{
    echo '#!/bin/sh'
    echo "# Starts a test tool of $BUILD/tools the way this configuration runs it."
    echo 'name=$1; shift'
    printf 'exec'
    [ "${#RUNNER[@]}" -eq 0 ] || printf ' %q' "${RUNNER[@]}"
    printf ' "%s/tools/$name" "$@"\n' "$BUILD"
} >"$TOOL"
chmod +x "$TOOL"

passed=0 failed=0 skipped_total=0
failures=()

# Counts the TAP lines of one run; $1 name, $2 exit code, $3 TAP file,
# $4 seconds it took (shown, so CI logs tell where the suite's time goes).
tally() {
    local name=$1 rc=$2 tap=$3 secs=$4 ok notok skipped plan seen
    # a skipped test is "ok N # SKIP" in TAP, but cmocka prints "not ok N # SKIP"
    ok=$(grep -cE '^ok [0-9]+' "$tap")
    skipped=$(grep -cE '^(not )?ok [0-9]+.*# SKIP' "$tap")
    notok=$(grep -E '^not ok [0-9]+' "$tap" | grep -cv '# SKIP')
    ok=$((ok + $(grep -E '^not ok [0-9]+' "$tap" | grep -c '# SKIP')))
    plan=$(sed -nE 's/^1\.\.([0-9]+).*/\1/p' "$tap" | head -n1)
    seen=$((ok + notok))
    passed=$((passed + ok - skipped))
    failed=$((failed + notok))
    skipped_total=$((skipped_total + skipped))
    if [ "$notok" -gt 0 ]; then
        # each failing line (the first three) with the reasons diagnosed
        # under it: a CI log shows why without the TAP file
        failures+=("$name: $(awk '
            /^not ok [0-9]+/ && !/# SKIP/ { if (++n > 3) exit; printf "%s%s", (n > 1 ? "\n    " : ""), $0; why = 2; next }
            why > 0 && /^# / { printf "\n      %s", substr($0, 1, 400); why--; next }
            { why = 0 }' "$tap")")
    fi
    if [ "$rc" -ne 0 ] && [ "$notok" -eq 0 ]; then
        failed=$((failed + 1))
        failures+=("$name: exited $rc with no failing test line (crash?)")
    elif [ -n "$plan" ] && [ "$plan" -ne "$seen" ]; then
        failed=$((failed + 1))
        failures+=("$name: planned $plan tests, saw $seen")
    elif [ "$seen" -eq 0 ]; then
        failed=$((failed + 1))
        failures+=("$name: ran no test")
    fi
    printf '  %-40s %3d passed, %d failed%s%s  [%ds]\n' "$name" "$((ok - skipped))" "$notok" \
        "$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")" \
        "$([ "$rc" -ne 0 ] && echo " (exit $rc)")" "$secs"
}

echo "== $ARCH: $(basename "$BUILD")${QEMU:+ under $QEMU}$([ "$VALGRIND" = 1 ] && echo ' under valgrind')"
for bin in "$@"; do
    name=$(basename "$bin")
    tap=$RESULTS/$name.tap
    t0=$SECONDS
    (cd "$SRCDIR" && EC_SRCDIR=$SRCDIR CMOCKA_MESSAGE_OUTPUT=TAP \
        timeout 300 "${RUNNER[@]}" "$bin") >"$tap" 2>"$RESULTS/$name.stderr"
    tally "$name" $? "$tap" $((SECONDS - t0))
done

# System tests: shell scripts that drive the CLI (and later the peers).
for script in "$SRCDIR"/tests/system/*.sh; do
    [ -e "$script" ] || continue
    name=$(basename "$script" .sh)
    tap=$RESULTS/$name.tap
    why=""
    if [ -n "$SYSTEM_ONLY" ] && [[ " $SYSTEM_ONLY " != *" $name "* ]]; then
        why=${SYSTEM_ONLY_WHY:-not in the set this configuration runs}
    elif [[ " $SYSTEM_SKIP " == *" $name "* ]]; then
        why=${SYSTEM_SKIP_WHY:-runs elsewhere in this test run}
    fi
    if [ -n "$why" ]; then
        printf '1..1\nok 1 - %s # SKIP %s\n' "$name" "$why" >"$tap"
        tally "$name" 0 "$tap" 0
        continue
    fi
    t0=$SECONDS
    (cd "$SRCDIR" && EC_SRCDIR=$SRCDIR ARCH=$ARCH BUILD=$BUILD EDGECAP=$WRAP TOOL=$TOOL \
        EC_QEMU="$QEMU" EC_SYSROOT="$SYSROOT" EC_VALGRIND=$VALGRIND \
        timeout 600 bash "$script") >"$tap" 2>"$RESULTS/$name.stderr"
    tally "$name" $? "$tap" $((SECONDS - t0))
done

echo "$passed $failed $skipped_total" >"$RESULTS/summary"
for f in "${failures[@]}"; do
    echo "  FAIL $f"
done
echo "$ARCH$([ "$VALGRIND" = 1 ] && echo -valgrind)/$(basename "$BUILD"): $passed passed, $failed failed, $skipped_total skipped"
[ "$failed" -eq 0 ]
