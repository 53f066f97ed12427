#!/bin/bash
# Flashes an edgecap field image onto a block device or an image file and
# writes the device's provisioning files into its provisioning partition.
#
#   toolchain/flash.sh IMAGE TARGET --provision FILE [--cert CERT --key KEY]
#                      [--file SRC[:DEST]]... [--no-grow] [--dry-run]
#
# Image layout (the contract with toolchain/image.sh): MBR, partitions 1 MiB
# aligned; p1 the read-only root (squashfs), p2 the provisioning partition
# (vfat, label EC-PROV, mounted by the guest at /etc/edgecap), p3 the data
# partition (ext4, label EC-DATA). IMAGE.sha256 beside IMAGE (sha256sum
# format) is checked when present.
#
# Order, so that a refusal never leaves TARGET half written:
#   1. the image: readable, has p2 = vfat "EC-PROV" (its hash is checked
#      against IMAGE.sha256 last, as it reads the whole image);
#   2. the target: a block device (a whole disk, not mounted, none of its
#      partitions mounted, not the disk of /, /boot or swap, at least as
#      large as the image) or a regular file / new path (not backing a
#      mounted loop device);
#   3. the provisioning set, exactly as the guest will see it: p2's files are
#      staged in a temporary directory with the modes the guest's vfat mount
#      gives them (owner = running user, files 0600, directories 0700), that
#      directory is bind-mounted at /etc/edgecap in a private mount namespace
#      and the host build of `edgecap check-config /etc/edgecap/edgecap.conf`
#      runs there; every input file the config names under /etc/edgecap must
#      be in the set, and the client certificate must match its key;
#   4. write (dd conv=fsync), read back image-size bytes and compare sha256;
#   5. a TARGET larger than the image: p3 (the spool's partition) grows to
#      its end (sfdisk), its ext4 is checked (e2fsck) and resized (resize2fs)
#      at p3's byte offset, and read back (dumpe2fs: label, UUID, size);
#      --no-grow leaves it at the image's size;
#   6. replace p2's contents with the staged set through mtools at p2's byte
#      offset (no host mount), read every file back and compare sha256.
# --dry-run stops before 4 and writes nothing.
#
# --cert/--key go where [tls] client_cert/client_key point; a --file without
# DEST goes where the one config path with its basename points, else to p2's
# root under its basename. DEST is relative to /etc/edgecap (or absolute
# below it). Secrets are never printed: only names, sizes and sha256.
#
# Exit status: 0 done; 64 usage; 65 bad image or provisioning set (with
# check-config's own FILE:LINE message); 73 refused target; 74 write or
# verification failed.
set -euo pipefail

PROG=flash.sh
SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROV_MOUNT=/etc/edgecap
PROV_LABEL=EC-PROV
DATA_LABEL=EC-DATA

die() { # STATUS MESSAGE...
    local st=$1
    shift
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit "$st"
}
say() { printf '%s\n' "$*"; }

usage() {
    cat >&2 <<EOF
usage: $PROG IMAGE TARGET --provision FILE [--cert CERT --key KEY] [--file SRC[:DEST]]... [--no-grow] [--dry-run]
EOF
    exit 64
}

# ---- arguments ----------------------------------------------------------------

IMAGE="" TARGET="" PROVISION="" CERT="" KEY="" DRY_RUN=0 GROW=1
FILES=()
while [ $# -gt 0 ]; do
    case "$1" in
    --provision | --cert | --key | --file)
        [ $# -ge 2 ] && [ -n "$2" ] || die 64 "$1 needs a value"
        case "$1" in
        --provision) PROVISION=$2 ;;
        --cert) CERT=$2 ;;
        --key) KEY=$2 ;;
        --file) FILES+=("$2") ;;
        esac
        shift 2
        ;;
    --dry-run) DRY_RUN=1; shift ;;
    --no-grow) GROW=0; shift ;;
    -h | --help) usage ;;
    -*) die 64 "unknown option $1" ;;
    *)
        if [ -z "$IMAGE" ]; then
            IMAGE=$1
        elif [ -z "$TARGET" ]; then
            TARGET=$1
        else
            die 64 "unexpected argument $1"
        fi
        shift
        ;;
    esac
done
[ -n "$IMAGE" ] && [ -n "$TARGET" ] || usage
[ -n "$PROVISION" ] || die 64 "--provision FILE is required"
{ [ -n "$CERT" ] && [ -z "$KEY" ]; } && die 64 "--cert needs --key"
{ [ -z "$CERT" ] && [ -n "$KEY" ]; } && die 64 "--key needs --cert"

for tool in partx mcopy mtype mdir mmd mdel mdeltree mlabel openssl unshare mount \
    lsblk blockdev losetup perl sha256sum dd sfdisk e2fsck resize2fs dumpe2fs; do
    command -v "$tool" >/dev/null 2>&1 ||
        die 69 "$tool not found (toolchain/install-deps.sh image installs it)"
done
# mtools on a partition of a raw image or of a disk: no geometry check, no
# ~/.mtoolsrc surprises.
export MTOOLS_SKIP_CHECK=1 MTOOLS_LOWER_CASE=0
export MTOOLSRC=/dev/null

# The staged set holds the device's key and secrets: keep it in memory
# (/dev/shm) where there is one, 0700, removed at exit.
WORK_PARENT=/dev/shm
[ -d "$WORK_PARENT" ] && [ -w "$WORK_PARENT" ] || WORK_PARENT=${TMPDIR:-/tmp}
WORK=$(umask 077 && mktemp -d "$WORK_PARENT/edgecap-flash.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

sha256_of() {
    local digest _
    read -r digest _ < <(sha256sum)
    echo "$digest"
}

# Runs an mtools command; on a block device mtools says it cannot get the
# geometry (it needs none at an explicit offset): that line is dropped, any
# other message is shown.
mt() {
    if [ "${TARGET_KIND:-}" = block ]; then
        "$@" 2> >(grep -v '^Could not get geometry of device' >&2 || true)
    else
        "$@"
    fi
}

# ---- 1. the image -------------------------------------------------------------

[ -f "$IMAGE" ] && [ -r "$IMAGE" ] || die 65 "$IMAGE: not a readable image file"
IMAGE_BYTES=$(stat -c %s "$IMAGE")
[ "$IMAGE_BYTES" -gt 0 ] && [ $((IMAGE_BYTES % 512)) -eq 0 ] ||
    die 65 "$IMAGE: size $IMAGE_BYTES is not a whole number of 512-byte sectors"
# Byte offset and size of partition 2 of a disk or image file, from its MBR
# (partx counts in 512-byte sectors whatever the device's sector size).
p2_geometry() { part_geometry 2 "$1"; }
part_geometry() { # N DISK -> "OFFSET SIZE"
    local scheme start sectors
    read -r scheme start sectors < <(partx -g -o SCHEME,START,SECTORS -n "$1" "$2" 2>/dev/null) ||
        return 1
    if [ "$scheme" != dos ] || [ -z "$sectors" ]; then return 1; fi
    echo "$((start * 512)) $((sectors * 512))"
}

# The volume label of the FAT file system at OFFSET of DISK.
fat_label() { # DISK OFFSET
    mt mlabel -s -i "$1@@$2" :: 2>/dev/null | sed -nE 's/^ *Volume label is (.*[^ ]) *$/\1/p'
}

read -r IMG_P2_OFF _ < <(p2_geometry "$IMAGE" || true) || true
[ -n "${IMG_P2_OFF:-}" ] || die 65 "$IMAGE: no MBR partition table with a partition 2"
[ "$(fat_label "$IMAGE" "$IMG_P2_OFF")" = "$PROV_LABEL" ] ||
    die 65 "$IMAGE: partition 2 is not a vfat file system labelled $PROV_LABEL"
# dumpe2fs -h's FIELD of the ext4 file system at OFFSET of DISK (e2fsprogs
# reads DISK?offset=N as the file system at that offset).
ext4_field() { # DISK OFFSET FIELD
    dumpe2fs -h "$1?offset=$2" 2>/dev/null | sed -n "s/^$3: *//p"
}
read -r IMG_P3_OFF _ < <(part_geometry 3 "$IMAGE" || true) || true
[ -n "${IMG_P3_OFF:-}" ] && [ "$(ext4_field "$IMAGE" "$IMG_P3_OFF" "Filesystem volume name")" = "$DATA_LABEL" ] ||
    die 65 "$IMAGE: partition 3 is not an ext4 file system labelled $DATA_LABEL"

# ---- 2. the target ------------------------------------------------------------

# maj:min of a block device node.
devnum() { printf '%d:%d\n' "0x$(stat -L -c %t "$1")" "0x$(stat -L -c %T "$1")"; }

# The whole disks under block device MAJ:MIN: itself when it is a disk, its
# parent when a partition, and recursively what a dm/md device sits on.
# (Builtins only where it can: it runs for every mount.)
disks_of() { # MAJ:MIN
    local sys=/sys/dev/block/$1 d
    [ -e "$sys/dev" ] || return 0
    sys=$(cd -P "$sys" && pwd) || return 0
    [ ! -f "$sys/partition" ] || sys=${sys%/*}
    echo "$(<"$sys/dev")"
    for d in "$sys"/slaves/*; do
        [ ! -e "$d/dev" ] || disks_of "$(<"$d/dev")"
    done
}

# Every whole disk in use, as "DISK KIND DEVICE WHERE": KIND system for the
# disks of /, /boot, /boot/efi, /usr, /var and swap, mounted for the disks of
# any other mount. From mountinfo (field 3 is the device number, field 5 the
# mount point, the source follows " - fstype ") and /proc/swaps.
IN_USE=()
scan_in_use() {
    local dev mnt src kind d w
    IN_USE=()
    while read -r dev mnt src; do
        case "$mnt" in
        / | /boot | /boot/efi | /usr | /var | swap) kind=system ;;
        *) kind=mounted ;;
        esac
        for d in "$dev" $([ -b "$src" ] && devnum "$src"); do
            [ -e "/sys/dev/block/$d" ] || continue
            for w in $(disks_of "$d"); do
                IN_USE+=("$w $kind $d $mnt")
            done
        done
    done < <(
        awk '{ for (i = 7; $i != "-"; i++); print $3, $5, $(i + 2) }' /proc/self/mountinfo
        awk 'NR > 1 && $1 ~ /^\/dev\// { print "-", "swap", $1 }' /proc/swaps
    )
}

# True unless the kernel refuses an exclusive open of block device DEV
# (EBUSY): it, or a partition of it, is mounted or otherwise claimed.
unclaimed() { # DEV
    perl -MFcntl -e 'sysopen(my $f, $ARGV[0], O_RDONLY | O_EXCL) || !$!{EBUSY} || exit 1' "$1"
}

# Refuses a target that must not be written; sets TARGET_KIND, TARGET_BYTES.
check_target() {
    local t=$1 num type where entry disk kind dev loopdev
    scan_in_use
    if [ -b "$t" ]; then
        TARGET_KIND=block
        num=$(devnum "$t")
        type=$(lsblk -dno TYPE "$t" 2>/dev/null | head -n1)
        [ "$type" != part ] ||
            die 73 "$t is a partition; give the whole disk (nothing written)"
        for entry in "${IN_USE[@]}"; do
            read -r disk kind dev where <<<"$entry"
            [ "$disk" = "$num" ] && [ "$kind" = system ] &&
                die 73 "$t is a system disk (it holds $where); refusing to write it (nothing written)"
        done
        for entry in "${IN_USE[@]}"; do
            read -r disk kind dev where <<<"$entry"
            [ "$disk" = "$num" ] &&
                die 73 "$t is mounted ($([ "$dev" = "$num" ] && echo "itself" || echo "partition $dev") at $where); unmount it first (nothing written)"
        done
        # lsblk's view too (libmount's reading of the same table).
        where=$(lsblk -nro MOUNTPOINTS "$t" 2>/dev/null | grep -v '^$' | head -n1 || true)
        [ -z "$where" ] || die 73 "$t is mounted (at $where); unmount it first (nothing written)"
        # The kernel's view: a mount in any namespace (a container's, a
        # private one's) or swap, RAID or LVM claims the device (or one of
        # its partitions) exclusively, which mountinfo here may not show.
        unclaimed "$t" ||
            die 73 "$t is in use (mounted, perhaps in another mount namespace, or swap, RAID or LVM); nothing written"
        TARGET_BYTES=$(blockdev --getsize64 "$t")
        [ "$TARGET_BYTES" -ge "$IMAGE_BYTES" ] ||
            die 73 "$t is smaller than the image ($TARGET_BYTES < $IMAGE_BYTES bytes; nothing written)"
    elif [ -f "$t" ]; then
        TARGET_KIND="file"
        [ "$(stat -L -c %d:%i "$t")" != "$(stat -L -c %d:%i "$IMAGE")" ] ||
            die 73 "$t is the image itself"
        # A file behind a loop device counts as mounted when that device
        # (or one of its partitions) is.
        for loopdev in $(losetup -n -O NAME -j "$t" 2>/dev/null); do
            num=$(devnum "$loopdev")
            for entry in "${IN_USE[@]}"; do
                read -r disk kind dev where <<<"$entry"
                [ "$disk" = "$num" ] &&
                    die 73 "$t is mounted (through $loopdev, at $where); unmount it first (nothing written)"
            done
            unclaimed "$loopdev" ||
                die 73 "$t is in use (through $loopdev, mounted perhaps in another mount namespace); nothing written"
        done
        TARGET_BYTES=$(stat -L -c %s "$t")
        # A non-empty file is a disk image of fixed size, like a device.
        [ "$TARGET_BYTES" -eq 0 ] || [ "$TARGET_BYTES" -ge "$IMAGE_BYTES" ] ||
            die 73 "$t is smaller than the image ($TARGET_BYTES < $IMAGE_BYTES bytes; nothing written)"
    elif [ -e "$t" ] || [ -L "$t" ]; then
        die 73 "$t is neither a block device nor a regular file (nothing written)"
    else
        # A missing device node (a partition the kernel has not scanned, a
        # mistyped /dev/sdX) must not become a file in /dev.
        case "$(realpath -m "$t")" in
        /dev/shm/*) ;;
        /dev/* | /sys/* | /proc/*) die 73 "$t: no such device (nothing written)" ;;
        esac
        [ -d "$(dirname "$t")" ] || die 73 "$(dirname "$t"): no such directory"
        TARGET_KIND=new
        TARGET_BYTES=0
    fi
}
check_target "$TARGET"

# ---- 3. the provisioning set --------------------------------------------------

[ -f "$PROVISION" ] && [ -r "$PROVISION" ] || die 65 "$PROVISION: not a readable file"

# Values of keys in the provisioning file (section.key<TAB>value), as libinih
# reads them: comments at line start or after whitespace + ';'.
ini_values() { # FILE
    awk '
        { sub(/\r$/, "") }
        /^[ \t]*[;#]/ || /^[ \t]*$/ { next }
        /^[ \t]*\[/ { s = $0; sub(/^[ \t]*\[/, "", s); sub(/\].*/, "", s); next }
        /=/ {
            k = $0; sub(/=.*/, "", k); gsub(/^[ \t]+|[ \t]+$/, "", k)
            v = $0; sub(/^[^=]*=/, "", v); sub(/[ \t]+;.*$/, "", v); gsub(/^[ \t]+|[ \t]+$/, "", v)
            print s "." k "\t" v
        }' "$1"
}

# A path named by the config, relative to the provisioning mount, or nothing
# when it lies elsewhere.
rel_of() { # PATH
    case "$1" in
    "$PROV_MOUNT"/?*) printf '%s\n' "${1#"$PROV_MOUNT"/}" ;;
    esac
}

# A relative path inside p2: no empty, . or .. component.
check_rel() { # REL WHAT
    local IFS=/ part
    [ -n "$1" ] && [ "${1:0:1}" != / ] || die 64 "$2: not a path below $PROV_MOUNT"
    for part in $1; do
        case "$part" in
        "" | . | ..) die 64 "$2: '$1' is not a plain path below $PROV_MOUNT" ;;
        esac
    done
}

CONF_VALUES=$(ini_values "$PROVISION")
conf_value() { awk -F '\t' -v k="$1" '$1 == k { print $2; exit }' <<<"$CONF_VALUES"; }

STAGE=$WORK/p2
mkdir -m 700 "$STAGE"
declare -A STAGED_FROM=() # relative path -> source (for the report)

stage_file() { # SRC REL
    local src=$1 rel=$2
    check_rel "$rel" "$src"
    [ -f "$src" ] && [ -r "$src" ] || die 65 "$src: not a readable file"
    [ -z "${STAGED_FROM[$rel]:-}" ] ||
        die 64 "$src and ${STAGED_FROM[$rel]} would both be $PROV_MOUNT/$rel"
    # vfat keeps no modes: the guest's mount gives every file 0600 and every
    # directory 0700, owned by the user edgecap runs as; stage them so.
    local dir=.
    case "$rel" in */*) dir=${rel%/*} ;; esac
    (umask 077 && mkdir -p "$STAGE/$dir" && install -m 600 "$src" "$STAGE/$rel")
    STAGED_FROM[$rel]=$src
}

stage_file "$PROVISION" edgecap.conf
if [ -n "$CERT" ]; then
    cert_path=$(conf_value tls.client_cert)
    key_path=$(conf_value tls.client_key)
    cert_rel=$(rel_of "$cert_path")
    key_rel=$(rel_of "$key_path")
    [ -n "$cert_rel" ] ||
        die 65 "--cert given, but [tls] client_cert (${cert_path:-not set}) is not below $PROV_MOUNT"
    [ -n "$key_rel" ] ||
        die 65 "--key given, but [tls] client_key (${key_path:-not set}) is not below $PROV_MOUNT"
    stage_file "$CERT" "$cert_rel"
    stage_file "$KEY" "$key_rel"
fi
# Every path below the mount that the file names, for placing --file's.
NAMED_RELS=$(cut -f2 <<<"$CONF_VALUES" | tr ',' '\n' | sed -E 's/^ +| +$//g' |
    while read -r v; do rel_of "$v"; done | sort -u)
for spec in "${FILES[@]}"; do
    src=${spec%%:*}
    if [ "$src" != "$spec" ]; then
        rel=${spec#*:}
        rel=${rel#"$PROV_MOUNT"/}
    else
        base=$(basename "$src")
        rel=$(awk -v b="$base" '{ n = split($0, p, "/") } p[n] == b' <<<"$NAMED_RELS")
        [ "$(grep -c . <<<"$rel")" -eq 1 ] || rel=$base
    fi
    stage_file "$src" "$rel"
done

# Runs the host build's check-config on the staged set at the guest's path.
# The bind mount lives only in a private mount namespace, so the host's own
# /etc is never changed. When /etc/edgecap does not exist on the host there is
# nothing to bind onto, and a tmpfs over /etc would hide the host's passwd,
# ld.so.cache and time zone from edgecap; instead an overlay with /etc as its
# lower layer (upper and work dirs on a tmpfs of our own) shows /etc unchanged
# plus an empty edgecap directory, and the staged set is bound onto that.
HOST_EDGECAP=${EC_FLASH_EDGECAP:-$SRCDIR/build/x86_64/edgecap}
if [ ! -x "$HOST_EDGECAP" ]; then
    say "$PROG: building the host edgecap for check-config"
    make -C "$SRCDIR" -s ARCH=x86_64 "build/x86_64/edgecap" >&2 ||
        die 69 "cannot build $HOST_EDGECAP"
fi
NS=(unshare --mount --propagation private)
[ "$(id -u)" -eq 0 ] || NS=(unshare --user --map-root-user --mount --propagation private)
CHECK_OUT=$WORK/check.out
CHECK_ERR=$WORK/check.err
# shellcheck disable=SC2016 # expanded by the inner shell
if ! "${NS[@]}" bash -euc '
    stage=$1 mnt=$2 work=$3 edgecap=$4
    if [ ! -d "$mnt" ]; then
        mkdir "$work/ovl"
        mount -t tmpfs -o mode=0700 flash-etc "$work/ovl"
        mkdir "$work/ovl/upper" "$work/ovl/work"
        parent=$(dirname "$mnt")
        mount -t overlay flash-etc -o "lowerdir=$parent,upperdir=$work/ovl/upper,workdir=$work/ovl/work" "$parent"
        mkdir "$mnt"
    fi
    mount --bind "$stage" "$mnt"
    exec "$edgecap" check-config "$mnt/edgecap.conf"
' flash-check "$STAGE" "$PROV_MOUNT" "$WORK" "$HOST_EDGECAP" >"$CHECK_OUT" 2>"$CHECK_ERR"; then
    cat "$CHECK_ERR" >&2
    die 65 "the provisioning set is refused by edgecap check-config; nothing was written"
fi

# check-config reads only secret files; the TLS and other input files it names
# are read at start, so their presence is checked here. Keys the daemon writes
# (audit_file, keystore_dir, dir, transcript_dir, textfile) need not exist.
INPUT_KEYS='^(tls\.(ca_file|client_cert|client_key|client_ca_file)|[a-z0-9]+\.[a-z0-9_]+_file|capture\.file|consent\.(switch|state_file)|pkcs11\.module)$'
CHECKED_VALUES=$(awk '
    /^\[/ { s = $0; gsub(/[][]/, "", s); next }
    / = / { k = $0; sub(/ = .*/, "", k); v = $0; sub(/^[^=]*= /, "", v); print s "." k "\t" v }
' "$CHECK_OUT")
missing=()
while IFS=$'\t' read -r key value; do
    [ -n "$key" ] || continue
    [[ "$key" =~ $INPUT_KEYS ]] && [ "$key" != logging.audit_file ] || continue
    rel=$(rel_of "$value")
    [ -n "$rel" ] || continue
    [ -f "$STAGE/$rel" ] || missing+=("[${key%%.*}] ${key#*.} = $value")
done <<<"$CHECKED_VALUES"
if [ "${#missing[@]}" -gt 0 ]; then
    for m in "${missing[@]}"; do
        printf '%s: %s: not in the provisioning set (give it with --file, --cert or --key)\n' \
            "$PROG" "$m" >&2
    done
    die 65 "files the provisioning file names are missing; nothing was written"
fi

# The client certificate must belong to the client key (public halves equal).
pubkey_sha() { # FILE cert|key
    local f=$1 kind=$2
    if [ "$kind" = cert ]; then
        openssl x509 -in "$f" -noout -pubkey 2>/dev/null ||
            openssl x509 -inform DER -in "$f" -noout -pubkey 2>/dev/null
    else
        openssl pkey -in "$f" -pubout -passin pass: 2>/dev/null ||
            openssl pkey -inform DER -in "$f" -pubout -passin pass: 2>/dev/null
    fi </dev/null | openssl pkey -pubin -outform DER 2>/dev/null | sha256_of || true
}
EMPTY_SHA=$(sha256_of </dev/null)
cert_rel=$(rel_of "$(awk -F '\t' '$1 == "tls.client_cert" { print $2 }' <<<"$CHECKED_VALUES")")
key_rel=$(rel_of "$(awk -F '\t' '$1 == "tls.client_key" { print $2 }' <<<"$CHECKED_VALUES")")
if [ -n "$cert_rel" ] && [ -n "$key_rel" ]; then
    cert_pub=$(pubkey_sha "$STAGE/$cert_rel" cert)
    [ "$cert_pub" != "$EMPTY_SHA" ] ||
        die 65 "$PROV_MOUNT/$cert_rel (${STAGED_FROM[$cert_rel]}): not an X.509 certificate"
    key_pub=$(pubkey_sha "$STAGE/$key_rel" key)
    [ "$key_pub" != "$EMPTY_SHA" ] ||
        die 65 "$PROV_MOUNT/$key_rel (${STAGED_FROM[$key_rel]}): not an unencrypted private key"
    [ "$cert_pub" = "$key_pub" ] ||
        die 65 "the client certificate $PROV_MOUNT/$cert_rel (${STAGED_FROM[$cert_rel]}) does not match the key $PROV_MOUNT/$key_rel (${STAGED_FROM[$key_rel]}); nothing was written"
fi


# ---- the image's hash: last among the checks, as it reads the whole image ----

IMAGE_SHA=$(sha256_of <"$IMAGE")
if [ -f "$IMAGE.sha256" ]; then
    EXPECTED_SHA=$(awk 'NR == 1 { print tolower($1) }' "$IMAGE.sha256")
    [[ "$EXPECTED_SHA" =~ ^[0-9a-f]{64}$ ]] || die 65 "$IMAGE.sha256: no sha256 on its first line"
    [ "$EXPECTED_SHA" = "$IMAGE_SHA" ] ||
        die 65 "$IMAGE does not match $IMAGE.sha256 (image $IMAGE_SHA, file says $EXPECTED_SHA)"
    SHA_SOURCE="$IMAGE.sha256"
else
    EXPECTED_SHA=$IMAGE_SHA
    SHA_SOURCE="the image itself (no $IMAGE.sha256)"
fi

say "image:     $IMAGE ($IMAGE_BYTES bytes, sha256 $IMAGE_SHA, checked against $SHA_SOURCE)"
say "target:    $TARGET ($TARGET_KIND$([ "$TARGET_KIND" = new ] || echo ", $TARGET_BYTES bytes"))"
say "provision: $PROVISION valid for edgecap check-config as $PROV_MOUNT/edgecap.conf"
if [ "$DRY_RUN" = 1 ]; then
    say "dry run: would write the image and these files to partition 2 ($PROV_LABEL):"
    (cd "$STAGE" && find . -type f | sed 's#^\./#  '"$PROV_MOUNT"'/#' | sort)
    exit 0
fi

# ---- 4. write and verify ------------------------------------------------------

# The checks again, right before writing: nothing may have been mounted since.
check_target "$TARGET"
WRITE=(dd if="$IMAGE" of="$TARGET" bs=4M "conv=fsync,notrunc" status=none)
if [ "$TARGET_KIND" = block ]; then
    # Hold an exclusive claim on the device while dd writes, so that nothing
    # can mount it between the checks and the end of the write.
    perl -MFcntl -e 'sysopen(my $claim, shift, O_RDONLY | O_EXCL) or exit 75;
        exit(system(@ARGV) == 0 ? 0 : 1)' "$TARGET" "${WRITE[@]}" || rc=$?
    [ "${rc:-0}" -ne 75 ] || die 73 "$TARGET was claimed after the checks (mounted?); nothing written"
    [ "${rc:-0}" -eq 0 ] || die 74 "writing $IMAGE to $TARGET failed"
else
    "${WRITE[@]}" || die 74 "writing $IMAGE to $TARGET failed"
fi
if [ "$TARGET_KIND" = block ]; then
    # Read from the device, not from the page cache the write left.
    blockdev --flushbufs "$TARGET"
fi
if [ "${EC_FLASH_FAULT:-}" = corrupt-after-write ]; then
    # Test seam (tests/system/flash.sh): one byte of the written image is
    # changed behind the writer's back, as bad flash would; the read-back
    # below must notice.
    mid=$(od -An -tu1 -j $((IMAGE_BYTES / 2)) -N 1 "$TARGET" | tr -d ' ')
    # shellcheck disable=SC2059 # the octal escape is the format
    printf "\\$(printf '%03o' $((mid ^ 255)))" |
        dd of="$TARGET" bs=1 seek=$((IMAGE_BYTES / 2)) conv=notrunc,fsync status=none
    [ "$TARGET_KIND" != block ] || blockdev --flushbufs "$TARGET"
fi
READ_SHA=$(head -c "$IMAGE_BYTES" "$TARGET" | sha256_of)
[ "$READ_SHA" = "$EXPECTED_SHA" ] ||
    die 74 "verification failed: $TARGET reads back sha256 $READ_SHA over $IMAGE_BYTES bytes, expected $EXPECTED_SHA ($SHA_SOURCE); the provisioning files were not written"
say "written:   $IMAGE_BYTES bytes, read back sha256 $READ_SHA (matches)"

# ---- 5. the data partition fills the target -------------------------------------

# A field card is larger than the image: the spool gets the rest of it.
read -r P3_OFF P3_SIZE < <(part_geometry 3 "$TARGET" || true) || true
[ -n "${P3_OFF:-}" ] || die 74 "$TARGET: no partition 3 after writing"
NOW_BYTES=$([ "$TARGET_KIND" = block ] && blockdev --getsize64 "$TARGET" || stat -L -c %s "$TARGET")
P3_FS="$TARGET?offset=$P3_OFF"
p3_field() { ext4_field "$TARGET" "$P3_OFF" "$1"; }
# A number from dumpe2fs, or 0 (never a failing assignment under set -e).
p3_number() {
    local v
    v=$(p3_field "$1" || true)
    case "$v" in '' | *[!0-9]*) echo 0 ;; *) echo "$v" ;; esac
}
AFTER_WRITE="the image is written but p2 is not provisioned: flash again"
if [ "$GROW" = 1 ] && [ $((NOW_BYTES - IMAGE_BYTES)) -ge 1048576 ]; then
    p3_uuid=$(p3_field "Filesystem UUID" || true)
    [ "$(p3_field "Filesystem volume name" || true)" = "$DATA_LABEL" ] && [ -n "$p3_uuid" ] ||
        die 74 "$TARGET: partition 3 is not the ext4 file system $DATA_LABEL after writing; $AFTER_WRITE"
    # Nothing may have mounted the device since the write (an automounter):
    # the checks again (in a subshell: their "nothing written" is not true
    # any more).
    (check_target "$TARGET") 2>"$WORK/recheck.err" ||
        die 74 "$(sed "s/^$PROG: //; s/ *(nothing written)//; s/; nothing written//" "$WORK/recheck.err" | head -n 1); $AFTER_WRITE"
    # MBR: up to 2 TiB; sfdisk stops p3 there on a larger card.
    echo ", +" | sfdisk -q --no-reread --no-tell-kernel -N 3 "$TARGET" >/dev/null 2>"$WORK/sfdisk.err" ||
        die 74 "cannot grow partition 3 on $TARGET: $(tail -n 1 "$WORK/sfdisk.err"); $AFTER_WRITE"
    old_size=$P3_SIZE
    read -r P3_OFF P3_SIZE < <(part_geometry 3 "$TARGET" || true) || true
    [ "${P3_SIZE:-0}" -gt "$old_size" ] || die 74 "$TARGET: partition 3 did not grow; $AFTER_WRITE"
    # On a device, in place. resize2fs cuts a regular file to the new file
    # system's size, offset not counted: a file's p3 is resized in a sparse
    # copy, and written back over a hole (zero blocks stay holes).
    fs=$P3_FS
    if [ "$TARGET_KIND" != block ]; then
        fs=$WORK/p3.img
        dd if="$TARGET" of="$fs" bs=1M iflag=skip_bytes,count_bytes skip="$P3_OFF" count="$old_size" \
            conv=sparse status=none || die 74 "cannot read partition 3 of $TARGET; $AFTER_WRITE"
    fi
    rc=0
    e2fsck -f -y "$fs" >"$WORK/fsck.out" 2>&1 || rc=$?
    [ "$rc" -lt 4 ] || die 74 "e2fsck on partition 3 of $TARGET failed: $(tail -n 2 "$WORK/fsck.out"); $AFTER_WRITE"
    resize2fs "$fs" "$((P3_SIZE / 1024))K" >"$WORK/resize.out" 2>&1 ||
        die 74 "resize2fs on partition 3 of $TARGET failed: $(tail -n 2 "$WORK/resize.out"); $AFTER_WRITE"
    if [ "$TARGET_KIND" = block ]; then
        blockdev --flushbufs "$TARGET"
    else
        truncate -s "$P3_OFF" "$TARGET" &&
            dd if="$fs" of="$TARGET" bs=1M oflag=seek_bytes seek="$P3_OFF" conv=notrunc,sparse,fsync status=none &&
            truncate -s "$NOW_BYTES" "$TARGET" && rm -f "$fs" ||
            die 74 "cannot write partition 3 back to $TARGET: it is left without its data partition; $AFTER_WRITE"
    fi
    # resize2fs leaves out a last block group too small to be worth its
    # metadata: the file system may end up to one group short of p3's end.
    block=$(p3_number "Block size")
    fs_bytes=$(($(p3_number "Block count") * block))
    group_bytes=$(($(p3_number "Blocks per group") * block))
    [ "$(p3_field "Filesystem UUID" || true)" = "$p3_uuid" ] && [ "$fs_bytes" -gt "$old_size" ] &&
        [ "$fs_bytes" -le "$P3_SIZE" ] && [ $((P3_SIZE - fs_bytes)) -lt "$group_bytes" ] ||
        die 74 "verification failed: partition 3 of $TARGET holds $fs_bytes bytes of ext4 (UUID $(p3_field "Filesystem UUID" || true)) in $P3_SIZE bytes; $AFTER_WRITE"
    say "grown:     partition 3 ($DATA_LABEL) from $old_size to $P3_SIZE bytes, ext4 checked and resized ($fs_bytes bytes)"
fi

# ---- 6. the provisioning partition --------------------------------------------

read -r P2_OFF P2_SIZE < <(p2_geometry "$TARGET" || true) || true
[ -n "${P2_OFF:-}" ] || die 74 "$TARGET: no partition 2 after writing"
[ "$(fat_label "$TARGET" "$P2_OFF")" = "$PROV_LABEL" ] ||
    die 74 "$TARGET: partition 2 is not vfat $PROV_LABEL after writing"
P2="$TARGET@@$P2_OFF"

# p2 then holds exactly the validated set: whatever the image had there goes.
mapfile -t ENTRIES < <(mt mdir -i "$P2" -b :: 2>/dev/null || true)
for entry in "${ENTRIES[@]}"; do
    case "$entry" in
    ::/*/) mt mdeltree -i "$P2" "${entry%/}" || die 74 "cannot clear ${entry#::} on partition 2" ;;
    ::/?*) mt mdel -i "$P2" "$entry" || die 74 "cannot clear ${entry#::} on partition 2" ;;
    esac
done

while read -r d; do
    mt mmd -i "$P2" "::/$d" || die 74 "cannot make directory $d on partition 2"
done < <(cd "$STAGE" && find . -mindepth 1 -type d | sed 's#^\./##' | sort)
mapfile -t REL_FILES < <(cd "$STAGE" && find . -type f | sed 's#^\./##' | sort)
for rel in "${REL_FILES[@]}"; do
    mt mcopy -i "$P2" -o -n "$STAGE/$rel" "::/$rel" || die 74 "cannot write $rel to partition 2"
done
sync "$TARGET"
if [ "$TARGET_KIND" = block ]; then
    blockdev --flushbufs "$TARGET"
    # Let the host see the new partition table (best effort: a device
    # without partition scanning keeps none).
    blockdev --rereadpt "$TARGET" >/dev/null 2>&1 || true
fi

say "partition 2 ($PROV_LABEL, offset $P2_OFF, $P2_SIZE bytes):"
for rel in "${REL_FILES[@]}"; do
    want=$(sha256_of <"$STAGE/$rel")
    got=$(mt mtype -i "$P2" "::/$rel" | sha256_of)
    [ "$got" = "$want" ] ||
        die 74 "verification failed: $PROV_MOUNT/$rel reads back sha256 $got, expected $want"
    say "  $PROV_MOUNT/$rel  $(stat -c %s "$STAGE/$rel") bytes  sha256 $want  (from ${STAGED_FROM[$rel]})"
done
# FAT names are case-insensitive, so the reads above would find CLIENT.CRT
# too: the names themselves must be the staged ones (mtools shows them as
# Linux's vfat does with shortname=mixed).
want_names=$(cd "$STAGE" && find . -mindepth 1 \( -type d -printf '::/%P/\n' \) -o \( -type f -printf '::/%P\n' \) | sort)
got_names=$(mt mdir -i "$P2" -b -/ :: | sort)
[ "$got_names" = "$want_names" ] ||
    die 74 "verification failed: partition 2 holds ${got_names//$'\n'/ }, expected ${want_names//$'\n'/ }"
say "done: $TARGET holds the image and ${#REL_FILES[@]} provisioning files, all read back"
