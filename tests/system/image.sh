#!/bin/bash
# The field image end to end under qemu-system-aarch64 (-M virt, TCG, user
# networking only): `make image ARCH=aarch64` builds it, a provisioning
# directory goes onto its EC-PROV partition (as toolchain/qemu-run.sh writes
# it), and the emulated board boots, captures through the real kernel ALSA
# driver snd-aloop (a player inside the guest writes a tone to
# hw:Loopback,0,0 in real time; edgecap captures hw:Loopback,1,0), seals,
# spools and uploads over pinned mTLS to the Azurite + nginx peers on the
# host's loopback, which the guest reaches as 10.0.2.2 through connect_to
# with the real Azure host name. The host reads the blobs back with
# @azure/storage-blob, decodes them with opusdec and compares them with the
# tone; the guest reports its spool empty after the acknowledgments. A
# killed edgecap is restarted by the supervisor; QEMU's system_powerdown (the
# power button) stops it cleanly and powers off. Then boards that must upload
# nothing: a broken provisioning file (flash.sh refuses it; written onto a
# flashed card behind flash.sh's back, the board logs check-config's
# FILE:LINE), an empty EC-PROV (as built), an RTC before the build date.
# Every provisioned board is flashed by toolchain/flash.sh (through
# qemu-run.sh), as field teams flash cards.
#
# Then the fault cases on one more board (img-0004) whose connect_to points
# at a relay on the host (tests/system/lib/relay.py) in front of nginx, while
# a player in the guest loops the tone: the peer killed for EC_IMAGE_DOWN_S
# seconds (the guest spools, then drains after peers.sh restart); an upload
# held in flight (the relay switches to peers.sh's `stall` front, which reads
# the whole request and never answers; the relay's byte count shows the
# request going out) when QEMU's system_powerdown (EC_IMAGE_FULL only) and a
# hard `quit` (a power cut) hit; boots again from the same disk. After the
# last boot the spool is empty, the open segment of the power cut was
# recovered per the spool design (closed at its last whole chunk, or removed
# when no audio chunk had reached the disk), and every segment sealed on any
# boot is in Blob exactly once: the SDK's listing, one 201 commit per
# blob name in nginx's log (Put Blob, or Put Block List for large ones),
# contiguous sequence numbers, all decode.
#
# Boots take tens of seconds under TCG: this runs once per `make test`, in the
# native x86_64 configuration only. `make test-system` sets EC_IMAGE_FULL=1:
# the peer stays down 60 s (15 s otherwise) and the power button case runs.
. "$(dirname "$0")/lib/tap.sh"

plan 19

skip_all() {
    while [ "$TAP_N" -lt "$TAP_PLANNED" ]; do skip "field image under qemu-system-aarch64" "$1"; done
    finish
}

once_per_run ||
    skip_all "boots once per make test, in the native x86_64 run"
command -v qemu-system-aarch64 >/dev/null && command -v mksquashfs >/dev/null &&
    command -v mcopy >/dev/null ||
    skip_all "no qemu-system-aarch64/squashfs-tools/mtools (toolchain/install-deps.sh image)"

TOOL=${TOOL:-$BUILD/results/tool-run}
AB=$EC_SRCDIR/build/aarch64
IMGDIR=$AB/image
IMG=$IMGDIR/edgecap-aarch64.img
SECONDS_PLAYED=5
FULL=${EC_IMAGE_FULL:-0}
DOWN_S=${EC_IMAGE_DOWN_S:-$([ "$FULL" = 1 ] && echo 60 || echo 15)}
FLASH_SET=(--cert "$T/prov/tls/client.pem" --key "$T/prov/tls/client.key" --file "$T/prov/tls/ca.pem:tls/ca.pem")

# shellcheck source=tests/system/lib/board.sh
. "$EC_SRCDIR/tests/system/lib/board.sh"

# ---- 1: the image builds (and the guest-side player with it) ---------------
if ! board_image_built aarch64; then
    verdict "make image ARCH=aarch64: three partitions, sha256 and size printed"
    skip_all "the image did not build (see above)"
fi
verdict "make image ARCH=aarch64: three partitions, sha256 and size printed" "$T/make.log" "$T/parts"

# ---- the peers, the provisioning directory, the guest's player -------------
board_peers_and_tone img-0001 "$SECONDS_PLAYED"

# What the boot chain adds for this test: the player, the tone and a hook
# (run by the guest's rc.boot) that plays it once edgecap's capture runs, then
# reports when the spool is empty.
EX=$T/extra/extra
mkdir -p "$EX/rc.d"
cp "$AB/tools/alsa_play" "$EX/alsa_play"
cp "$T/tone.raw" "$EX/tone.raw"
# Every hook starts so: it waits until edgecap's capture runs.
hook_head() { board_hook_head edgecap-test; }
{
    hook_head
    cat <<'HOOK'
say "capture running; playing"
/run/extra/alsa_play hw:Loopback,0,0 /run/extra/tone.raw 16000 1 | sed 's/^/edgecap-test: /'
HOOK
    hook_wait_empty
    cat <<'HOOK'
# The supervisor restarts edgecap when it dies.
kill -KILL "$(pidof edgecap)" && say "killed edgecap"
HOOK
} >"$EX/rc.d/50-play"
chmod 0755 "$EX/rc.d/50-play" "$EX/alsa_play"
board_extra_cpio "$T/extra" "$T/extra.cpio.gz"

# ---- 2-5: a provisioned board captures and uploads --------------------------
# flash.sh writes the image, the provisioning file, the certificate, the key
# and the CA onto the board's disk (its report in dev.qemu).
boot dev "$PROV/edgecap.conf" "$T/extra.cpio.gz" "${FLASH_SET[@]}"
C=$T/dev.console
t0=$SECONDS
wait_for_log "$C" "edgecap-boot: eth0 10\.0\.2\.15/" "$QEMU_PID" 120 ||
    fail_because "no DHCP lease on eth0 within 120 s"
wait_for_log "$C" "event=alsa_open device=hw:Loopback,1,0 rate_hz=16000 channels=1" "$QEMU_PID" 60 ||
    fail_because "edgecap did not open hw:Loopback,1,0"
diag "boot to edgecap's capture under TCG: $((SECONDS - t0)) s (not a check)"
want_no_re "$C" "edgecap-supervise: (no provisioning|provisioning file .* rejected|clock)"
# edgecap holds the board's watchdog itself (the supervisor's default timeout)
want_re "$C" "event=watchdog_device device=/dev/watchdog identity=\"?i6300ESB.* timeout_s=60 "
want_re "$T/dev.qemu" "^provision: .* valid for edgecap check-config as /etc/edgecap/edgecap.conf$"
want_re "$T/dev.qemu" "^done: .*/dev\.img holds the image and 4 provisioning files, all read back$"
verdict "flashed by flash.sh (validated, read back), the board boots: modules, root, EC-PROV and EC-DATA mounted, DHCP, edgecap started on the loopback card, holding the board's watchdog (i6300esb)" "$C" "$T/dev.qemu"

wait_for_log "$C" "edgecap-test: played $((SECONDS_PLAYED * 16000)) frames" "$QEMU_PID" 60 ||
    fail_because "the guest's player did not play the tone into hw:Loopback,0,0"
want_fixed "$C" "edgecap-test: played $((SECONDS_PLAYED * 16000)) frames, 0 underruns"
verdict "a player inside the guest writes ${SECONDS_PLAYED} s to hw:Loopback,0,0 (paced by the kernel)" "$C"

wait_for_log "$C" "event=segment_uploaded" "$QEMU_PID" 120 &&
    diag "boot to the first upload under TCG: $((SECONDS - t0)) s (not a check)"
wait_for_log "$C" "edgecap-test: spool (empty|still)" "$QEMU_PID" 150
want_fixed "$C" "edgecap-test: spool empty"
want_re "$C" "event=segment_uploaded"
verdict "the guest seals, uploads and empties its spool after the acknowledgments" "$C"

board_blobs_match img-0001 "$T/tone.raw"
uploads=$(grep -c "event=segment_uploaded" "$C")
[ "$BOARD_BLOBS" -ge 2 ] || fail_because "$BOARD_BLOBS blobs for img-0001"
[ "$BOARD_BLOBS" = "$uploads" ] || fail_because "$BOARD_BLOBS blobs, $uploads uploads logged"
diag "$(cat "$T/img-0001.cmp" 2>/dev/null)"
verdict "blobs read back with @azure/storage-blob decode with opusdec and match the tone played in the guest" \
    "$T/img-0001.readback.json" "$T/img-0001.cmp"

wait_for_log "$C" "edgecap-test: killed edgecap" "$QEMU_PID" 30 || fail_because "the hook did not kill edgecap"
wait_for_log "$C" "edgecap-supervise: edgecap exited with status 137; restarting in [0-9]+ s" "$QEMU_PID" 30 ||
    fail_because "the supervisor did not see edgecap die"
n=$(grep -c "event=alsa_open device=hw:Loopback,1,0" "$C")
i=0
while [ "$n" -lt 2 ] && [ "$i" -lt 300 ] && running "$QEMU_PID"; do
    sleep 0.1
    i=$((i + 1))
    n=$(grep -c "event=alsa_open device=hw:Loopback,1,0" "$C")
done
[ "$n" -ge 2 ] || fail_because "edgecap was not started again ($n alsa_open lines)"
# The watchdog passed on: the feeder held it while edgecap was down, the new
# edgecap opened it again.
sed -n '/edgecap-test: killed edgecap/,$p' "$C" >"$T/after-kill.console"
want_re "$T/after-kill.console" "edgecap-watchdog: feeding /dev/watchdog \\(i6300ESB.*\\), timeout 60 s"
want_re "$T/after-kill.console" "event=watchdog_device device=/dev/watchdog"
[ "$(grep -c "event=watchdog_device device=/dev/watchdog" "$C")" -ge 2 ] ||
    fail_because "the restarted edgecap did not open /dev/watchdog"
want_no_re "$C" "event=watchdog_open_failed"
want_re "$C" "event=watchdog timeout_ms=60000 ping_interval_ms=15000"
[ "$(grep -c "edgecap-boot: edgecap " "$C")" = 1 ] || fail_because "the board was reset"
verdict "edgecap killed inside the guest is restarted by the supervisor; the watchdog goes to the feeder and back to edgecap, the board is not reset" "$C"

board_power_button dev
verdict "the power button (system_powerdown) stops edgecap cleanly, syncs and powers off" "$C"

# ---- 7-8: a broken provisioning file: refused by flash.sh; edited onto a card
# after flashing, the board says so on the console and uploads nothing -------
sed 's/^rate_hz = 16000$/rate_hz = 44100/' "$PROV/edgecap.conf" >"$T/bad.conf"
sed -i 's/^id = img-0001$/id = img-0002/' "$T/bad.conf"
"$EC_SRCDIR/toolchain/qemu-run.sh" --scratch "$T/refused.img" --console "$T/refused.console" \
    "${FLASH_SET[@]}" "$IMG" "$T/bad.conf" >"$T/refused.out" 2>&1 </dev/null
rc=$?
[ "$rc" = 65 ] || fail_because "qemu-run.sh with a broken provisioning file: status $rc, expected 65"
want_re "$T/refused.out" "^edgecap: /etc/edgecap/edgecap\.conf:[0-9]+: \[capture\] rate_hz: "
want_fixed "$T/refused.out" "flash.sh: the provisioning set is refused by edgecap check-config; nothing was written"
[ ! -e "$T/refused.console" ] || fail_because "a board was booted"
verdict "flash.sh refuses a broken provisioning file with check-config's FILE:LINE; nothing is booted" "$T/refused.out"

# The card as flashed, then its edgecap.conf replaced on a laptop.
"$EC_SRCDIR/toolchain/flash.sh" "$IMG" "$T/bad.img" --provision "$PROV/edgecap.conf" "${FLASH_SET[@]}" \
    >"$T/bad.flash" 2>&1 </dev/null || fail_because "flash.sh failed: $(tail -n 2 "$T/bad.flash")"
P2_OFF=$(sfdisk -d "$T/bad.img" | sed -n 's/^.*2 : start= *\([0-9]*\),.*/\1/p' | awk '{ print $1 * 512 }')
MTOOLS_SKIP_CHECK=1 mcopy -o -i "$T/bad.img@@$P2_OFF" "$T/bad.conf" ::/edgecap.conf ||
    fail_because "cannot edit the card's edgecap.conf"
boot bad "" "" --keep
B=$T/bad.console
wait_for_log "$B" "edgecap-supervise: provisioning file /etc/edgecap/edgecap.conf rejected" "$QEMU_PID" 120 ||
    fail_because "the board did not reject the broken provisioning file"
want_re "$B" "/etc/edgecap/edgecap.conf:[0-9]+: \[capture\] rate_hz: "
want_no_re "$B" "event=(alsa_open|segment_uploaded)"
"$PEERS" readback "$P" --container audio >"$T/readback2.json" 2>/dev/null
want_no_re "$T/readback2.json" "img-0002"
verdict "a broken provisioning file edited onto a flashed card: the board logs FILE:LINE and the key, starts nothing, uploads nothing" "$B"
kill -KILL "$QEMU_PID" 2>/dev/null
wait "$QEMU_PID" 2>/dev/null

# ---- 9-10: an unprovisioned board, and a board whose clock is behind ---------
# (side by side: both only boot and wait)
sed 's/^id = img-0001$/id = img-0003/' "$PROV/edgecap.conf" >"$PROV/edgecap.conf.new"
mv "$PROV/edgecap.conf.new" "$PROV/edgecap.conf"
# The unprovisioned board runs its watchdog at 4 s: a hook reports it 16 s in.
mkdir -p "$T/idle-extra/extra/rc.d"
cat >"$T/idle-extra/extra/rc.d/50-watchdog" <<'HOOK'
#!/bin/sh
sleep 16
w=/sys/class/watchdog/watchdog0
echo "edgecap-test: 16 s in: watchdog $(cat $w/state 2>/dev/null), timeout $(cat $w/timeout 2>/dev/null) s"
HOOK
chmod 0755 "$T/idle-extra/extra/rc.d/50-watchdog"
board_extra_cpio "$T/idle-extra" "$T/idle.cpio.gz"
boot empty "" "$T/idle.cpio.gz" --append edgecap.watchdog=4
EMPTY_PID=$QEMU_PID
# (the board with its clock behind is also a 1 GiB card: flash.sh grows p3)
boot past "$PROV" "" --rtc-base 2020-01-01T00:00:00 --size 1G
PAST_PID=$QEMU_PID
E=$T/empty.console
wait_for_log "$E" "edgecap-supervise: no provisioning file \(/etc/edgecap/edgecap.conf\): nothing is captured or uploaded" \
    "$EMPTY_PID" 120 || fail_because "the unprovisioned board did not say so"
want_no_re "$E" "event="
verdict "an unprovisioned board (empty EC-PROV, as built) says so and starts nothing" "$E"
wait_for_log "$E" "edgecap-test: 16 s in:" "$EMPTY_PID" 60 || fail_because "the idle board's hook did not report"
want_re "$E" "edgecap-watchdog: feeding /dev/watchdog \\(i6300ESB.*\\), timeout 4 s"
want_fixed "$E" "edgecap-test: 16 s in: watchdog active, timeout 4 s"
[ "$(grep -c "edgecap-boot: edgecap " "$E")" = 1 ] || fail_because "the idle board was reset"
verdict "the idle board's watchdog (edgecap.watchdog=4) is fed by the supervisor's feeder: active, no reset after 4 timeouts" "$E"

PC=$T/past.console
wait_for_log "$PC" "edgecap-supervise: clock 2020-01-01T[0-9:]+Z is before the build date [0-9T:-]+Z: not starting" \
    "$PAST_PID" 120 || fail_because "the board with its clock in 2020 did not refuse"
want_no_re "$PC" "event="
"$PEERS" readback "$P" --container audio >"$T/readback3.json" 2>/dev/null
want_no_re "$T/readback3.json" "img-0003"
verdict "a board whose clock is before the build date refuses to capture or upload" "$PC"

# The data partition as built (64 MiB) and as grown on a 1 GiB card.
want_re "$C" "edgecap-boot: data partition /var/lib/edgecap: [1-6][0-9] MiB"
p3_start=$(partx -g -o START -n 3 "$IMG" | tr -d ' ')
want_re "$T/past.qemu" "^grown: +partition 3 \\(EC-DATA\\) from 67108864 to $((1073741824 - p3_start * 512)) bytes, ext4 checked and resized"
want_re "$PC" "edgecap-boot: data partition /var/lib/edgecap: (9[0-9]{2}|100[0-2]) MiB, [89][0-9]{2} MiB free"
diag "as built: $(grep -oh "data partition .*" "$C" | head -n 1); on the 1 GiB card: $(grep -oh "data partition .*" "$PC" | head -n 1) (not a check)"
verdict "flashed onto a 1 GiB card, the data partition grows to its end (flash.sh) and the board mounts it: ~1 GiB for the spool (64 MiB as built)" \
    "$T/past.qemu" "$PC"

kill -KILL "$EMPTY_PID" "$PAST_PID" 2>/dev/null
wait "$EMPTY_PID" "$PAST_PID" 2>/dev/null

# ---- 11-16: faults from inside the board --------------------------------------
# img-0004 reaches nginx through the relay; its guest loops the tone. The
# last boot's hook plays nothing (silence: VAD keeps nothing) and reports the
# spool once nothing sealed is left.
RELAY_LOG=$T/relay.log
echo "$NGINX_PORT" >"$T/relay.target"
/usr/bin/python3 "$EC_SRCDIR/tests/system/lib/relay.py" "$T/relay.port" "$T/relay.target" "$RELAY_LOG" &
EC_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do
    [ -s "$T/relay.port" ] && break
    sleep 0.05
done
RELAY_PORT=$(cat "$T/relay.port" 2>/dev/null)
STALL_PORT=$("$PEERS" fault "$P" stall 2>"$T/stall.err") || diag "peers.sh fault stall: $(tail -n 2 "$T/stall.err")"
# shellcheck disable=SC1090
[ -n "$STALL_PORT" ] && . "$P/fault-$STALL_PORT/fault.env"
FPROV=$T/fprov.conf
# A circuit breaker that opened while the peer was down retries after 5 s
# (not the default 60 s), to keep the drain short.
sed -e 's/^id = .*/id = img-0004/' \
    -e "s/^connect_to = .*/connect_to = $BLOB_HOST:443:10.0.2.2:$RELAY_PORT\nbreaker_cooldown_seconds = 5/" \
    "$PROV/edgecap.conf" >"$FPROV"

# The hooks: `loop` plays the tone over and over and reports the spool every
# 2 s; `last` waits for capture and an empty spool.
hook_cpio() { # loop|last
    local d=$T/$1-extra/extra
    mkdir -p "$d/rc.d"
    cp "$AB/tools/alsa_play" "$T/tone.raw" "$d/"
    {
        hook_head
        if [ "$1" = loop ]; then
            cat <<'HOOK'
say "capture running; looping the tone"
(while :; do sleep 2; say "spool holds $(find /var/lib/edgecap/spool -name '*.seg' | wc -l) sealed"; done) &
while :; do /run/extra/alsa_play hw:Loopback,0,0 /run/extra/tone.raw 16000 1 >/dev/null; done
HOOK
        else
            echo 'say "capture running; silence"'
            hook_wait_empty
            cat <<'HOOK'
# edgecap hangs: no more pings; the board's watchdog must reset the board.
kill -STOP "$(pidof edgecap)" && say "edgecap stopped (SIGSTOP)"
HOOK
        fi
    } >"$d/rc.d/50-play"
    chmod 0755 "$d/rc.d/50-play" "$d/alsa_play"
    board_extra_cpio "$T/$1-extra" "$T/$1.cpio.gz"
}
hook_cpio loop
hook_cpio last

# Segments a console names with EVENT, one a line.
segments_of() { # EVENT CONSOLE...
    local ev=$1
    shift
    grep -ohE "event=$ev segment=[^ ]+" "$@" 2>/dev/null | sed 's/.*segment=//; s/\.seg$//' | LC_ALL=C sort -u
}
count_re() { grep -cE -- "$2" "$1" 2>/dev/null; }

# Where the relay sends new connections (renamed into place: it never reads
# half a file).
relay_to() { # PORT
    echo "$1" >"$T/relay.target.new" && mv "$T/relay.target.new" "$T/relay.target"
}
# PUTs the stall front logged as cut off by the client: 499 once the whole
# request was read, 400 when the client went away in its body.
stall_cut() { grep '"method":"PUT"' "$FAULT_LOG" 2>/dev/null | grep -E '"status":(499|400),'; }

# Holds the next upload in flight: the relay drops its connections to nginx
# and sends new ones to the stall front; returns once the guest has sent a
# PUT into one since (application_data past the TLS handshake, no more of it
# for 1 s: headers and body are out, and the stall front, which reads them in
# full, never answers). A PUT carries a segment: more than 1 KiB. What is
# less is the Get Blob Properties (HEAD, about 400 bytes) that checks an
# upload the switch cut off; held, it times out and the upload is retried
# with a PUT, which is what is waited for.
hold_upload() { # PID
    local i app last=0 still=0
    HOLD_LINE=$(wc -l <"$RELAY_LOG")
    HOLD_CUT=$(stall_cut | wc -l)
    relay_to "$STALL_PORT"
    for ((i = 0; i < 1200; i++)); do
        app=$(awk -v p="$STALL_PORT" -v from="$HOLD_LINE" '
            NR > from && $1 == "up" && $3 == p { a = $5 } END { print a + 0 }' "$RELAY_LOG")
        if [ "$app" -gt 1024 ] && [ "$app" = "$last" ]; then
            still=$((still + 1))
            [ "$still" -lt 10 ] || return 0
        else
            still=0
        fi
        last=$app
        running "$1" || return 1
        sleep 0.1
    done
    return 1
}

# After the board went down: the relay back to nginx; the stall front must
# log the held PUT cut off when the guest's connection went away.
# NAME.held gets those lines; HELD_BYTES what the guest had sent into it.
released() { # NAME
    local i
    relay_to "$NGINX_PORT"
    for ((i = 0; i < 100; i++)); do
        [ "$(stall_cut | wc -l)" -gt "$HOLD_CUT" ] && break
        sleep 0.1
    done
    stall_cut | tail -n +"$((HOLD_CUT + 1))" >"$T/$1.held"
    [ -s "$T/$1.held" ] || fail_because "the stall front logged no PUT cut off (499 or 400)"
    HELD_BYTES=$(awk -v p="$STALL_PORT" -v from="$HOLD_LINE" '
        NR > from && $1 == "up" && $3 == p && $5 > b { b = $5 } END { print b + 0 }' "$RELAY_LOG")
    tail -n 15 "$RELAY_LOG" >"$T/relay.tail"
    diag "$1: held in flight, a PUT cut off at the stall front after $HELD_BYTES bytes of request from the guest (not a check)"
}

boot flt1 "$FPROV" "$T/loop.cpio.gz" "${FLASH_SET[@]}"
F1=$T/flt1.console
wait_for_log "$F1" "event=segment_uploaded" "$QEMU_PID" 240 || fail_because "img-0004 did not upload before the fault"
# (a) the peer down for DOWN_S seconds while the guest captures
"$PEERS" kill "$P" nginx || fail_because "peers.sh kill nginx failed"
t_down=$SECONDS
line_down=$(wc -l <"$F1")
sealed_before=$(count_re "$F1" "event=segment_sealed")
while [ $((SECONDS - t_down)) -lt "$DOWN_S" ] && running "$QEMU_PID"; do sleep 0.5; done
tail -n +"$line_down" "$F1" >"$T/down.console"
sealed_down=$(($(count_re "$F1" "event=segment_sealed") - sealed_before))
"$PEERS" restart "$P" nginx >"$T/restart.log" 2>&1 || fail_because "peers.sh restart nginx failed"
# shellcheck source=/dev/null
. "$P/peers.env"
want_re "$T/down.console" "event=upload_failed .*kept in the spool"
[ "$sealed_down" -ge 2 ] || fail_because "$sealed_down segments sealed while the peer was down"
held=$(grep -oE "edgecap-test: spool holds [0-9]+ sealed" "$T/down.console" | awk '{ print $4 }' | sort -n | tail -n 1)
[ "${held:-0}" -ge 2 ] || fail_because "the guest's spool never held 2 segments while the peer was down (${held:-no report})"
# Drained: every segment sealed before the peer came back has been
# acknowledged (the tone goes on, so newer ones keep coming and going).
segments_of segment_sealed "$F1" >"$T/sealed.at-restart"
undrained() { segments_of segment_uploaded "$F1" | LC_ALL=C comm -23 "$T/sealed.at-restart" - | wc -l; }
t_up=$SECONDS
until [ "$(undrained)" = 0 ]; do
    [ $((SECONDS - t_up)) -lt 180 ] && running "$QEMU_PID" || break
    sleep 0.5
done
left=$(undrained)
[ "$left" = 0 ] ||
    fail_because "$left of the $(wc -l <"$T/sealed.at-restart") segments sealed before the restart not uploaded within 180 s of it (the guest's last report: $(grep -oE "edgecap-test: spool holds [0-9]+" "$F1" | tail -n 1))"
diag "peer down ${DOWN_S} s: $sealed_down segments sealed meanwhile, the spool held up to ${held:-?}; drained $((SECONDS - t_up)) s after the restart (not a check)"
verdict "the peer down ${DOWN_S} s: the guest keeps capturing into its spool, then drains it after peers.sh restart" \
    "$T/down.console" "$T/restart.log"

# (b) the power button mid-upload (make test-system)
FCONS=("$F1")
CUR=flt1
if [ "$FULL" = 1 ]; then
    hold_upload "$QEMU_PID" ||
        fail_because "no upload reached the stall front (relay log: $(tail -n 3 "$RELAY_LOG" | tr '\n' ' '))"
    monitor flt1 system_powerdown || fail_because "no QEMU monitor"
    wait_exit "$QEMU_PID" 60 || fail_because "the board did not power off within 60 s"
    want_re "$F1" "event=stopped"
    want_fixed "$F1" "edgecap-shutdown: partitions synced"
    released powerdown
    verdict "system_powerdown while an upload is in flight (held by the stall front): edgecap stops cleanly, the board powers off" \
        "$F1" "$T/relay.tail"
    boot flt2 "" "$T/loop.cpio.gz" --keep --scratch "$T/flt1.img"
    CUR=flt2
    FCONS+=("$T/flt2.console")
    wait_for_log "$T/flt2.console" "event=segment_uploaded" "$QEMU_PID" 240 ||
        fail_because "the board did not upload after its reboot"
else
    skip "system_powerdown while an upload is in flight" "EC_IMAGE_FULL=1 (make test-system) runs it"
fi

# (c) a hard quit (power cut) mid-upload
hold_upload "$QEMU_PID" ||
    fail_because "no upload reached the stall front (relay log: $(tail -n 3 "$RELAY_LOG" | tr '\n' ' '))"
monitor "$CUR" quit || fail_because "no QEMU monitor"
wait_exit "$QEMU_PID" 30 || fail_because "QEMU did not quit"
released quit
want_no_re "${FCONS[-1]}" "event=stopped"
verdict "a hard quit (power cut) while an upload is in flight: the stall front saw the PUT cut off" \
    "$T/quit.held" "$T/relay.tail"

WD_S=20
boot flt9 "" "$T/last.cpio.gz" --keep --scratch "$T/flt1.img" --append edgecap.watchdog=$WD_S
FL=$T/flt9.console
FCONS+=("$FL")
wait_for_log "$FL" "edgecap-test: spool (empty|still)" "$QEMU_PID" 300
want_re "$FL" "edgecap-test: spool empty \([0-9]+ open, 0 quarantined\)"
want_re "$FL" "event=(segment_recovered|segment_empty_removed) "
want_no_re "$FL" "event=(segment_quarantined|segment_recovery_failed|upload_conflict)"
grep -hE "event=(segment_recovered|segment_empty_removed) " "$FL" >"$T/recovered.log"
diag "after the power cut: $(tr '\n' ' ' <"$T/recovered.log") (not a check)"
verdict "booted again from the same disk: the open segment of the power cut recovered per the spool design, the spool drains empty, nothing quarantined" "$FL"

# edgecap hangs (SIGSTOP): its pings stop; the watchdog resets the board,
# which boots back into service.
wait_for_log "$FL" "edgecap-test: edgecap stopped \\(SIGSTOP\\)" "$QEMU_PID" 60 ||
    fail_because "the hook did not stop edgecap"
t_hang=$SECONDS
boots() { grep -c "edgecap-boot: edgecap " "$FL"; }
until [ "$(boots)" -ge 2 ]; do
    [ $((SECONDS - t_hang)) -lt $((WD_S + 60)) ] && running "$QEMU_PID" || break
    sleep 0.5
done
[ "$(boots)" -ge 2 ] || fail_because "no reset within $((WD_S + 60)) s of edgecap's SIGSTOP"
diag "edgecap stopped: the board reset and booted again $((SECONDS - t_hang)) s later (timeout ${WD_S} s; not a check)"
want_re "$FL" "event=watchdog_device device=/dev/watchdog identity=\"?i6300ESB.* timeout_s=$WD_S "
# What the console shows from the SIGSTOP on: the board back in service.
after_stop() { sed -n '/edgecap-test: edgecap stopped/,$p' "$FL" >"$T/hang.console"; }
for ((i = 0; i < 1200; i++)); do
    after_stop
    grep -q "event=alsa_open device=hw:Loopback,1,0" "$T/hang.console" && break
    running "$QEMU_PID" || break
    sleep 0.1
done
want_no_re "$T/hang.console" "edgecap-supervise: edgecap exited|Kernel panic"
want_re "$T/hang.console" "event=alsa_open device=hw:Loopback,1,0"
verdict "edgecap hung (SIGSTOP): no more pings, the board's watchdog (i6300esb, edgecap.watchdog=$WD_S) resets the board, which boots back and captures again" "$T/hang.console"
kill -KILL "$QEMU_PID" 2>/dev/null
wait "$QEMU_PID" 2>/dev/null

# Every segment sealed (or recovered) on any boot: in Blob exactly once.
"$PEERS" readback "$P" --container audio --prefix edgecap/img-0004/ >"$T/readback4.json" 2>"$T/readback4.err" ||
    fail_because "readback failed: $(tail -n 2 "$T/readback4.err")"
grep -oE '"name":"edgecap/img-0004/[^"]*\.ogg"' "$T/readback4.json" | sed 's/"name":"//; s/"$//' |
    LC_ALL=C sort >"$T/blobs4"
sed 's#.*/##; s/\.ogg$//' "$T/blobs4" >"$T/blobnames4"
# (flt9's console up to the SIGSTOP: the boot after the watchdog's reset is
# killed once it captures, before anything it recovered could be uploaded)
sed '/edgecap-test: edgecap stopped/q' "$FL" >"$T/flt9.before-stop"
FCONS[-1]=$T/flt9.before-stop
{
    segments_of segment_sealed "${FCONS[@]}"
    segments_of segment_recovered "${FCONS[@]}"
} | LC_ALL=C sort -u >"$T/sealed4"
missing=$(LC_ALL=C comm -23 "$T/sealed4" "$T/blobnames4" | tr '\n' ' ')
[ -z "$missing" ] || fail_because "sealed but not in Blob: $missing"
[ "$(wc -l <"$T/sealed4")" -ge $((sealed_down + 3)) ] || fail_because "only $(wc -l <"$T/sealed4") segments sealed"
# One 201 commit per blob name in nginx's log (both of its lives).
/usr/bin/python3 "$EC_SRCDIR/tests/system/lib/blob_commits.py" "$P/access.log" "$T/blobs4" \
    edgecap/img-0004/ >"$T/commits4" 2>&1 || fail_because "$(cat "$T/commits4")"
seqs=$(sed -E 's/.*-0*([0-9]+)$/\1/' "$T/blobnames4" | sort -n)
first=$(head -n 1 <<<"$seqs")
last=$(tail -n 1 <<<"$seqs")
[ -n "$first" ] && [ "$(seq "$first" "$last")" = "$seqs" ] ||
    fail_because "sequence numbers not contiguous: $(tr '\n' ' ' <<<"$seqs")"
undecodable=0
while read -r b; do
    f=$T/img4-$(basename "$b")
    "$PEERS" readback "$P" --container audio --cat "$b" >"$f" 2>/dev/null &&
        opusdec --quiet --rate 16000 "$f" "$f.wav" 2>/dev/null || undecodable=$((undecodable + 1))
done <"$T/blobs4"
[ "$undecodable" = 0 ] || fail_because "$undecodable blobs do not decode"
diag "img-0004: $(wc -l <"$T/blobs4") blobs, sequence ${first:-?}..${last:-?}; $(tail -n 1 "$T/commits4") (not a check)"
verdict "after the faults every segment sealed on any boot is in Blob exactly once: listed, one 201 commit (Put Blob or Put Block List) each in nginx's log, sequence contiguous, all decode" \
    "$T/commits4" "$T/sealed4" "$T/blobnames4"

finish
