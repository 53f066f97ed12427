#!/bin/bash
# Everything CI runs (`make test`): lint, the host build's tests, the same under
# valgrind, an ASan+UBSan build's tests, the aarch64 and armhf builds' tests
# under qemu-user, and the appliance tests (flashing, the field images under
# qemu-system-aarch64 and qemu-system-arm). Ends with one line "total: N passed, M failed" and
# exits non-zero when anything failed, including a build.
#
#   tests/run-all.sh [--san-only]     (--san-only: `make SAN=1 test`)
set -u
cd "$(dirname "$0")/.."

MAKE=${MAKE:-make}
JOBS=-j$(nproc)
SAN_ONLY=0
[ "${1:-}" = "--san-only" ] && SAN_ONLY=1

start=$(date +%s)
total_passed=0 total_failed=0 total_skipped=0
broken=()


add_summary() { # $1 results dir
    local p f s
    if [ -f "$1/summary" ]; then
        read -r p f s <"$1/summary"
        total_passed=$((total_passed + p))
        total_failed=$((total_failed + f))
        total_skipped=$((total_skipped + ${s:-0}))
        return 0
    fi
    return 1
}

build_config() { # $1 label, rest: make args; non-zero (and noted) when the build failed
    local label=$1
    shift
    if ! $MAKE -s $JOBS "$@" check-build >/dev/null; then
        total_failed=$((total_failed + 1))
        broken+=("$label: build failed")
        return 1
    fi
}

run_config() { # $1 label, $2 results dir, rest: make args
    local label=$1 dir=$2
    shift 2
    rm -f "$dir/summary"
    build_config "$label" "$@" || return
    $MAKE -s "$@" check
    add_summary "$dir" || { total_failed=$((total_failed + 1)); broken+=("$label: no results"); }
}

# Configurations two at a time (every one built first, one after the other):
# much of a system test is waiting (peers starting, audio paced in real time),
# so two share the machine's cores well. A queue, longest first, rather than
# fixed pairs: when one finishes the next starts, no core waits for the
# slower of a pair. Each one's output is shown whole when it has finished.
# Every test picks its own free ports and scratch dirs.
run_queue() { # label dir "args" [label dir "args"]...
    local labels=() dirs=() args=() logs=() i next=0 running=0 done_pid
    local -A index_of
    while [ $# -ge 3 ]; do
        labels+=("$1") dirs+=("$2") args+=("$3")
        shift 3
    done
    for i in "${!labels[@]}"; do
        rm -f "${dirs[$i]}/summary"
        logs[$i]=$(mktemp)
        # shellcheck disable=SC2086 # the make arguments are words
        build_config "${labels[$i]}" ${args[$i]} || args[$i]=""
    done
    while [ "$next" -lt "${#labels[@]}" ] || [ "$running" -gt 0 ]; do
        while [ "$running" -lt 2 ] && [ "$next" -lt "${#labels[@]}" ]; do
            if [ -n "${args[$next]}" ]; then
                # shellcheck disable=SC2086
                $MAKE -s ${args[$next]} check >"${logs[$next]}" 2>&1 &
                index_of[$!]=$next
                running=$((running + 1))
            fi
            next=$((next + 1))
        done
        [ "$running" -gt 0 ] || break
        wait -n -p done_pid
        running=$((running - 1))
        i=${index_of[$done_pid]}
        cat "${logs[$i]}"
        add_summary "${dirs[$i]}" ||
            { total_failed=$((total_failed + 1)); broken+=("${labels[$i]}: no results"); }
    done
    rm -f "${logs[@]}"
}

if [ "$SAN_ONLY" = 1 ]; then
    toolchain/install-deps.sh host tools peers || exit 1
    run_config "x86_64 ASan+UBSan" build/x86_64-san/results ARCH=x86_64 SAN=1
else
    toolchain/install-deps.sh host aarch64 armhf tools peers image || exit 1
    if $MAKE -s lint; then
        total_passed=$((total_passed + 1))
    else
        total_failed=$((total_failed + 1))
        broken+=("lint")
    fi
    # Longest first (as measured in CI: valgrind, then qemu-aarch64); the
    # native run last, beside the appliance tests (flashing, the field images
    # under qemu-system-aarch64 and -arm), which use the CPU while it waits on peers.
    run_queue \
        "x86_64 valgrind" build/x86_64/results-valgrind "ARCH=x86_64 CHECK_FLAGS=--valgrind" \
        "aarch64 (qemu)" build/aarch64/results "ARCH=aarch64" \
        "x86_64 ASan+UBSan" build/x86_64-san/results "ARCH=x86_64 SAN=1" \
        "armhf (qemu)" build/armhf/results "ARCH=armhf" \
        "x86_64" build/x86_64/results "ARCH=x86_64 SYSTEM_SKIP=flash,image,image_armhf" \
        "x86_64 appliance (flash, field images)" build/x86_64/results-system \
        "ARCH=x86_64 UNIT=0 RESULTS_NAME=system SYSTEM_ONLY=flash,image,image_armhf"
fi

for b in "${broken[@]}"; do
    echo "  FAIL $b"
done
echo "make test took $(($(date +%s) - start)) s"
echo "total: $total_passed passed, $total_failed failed, $total_skipped skipped"
[ "$total_failed" -eq 0 ]
