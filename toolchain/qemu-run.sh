#!/bin/sh
# Boots the field image in qemu-system-aarch64 (-M virt, TCG, user networking)
# on a scratch copy of it, so a tester can watch a device run:
#
#   toolchain/qemu-run.sh [options] IMAGE [PROVISION]     (make qemu-run)
#
# PROVISION is an edgecap.conf (copied to the provisioning partition as
# /etc/edgecap/edgecap.conf) or a directory whose tree is copied there as it
# is (edgecap.conf at its root, tls/ca.pem ... as the file names them under
# /etc/edgecap). Without it the device boots unprovisioned and says so.
# The kernel and initramfs are the ones beside IMAGE. The console (serial) is
# this terminal; quit QEMU with Ctrl-A x.
#
# Options:
#   --scratch FILE       the copy to boot (default: IMAGE's directory/run/)
#   --keep               boot FILE as it is (no new copy, no provisioning):
#                        a reboot of the same device
#   --extra-initrd CPIO  a gzipped newc cpio appended to the initramfs (its
#                        /extra/rc.d/* hooks run at boot: tests)
#   --monitor SOCK       QEMU's monitor on a Unix socket (system_powerdown, quit)
#   --console FILE       the serial console into FILE instead of this terminal
#   --rtc-base WHEN      the board's RTC starts at WHEN (2020-01-01T00:00:00),
#                        not now (UTC)
set -eu

SCRATCH="" KEEP=0 EXTRA="" MONITOR="" CONSOLE="" RTC=utc
while [ $# -gt 0 ]; do
    case "$1" in
    --scratch) SCRATCH=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --extra-initrd) EXTRA=$2; shift 2 ;;
    --monitor) MONITOR=$2; shift 2 ;;
    --console) CONSOLE=$2; shift 2 ;;
    --rtc-base) RTC=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "qemu-run: unknown option $1" >&2; exit 64 ;;
    *) break ;;
    esac
done
IMAGE=${1:?usage: qemu-run.sh [options] IMAGE [PROVISION]}
PROVISION=${2:-}
DIR=$(dirname "$IMAGE")
[ -f "$IMAGE" ] || { echo "qemu-run: $IMAGE not found (make image)" >&2; exit 66; }
[ -z "$PROVISION" ] || [ -e "$PROVISION" ] || { echo "qemu-run: $PROVISION not found" >&2; exit 66; }
export MTOOLS_SKIP_CHECK=1

# The provisioning partition's byte offset in an image: MBR partition 2.
prov_offset() {
    sfdisk -d "$1" | sed -n 's/^.*2 : start= *\([0-9]*\),.*/\1/p' | awk '{ print $1 * 512 }'
}

# Writes PROVISION ($2) into the provisioning partition of image $1 (what
# toolchain/flash.sh does for a real card; this one does not validate).
write_provision() {
    off=$(prov_offset "$1")
    [ -n "$off" ] || { echo "qemu-run: $1 has no partition 2" >&2; return 1; }
    if [ -d "$2" ]; then
        for f in "$2"/* "$2"/.[!.]*; do
            [ -e "$f" ] || continue
            mcopy -s -o -i "$1@@$off" "$f" ::/
        done
    else
        mcopy -o -i "$1@@$off" "$2" ::/edgecap.conf
    fi
}

[ -n "$SCRATCH" ] || SCRATCH=$DIR/run/$(basename "$IMAGE")
mkdir -p "$(dirname "$SCRATCH")"
if [ "$KEEP" = 0 ] || [ ! -f "$SCRATCH" ]; then
    cp --sparse=always "$IMAGE" "$SCRATCH"
    [ -z "$PROVISION" ] || write_provision "$SCRATCH" "$PROVISION"
fi

INITRD=$DIR/initramfs.cpio.gz
if [ -n "$EXTRA" ]; then
    INITRD=$SCRATCH.initrd
    cat "$DIR/initramfs.cpio.gz" "$EXTRA" >"$INITRD"
fi

set -- qemu-system-aarch64 -M virt -cpu cortex-a57 -m 512 -smp 1 \
    -kernel "$DIR/vmlinuz" -initrd "$INITRD" \
    -append "console=ttyAMA0 panic=10 loglevel=4" \
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
