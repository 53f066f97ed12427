#!/bin/sh
# Boots the field image in qemu-system-aarch64 or qemu-system-arm (-M virt,
# TCG, user networking) on a scratch copy of it, so a tester can watch a
# device run:
#
#   toolchain/qemu-run.sh [options] IMAGE [PROVISION]     (make qemu-run)
#
# The board is the image's: edgecap-aarch64.img boots in qemu-system-aarch64
# (cortex-a57), edgecap-armhf.img in qemu-system-arm (cortex-a15, -M
# virt,highmem=off); an image named otherwise in the one its kernel (vmlinuz
# beside it: an arm64 Image or an ARM zImage) asks for.
# The scratch copy is flashed as a field team flashes a card: by
# toolchain/flash.sh, which validates PROVISION with the host build's
# `edgecap check-config` and refuses (nothing booted) what the board would
# reject. PROVISION is an edgecap.conf (--provision: /etc/edgecap/edgecap.conf)
# or a directory holding edgecap.conf at its root and the files it names
# below it (tls/ca.pem ... as the file names them under /etc/edgecap; each one
# a --file SRC:DEST). Without it the image is copied as built: the device
# boots unprovisioned and says so.
# The kernel and initramfs are the ones beside IMAGE. The console (serial) is
# this terminal; quit QEMU with Ctrl-A x.
#
# Options:
#   --scratch FILE       the copy to boot (default: IMAGE's directory/run/)
#   --keep               boot FILE as it is (no new copy, no provisioning):
#                        a reboot of the same device
#   --cert CERT --key KEY, --file SRC[:DEST]
#                        passed to flash.sh with PROVISION
#   --extra-initrd CPIO  a gzipped newc cpio appended to the initramfs (its
#                        /extra/rc.d/* hooks run at boot: tests)
#   --monitor SOCK       QEMU's monitor on a Unix socket (system_powerdown, quit)
#   --console FILE       the serial console into FILE instead of this terminal
#   --rtc-base WHEN      the board's RTC starts at WHEN (2020-01-01T00:00:00),
#                        not now (UTC)
#   --size SIZE          the scratch disk is a card of SIZE (truncate's
#                        sizes: 4G); flash.sh grows the data partition to
#                        its end (with PROVISION only)
#   --append ARGS        more kernel command line (edgecap.watchdog=SECONDS:
#                        the board's watchdog timeout, default 60)
set -eu

# One argument quoted for eval (flash.sh's arguments are kept in a string).
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

SCRATCH="" KEEP=0 EXTRA="" MONITOR="" CONSOLE="" RTC=utc FLASH_ARGS="" APPEND="" SIZE=""
while [ $# -gt 0 ]; do
    case "$1" in
    --scratch) SCRATCH=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --extra-initrd) EXTRA=$2; shift 2 ;;
    --monitor) MONITOR=$2; shift 2 ;;
    --console) CONSOLE=$2; shift 2 ;;
    --rtc-base) RTC=$2; shift 2 ;;
    --append) APPEND="$APPEND $2"; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --cert | --key | --file)
        FLASH_ARGS="$FLASH_ARGS $1 $(quote "$2")"
        shift 2
        ;;
    --) shift; break ;;
    -*) echo "qemu-run: unknown option $1" >&2; exit 64 ;;
    *) break ;;
    esac
done
IMAGE=${1:?usage: qemu-run.sh [options] IMAGE [PROVISION]}
PROVISION=${2:-}
[ -z "$SIZE" ] || [ "$KEEP" = 0 ] || { echo "qemu-run: --size makes a new card; not with --keep" >&2; exit 64; }
DIR=$(dirname "$IMAGE")
[ -f "$IMAGE" ] || { echo "qemu-run: $IMAGE not found (make image)" >&2; exit 66; }
[ -z "$PROVISION" ] || [ -e "$PROVISION" ] || { echo "qemu-run: $PROVISION not found" >&2; exit 66; }

# The emulator and CPU for the board: from the image's name, else from the
# kernel's header (arm64 Image: "ARMd" at 56; ARM zImage: 0x016f2818 at 36).
board_of() {
    case "$(basename "$IMAGE")" in
    edgecap-aarch64.img) echo aarch64 ;;
    edgecap-armhf.img) echo armhf ;;
    *)
        if [ "$(od -An -c -j 56 -N 4 "$DIR/vmlinuz" 2>/dev/null | tr -d ' ')" = ARMd ]; then
            echo aarch64
        elif [ "$(od -An -tx1 -j 36 -N 4 "$DIR/vmlinuz" 2>/dev/null | tr -d ' ')" = 18286f01 ]; then
            echo armhf
        fi
        ;;
    esac
}
# armhf: the armmp kernel has no LPAE and cannot reach the PCI host's ECAM
# (virtio-blk, -net) that -M virt puts above 4 GiB: highmem=off.
case "$(board_of)" in
aarch64) QEMU=qemu-system-aarch64 MACHINE=virt CPU=cortex-a57 ;;
armhf) QEMU=qemu-system-arm MACHINE=virt,highmem=off CPU=cortex-a15 ;;
*)
    echo "qemu-run: cannot tell the board of $IMAGE (not edgecap-aarch64.img or edgecap-armhf.img; $DIR/vmlinuz is neither an arm64 Image nor an ARM zImage)" >&2
    exit 65
    ;;
esac

# Flashes IMAGE onto the scratch file $1 with PROVISION ($2) through
# toolchain/flash.sh (validated; its report on stdout).
flash_provision() { # SCRATCH PROVISION
    target=$1 conf=$2
    if [ -d "$2" ]; then
        conf=$2/edgecap.conf
        [ -f "$conf" ] || { echo "qemu-run: $2 has no edgecap.conf" >&2; return 66; }
        for rel in $(cd "$2" && find . -type f ! -path ./edgecap.conf | sed 's#^\./##' | LC_ALL=C sort); do
            FLASH_ARGS="$FLASH_ARGS --file $(quote "$2/$rel:$rel")"
        done
    fi
    eval "set -- $FLASH_ARGS"
    "$(dirname "$0")/flash.sh" "$IMAGE" "$target" --provision "$conf" "$@"
}

[ -n "$SCRATCH" ] || SCRATCH=$DIR/run/$(basename "$IMAGE")
mkdir -p "$(dirname "$SCRATCH")"
if [ "$KEEP" = 0 ] || [ ! -f "$SCRATCH" ]; then
    rm -f "$SCRATCH"
    if [ -n "$SIZE" ]; then
        [ -n "$PROVISION" ] || { echo "qemu-run: --size needs PROVISION (flash.sh grows the card)" >&2; exit 64; }
        truncate -s "$SIZE" "$SCRATCH" || exit 64
    fi
    if [ -n "$PROVISION" ]; then
        flash_provision "$SCRATCH" "$PROVISION" || exit
    else
        cp --sparse=always "$IMAGE" "$SCRATCH"
    fi
fi

INITRD=$DIR/initramfs.cpio.gz
if [ -n "$EXTRA" ]; then
    INITRD=$SCRATCH.initrd
    cat "$DIR/initramfs.cpio.gz" "$EXTRA" >"$INITRD"
fi

set -- "$QEMU" -M "$MACHINE" -cpu "$CPU" -m 512 -smp 1 \
    -kernel "$DIR/vmlinuz" -initrd "$INITRD" \
    -append "console=ttyAMA0 panic=10 loglevel=4$APPEND" \
    -drive "if=none,id=d0,format=raw,file=$SCRATCH" -device virtio-blk-pci,drive=d0 \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
    -device virtio-rng-pci -device i6300esb -rtc "base=$RTC"
if [ -n "$MONITOR" ]; then
    set -- "$@" -monitor "unix:$MONITOR,server=on,wait=off"
fi
if [ -n "$CONSOLE" ]; then
    exec "$@" -display none -serial "file:$CONSOLE" </dev/null
fi
exec "$@" -nographic
