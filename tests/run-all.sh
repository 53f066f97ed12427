#!/bin/bash
# Everything CI runs (`make test`): lint, the host build's tests, the same under
# valgrind, an ASan+UBSan build's tests, and the aarch64 and armhf builds'
# tests under qemu-user. Ends with one line "total: N passed, M failed" and
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

# Two configurations side by side (built first, one after the other): much
# of a system test is waiting (peers starting, audio paced in real time), so
# two share the machine's cores well. Each one's output is shown whole once
# both have finished. Every test picks its own free ports and scratch dirs.
run_pair() { # label1 dir1 "args1" label2 dir2 "args2"
    local labels=("$1" "$4") dirs=("$2" "$5") args=("$3" "$6") pids=() logs=() i
    for i in 0 1; do
        rm -f "${dirs[$i]}/summary"
        logs[$i]=$(mktemp)
        # shellcheck disable=SC2086 # the make arguments are words
        if build_config "${labels[$i]}" ${args[$i]}; then
            $MAKE -s ${args[$i]} check >"${logs[$i]}" 2>&1 &
            pids[$i]=$!
        fi
    done
    for i in 0 1; do
        [ -n "${pids[$i]:-}" ] || continue
        wait "${pids[$i]}"
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
    # The native run waits on its peers; the appliance tests (flashing, the
    # field image under qemu-system-aarch64) use the CPU meanwhile.
    run_pair "x86_64" build/x86_64/results "ARCH=x86_64 SYSTEM_SKIP=flash,image" \
        "x86_64 appliance (flash, field image)" build/x86_64/results-system \
        "ARCH=x86_64 UNIT=0 RESULTS_NAME=system SYSTEM_ONLY=flash,image"
    run_pair "x86_64 valgrind" build/x86_64/results-valgrind "ARCH=x86_64 CHECK_FLAGS=--valgrind" \
        "x86_64 ASan+UBSan" build/x86_64-san/results "ARCH=x86_64 SAN=1"
    run_pair "aarch64 (qemu)" build/aarch64/results "ARCH=aarch64" \
        "armhf (qemu)" build/armhf/results "ARCH=armhf"
fi

for b in "${broken[@]}"; do
    echo "  FAIL $b"
done
echo "make test took $(($(date +%s) - start)) s"
echo "total: $total_passed passed, $total_failed failed, $total_skipped skipped"
[ "$total_failed" -eq 0 ]
