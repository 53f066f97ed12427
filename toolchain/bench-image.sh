#!/bin/bash
# `make bench-image`: edgecap on the emulated field board (qemu-system-aarch64
# -M virt, TCG) next to opusenc in the same guest. A benchmark, not a test.
#
#   toolchain/bench-image.sh [AUDIO_SECONDS]      (default 30)
#
# Starts the peers (tests/peers/peers.sh) on the host's loopback, flashes the
# field image (build/aarch64/image, `make image ARCH=aarch64`) with
# toolchain/flash.sh through qemu-run.sh, and boots it with a test-only
# overlay (--extra-initrd; nothing of it is in the field image): the player
# (build/aarch64/tools/alsa_play), a tone, opus-tools' arm64 opusenc and the
# libraries it needs beyond the image's (apt-get download into
# build/aarch64/image/bench-debs, unpacked there). Inside the guest a hook
# plays AUDIO_SECONDS of a tone into hw:Loopback,0,0 while edgecap captures,
# seals and uploads it; once the spool is empty it reads edgecap's CPU time
# (/proc/PID/stat utime + stime) and peak resident memory (VmHWM), then times
# opusenc (edgecap's encoder settings) on the same PCM three times (the
# shell's `times`). Prints the figures and the ratios; README's "Performance
# and footprint" records them.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
AUDIO_S=${1:-30}
AB=$SRC/build/aarch64
IMG=$AB/image/edgecap-aarch64.img
BENCH_DEBS=$AB/image/bench-debs
say() { printf 'bench-image: %s\n' "$*"; }
die() {
    say "$*" >&2
    exit 1
}
[ -f "$IMG" ] && [ -x "$AB/tools/alsa_play" ] || die "make image ARCH=aarch64 build/aarch64/tools/alsa_play first"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgecap-bench-image.XXXXXX")
PEERS=$SRC/tests/peers/peers.sh
P=$WORK/peers
QEMU_PID=""
cleanup() {
    if [ -n "$QEMU_PID" ]; then
        kill -KILL "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    "$PEERS" stop "$P" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- opusenc for arm64, unpacked (never installed) ----------------------------
mkdir -p "$BENCH_DEBS"
for pkg in opus-tools libopusfile0 libflac12 libogg0; do
    if ! ls "$BENCH_DEBS/${pkg}"_*_arm64.deb >/dev/null 2>&1; then
        say "apt-get download $pkg:arm64"
        (cd "$BENCH_DEBS" && apt-get download -q "$pkg:arm64" 2>&1 | grep -v unsandboxed >&2 || true)
    fi
    deb=$(ls "$BENCH_DEBS/${pkg}"_*_arm64.deb 2>/dev/null | head -n 1) || true
    [ -n "$deb" ] || die "could not download $pkg:arm64"
    dpkg-deb -x "$deb" "$WORK/debs"
done
EX=$WORK/extra/extra
mkdir -p "$EX/rc.d" "$EX/lib"
cp "$WORK/debs/usr/bin/opusenc" "$AB/tools/alsa_play" "$EX/"
cp -a "$WORK"/debs/usr/lib/aarch64-linux-gnu/lib{opusfile,FLAC,ogg}.so* "$EX/lib/"

sox -q -n -r 16000 -c 1 -b 16 "$WORK/tone.wav" synth "$AUDIO_S" sine 300-900 vol 0.5
sox -q "$WORK/tone.wav" -t raw "$EX/tone.raw"

# ---- the guest's side -----------------------------------------------------------
# shellcheck source=tests/system/lib/board.sh
. "$SRC/tests/system/lib/board.sh"
{
    board_hook_head edgecap-bench
    cat <<'HOOK'
pid=$(pidof edgecap)
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
t0=$(ticks)
/run/extra/alsa_play hw:Loopback,0,0 /run/extra/tone.raw 16000 1 >/dev/null
n=0
while [ "$n" -lt 1800 ]; do
    segs=$(find /var/lib/edgecap/spool -name '*.seg' | wc -l)
    [ "$n" -gt 40 ] && [ "$segs" = 0 ] && break
    n=$((n + 1))
    sleep 0.1
done
t1=$(ticks)
say "edgecap ticks=$((t1 - t0)) hz=100 $(grep -E '^Vm(HWM|RSS)' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' ')"
export LD_LIBRARY_PATH=/run/extra/lib
for i in 1 2 3; do
    /run/extra/opusenc --quiet --raw --raw-rate 16000 --raw-chan 1 --raw-bits 16 --bitrate 24 --comp 5 \
        --framesize 20 --vbr --max-delay 1000 --set-ctl-int 4000=2048 --set-ctl-int 4036=24 \
        --set-ctl-int 14000=48000 /run/extra/tone.raw /tmp/out.opus || say "opusenc failed"
done
# `times` (in this shell, not a subshell): the shell's own user/sys, then its
# children's (the three runs).
times >/tmp/times
say "opusenc runs=3 times=$(tail -n 1 /tmp/times)"
say "done"
HOOK
} >"$EX/rc.d/50-bench"
chmod 0755 "$EX/rc.d/50-bench" "$EX/opusenc" "$EX/alsa_play"
(cd "$WORK/extra" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -n >"$WORK/extra.cpio.gz"

# ---- peers, provisioning, boot -------------------------------------------------
"$PEERS" start "$P" >"$WORK/peers.log" 2>&1 || {
    cat "$WORK/peers.log" >&2
    die "peers did not start"
}
# shellcheck source=/dev/null
. "$P/peers.env"
SAS=$("$PEERS" container "$P" audio)
board_tls "$WORK/prov"
board_conf bench-0001 "10.0.2.2:$NGINX_PORT" "$SAS" >"$WORK/prov/edgecap.conf"

C=$WORK/console
t0=$EPOCHREALTIME
"$SRC/toolchain/qemu-run.sh" --scratch "$WORK/board.img" --console "$C" \
    --extra-initrd "$WORK/extra.cpio.gz" "$IMG" "$WORK/prov" >"$WORK/qemu.out" 2>&1 </dev/null &
QEMU_PID=$!
first="" limit=$((AUDIO_S * 4 + 300))
for ((i = 0; i < limit * 10; i++)); do
    if [ -z "$first" ] && grep -q "event=segment_uploaded" "$C" 2>/dev/null; then
        first=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    fi
    grep -qE "edgecap-bench: (done|capture never)" "$C" 2>/dev/null && break
    kill -0 "$QEMU_PID" 2>/dev/null || break
    sleep 0.1
done
grep -q "edgecap-bench: done" "$C" || {
    tail -n 30 "$C" "$WORK/qemu.out" >&2
    die "the guest did not finish"
}
uploads=$(grep -c "event=segment_uploaded" "$C")

# ---- figures --------------------------------------------------------------------
line=$(grep "edgecap-bench: edgecap ticks=" "$C" | tail -n 1)
ticks=$(sed -E 's/.*ticks=([0-9]+).*/\1/' <<<"$line")
hwm=$(sed -E 's/.*VmHWM: ([0-9]+) kB.*/\1/' <<<"$line")
rss=$(sed -E 's/.*VmRSS: ([0-9]+) kB.*/\1/' <<<"$line")
# "0m1.23s 0m0.05s" (children's user, sys) for three runs
otimes=$(grep "edgecap-bench: opusenc runs=3 times=" "$C" | tail -n 1 | sed 's/.*times=//')
ocpu=$(awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t / 3 }' <<<"$otimes")
ecpu=$(awk -v t="$ticks" 'BEGIN { printf "%.2f", t / 100 }')
grep -E "edgecap-bench: (edgecap|opusenc)" "$C" | sed 's/^/  guest: /'
printf '\n'
printf '%-52s %s\n' "audio played in the guest" "$AUDIO_S s (16 kHz mono tone), $uploads segments uploaded"
printf '%-52s %s s\n' "boot to the first upload (QEMU start, wall, TCG)" "${first:-?}"
printf '%-52s %s kB (VmRSS %s kB at the end)\n' "edgecap peak resident memory (VmHWM)" "$hwm" "$rss"
printf '%-52s %s s = %s ms per audio second\n' "edgecap CPU, capture+encode+seal+upload" "$ecpu" \
    "$(awk -v c="$ecpu" -v a="$AUDIO_S" 'BEGIN { printf "%.1f", c * 1000 / a }')"
printf '%-52s %s s = %s ms per audio second (times: %s)\n' "opusenc CPU, same PCM, one run (mean of 3)" "$ocpu" \
    "$(awk -v c="$ocpu" -v a="$AUDIO_S" 'BEGIN { printf "%.1f", c * 1000 / a }')" "$otimes"
printf '%-52s %sx\n' "edgecap / opusenc CPU" "$(awk -v e="$ecpu" -v o="$ocpu" 'BEGIN { printf "%.2f", (o > 0 ? e / o : 0) }')"
