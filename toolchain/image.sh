#!/bin/sh
# Builds the field image for a board from Debian packages only:
#
#   toolchain/image.sh ARCH BUILD      (make image ARCH=aarch64|armhf)
#
# Output in BUILD/image/: edgecap-ARCH.img (MBR: p1 squashfs root, read-only;
# p2 vfat EC-PROV, 16 MiB, empty; p3 ext4 EC-DATA, the spool), vmlinuz (the
# Debian kernel: linux-image-arm64's Image, linux-image-armmp's zImage),
# initramfs.cpio.gz (busybox, the modules, the first stage init),
# edgecap-ARCH.img.sha256. Prints the image's sha256 and size.
#
# The kernel and busybox-static are fetched with `apt-get download` into
# BUILD/image/debs (kept: a later build reuses them, so the same cache gives
# the same image) and unpacked with dpkg-deb; nothing of the board's
# architecture is installed on the host. Reproducible: every time stamp is
# SOURCE_DATE_EPOCH (default: the last commit's time), archives are sorted,
# identifiers and hash seeds are fixed.
set -eu

ARCH=${1:?usage: image.sh ARCH BUILD}
BUILD=${2:?usage: image.sh ARCH BUILD}
SRC=$(cd "$(dirname "$0")/.." && pwd)
case "$ARCH" in
aarch64)
    DEB_ARCH=arm64
    KERNEL_FLAVOUR=arm64
    ;;
armhf)
    DEB_ARCH=armhf
    KERNEL_FLAVOUR=armmp
    ;;
*)
    echo "image: ARCH=$ARCH has no image (aarch64, armhf)" >&2
    exit 2
    ;;
esac
KERNEL_META=linux-image-$KERNEL_FLAVOUR
# shellcheck source=/dev/null
. "$SRC/toolchain/$ARCH.mk"
MULTIARCH=/usr/lib/$EC_TRIPLET

EDGECAP_BIN=$BUILD/edgecap
mkdir -p "$BUILD/image"
OUT=$(cd "$BUILD/image" && pwd)
DEBS=$OUT/debs
W=$OUT/work
IMG=$OUT/edgecap-$ARCH.img

[ -x "$EDGECAP_BIN" ] || { echo "image: $EDGECAP_BIN not built" >&2; exit 1; }
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$SRC" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
export LC_ALL=C TZ=UTC
umask 022

log() { echo "image: $*" >&2; }

# ---- Debian packages ---------------------------------------------------------

# The kernel the metapackage points at now; a cached one when offline.
kernel_pkg() {
    apt-cache depends "$KERNEL_META:$DEB_ARCH" 2>/dev/null |
        sed -n "s/^ *Depends: \(linux-image-[0-9][^:]*-$KERNEL_FLAVOUR\)\(:$DEB_ARCH\)\{0,1\}\$/\1/p" |
        head -n 1
}

# The .deb of package $1 from the cache, downloaded first when missing.
fetch() {
    deb=$(ls "$DEBS/$1"_*_"$DEB_ARCH".deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        log "apt-get download $1:$DEB_ARCH"
        # _apt cannot write into a root-owned build tree; the warning says so.
        (cd "$DEBS" && apt-get download -q "$1:$DEB_ARCH" 2>&1 | grep -v 'unsandboxed' >&2 || true)
        deb=$(ls "$DEBS/$1"_*_"$DEB_ARCH".deb 2>/dev/null | head -n 1 || true)
        [ -n "$deb" ] || { log "could not download $1:$DEB_ARCH"; exit 1; }
    fi
    echo "$deb"
}

mkdir -p "$DEBS"
# A kernel in the cache is used as it is (the same cache, the same image);
# remove BUILD/image/debs to take the kernel Debian points at now.
KDEB=$(ls "$DEBS"/linux-image-[0-9]*-"$KERNEL_FLAVOUR"_*_"$DEB_ARCH".deb 2>/dev/null | sort | tail -n 1 || true)
if [ -z "$KDEB" ]; then
    KPKG=$(kernel_pkg)
    [ -n "$KPKG" ] || { log "cannot resolve $KERNEL_META:$DEB_ARCH (apt-get update?)"; exit 1; }
    KDEB=$(fetch "$KPKG")
fi
BBDEB=$(fetch busybox-static)

rm -rf "$W"
mkdir -p "$W/busybox" "$W/initramfs" "$W/rootfs"
dpkg-deb -x "$BBDEB" "$W/busybox"
# The unpacked kernel (and its depmod output) is kept beside the .deb it
# came from, and unpacked again only when that changes.
K=$OUT/kernel
if [ "$(cat "$K.from" 2>/dev/null)" != "$(basename "$KDEB")" ]; then
    rm -rf "$K" "$K.from"
    mkdir -p "$K"
    dpkg-deb -x "$KDEB" "$K"
    depmod -b "$K" "$(ls "$K/lib/modules")"
    basename "$KDEB" >"$K.from"
fi
KVER=$(ls "$K/lib/modules")
log "kernel $KVER ($(basename "$KDEB")), $(basename "$BBDEB")"

# ---- modules: the list, with dependencies from depmod ------------------------

MODDIR=lib/modules/$KVER
: >"$W/modules.order"
grep -v '^[[:space:]]*\(#\|$\)' "$SRC/toolchain/image/modules" | while read -r m only; do
    # "NAME ARCH...": this board's kernel only when ARCH is among them.
    case " ${only:-$ARCH} " in *" $ARCH "*) ;; *) continue ;; esac
    modprobe -d "$K" -S "$KVER" --show-depends "$m" >"$W/deps" ||
        { log "module $m: not in $KVER"; exit 1; }
    sed -n 's/^insmod \([^ ]*\).*/\1/p' "$W/deps" | while read -r ko; do
        rel=${ko#"$K/"}
        grep -qxF "$rel" "$W/modules.order" || echo "$rel" >>"$W/modules.order"
    done
done
while read -r rel; do
    mkdir -p "$W/initramfs/$(dirname "$rel")"
    cp "$K/$rel" "$W/initramfs/$rel"
done <"$W/modules.order"
# Load order for the first stage init (softdog only where no other watchdog).
cp "$W/modules.order" "$W/initramfs/$MODDIR/load-order"

# ---- busybox -------------------------------------------------------------------

# Applet links for a tree ($1): busybox lists its applets and where they go.
busybox_tree() {
    mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin"
    cp "$W/busybox/bin/busybox" "$1/bin/busybox"
    "$EC_QEMU" "$W/busybox/bin/busybox" --list-full | while read -r a; do
        [ "$a" = bin/busybox ] && continue
        up=$(echo "$a" | sed 's#[^/]*/#../#g; s#[^/]*$##')
        ln -sf "${up}bin/busybox" "$1/$a"
    done
}

# ---- initramfs: first stage ------------------------------------------------------

I=$W/initramfs
busybox_tree "$I"
mkdir -p "$I/proc" "$I/sys" "$I/dev" "$I/newroot" "$I/etc"
install -m 0755 "$SRC/toolchain/image/init" "$I/init"

# ---- rootfs: busybox, edgecap, its libraries, ALSA's configuration ---------------

R=$W/rootfs
busybox_tree "$R"
for d in proc sys dev tmp run etc/edgecap var/lib/edgecap var/log root usr/lib usr/share/alsa; do
    mkdir -p "$R/$d"
done
cp -R "$SRC/toolchain/image/rootfs/." "$R/"
chmod 0755 "$R"/etc/rc.* "$R"/etc/acpi/PWRF/* "$R"/usr/sbin/* "$R"/usr/share/udhcpc/default.script
echo "$SOURCE_DATE_EPOCH" >"$R/etc/edgecap-build-epoch"
(cd "$SRC" && git describe --always --dirty 2>/dev/null || echo unknown) >"$R/etc/edgecap-version"
"$EC_TRIPLET-strip" -o "$R/usr/sbin/edgecap" "$EDGECAP_BIN"
chmod 0755 "$R/usr/sbin/edgecap"

# Shared libraries: NEEDED entries, recursively, from the multiarch root; the
# interpreter from PT_INTERP. Each goes where the dynamic linker looks for it.
needed() { "$EC_TRIPLET-readelf" -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
find_lib() {
    for d in "$MULTIARCH" "/lib/$EC_TRIPLET"; do
        [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 1
}
: >"$W/libs"
todo=$(needed "$R/usr/sbin/edgecap")
while [ -n "$todo" ]; do
    next=""
    for lib in $todo; do
        grep -qxF "$lib" "$W/libs" && continue
        echo "$lib" >>"$W/libs"
        path=$(find_lib "$lib") || { log "library $lib not found under $MULTIARCH"; exit 1; }
        mkdir -p "$R/usr/lib/$EC_TRIPLET"
        "$EC_TRIPLET-strip" --strip-unneeded -o "$R/usr/lib/$EC_TRIPLET/$lib" "$(readlink -f "$path")"
        next="$next $(needed "$R/usr/lib/$EC_TRIPLET/$lib")"
    done
    todo=$next
done
# /lib is /usr/lib (merged); the interpreter is one of the NEEDED libraries.
ln -s usr/lib "$R/lib"
interp=$("$EC_TRIPLET-readelf" -l "$R/usr/sbin/edgecap" | sed -n 's/.*interpreter: \(.*\)\]/\1/p')
[ -e "$R/usr/lib/$EC_TRIPLET/$(basename "$interp")" ] || { log "interpreter $interp not among the libraries"; exit 1; }
ln -s "$EC_TRIPLET/$(basename "$interp")" "$R/usr$interp"
log "libraries: $(sort "$W/libs" | tr '\n' ' ')"
# libasound reads alsa.conf (and the card and pcm definitions it includes) at
# the first open; the hw plugin it uses here is built in.
for f in alsa.conf cards ctl pcm; do
    cp -R "/usr/share/alsa/$f" "$R/usr/share/alsa/"
done

# ---- file systems ------------------------------------------------------------------

# Every time stamp is the build's.
stamp() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }
stamp "$I"
stamp "$R"

(cd "$I" && find . | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
    gzip -n -9 >"$OUT/initramfs.cpio.gz"
cp "$K/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

# mksquashfs takes SOURCE_DATE_EPOCH for the file system's and every inode's time.
mksquashfs "$R" "$W/p1.img" -noappend -reproducible -all-root -comp gzip -quiet -no-progress >/dev/null

MIB=1048576
P2_MIB=16
P3_MIB=64
p1_size=$(stat -c %s "$W/p1.img")
P1_MIB=$(((p1_size + MIB - 1) / MIB + 1))

# p2: FAT16, fixed volume id, every time stamp fixed.
mkfs.fat -C -F 16 -n EC-PROV -i 45430002 --invariant "$W/p2.img" $((P2_MIB * 1024)) >/dev/null
# p3: ext4, fixed UUID and directory hash seed, clock pinned; no blocks
# reserved for root (the spool is the partition's only user, and it counts
# the space an unprivileged writer may use).
truncate -s "${P3_MIB}M" "$W/p3.img"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -b 4096 -m 0 -L EC-DATA \
    -U 45430003-0000-4000-8000-000000000003 \
    -E hash_seed=45430003-0000-4000-8000-0000000000ff,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0 \
    "$W/p3.img"

TOTAL_MIB=$((1 + P1_MIB + P2_MIB + P3_MIB))
rm -f "$IMG"
truncate -s "$((TOTAL_MIB * MIB))" "$IMG"
s1=2048
s2=$((s1 + P1_MIB * 2048))
s3=$((s2 + P2_MIB * 2048))
sfdisk -q "$IMG" <<EOF
label: dos
label-id: 0x45430001
unit: sectors

start=$s1, size=$((P1_MIB * 2048)), type=83
start=$s2, size=$((P2_MIB * 2048)), type=e
start=$s3, size=$((P3_MIB * 2048)), type=83
EOF
dd if="$W/p1.img" of="$IMG" bs=512 seek=$s1 conv=notrunc,sparse status=none
dd if="$W/p2.img" of="$IMG" bs=512 seek=$s2 conv=notrunc,sparse status=none
dd if="$W/p3.img" of="$IMG" bs=512 seek=$s3 conv=notrunc,sparse status=none
touch -d "@$SOURCE_DATE_EPOCH" "$IMG" "$OUT/vmlinuz" "$OUT/initramfs.cpio.gz"

(cd "$OUT" && sha256sum "$(basename "$IMG")" >"$(basename "$IMG").sha256")
hash=$(cut -d' ' -f1 "$IMG.sha256")
size=$(stat -c %s "$IMG")
echo "image: $IMG"
echo "  sha256 $hash"
echo "  size $size bytes ($TOTAL_MIB MiB: root ${P1_MIB} MiB, provisioning $P2_MIB MiB, data $P3_MIB MiB)"
echo "  root filesystem $p1_size bytes; edgecap stripped $(stat -c %s "$R/usr/sbin/edgecap") bytes"
echo "  kernel $(stat -c %s "$OUT/vmlinuz") bytes, initramfs $(stat -c %s "$OUT/initramfs.cpio.gz") bytes"
