#!/bin/bash
# toolchain/flash.sh on image files and loop devices (never a real disk): a
# good flash is read back (image bytes outside the provisioning partition,
# every provisioning file through mtools); a bad provisioning file, a
# certificate that does not match its key, missing files, a bad image, a
# too small, mounted, system or wrong-kind target are refused with nothing
# written; a write that reads back differently is detected. A target larger
# than the image gets p3 (the spool's ext4) grown to its end, checked and
# resized; --no-grow leaves it as the image has it.
#
# flash.sh runs on the host with the host build's check-config; it does not
# depend on the configuration under test, so it runs natively only. Loop
# devices and mounts need root; without them those checks are skipped.
# shellcheck source=tests/system/lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"
# shellcheck source=tests/system/lib/fake_image.sh
. "$EC_SRCDIR/tests/system/lib/fake_image.sh"

N=29
plan $N
if ! once_per_run; then
    for ((i = 0; i < N; i++)); do
        skip "flash.sh" "runs once, in the native x86_64 configuration: flash.sh runs on the host, whatever the build configuration"
    done
    finish
fi
for tool in mksquashfs mkfs.vfat mcopy sfdisk mkfs.ext4; do
    if ! command -v "$tool" >/dev/null; then
        for ((i = 0; i < N; i++)); do skip "flash.sh" "$tool missing: toolchain/install-deps.sh image"; done
        finish
    fi
done

FLASH=$EC_SRCDIR/toolchain/flash.sh
export EC_FLASH_EDGECAP=$BUILD/edgecap MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null

LOOPS=()
MOUNTS=()
flash_cleanup() {
    local m l
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null; done
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
}
trap 'flash_cleanup; ec_cleanup' EXIT

# Runs flash.sh; stdout to $OUT, stderr to $ERR, status in RC.
flash() {
    timeout "$EC_CMD_TIMEOUT_S" "$FLASH" "$@" >"$OUT" 2>"$ERR" </dev/null
    RC=$?
}
# flash.sh with the CA and SAS token files and the given provisioning file,
# certificate and key.
flash_set() { # TARGET CONF CERT KEY
    flash "$IMG" "$1" --provision "$2" --cert "$3" --key "$4" --file "$T/ca.pem" --file "$T/sas.token"
}
sum() { sha256sum "$1" | cut -d' ' -f1; }
want_sum() { # FILE SHA WHAT
    [ "$(sum "$1")" = "$2" ] || fail_because "$3 changed"
}

# ---- inputs -------------------------------------------------------------------

IMG=$T/edgecap-x86_64.img
fake_image "$IMG" || { diag "fake_image failed"; exit 1; }
IMG_BYTES=$(stat -c %s "$IMG")
P2_OFF=$((4096 * 512)) P2_END=$((10240 * 512))

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ca.key" \
    -out "$T/ca.pem" -subj /CN=flash-test-ca -days 30 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/client.key" \
    -out "$T/client.pem" -subj /CN=flash-test-device -days 30 2>/dev/null
openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out "$T/other.key" 2>/dev/null
SAS=$(new_secret flashsas)
printf '%s' "$SAS" >"$T/sas.token"
# Modes on the host do not matter: vfat keeps none, the guest's mount makes
# every file 0600; flash.sh stages them so before check-config looks.
chmod 644 "$T/sas.token" "$T/client.key"
KEY_LINE=$(sed -n 2p "$T/client.key")

cat >"$T/prov.conf" <<'EOF'
; flash test: what the guest reads at /etc/edgecap/edgecap.conf
[device]
id = flash-0001
require_mlock = off

[upload]
target = blob
endpoint = https://edgecaptest.blob.core.windows.net
container = audio

[tls]
ca_file = /etc/edgecap/tls/ca.pem
client_cert = /etc/edgecap/client.crt
client_key = /etc/edgecap/client.key
pin_current = sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
allowed_hosts = edgecaptest.blob.core.windows.net

[auth]
mode = sas
sas_token_file = /etc/edgecap/sas.token
EOF
GOOD=(--provision "$T/prov.conf" --cert "$T/client.pem" --key "$T/client.key"
    --file "$T/ca.pem" --file "$T/sas.token")
# What p2 must hold after a good flash: path on p2, source.
EXPECT=("edgecap.conf $T/prov.conf" "client.crt $T/client.pem" "client.key $T/client.key"
    "tls/ca.pem $T/ca.pem" "sas.token $T/sas.token")
ETC_BEFORE=$(ls -la /etc/edgecap 2>&1)

# The image's bytes outside p2 are on DISK, and p2 holds exactly EXPECT.
# `grown`: p3 was grown to DISK's end (want_grown), so the partition table
# and p3 differ from the image; the MBR's boot code and p1 do not.
want_flashed() { # DISK [grown]
    local disk=$1 e rel src listing
    if [ "${2:-}" = grown ]; then
        cmp -s -n 446 "$IMG" "$disk" || fail_because "the MBR's boot code differs from the image"
        cmp -s -i 512:512 -n $((P2_OFF - 512)) "$IMG" "$disk" || fail_because "p1 differs from the image"
        want_grown "$disk"
    else
        cmp -s -n "$P2_OFF" "$IMG" "$disk" || fail_because "MBR/p1 differ from the image"
        cmp -s -i "$P2_END:$P2_END" -n $((IMG_BYTES - P2_END)) "$IMG" "$disk" ||
            fail_because "p3 differs from the image"
        want_no_re "$OUT" "^grown:"
    fi
    for e in "${EXPECT[@]}"; do
        rel=${e%% *} src=${e#* }
        [ "$(mtype -i "$disk@@$P2_OFF" "::/$rel" 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$(sum "$src")" ] ||
            fail_because "p2 ::/$rel is not $(basename "$src")"
        want_re "$OUT" "^  /etc/edgecap/$rel  [0-9]+ bytes  sha256 $(sum "$src")"
    done
    # The names as the guest's vfat mount shows them, and a clean fsck.
    listing=$(python3 "$EC_SRCDIR/tests/system/lib/fat_names.py" "$disk" "$P2_OFF" | sort | tr '\n' ' ')
    [ "$listing" = "client.crt client.key edgecap.conf sas.token tls/ tls/ca.pem " ] ||
        fail_because "p2 holds $listing"
    dd if="$disk" of="$T/p2.fat" bs=1M skip=$((P2_OFF / 1048576)) count=$(((P2_END - P2_OFF) / 1048576)) status=none
    fsck.fat -n "$T/p2.fat" >"$T/fsck.out" 2>&1 || fail_because "fsck.fat -n p2: $(tail -n 3 "$T/fsck.out")"
    want_out_re "^image: .* \\($IMG_BYTES bytes, sha256 $(sum "$IMG"), checked against .*\\.sha256\\)"
    want_out_re "^written: +$IMG_BYTES bytes, read back sha256 $(sum "$IMG") \\(matches\\)"
    want_no_secret "$SAS" "$OUT" "$ERR"
    want_no_secret "$KEY_LINE" "$OUT" "$ERR"
    [ "$(ls -la /etc/edgecap 2>&1)" = "$ETC_BEFORE" ] || fail_because "the host's /etc/edgecap changed"
}

# dumpe2fs -h's FIELD of the ext4 at OFFSET of DISK.
ext4_field() { dumpe2fs -h "$1?offset=$2" 2>/dev/null | sed -n "s/^$3: *//p"; }
IMG_P3_UUID=$(ext4_field "$IMG" "$P2_END" "Filesystem UUID")
IMG_P3_BYTES=$(($(partx -g -o SECTORS -n 3 "$IMG") * 512))
# p1 and p2 where the image has them; p3 from the image's start to DISK's last
# sector; its ext4 (the image's, same UUID) fills it and checks clean.
want_grown() { # DISK
    local disk=$1 bytes start sectors fs block
    if [ -b "$disk" ]; then bytes=$(blockdev --getsize64 "$disk"); else bytes=$(stat -c %s "$disk"); fi
    [ "$(partx -g -o START,SECTORS -n 1:2 "$disk" | tr -s ' \n' ' ')" = \
        "$(partx -g -o START,SECTORS -n 1:2 "$IMG" | tr -s ' \n' ' ')" ] ||
        fail_because "p1/p2 moved"
    read -r start sectors < <(partx -g -o START,SECTORS -n 3 "$disk")
    [ "$((start * 512))" = "$P2_END" ] || fail_because "p3 starts at sector $start"
    [ "$(((start + sectors) * 512))" = "$bytes" ] ||
        fail_because "p3 ends at $(((start + sectors) * 512)), the disk at $bytes"
    e2fsck -f -n "$disk?offset=$P2_END" >"$T/e2fsck.out" 2>&1 ||
        fail_because "e2fsck -fn p3: $(tail -n 2 "$T/e2fsck.out")"
    [ "$(ext4_field "$disk" "$P2_END" "Filesystem UUID")" = "$IMG_P3_UUID" ] ||
        fail_because "p3's ext4 is not the image's"
    block=$(ext4_field "$disk" "$P2_END" "Block size")
    fs=$(($(ext4_field "$disk" "$P2_END" "Block count") * block))
    # (resize2fs may leave out a last block group too small to be useful)
    [ "$fs" -gt "$IMG_P3_BYTES" ] && [ $((sectors * 512 - fs)) -ge 0 ] &&
        [ $((sectors * 512 - fs)) -lt $(($(ext4_field "$disk" "$P2_END" "Blocks per group") * block)) ] ||
        fail_because "p3's ext4 is $fs bytes in $((sectors * 512))"
    want_out_re "^grown: +partition 3 \\(EC-DATA\\) from $IMG_P3_BYTES to $((sectors * 512)) bytes, ext4 checked and resized \\($fs bytes\\)$"
}

# ---- image files ----------------------------------------------------------------

TGT=$T/target.img
flash "$IMG" "$TGT" "${GOOD[@]}"
want_rc 0
want_flashed "$TGT"
want_out_re "^target: +$TGT \\(new\\)"
verdict "image file: a new target gets the image (read back) and p2 exactly the provisioning set (a 0644 secret staged 0600, as the guest mount shows it)"

# A card larger than the image: the spool's partition takes the rest.
truncate -s 20M "$T/big.img"
flash "$IMG" "$T/big.img" "${GOOD[@]}"
want_rc 0
want_flashed "$T/big.img" grown
verdict "image file larger than the image: p3 grown to its end, its ext4 (the image's UUID) checked and resized to fill it; MBR code, p1 and p2 as flashed"
truncate -s 20M "$T/big2.img"
flash "$IMG" "$T/big2.img" "${GOOD[@]}" --no-grow
want_rc 0
want_flashed "$T/big2.img"
verdict "--no-grow: p3 stays as the image has it"

BEFORE=$(sum "$TGT")
sed 's/^mode = sas$/mode = sass/' "$T/prov.conf" >"$T/bad.conf"
BAD_MSG="edgecap: /etc/edgecap/edgecap.conf:$(line_of "$T/bad.conf" '^mode = sass'): [auth] mode: expected sas|entra|key, got \"sass\""
flash_set "$TGT" "$T/bad.conf" "$T/client.pem" "$T/client.key"
want_rc 65
want_err_fixed "$BAD_MSG"
want_err_fixed "flash.sh: the provisioning set is refused by edgecap check-config; nothing was written"
want_sum "$TGT" "$BEFORE" "target"
verdict "a provisioning file check-config refuses stops with its FILE:LINE message; target unchanged"

# A secret file the config names but that is not given: check-config's own
# message about /etc/edgecap/sas.token, since the guest would see the same.
flash "$IMG" "$TGT" --provision "$T/prov.conf" --cert "$T/client.pem" --key "$T/client.key" \
    --file "$T/ca.pem"
want_rc 65
want_err_fixed "edgecap: /etc/edgecap/edgecap.conf:$(line_of "$T/prov.conf" '^sas_token_file'): [auth] sas_token_file: cannot open /etc/edgecap/sas.token: No such file or directory"
want_sum "$TGT" "$BEFORE" "target"
verdict "a secret file the provisioning file names but not given: check-config's message; target unchanged"

flash "$IMG" "$TGT" --provision "$T/prov.conf" --cert "$T/client.pem" --key "$T/client.key" \
    --file "$T/sas.token"
want_rc 65
want_err_fixed "flash.sh: [tls] ca_file = /etc/edgecap/tls/ca.pem: not in the provisioning set (give it with --file, --cert or --key)"
want_err_fixed "flash.sh: files the provisioning file names are missing; nothing was written"
want_sum "$TGT" "$BEFORE" "target"
verdict "a TLS file the provisioning file names but not given is refused; target unchanged"

flash_set "$TGT" "$T/prov.conf" "$T/client.pem" "$T/other.key"
want_rc 65
want_err_fixed "flash.sh: the client certificate /etc/edgecap/client.crt ($T/client.pem) does not match the key /etc/edgecap/client.key ($T/other.key); nothing was written"
want_sum "$TGT" "$BEFORE" "target"
verdict "a client certificate that does not match its key is refused; target unchanged"

flash_set "$TGT" "$T/prov.conf" "$T/ca.key" "$T/client.key"
want_rc 65
want_err_fixed "flash.sh: /etc/edgecap/client.crt ($T/ca.key): not an X.509 certificate"
flash_set "$TGT" "$T/prov.conf" "$T/client.pem" "$T/ca.pem"
want_rc 65
want_err_fixed "flash.sh: /etc/edgecap/client.key ($T/ca.pem): not an unencrypted private key"
want_sum "$TGT" "$BEFORE" "target"
verdict "a certificate or key that does not parse is refused; target unchanged"

# Argument errors, each with its message and nothing written.
sed 's#^client_cert = .*#client_cert = /var/lib/edgecap/client.crt#' "$T/prov.conf" >"$T/elsewhere.conf"
sed 's#^client_key = .*#client_key = /var/lib/edgecap/client.key#' "$T/prov.conf" >"$T/key-elsewhere.conf"
while IFS='|' read -r want_status message args; do
    # shellcheck disable=SC2086 # ARGS is a word list
    eval "set -- $args"
    flash "$@"
    want_rc "$want_status"
    want_err_fixed "flash.sh: $message"
    want_sum "$TGT" "$BEFORE" "target"
    [ "$RC" = "$want_status" ] || diag "case: $message"
done <<EOF
64|--provision FILE is required|"$IMG" "$TGT"
64|--cert needs --key|"$IMG" "$TGT" --provision "$T/prov.conf" --cert "$T/client.pem"
64|--key needs --cert|"$IMG" "$TGT" --provision "$T/prov.conf" --key "$T/client.key"
64|unknown option --force|"$IMG" "$TGT" --force
64|unexpected argument extra|"$IMG" "$TGT" extra --provision "$T/prov.conf"
64|$T/ca.pem and $T/prov.conf would both be /etc/edgecap/edgecap.conf|"$IMG" "$TGT" ${GOOD[*]} --file "$T/ca.pem:edgecap.conf"
64|$T/ca.pem: '../x' is not a plain path below /etc/edgecap|"$IMG" "$TGT" ${GOOD[*]} --file "$T/ca.pem:../x"
65|--cert given, but [tls] client_cert (/var/lib/edgecap/client.crt) is not below /etc/edgecap|"$IMG" "$TGT" --provision "$T/elsewhere.conf" --cert "$T/client.pem" --key "$T/client.key"
65|$T/nothere: not a readable file|"$IMG" "$TGT" --provision "$T/nothere"
65|--key given, but [tls] client_key (/var/lib/edgecap/client.key) is not below /etc/edgecap|"$IMG" "$TGT" --provision "$T/key-elsewhere.conf" --cert "$T/client.pem" --key "$T/client.key"
64|--provision needs a value|"$IMG" "$TGT" --provision
65|$T/nothere.img: not a readable image file|"$T/nothere.img" "$TGT" --provision "$T/prov.conf"
EOF
verdict "argument errors: usage, same destination twice, a path out of p2, --cert/--key with client_cert/client_key elsewhere, missing files"

# Bad images.
cp "$IMG" "$T/tampered.img"
printf 'x' | dd of="$T/tampered.img" bs=1 seek=$((IMG_BYTES - 4096)) conv=notrunc status=none
sed "s/edgecap-x86_64.img/tampered.img/" "$IMG.sha256" >"$T/tampered.img.sha256"
flash "$T/tampered.img" "$TGT" "${GOOD[@]}"
want_rc 65
want_err_re "^flash.sh: $T/tampered.img does not match $T/tampered.img.sha256 \\(image [0-9a-f]{64}, file says $(sum "$IMG")\\)$"
truncate -s 8M "$T/blank.img"
flash "$T/blank.img" "$TGT" "${GOOD[@]}"
want_rc 65
want_err_fixed "flash.sh: $T/blank.img: no MBR partition table with a partition 2"
cp "$IMG" "$T/nolabel.img"
mlabel -i "$T/nolabel.img@@$P2_OFF" ::OTHER
flash "$T/nolabel.img" "$TGT" "${GOOD[@]}"
want_rc 65
want_err_fixed "flash.sh: $T/nolabel.img: partition 2 is not a vfat file system labelled EC-PROV"
cp "$IMG" "$T/nodata.img"
dd if=/dev/zero of="$T/nodata.img" bs=1k seek=$((P2_END / 1024)) count=4 conv=notrunc status=none
flash "$T/nodata.img" "$TGT" "${GOOD[@]}"
want_rc 65
want_err_fixed "flash.sh: $T/nodata.img: partition 3 is not an ext4 file system labelled EC-DATA"
head -c 1000 "$IMG" >"$T/odd.img"
flash "$T/odd.img" "$TGT" "${GOOD[@]}"
want_rc 65
want_err_fixed "flash.sh: $T/odd.img: size 1000 is not a whole number of 512-byte sectors"
want_sum "$TGT" "$BEFORE" "target"
cp "$IMG" "$T/nosum.img"
echo "not a hash" >"$T/nosum.img.sha256"
flash "$T/nosum.img" "$TGT" "${GOOD[@]}"
want_rc 65
want_err_fixed "flash.sh: $T/nosum.img.sha256: no sha256 on its first line"
verdict "an image that does not match its .sha256 (or has none in it), has no partition 2, no EC-PROV label, no EC-DATA ext4 or a partial sector is refused"

# Targets of the wrong kind or size.
truncate -s $((IMG_BYTES - 512)) "$T/small.img"
SMALL_BEFORE=$(sum "$T/small.img")
flash "$IMG" "$T/small.img" "${GOOD[@]}"
want_rc 73
want_err_fixed "flash.sh: $T/small.img is smaller than the image ($((IMG_BYTES - 512)) < $IMG_BYTES bytes; nothing written)"
want_sum "$T/small.img" "$SMALL_BEFORE" "small.img"
mkfifo "$T/fifo"
flash "$IMG" "$T/fifo" "${GOOD[@]}"
want_rc 73
want_err_fixed "flash.sh: $T/fifo is neither a block device nor a regular file (nothing written)"
flash "$IMG" "$T" "${GOOD[@]}"
want_rc 73
want_err_fixed "flash.sh: $T is neither a block device nor a regular file (nothing written)"
flash "$IMG" "$IMG" "${GOOD[@]}"
want_rc 73
want_err_fixed "flash.sh: $IMG is the image itself"
flash "$IMG" "$T/no/such/dir.img" "${GOOD[@]}"
want_rc 73
want_err_fixed "flash.sh: $T/no/such: no such directory"
flash "$IMG" /dev/edgecap-flash-test-nodev "${GOOD[@]}"
want_rc 73
want_err_fixed "flash.sh: /dev/edgecap-flash-test-nodev: no such device (nothing written)"
[ ! -e /dev/edgecap-flash-test-nodev ] || fail_because "a file was made in /dev"
verdict "a target smaller than the image, a FIFO, a directory, the image, a missing directory or device is refused"

# A write that does not read back as the image: one byte changed behind the
# writer (the script's test seam) is caught, and p2 is left alone.
EC_FLASH_FAULT=corrupt-after-write flash "$IMG" "$T/corrupt.img" "${GOOD[@]}"
want_rc 74
want_err_re "^flash.sh: verification failed: $T/corrupt.img reads back sha256 [0-9a-f]{64} over $IMG_BYTES bytes, expected $(sum "$IMG") \\($IMG.sha256\\); the provisioning files were not written$"
[ "$(mtype -i "$T/corrupt.img@@$P2_OFF" ::/README 2>/dev/null)" = "edgecap provisioning partition" ] ||
    fail_because "p2 of the corrupt target was changed"
verdict "image file: a write that reads back differently is detected, exit 74, p2 not written"

# With no .sha256 the image itself is the reference.
cp "$IMG" "$T/bare.img"
flash "$T/bare.img" "$T/bare-target.img" "${GOOD[@]}" --dry-run
want_rc 0
want_out_re "checked against the image itself \\(no $T/bare.img.sha256\\)\\)$"
verdict "an image without .sha256 is verified against the image itself"

# A host that has an /etc/edgecap of its own (edgecap installed): flash.sh
# binds the staged set over it, in its own namespace only. The host is
# simulated in a private mount namespace whose /etc is an overlay holding a
# decoy /etc/edgecap/edgecap.conf that would not validate.
if unshare --mount --propagation private true 2>/dev/null; then
    mkdir -p "$T/host/upper" "$T/host/work"
    timeout "$EC_CMD_TIMEOUT_S" unshare --mount --propagation private bash -c '
        mount -t overlay host-etc -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc || exit 99
        mkdir /etc/edgecap && echo "[decoy" >/etc/edgecap/edgecap.conf
        shift
        "$@"
        rc=$?
        cat /etc/edgecap/edgecap.conf >"'"$T"'/host/decoy-after"
        exit $rc' host "$T/host" "$FLASH" "$IMG" "$T/host.img" "${GOOD[@]}" --dry-run >"$OUT" 2>"$ERR" </dev/null
    RC=$?
    want_rc 0
    want_out_re "^provision: $T/prov.conf valid for edgecap check-config as /etc/edgecap/edgecap.conf$"
    [ "$(cat "$T/host/decoy-after" 2>/dev/null)" = "[decoy" ] || fail_because "the host's /etc/edgecap/edgecap.conf changed"
    verdict "a host with its own /etc/edgecap: the staged set is checked in its place, the host's file untouched"
else
    skip "a host with its own /etc/edgecap" "no mount namespaces here"
fi

flash "$IMG" "$T/dry.img" "${GOOD[@]}" --dry-run
want_rc 0
want_out_re "^dry run: would write the image and these files to partition 2 \\(EC-PROV\\):"
want_out_re "^  /etc/edgecap/tls/ca.pem$"
[ ! -e "$T/dry.img" ] || fail_because "--dry-run made the target"
verdict "--dry-run validates and lists what it would write, and writes nothing"

# ---- the system disk (dry run: this machine's / is a real disk) -----------------

# The check itself runs before any write; --dry-run keeps a broken check from
# ever touching the disk of /.
ROOT_SRC=$(findmnt -no SOURCE / | head -n1)
ROOT_DISK=""
if [ -b "$ROOT_SRC" ]; then
    parent=$(lsblk -no PKNAME "$ROOT_SRC" 2>/dev/null | head -n1)
    ROOT_DISK=/dev/${parent:-$(basename "$ROOT_SRC")}
fi
if [ -n "$ROOT_DISK" ] && [ -b "$ROOT_DISK" ]; then
    flash "$IMG" "$ROOT_DISK" "${GOOD[@]}" --dry-run
    want_rc 73
    want_err_fixed "flash.sh: $ROOT_DISK is a system disk (it holds /); refusing to write it (nothing written)"
    want_no_re "$OUT" "dry run"
    verdict "the disk of / ($ROOT_DISK) is refused as a system disk"
else
    skip "the disk of / is refused as a system disk" "/ is on ${ROOT_SRC:-nothing}, not a block device"
fi

# ---- loop devices -----------------------------------------------------------------

new_loop() { # FILE -> LOOP
    LOOP=$(losetup -f --show "$1" 2>"$T/losetup.err") || return 1
    LOOPS+=("$LOOP")
}
LOOP_N=13
if [ "$(id -u)" -ne 0 ]; then
    for ((i = 0; i < LOOP_N; i++)); do skip "loop devices" "not root: no loop devices"; done
    finish
fi
truncate -s 10M "$T/disk.img"
if ! new_loop "$T/disk.img"; then
    for ((i = 0; i < LOOP_N; i++)); do
        skip "loop devices" "no loop device: $(head -c 200 "$T/losetup.err")"
    done
    finish
fi
DISK=$LOOP
head -c 10M /dev/urandom >"$DISK"
DISK_BEFORE=$(sum "$DISK")

flash_set "$DISK" "$T/bad.conf" "$T/client.pem" "$T/client.key"
want_rc 65
want_err_fixed "$BAD_MSG"
want_sum "$DISK" "$DISK_BEFORE" "$DISK"
verdict "loop device: a bad provisioning file is refused, the device unchanged"

flash_set "$DISK" "$T/prov.conf" "$T/client.pem" "$T/other.key"
want_rc 65
want_err_fixed "does not match the key /etc/edgecap/client.key ($T/other.key); nothing was written"
want_sum "$DISK" "$DISK_BEFORE" "$DISK"
verdict "loop device: a certificate/key mismatch is refused, the device unchanged"

flash "$IMG" "$DISK" "${GOOD[@]}"
want_rc 0
want_out_re "^target: +$DISK \\(block, 10485760 bytes\\)"
want_flashed "$DISK" grown
want_flashed "$T/disk.img" grown
verdict "loop device: the image is written and read back, p2 holds exactly the provisioning set, p3 grown to the device's end"

# A device smaller than the image.
truncate -s 6M "$T/small-disk.img"
if new_loop "$T/small-disk.img"; then
    SMALL=$LOOP
    SMALL_BEFORE=$(sum "$SMALL")
    flash "$IMG" "$SMALL" "${GOOD[@]}"
    want_rc 73
    want_err_fixed "flash.sh: $SMALL is smaller than the image (6291456 < $IMG_BYTES bytes; nothing written)"
    want_sum "$SMALL" "$SMALL_BEFORE" "$SMALL"
    verdict "loop device smaller than the image is refused, unchanged"
else
    skip "loop device smaller than the image is refused" "no second loop device"
fi

# Mounted: p3 of the flashed device is mounted (partitions added with partx:
# loop devices here scan none by themselves).
mkdir "$T/mnt"
if partx -a "$DISK" 2>"$T/partx.err" && [ -b "${DISK}p3" ] && mount -o ro "${DISK}p3" "$T/mnt" 2>"$T/mount.err"; then
    MOUNTS+=("$T/mnt")
    DISK_BEFORE=$(sum "$DISK")
    flash "$IMG" "$DISK" "${GOOD[@]}"
    want_rc 73
    want_err_re "^flash.sh: $DISK is mounted \\(partition [0-9]+:[0-9]+ at $T/mnt\\); unmount it first \\(nothing written\\)$"
    want_sum "$DISK" "$DISK_BEFORE" "$DISK"
    verdict "loop device with a mounted partition is refused, unchanged"

    flash "$IMG" "${DISK}p3" "${GOOD[@]}"
    want_rc 73
    want_err_fixed "flash.sh: ${DISK}p3 is a partition; give the whole disk (nothing written)"
    verdict "a partition as target is refused"

    BACKING_BEFORE=$(sum "$T/disk.img")
    flash "$IMG" "$T/disk.img" "${GOOD[@]}"
    want_rc 73
    want_err_re "^flash.sh: $T/disk.img is mounted \\(through $DISK, at $T/mnt\\); unmount it first \\(nothing written\\)$"
    want_sum "$T/disk.img" "$BACKING_BEFORE" "disk.img"
    verdict "an image file behind a loop device with a mounted partition is refused, unchanged"

    umount "$T/mnt" && MOUNTS=()

    # Mounted where flash.sh's mountinfo does not show it: in another
    # (private) mount namespace, kept alive by a sleep while flash.sh runs.
    rm -f "$T/ns-ready"
    unshare --mount --propagation private sh -c \
        'mount -o ro "$1" "$2" && : >"$3" && exec sleep 60' ns "${DISK}p3" "$T/mnt" "$T/ns-ready" \
        2>"$T/ns.err" &
    NS_PID=$!
    EC_PIDS+=("$NS_PID")
    for ((i = 0; i < EC_WAIT_S * 20; i++)); do
        [ -e "$T/ns-ready" ] || ! running "$NS_PID" && break
        sleep 0.05
    done
    if [ -e "$T/ns-ready" ]; then
        flash "$IMG" "$DISK" "${GOOD[@]}"
        want_rc 73
        want_err_fixed "flash.sh: $DISK is in use (mounted, perhaps in another mount namespace, or swap, RAID or LVM); nothing written"
        flash "$IMG" "$T/disk.img" "${GOOD[@]}"
        want_rc 73
        want_err_fixed "flash.sh: $T/disk.img is in use (through $DISK, mounted perhaps in another mount namespace); nothing written"
        want_sum "$T/disk.img" "$BACKING_BEFORE" "disk.img"
    else
        fail_because "the namespace did not mount ${DISK}p3: $(head -c 200 "$T/ns.err")"
    fi
    kill "$NS_PID" 2>/dev/null
    wait "$NS_PID" 2>/dev/null
    verdict "a device (or its image file) mounted in another mount namespace is refused, unchanged"

    # A system disk without touching this machine's own: the loop device's
    # p3 mounted at /boot in a private namespace, flash.sh run inside it.
    timeout "$EC_CMD_TIMEOUT_S" unshare --mount --propagation private sh -c \
        'mount -o ro "$1" /boot || exit 99; shift; exec "$@"' ns "${DISK}p3" \
        "$FLASH" "$IMG" "$DISK" "${GOOD[@]}" >"$OUT" 2>"$ERR" </dev/null
    RC=$?
    want_rc 73
    want_err_fixed "flash.sh: $DISK is a system disk (it holds /boot); refusing to write it (nothing written)"
    want_sum "$T/disk.img" "$BACKING_BEFORE" "disk.img"
    verdict "a disk holding /boot is refused as a system disk (without --dry-run), unchanged"

    partx -d "$DISK" 2>/dev/null
    flash "$IMG" "$DISK" "${GOOD[@]}" --dry-run
    want_rc 0
    verdict "the same device once unmounted is accepted"
else
    for ((i = 0; i < 6; i++)); do
        skip "mounted targets" "cannot mount a partition of $DISK: $(cat "$T/partx.err" "$T/mount.err" 2>/dev/null | head -c 200)"
    done
fi

EC_FLASH_FAULT=corrupt-after-write flash "$IMG" "$DISK" "${GOOD[@]}"
want_rc 74
want_err_re "^flash.sh: verification failed: $DISK reads back sha256 [0-9a-f]{64} over $IMG_BYTES bytes"
[ "$(mtype -i "$DISK@@$P2_OFF" ::/README 2>/dev/null)" = "edgecap provisioning partition" ] ||
    fail_because "p2 of the corrupt device was changed"
verdict "loop device: a write that reads back differently is detected, p2 not written"

# Flash again after the failure: a good run repairs it.
flash "$IMG" "$DISK" "${GOOD[@]}"
want_rc 0
want_flashed "$DISK" grown
verdict "loop device: flashing again after a failed verification succeeds"

# Detach at the end (flash_cleanup does it too when a check above exits).
for l in "${LOOPS[@]}"; do losetup -d "$l" || fail_because "cannot detach $l"; done
LOOPS=()
[ -z "$(losetup -j "$T/disk.img")" ] || fail_because "$T/disk.img still attached"
verdict "loop devices detached"

finish
