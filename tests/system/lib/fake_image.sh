# shellcheck shell=bash
# A small image with the field image's layout (toolchain/image.sh's contract),
# for tests of toolchain/flash.sh that must not wait for a kernel and a root
# file system to be built. Sourced, never run.
#
#   fake_image OUT   -> OUT (8 MiB) and OUT.sha256
#
# MBR, partitions 1 MiB aligned: p1 squashfs (a marker file), p2 vfat labelled
# EC-PROV holding a placeholder edgecap.conf and README (flash.sh must replace
# them), p3 ext4 labelled EC-DATA.

fake_image() { # OUT
    local out=$1 dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/fake-image.XXXXXX") || return 1
    (
        set -e
        mkdir "$dir/root"
        echo "edgecap fake root $(date -u +%s%N)" >"$dir/root/marker"
        mksquashfs "$dir/root" "$dir/p1" -quiet -noappend -all-root >/dev/null
        truncate -s 1M "$dir/p1"
        truncate -s 3M "$dir/p2"
        mkfs.vfat -n EC-PROV -i 0ec0ec01 "$dir/p2" >/dev/null
        echo "placeholder: flash.sh writes the real file" >"$dir/edgecap.conf"
        echo "edgecap provisioning partition" >"$dir/README"
        MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null mcopy -i "$dir/p2" "$dir/edgecap.conf" "$dir/README" ::/
        MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null mmd -i "$dir/p2" ::/old
        MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null mcopy -i "$dir/p2" "$dir/README" ::/old/README
        truncate -s 2M "$dir/p3"
        mkfs.ext4 -q -F -L EC-DATA "$dir/p3"
        rm -f "$out"
        truncate -s 8M "$out"
        sfdisk -q "$out" <<EOF
label: dos
unit: sectors

start=2048, size=2048, type=83
start=4096, size=6144, type=c
start=10240, size=4096, type=83
EOF
        dd if="$dir/p1" of="$out" bs=1M seek=1 conv=notrunc status=none
        dd if="$dir/p2" of="$out" bs=1M seek=2 conv=notrunc status=none
        dd if="$dir/p3" of="$out" bs=1M seek=5 conv=notrunc status=none
        (cd "$(dirname "$out")" && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
    )
    local rc=$?
    rm -rf "$dir"
    return "$rc"
}
