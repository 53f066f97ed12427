#!/bin/bash
# The armhf field image end to end under qemu-system-arm (-M virt, cortex-a15,
# TCG, user networking only): `make image ARCH=armhf` builds it from Debian's
# armmp kernel (a zImage), busybox-static:armhf and the armhf edgecap with
# exactly its libraries; toolchain/qemu-run.sh picks qemu-system-arm from the
# image's name and flashes a provisioning directory onto EC-PROV through
# flash.sh. The 32-bit board boots (softdog is its watchdog: the armmp kernel
# has no i6300esb driver), a player inside the guest writes a tone to
# hw:Loopback,0,0 (snd-aloop paces it in real time), edgecap captures
# hw:Loopback,1,0, seals, spools and uploads over pinned mTLS to the Azurite +
# nginx peers on the host's loopback (10.0.2.2 through connect_to with the
# real Azure host name). The host reads the blobs back with
# @azure/storage-blob, decodes them with opusdec and compares them with the
# tone; the guest reports its spool empty; QEMU's system_powerdown stops
# edgecap cleanly and powers the board off.
#
# The fault cases (peer down, power cut mid-upload, broken provisioning) are
# the image's, not the architecture's: tests/system/image.sh runs them on
# aarch64. This runs once per `make test`, in the native x86_64 configuration.
# shellcheck source=tests/system/lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

plan 7

skip_all() {
    while [ "$TAP_N" -lt "$TAP_PLANNED" ]; do skip "armhf field image under qemu-system-arm" "$1"; done
    finish
}

once_per_run ||
    skip_all "boots once per make test, in the native x86_64 run"
for tool in qemu-system-arm mksquashfs mcopy; do
    command -v "$tool" >/dev/null ||
        skip_all "no qemu-system-arm/squashfs-tools/mtools (toolchain/install-deps.sh image)"
done
command -v arm-linux-gnueabihf-gcc >/dev/null ||
    skip_all "no armhf cross toolchain (toolchain/install-deps.sh armhf)"

TOOL=${TOOL:-$BUILD/results/tool-run}
AH=$EC_SRCDIR/build/armhf
IMGDIR=$AH/image
IMG=$IMGDIR/edgecap-armhf.img
ID=arm-0001
SECONDS_PLAYED=5
t_start=$SECONDS

# shellcheck source=tests/system/lib/board.sh
. "$EC_SRCDIR/tests/system/lib/board.sh"

# ---- 1: the image builds (and the guest-side player with it) ---------------
if ! board_image_built armhf; then
    verdict "make image ARCH=armhf: Debian's armmp kernel, three partitions, sha256 and size printed; an ARCH without an image is refused"
    skip_all "the image did not build (see above)"
fi
want_re "$T/make.log" "^image: kernel [0-9.]+-[0-9]+-armmp \(linux-image-[0-9.]+-[0-9]+-armmp_[^ ]*_armhf\.deb\), busybox-static_[^ ]*_armhf\.deb$"
want_re "$T/make.log" "^image: libraries: .*ld-linux-armhf\.so\.3 "
[ "$(od -An -tx1 -j 36 -N 4 "$IMGDIR/vmlinuz" | tr -d ' ')" = 18286f01 ] ||
    fail_because "$IMGDIR/vmlinuz is not an ARM zImage"
"$EC_SRCDIR/toolchain/image.sh" x86_64 "$T/x86_64" >"$T/noimage.out" 2>&1
rc=$?
[ "$rc" = 2 ] || fail_because "image.sh x86_64: status $rc, expected 2"
want_fixed "$T/noimage.out" "image: ARCH=x86_64 has no image (aarch64, armhf)"
verdict "make image ARCH=armhf: Debian's armmp kernel, three partitions, sha256 and size printed; an ARCH without an image is refused" \
    "$T/make.log" "$T/parts" "$T/noimage.out"

# ---- the peers, the provisioning directory, the guest's player -------------
board_peers_and_tone "$ID" "$SECONDS_PLAYED"

# The hook (run by the guest's rc.boot): says what the board is, plays the
# tone once edgecap's capture runs, then reports when the spool is empty.
EX=$T/extra/extra
mkdir -p "$EX/rc.d"
cp "$AH/tools/alsa_play" "$T/tone.raw" "$EX/"
{
    board_hook_head edgecap-test
    cat <<'HOOK'
say "machine $(uname -m), kernel $(uname -r)"
say "capture running; playing"
/run/extra/alsa_play hw:Loopback,0,0 /run/extra/tone.raw 16000 1 | sed 's/^/edgecap-test: /'
HOOK
    hook_wait_empty
} >"$EX/rc.d/50-play"
chmod 0755 "$EX/rc.d/50-play" "$EX/alsa_play"
board_extra_cpio "$T/extra" "$T/extra.cpio.gz"

# ---- 2-6: the provisioned board captures and uploads, then powers off -------
# qemu-run.sh flashes the directory: edgecap.conf and tls/* (dev.qemu).
boot dev "$PROV" "$T/extra.cpio.gz"
C=$T/dev.console
t0=$SECONDS
wait_for_log "$C" "edgecap-boot: eth0 10\.0\.2\.15/" "$QEMU_PID" 90 ||
    fail_because "no DHCP lease on eth0 within 90 s"
capturing=1
wait_for_log "$C" "event=alsa_open device=hw:Loopback,1,0 rate_hz=16000 channels=1" "$QEMU_PID" 60 ||
    { capturing=0; fail_because "edgecap did not open hw:Loopback,1,0"; }
diag "boot to edgecap's capture under TCG: $((SECONDS - t0)) s (not a check)"
# qemu-run.sh execs the emulator it picked from the image's name.
[ "$(cat "/proc/$QEMU_PID/comm" 2>/dev/null)" = qemu-system-arm ] ||
    fail_because "qemu-run.sh did not start qemu-system-arm ($(cat "/proc/$QEMU_PID/comm" 2>/dev/null))"
[ "$capturing" = 0 ] || wait_for_log "$C" "edgecap-test: machine " "$QEMU_PID" 30
want_re "$C" "edgecap-test: machine armv7l, kernel [0-9.]+-[0-9]+-armmp\b"
want_no_re "$C" "edgecap-supervise: (no provisioning|provisioning file .* rejected|clock)"
want_fixed "$C" "edgecap-watchdog: feeding /dev/watchdog (Software Watchdog), timeout 60 s"
want_re "$T/dev.qemu" "^provision: .* valid for edgecap check-config as /etc/edgecap/edgecap.conf$"
want_re "$T/dev.qemu" "^done: .*/dev\.img holds the image and 4 provisioning files, all read back$"
verdict "flashed by flash.sh through qemu-run.sh, the armv7l board boots the armmp kernel: root, EC-PROV, EC-DATA, DHCP, softdog fed, edgecap on the loopback card" \
    "$C" "$T/dev.qemu"
[ "$capturing" = 1 ] || skip_all "the board does not capture (see above): nothing to play, upload or stop"

wait_for_log "$C" "edgecap-test: played $((SECONDS_PLAYED * 16000)) frames" "$QEMU_PID" 60 ||
    fail_because "the guest's player did not play the tone into hw:Loopback,0,0"
want_fixed "$C" "edgecap-test: played $((SECONDS_PLAYED * 16000)) frames, 0 underruns"
verdict "a player inside the armhf guest writes ${SECONDS_PLAYED} s to hw:Loopback,0,0 with 0 underruns" "$C"

wait_for_log "$C" "event=segment_uploaded" "$QEMU_PID" 90 &&
    diag "boot to the first upload under TCG: $((SECONDS - t0)) s (not a check)"
wait_for_log "$C" "edgecap-test: spool (empty|still)" "$QEMU_PID" 200
want_re "$C" "edgecap-test: spool empty \([0-9]+ open, 0 quarantined\)"
want_re "$C" "event=segment_uploaded"
want_no_re "$C" "event=(upload_failed|segment_quarantined)"
verdict "the armhf guest seals, uploads and empties its spool after the acknowledgments" "$C"

board_blobs_match "$ID" "$T/tone.raw"
uploads=$(grep -c "event=segment_uploaded" "$C")
[ "$BOARD_BLOBS" -ge 2 ] || fail_because "$BOARD_BLOBS blobs for $ID"
[ "$BOARD_BLOBS" = "$uploads" ] || fail_because "$BOARD_BLOBS blobs, $uploads uploads logged"
diag "$BOARD_BLOBS blobs; $(cat "$T/$ID.cmp" 2>/dev/null)"
verdict "blobs read back with @azure/storage-blob decode with opusdec and match the tone played in the armhf guest" \
    "$T/$ID.readback.json" "$T/$ID.cmp"

board_power_button dev
verdict "the power button (system_powerdown) stops edgecap cleanly, syncs and powers the armhf board off" "$C"

# ---- 7: the emulator of an image named otherwise: from the kernel beside it --
mkdir -p "$T/other" "$T/nokernel"
ln -s "$IMG" "$T/other/field.img"
ln -s "$IMGDIR/vmlinuz" "$IMGDIR/initramfs.cpio.gz" "$T/other/"
"$EC_SRCDIR/toolchain/qemu-run.sh" --scratch "$T/other.img" --console "$T/other.console" \
    "$T/other/field.img" >"$T/other.qemu" 2>&1 </dev/null &
QEMU_PID=$!
EC_PIDS+=("$QEMU_PID")
# qemu-run.sh copies the image, then execs the emulator.
for ((i = 0; i < 200; i++)); do
    comm=$(cat "/proc/$QEMU_PID/comm" 2>/dev/null)
    case "$comm" in qemu-system-*) break ;; esac
    running "$QEMU_PID" || break
    sleep 0.1
done
[ "$comm" = qemu-system-arm ] || fail_because "field.img beside a zImage: ${comm:-nothing} started, not qemu-system-arm"
kill -KILL "$QEMU_PID" 2>/dev/null
wait "$QEMU_PID" 2>/dev/null
ln -s "$IMG" "$T/nokernel/field.img"
"$EC_SRCDIR/toolchain/qemu-run.sh" --scratch "$T/nokernel.img" "$T/nokernel/field.img" \
    >"$T/nokernel.out" 2>&1 </dev/null
rc=$?
[ "$rc" = 65 ] || fail_because "an image it cannot place: status $rc, expected 65"
want_fixed "$T/nokernel.out" "qemu-run: cannot tell the board of $T/nokernel/field.img (not edgecap-aarch64.img or edgecap-armhf.img; $T/nokernel/vmlinuz is neither an arm64 Image nor an ARM zImage)"
[ ! -e "$T/nokernel.img" ] || fail_because "qemu-run.sh wrote a scratch copy of an image it cannot boot"
verdict "qemu-run.sh boots an image named otherwise in the emulator its kernel asks for (a zImage: qemu-system-arm); one without a kernel it knows is refused (65)" \
    "$T/other.qemu" "$T/nokernel.out"
diag "image_armhf.sh took $((SECONDS - t_start)) s (not a check)"

finish
