#!/bin/bash
# `make bench`: how fast and how small the audio pipeline is, next to the
# reference encoder. One run generates 10 minutes of speech-like audio, pushes
# it through `edgecap capture` (file source -> capture thread -> segmenting ->
# libopusenc -> AES-256-GCM -> fsync'd spool) and through opus-tools' `opusenc`
# with the same encoder settings, alternating, and prints wall and CPU times,
# the ratio, peak RSS and callgrind instructions per audio second. A benchmark,
# never a pass/fail test: it fails only when something does not run.
#
# Then the upload: a backlog of 20 minutes of audio (300 segments of 4 s) is
# drained by `edgecap upload-once` to the test peers (Azurite behind the nginx
# private endpoint, tests/peers/peers.sh: pinned mutual TLS on loopback), and
# the same plaintext bytes go through the same front with the curl CLI (one
# process, one connection, Put Blob + HEAD per blob, as edgecap does),
# alternating; it prints both wall times, the ratio, audio seconds drained per
# second and peak RSS.
#
#   toolchain/bench.sh BUILD_DIR          e.g. toolchain/bench.sh build/x86_64
#
# Environment: EC_BENCH_RUNS (timed runs of each, odd, default 3),
# EC_BENCH_DIR (where the scratch directory and the on-disk spool go,
# default BUILD_DIR), EC_BENCH_CALLGRIND=0 to skip the callgrind pass,
# EC_BENCH_UPLOAD=0 to skip the upload part (which needs the peers' tools:
# toolchain/install-deps.sh peers, and builds BUILD_DIR/tools/spool_cat),
# EC_BENCH_UPLOAD_RUNS (timed runs of each uploader, odd, default 3).
set -euo pipefail

die() {
    echo "bench: $*" >&2
    exit 1
}

# BUILD_DIR relative to where we were called from, else to the repository.
BUILD=${1:-build/x86_64}
[[ ! -d $BUILD ]] || BUILD=$(realpath "$BUILD")
cd "$(dirname "$0")/.."
EDGECAP=$(realpath -e "$BUILD/edgecap" 2>/dev/null) ||
    die "$BUILD/edgecap not found: run make (ARCH=...) first"
RUNS=${EC_BENCH_RUNS:-3}
if ! [[ $RUNS =~ ^[1-9][0-9]*$ ]] || ((RUNS % 2 == 0)); then
    die "EC_BENCH_RUNS must be an odd number, got '$RUNS'"
fi
CALLGRIND=${EC_BENCH_CALLGRIND:-1}

AUDIO_S=600    # the timed input: 10 minutes
CG_S=60        # the callgrind cut: 1 minute keeps each valgrind run under a minute
RATE_HZ=16000
# The provisioning defaults that matter for speed, passed to both encoders.
BITRATE_BPS=24000
COMPLEXITY=5
FRAME_MS=20
MAX_PAGE_MS=1000

for tool in espeak-ng sox opusenc; do
    command -v "$tool" >/dev/null ||
        die "$tool not found: run toolchain/install-deps.sh host tools"
done
[[ $CALLGRIND == 0 ]] || command -v valgrind >/dev/null ||
    die "valgrind not found: run toolchain/install-deps.sh tools"
GNU_TIME=/usr/bin/time
"$GNU_TIME" -f %M true >/dev/null 2>&1 ||
    die "GNU time ($GNU_TIME) not found: apt-get install time (or toolchain/install-deps.sh tools)"
# Only a native, optimised build says anything: not a board build run through
# qemu-user's binfmt handler, not the sanitizer build.
case "$(uname -m)" in
x86_64) want_machine="X86-64" ;;
aarch64) want_machine="AArch64" ;;
armv7l | armv8l) want_machine="ARM" ;;
*) want_machine="" ;;
esac
machine=$(readelf -h "$EDGECAP" 2>/dev/null | sed -n 's/^ *Machine: *//p')
[[ -z $want_machine || $machine == *"$want_machine" ]] ||
    die "$EDGECAP is built for '$machine', this machine is $(uname -m): bench the host build"
if readelf -d "$EDGECAP" 2>/dev/null | grep -q 'NEEDED.*libasan'; then
    die "$EDGECAP is the sanitizer build (SAN=1): bench the optimised build"
fi
"$EDGECAP" version >/dev/null 2>&1 || die "$EDGECAP does not run on this machine"

# The upload part's needs, checked before the long encoder runs.
UPLOAD=${EC_BENCH_UPLOAD:-1}
UP_RUNS=${EC_BENCH_UPLOAD_RUNS:-3}
if [[ $UPLOAD != 0 ]]; then
    if ! [[ $UP_RUNS =~ ^[1-9][0-9]*$ ]] || ((UP_RUNS % 2 == 0)); then
        die "EC_BENCH_UPLOAD_RUNS must be an odd number, got '$UP_RUNS'"
    fi
    for tool in curl openssl node base64; do
        command -v "$tool" >/dev/null ||
            die "$tool not found: run toolchain/install-deps.sh peers (or EC_BENCH_UPLOAD=0)"
    done
    PEERS=$PWD/tests/peers/peers.sh
    SPOOL_CAT=$BUILD/tools/spool_cat
    # The test tool that decrypts a spooled segment: made (or brought up to
    # date) here when BUILD_DIR is this repository's build/ARCH.
    rel=$(realpath -m --relative-to=. "$BUILD")
    if [[ $rel =~ ^build/([A-Za-z0-9_]+)$ ]]; then
        make -s ARCH="${BASH_REMATCH[1]}" "$rel/tools/spool_cat" >&2 ||
            die "could not build $rel/tools/spool_cat"
    fi
    [[ -x $SPOOL_CAT ]] || die "$SPOOL_CAT not found: make $BUILD/tools/spool_cat (or EC_BENCH_UPLOAD=0)"
fi

# Scratch space: everything (audio, configs, keys, spools, outputs) lives in one
# directory removed on exit. The default location is the build directory,
# which is on the disk the project lives on (/tmp may be tmpfs).
BASE=${EC_BENCH_DIR:-$BUILD}
mkdir -p "$BASE"
WORK=$(mktemp -d "$(realpath "$BASE")/bench.XXXXXX")
SHM=""
PEERS_DIR=""
cleanup() {
    # the peers (nginx, Azurite) are stopped by their recorded PIDs
    [[ -z $PEERS_DIR ]] || "$PEERS" stop "$PEERS_DIR" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    [[ -z $SHM ]] || rm -rf "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 700 "$WORK"
if [[ -d /dev/shm && -w /dev/shm && $(stat -f -c %T /dev/shm) == tmpfs ]]; then
    SHM=$(mktemp -d /dev/shm/edgecap-bench.XXXXXX)
    chmod 700 "$SHM"
fi

say() { printf '== %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------
# 1. Audio: a few synthetic sentences in different voices, with pauses, over a
# faint noise floor (a real microphone never delivers digital silence, and
# Opus spends its cycles differently on exact zeros), repeated to 10 minutes.
say "generating ${AUDIO_S} s of speech-like audio ($RATE_HZ Hz mono s16)"
SENTENCES=(
    "en-us|160|50|The quick brown fox jumps over the lazy dog, and then it runs back into the forest."
    "en-gb+f3|150|60|Please check the pressure gauge on line seven before the next shift begins."
    "en-us+m3|175|40|Edge devices capture audio, encode it as Ogg Opus, and keep it sealed until the server acknowledges it."
    "en-gb-scotland|145|55|Yesterday the conveyor stopped twice; the second time, nobody noticed for ten minutes."
    "en-us+f2|165|70|Can you hear me now? I said the temperature in hall three is rising again."
    "en-gb|155|45|Numbers matter: four thousand two hundred and seventeen units shipped, nineteen returned."
)
parts=()
i=0
for s in "${SENTENCES[@]}"; do
    IFS='|' read -r voice speed pitch text <<<"$s"
    espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$WORK/s$i.wav" "$text" ||
        die "espeak-ng failed for voice $voice"
    # Same format for every part, normalised, with a pause after each sentence.
    sox "$WORK/s$i.wav" -r $RATE_HZ -c 1 -b 16 "$WORK/p$i.wav" gain -n -3 pad 0 0.$((4 + i % 5))
    parts+=("$WORK/p$i.wav")
    i=$((i + 1))
done
sox "${parts[@]}" "$WORK/base.wav"
base_s=$(soxi -D "$WORK/base.wav")
repeats=$(awk -v a=$AUDIO_S -v b="$base_s" 'BEGIN { n = int(a / b); print (n * b >= a) ? n - 1 : n }')
sox "$WORK/base.wav" "$WORK/speech.wav" repeat "$repeats" trim 0 $AUDIO_S
sox -n -r $RATE_HZ -c 1 -b 16 "$WORK/noise.wav" synth $AUDIO_S pinknoise vol 0.003
WAV=$WORK/bench.wav
sox -m -v 1 "$WORK/speech.wav" -v 1 "$WORK/noise.wav" -b 16 "$WAV"
CUT=$WORK/cut.wav
sox "$WAV" "$CUT" trim 0 $CG_S
rm -f "$WORK"/s[0-9]*.wav "$WORK"/p[0-9]*.wav "$WORK/speech.wav" "$WORK/noise.wav"
got=$(soxi -s "$WAV")
[[ $got == $((AUDIO_S * RATE_HZ)) ]] || die "generated WAV has $got samples, wanted $((AUDIO_S * RATE_HZ))"

# ---------------------------------------------------------------------------
# 2. Provisioning files: one spool on disk, one on tmpfs (the difference is
# what the per-page fsyncs cost). Nothing here is ever uploaded; [upload],
# [tls] and [auth] only have to validate.
write_config() { # FILE INPUT_WAV SPOOL_DIR
    (
        umask 077
        cat >"$1" <<EOF
; edgecap benchmark (toolchain/bench.sh): file source, defaults for the encoder
[device]
id = bench-0001
require_mlock = off
keystore_dir = $WORK/keys

[capture]
source = file
file = $2
rate_hz = $RATE_HZ
channels = 1
segment_seconds = 60

[encoder]
bitrate_bps = $BITRATE_BPS
complexity = $COMPLEXITY
frame_ms = $FRAME_MS
max_page_ms = $MAX_PAGE_MS

[spool]
dir = $3

[upload]
target = blob
endpoint = https://edgecapbench.blob.core.windows.net
container = audio

[tls]
ca_file = $WORK/ca.pem
client_cert = $WORK/client.pem
client_key = $WORK/client.key
pin_current = sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
allowed_hosts = edgecapbench.blob.core.windows.net, login.microsoftonline.com

[auth]
mode = entra
tenant_id = 00000000-0000-0000-0000-000000000000
client_id = 11111111-1111-1111-1111-111111111111
EOF
    )
    chmod 600 "$1"
}
DISK_SPOOL=$WORK/spool
write_config "$WORK/disk.conf" "$WAV" "$DISK_SPOOL"
if [[ -n $SHM ]]; then
    SHM_SPOOL=$SHM/spool
    write_config "$WORK/shm.conf" "$WAV" "$SHM_SPOOL"
fi
"$EDGECAP" check-config "$WORK/disk.conf" >"$WORK/check.log" 2>&1 || {
    cat "$WORK/check.log" >&2
    die "the benchmark's provisioning file does not validate"
}

# opusenc with edgecap's defaults: VBR (opusenc's default too), 20 ms frames,
# 1 s pages. opus-tools 0.2 has no --application option and leaves libopusenc
# on OPUS_APPLICATION_AUDIO while edgecap defaults to voip: that alone changes
# the encoder's mode (SILK/hybrid vs CELT) and its speed about twofold, so set
# it with the raw ctl (OPUS_SET_APPLICATION=4000, VOIP=2048). opusenc also sets
# LSB depth 16 where edgecap keeps libopus' 24 (OPUS_SET_LSB_DEPTH=4036), and
# edgecap's decision delay is max_page_ms (OPE_SET_DECISION_DELAY=14000).
# Both go through libopusenc, which resamples 16 kHz to 48 kHz either way.
OPUSENC_ARGS=(--quiet --bitrate "$((BITRATE_BPS / 1000))" --comp "$COMPLEXITY"
    --framesize "$FRAME_MS" --vbr --max-delay "$MAX_PAGE_MS" --set-ctl-int "4000=2048"
    --set-ctl-int "4036=24" --set-ctl-int "14000=$((MAX_PAGE_MS * 48))")

# ---------------------------------------------------------------------------
# 3. Timed runs, alternating. Each run: "wall user sys maxrss_kib
# voluntary_context_switches" appended to $WORK/t.<name>.
run_timed() { # NAME LOG CMD...
    local name=$1 log=$2
    shift 2
    if ! "$GNU_TIME" -f '%e %U %S %M %w' -o "$WORK/time.out" -- "$@" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "$name failed: $*"
    fi
    tail -n 1 "$WORK/time.out" >>"$WORK/t.$name"
}

check_edgecap_run() { # LOG CONF SPOOL
    local log=$1 conf=$2 spool=$3 frames
    frames=$(sed -n 's/^captured \([0-9]*\) frames.*/\1/p' "$log")
    [[ $frames == $((AUDIO_S * RATE_HZ)) ]] ||
        die "edgecap captured '${frames:-?}' frames, wanted $((AUDIO_S * RATE_HZ)) (see $log)"
    grep -q 'failed 0, overruns 0, dropped 0 frames' "$log" ||
        die "edgecap lost audio: $(grep '^captured' "$log")"
    "$EDGECAP" spool verify --config "$conf" >"$WORK/verify.log" 2>&1 || {
        cat "$WORK/verify.log" >&2
        die "spool verify failed after the benchmark run"
    }
    du -cb "$spool"/*.seg | tail -n 1 | cut -f1 >"$WORK/spool_bytes"
}

edgecap_run() { # NAME CONF SPOOL
    rm -rf "$3"
    run_timed "$1" "$WORK/$1.log" "$EDGECAP" capture --config "$2" --seconds $AUDIO_S
    check_edgecap_run "$WORK/$1.log" "$2" "$3"
    rm -rf "$3"
}

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
say "timing: $RUNS runs each of edgecap (disk spool${SHM:+, tmpfs spool}) and opusenc, alternating"
# An untimed warm-up of each: the WAV and the binaries are in the page cache
# and the KEK exists before the first timed run.
edgecap_run warmup "$WORK/disk.conf" "$DISK_SPOOL"
opusenc "${OPUSENC_ARGS[@]}" "$WAV" "$WORK/out.opus"
rm -f "$WORK/t.warmup"
for r in $(seq 1 "$RUNS"); do
    if ((r % 2 == 1)); then
        order="edgecap_disk opusenc edgecap_shm"
    else
        order="opusenc edgecap_shm edgecap_disk"
    fi
    for what in $order; do
        case $what in
        edgecap_disk) edgecap_run edgecap_disk "$WORK/disk.conf" "$DISK_SPOOL" ;;
        edgecap_shm) [[ -z $SHM ]] || edgecap_run edgecap_shm "$WORK/shm.conf" "$SHM_SPOOL" ;;
        opusenc)
            rm -f "$WORK/out.opus"
            run_timed opusenc "$WORK/opusenc.log" opusenc "${OPUSENC_ARGS[@]}" "$WAV" "$WORK/out.opus"
            ;;
        esac
    done
    say "run $r/$RUNS: edgecap disk $(tail -n1 "$WORK/t.edgecap_disk" | cut -d' ' -f1) s," \
        "opusenc $(tail -n1 "$WORK/t.opusenc" | cut -d' ' -f1) s" \
        "${SHM:+, edgecap tmpfs $(tail -n1 "$WORK/t.edgecap_shm" 2>/dev/null | cut -d' ' -f1) s}"
done
LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
SPOOL_BYTES=$(cat "$WORK/spool_bytes")
OPUS_BYTES=$(stat -c %s "$WORK/out.opus")

# Median (and best) of a column of $WORK/t.NAME; column 1 wall, 2 user, 3 sys,
# 4 peak RSS in KiB, 5 voluntary context switches.
col() { cut -d' ' -f"$2" "$WORK/t.$1" | sort -g; }
median() { col "$1" "$2" | sed -n "$(((RUNS + 1) / 2))p"; }
best() { col "$1" "$2" | head -n 1; }
cpu_median() { awk '{ print $2 + $3 }' "$WORK/t.$1" | sort -g | sed -n "$(((RUNS + 1) / 2))p"; }
rss_max() { col "$1" 4 | tail -n 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
kbps() { awk -v n="$1" -v s=$AUDIO_S 'BEGIN { printf "%.1f", n * 8 / s / 1000 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------
# 4. Instructions per audio second (callgrind; threads summed), on the cut.
CG_E="" CG_O=""
if [[ $CALLGRIND != 0 ]]; then
    say "callgrind: ${CG_S} s cut through edgecap and opusenc"
    write_config "$WORK/cut.conf" "$CUT" "$WORK/cutspool"
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.edgecap" \
        "$EDGECAP" capture --config "$WORK/cut.conf" --seconds $CG_S >"$WORK/cg_edgecap.log" 2>&1 || {
        tail -n 20 "$WORK/cg_edgecap.log" >&2
        die "edgecap under callgrind failed"
    }
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.opusenc" \
        opusenc "${OPUSENC_ARGS[@]}" "$CUT" "$WORK/cut.opus" >"$WORK/cg_opusenc.log" 2>&1 || {
        tail -n 20 "$WORK/cg_opusenc.log" >&2
        die "opusenc under callgrind failed"
    }
    ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }
    CG_E=$(ir "$WORK/callgrind.edgecap")
    CG_O=$(ir "$WORK/callgrind.opusenc")
    [[ -n $CG_E && -n $CG_O ]] || die "no instruction totals in the callgrind output"
    if [[ -n ${EC_BENCH_KEEP_CALLGRIND:-} ]]; then
        cp "$WORK/callgrind.edgecap" "$WORK/callgrind.opusenc" "$EC_BENCH_KEEP_CALLGRIND"/
    fi
fi

# ---------------------------------------------------------------------------
# 5. Summary, as a Markdown table (README.md's "Performance and footprint").
E_WALL=$(median edgecap_disk 1)
O_WALL=$(median opusenc 1)
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo
echo "$("$EDGECAP" version 2>/dev/null | head -n 1)," \
    "$(opusenc --version | head -n 1)"
echo "host: ${cpu:-unknown CPU}, $(nproc) CPUs, $(uname -sr);" \
    "disk spool on $(stat -f -c %T "$WORK")${SHM:+, tmpfs spool in /dev/shm};" \
    "load average $LOAD_BEFORE before, $LOAD_AFTER after the timed runs"
echo "input: ${AUDIO_S} s of speech-like audio, $RATE_HZ Hz mono s16 WAV;" \
    "Opus $((BITRATE_BPS / 1000)) kbit/s VBR, complexity $COMPLEXITY, ${FRAME_MS} ms frames, voip;" \
    "median of $RUNS runs (best in brackets)"
echo
echo "| measure | edgecap capture | opusenc | edgecap / opusenc |"
echo "|---|---|---|---|"
echo "| wall time, ${AUDIO_S} s of audio, spool on disk (fsync per page) |" \
    "$E_WALL s ($(best edgecap_disk 1) s) | $O_WALL s ($(best opusenc 1) s) |" \
    "**$(ratio "$E_WALL" "$O_WALL")x** ($(ratio "$(best edgecap_disk 1)" "$(best opusenc 1)")x) |"
if [[ -n $SHM ]]; then
    S_WALL=$(median edgecap_shm 1)
    echo "| wall time, spool on tmpfs (fsync ~free) | $S_WALL s ($(best edgecap_shm 1) s) |" \
        "$O_WALL s ($(best opusenc 1) s) | $(ratio "$S_WALL" "$O_WALL")x" \
        "($(ratio "$(best edgecap_shm 1)" "$(best opusenc 1)")x) |"
fi
echo "| CPU time (user + sys), spool on disk | $(cpu_median edgecap_disk) s | $(cpu_median opusenc) s |" \
    "$(ratio "$(cpu_median edgecap_disk)" "$(cpu_median opusenc)")x |"
if [[ -n $SHM ]]; then
    echo "| CPU time, spool on tmpfs | $(cpu_median edgecap_shm) s | $(cpu_median opusenc) s |" \
        "$(ratio "$(cpu_median edgecap_shm)" "$(cpu_median opusenc)")x |"
fi
echo "| of which system time (disk spool) | $(median edgecap_disk 3) s | $(median opusenc 3) s | |"
echo "| voluntary context switches | $(median edgecap_disk 5) | $(median opusenc 5) | |"
echo "| speed | $(awk -v a=$AUDIO_S -v t="$E_WALL" 'BEGIN { printf "%.0f", a / t }')x real time |" \
    "$(awk -v a=$AUDIO_S -v t="$O_WALL" 'BEGIN { printf "%.0f", a / t }')x real time | |"
echo "| peak RSS | $(mib "$(rss_max edgecap_disk)") MiB | $(mib "$(rss_max opusenc)") MiB |" \
    "$(ratio "$(rss_max edgecap_disk)" "$(rss_max opusenc)")x |"
if [[ -n $CG_E ]]; then
    ipe=$(awk -v n="$CG_E" -v s=$CG_S 'BEGIN { printf "%.1f", n / s / 1e6 }')
    ipo=$(awk -v n="$CG_O" -v s=$CG_S 'BEGIN { printf "%.1f", n / s / 1e6 }')
    echo "| instructions per audio second (callgrind, ${CG_S} s cut) | $ipe M | $ipo M |" \
        "$(ratio "$CG_E" "$CG_O")x |"
fi
echo "| output size | $(kbps "$SPOOL_BYTES") kbit/s sealed spool | $(kbps "$OPUS_BYTES") kbit/s .opus | |"
echo
echo "The ratio in bold is the goal's figure (edgecap <= 1.05x opusenc): edgecap with its"
echo "spool on disk and fsyncs, against opusenc writing without fsync. Wall and CPU"
echo "times depend on what else the machine runs (see the load average); the"
echo "instruction counts do not."

# ---------------------------------------------------------------------------
# 6. Upload: edgecap draining a backlog vs the curl CLI sending the same bytes
# through the same front (EC_BENCH_UPLOAD=0 skips it).
[[ $UPLOAD != 0 ]] || exit 0

UP_AUDIO_S=1200  # the issue asks for at least 20 minutes
UP_SEGMENT_S=4   # 300 segments
UP_SEGMENTS=$((UP_AUDIO_S / UP_SEGMENT_S))
UP_DEVICE=bench-0001
UP_CONTAINER=bench
UP_SPOOL=$WORK/upspool
PLAIN=$WORK/plain

# The peers' files (Azurite's blobs) go on tmpfs when there is one: a remote
# service's disk is not the device's, and on a shared ext4 journal edgecap's
# fsyncs would also flush what Azurite just wrote.
say "upload: starting the test peers (Azurite behind nginx, tests/peers/peers.sh)"
PEERS_DIR=${SHM:-$WORK}/peers
if ! "$PEERS" start "$PEERS_DIR" >"$WORK/peers-start.log" 2>&1; then
    tail -n 30 "$WORK/peers-start.log" >&2
    die "the test peers did not start (toolchain/install-deps.sh peers, or EC_BENCH_UPLOAD=0)"
fi
# shellcheck source=/dev/null
. "$PEERS_DIR/peers.env"
SAS=$("$PEERS" container "$PEERS_DIR" "$UP_CONTAINER") || die "could not create the container"

write_upload_config() { # FILE BLOB_PREFIX AUDIT_FILE [SPOOL_DIR]
    (
        umask 077
        cat >"$1" <<EOF
; edgecap benchmark (toolchain/bench.sh): a backlog drained to the test peers
[device]
id = $UP_DEVICE
require_mlock = off
keystore_dir = $WORK/keys

[capture]
source = file
file = $WORK/upload.wav
rate_hz = $RATE_HZ
channels = 1
segment_seconds = $UP_SEGMENT_S

[encoder]
bitrate_bps = $BITRATE_BPS
complexity = $COMPLEXITY
frame_ms = $FRAME_MS
max_page_ms = $MAX_PAGE_MS

[spool]
dir = ${4:-$UP_SPOOL}

[upload]
endpoint = $BLOB_ENDPOINT
container = $UP_CONTAINER
prefix = $2
connect_to = $CONNECT_TO

[tls]
ca_file = $CA_FILE
client_cert = $CLIENT_CERT
client_key = $CLIENT_KEY
pin_current = $SERVER_PIN
allowed_hosts = $BLOB_HOST

[auth]
mode = sas
sas_token = $SAS

[logging]
audit_file = $3
EOF
    )
}

# The backlog: the benchmark's speech, repeated to 20 minutes, captured once
# (the KEK in $WORK/keys is the one the encoder runs made) and saved, so each
# timed run starts from an identical spool.
say "upload: capturing a backlog of ${UP_AUDIO_S} s in ${UP_SEGMENT_S} s segments"
sox "$WAV" "$WORK/upload.wav" repeat $(((UP_AUDIO_S + AUDIO_S - 1) / AUDIO_S - 1)) trim 0 $UP_AUDIO_S
write_upload_config "$WORK/up.conf" capture "$WORK/audit-capture.log"
"$EDGECAP" capture --config "$WORK/up.conf" --seconds $UP_AUDIO_S >"$WORK/upcapture.log" 2>&1 || {
    tail -n 20 "$WORK/upcapture.log" >&2
    die "edgecap capture of the backlog failed"
}
frames=$(sed -n 's/^captured \([0-9]*\) frames.*/\1/p' "$WORK/upcapture.log")
[[ $frames == $((UP_AUDIO_S * RATE_HZ)) ]] ||
    die "edgecap captured '${frames:-?}' frames for the backlog, wanted $((UP_AUDIO_S * RATE_HZ))"
mapfile -t UP_NAMES < <("$EDGECAP" spool ls --config "$WORK/up.conf" 2>/dev/null |
    awk '$NF == "closed" { print $1 }')
[[ ${#UP_NAMES[@]} == "$UP_SEGMENTS" ]] ||
    die "the backlog has ${#UP_NAMES[@]} closed segments, wanted $UP_SEGMENTS"
cp -a "$UP_SPOOL" "$WORK/upspool.saved"

# The same bytes for curl: each segment's plaintext (the Ogg Opus stream that
# edgecap uploads), decrypted before any upload, with its MD5 and metadata.
say "upload: decrypting the ${#UP_NAMES[@]} segments for curl (spool_cat)"
mkdir -p "$PLAIN"
UP_BYTES=0
: >"$WORK/segments.txt"
for name in "${UP_NAMES[@]}"; do
    "$SPOOL_CAT" "$UP_SPOOL" "$WORK/keys" "$name" >"$PLAIN/$name.ogg" 2>"$WORK/spool_cat.err" || {
        cat "$WORK/spool_cat.err" >&2
        die "spool_cat could not read $name"
    }
    seq=$(sed -n 's/.* seq=\([0-9]*\) .*/\1/p' "$WORK/spool_cat.err")
    frames=$(sed -n 's/.* frames=\([0-9]*\).*/\1/p' "$WORK/spool_cat.err")
    md5=$(openssl dgst -md5 -binary "$PLAIN/$name.ogg" | base64)
    echo "$name $seq $frames $md5" >>"$WORK/segments.txt"
    UP_BYTES=$((UP_BYTES + $(stat -c %s "$PLAIN/$name.ogg")))
done

# One curl process for all blobs: `next` chains in a -K config file, each
# transfer with the same TLS options (so curl keeps one connection, as
# edgecap does), Put Blob with edgecap's headers and metadata, then a HEAD
# (Get Blob Properties), as edgecap proves each upload.
API_VERSION=$(sed -n 's/^#define EC_BLOB_API_VERSION "\(.*\)"$/\1/p' include/edgecap/blob.h)
[[ -n $API_VERSION ]] || die "no EC_BLOB_API_VERSION in include/edgecap/blob.h"
curl_config() { # FILE BLOB_PREFIX
    local date name seq frames md5 ts blob url first=1
    date=$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S GMT')
    (
        umask 077
        echo "fail-early"
        while read -r name seq frames md5; do
            ts=${name#"$UP_DEVICE"-}
            blob="$2/$UP_DEVICE/${ts:0:4}/${ts:4:2}/${ts:6:2}/$name.ogg"
            url="$BLOB_ENDPOINT/$UP_CONTAINER/$blob?$SAS"
            for method in PUT HEAD; do
                ((first)) || echo "next"
                first=0
                cat <<EOF
url = "$url"
silent
show-error
fail
noproxy = "*"
tlsv1.2
cacert = "$CA_FILE"
cert = "$CLIENT_CERT"
key = "$CLIENT_KEY"
pinnedpubkey = "$SERVER_PIN"
connect-to = "$CONNECT_TO"
output = "/dev/null"
write-out = "%{http_code} %{num_connects} %{time_total}\\n"
header = "Expect:"
header = "x-ms-version: $API_VERSION"
header = "x-ms-date: $date"
EOF
                if [[ $method == HEAD ]]; then
                    echo "head"
                    continue
                fi
                cat <<EOF
upload-file = "$PLAIN/$name.ogg"
header = "x-ms-blob-type: BlockBlob"
header = "Content-MD5: $md5"
header = "If-None-Match: *"
header = "x-ms-blob-content-type: audio/ogg"
header = "x-ms-meta-device: $UP_DEVICE"
header = "x-ms-meta-seq: $seq"
header = "x-ms-meta-start: ${ts:0:4}-${ts:4:2}-${ts:6:2}T${ts:9:2}:${ts:11:2}:${ts:13:2}.000Z"
header = "x-ms-meta-durationms: $((frames * 1000 / RATE_HZ))"
header = "x-ms-meta-codec: opus"
header = "x-ms-meta-samplerate: $RATE_HZ"
header = "x-ms-meta-channels: 1"
EOF
            done
        done <"$WORK/segments.txt"
    ) >"$1"
}

# What nginx saw of one run's blobs (by their prefix): connections, TLS
# version, and the server's time (request_time, s) summed over the requests.
front_view() { # BLOB_PREFIX -> "connections tls server_seconds requests"
    grep -F "\"uri\":\"/$UP_CONTAINER/$1/" "$ACCESS_LOG" | awk '
        { match($0, /"conn":[0-9]+/); c[substr($0, RSTART + 7, RLENGTH - 7)] = 1
          match($0, /"tls":"[^"]*"/); tls = substr($0, RSTART + 7, RLENGTH - 8)
          match($0, /"request_time":"?[0-9.]+/); t = substr($0, RSTART + 15, RLENGTH - 15)
          gsub(/"/, "", t); sum += t; n++ }
        END { printf "%d %s %.3f %d\n", length(c), (tls == "" ? "?" : tls), sum, n }'
}

# edgecap's spool and audit log on disk (a device's), or both on tmpfs, where
# the fsyncs cost next to nothing: the difference is what durability costs.
up_edgecap_run() { # RUN disk|tmpfs
    local name=up_edgecap prefix=bench-r$1-edgecap spool=$UP_SPOOL audit=$WORK/audit-$1.log
    if [[ $2 == tmpfs ]]; then
        name=up_edgecap_shm prefix=bench-r$1-edgecap-tmpfs spool=$SHM/upspool audit=$SHM/audit-$1.log
    fi
    local log=$WORK/$name-$1.log conf=$WORK/$name-$1.conf
    rm -rf "$spool"
    cp -a "$WORK/upspool.saved" "$spool"
    sync # the copy is on disk, as a real backlog is: edgecap's fsyncs find nothing dirty
    write_upload_config "$conf" "$prefix" "$audit" "$spool"
    run_timed "$name" "$log" "$EDGECAP" upload-once --config "$conf"
    grep -q "^uploaded $UP_SEGMENTS segments ($UP_BYTES bytes, 0 already there), 0 failed" "$log" ||
        die "edgecap upload-once: $(grep '^uploaded' "$log" || tail -n 3 "$log")"
    ! compgen -G "$spool/*.seg" >/dev/null || die "the spool is not empty after upload-once"
    # time inside Put Blob + HEAD (the per-segment ms of its log lines)
    sed -n 's/.*event=segment_uploaded .* ms=\([0-9]*\).*/\1/p' "$log" |
        awk '{ s += $1; n++ } END { printf "%.3f %d\n", s / 1000, n }' >>"$WORK/t.${name}_inside"
    front_view "$prefix" >>"$WORK/t.${name}_front"
}

up_curl_run() { # RUN
    local prefix=bench-r$1-curl log=$WORK/up-curl-$1.log
    curl_config "$WORK/curl-$1.cfg" "$prefix"
    run_timed up_curl "$log" curl -K "$WORK/curl-$1.cfg"
    local puts heads
    puts=$(grep -c '^201 ' "$log" || true)
    heads=$(grep -c '^200 ' "$log" || true)
    [[ $puts == "$UP_SEGMENTS" && $heads == "$UP_SEGMENTS" ]] ||
        die "curl: $puts Put Blob 201s and $heads HEAD 200s, wanted $UP_SEGMENTS each: $(grep -v '^20[01] ' "$log" | head -n 3)"
    awk '$1 ~ /^20[01]$/ { s += $3; n++ } END { printf "%.3f %d\n", s, n }' "$log" >>"$WORK/t.up_curl_inside"
    front_view "$prefix" >>"$WORK/t.up_curl_front"
}

say "upload: $UP_RUNS runs each of edgecap upload-once and curl ($UP_SEGMENTS segments," \
    "$UP_BYTES bytes), alternating"
UP_LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
for r in $(seq 1 "$UP_RUNS"); do
    if ((r % 2 == 1)); then
        order="edgecap_disk curl edgecap_shm"
    else
        order="curl edgecap_shm edgecap_disk"
    fi
    for what in $order; do
        case $what in
        edgecap_disk) up_edgecap_run "$r" disk ;;
        edgecap_shm) [[ -z $SHM ]] || up_edgecap_run "$r" tmpfs ;;
        curl) up_curl_run "$r" ;;
        esac
    done
    say "run $r/$UP_RUNS: edgecap $(tail -n1 "$WORK/t.up_edgecap" | cut -d' ' -f1) s," \
        "curl $(tail -n1 "$WORK/t.up_curl" | cut -d' ' -f1) s" \
        "${SHM:+, edgecap tmpfs $(tail -n1 "$WORK/t.up_edgecap_shm" 2>/dev/null | cut -d' ' -f1) s}"
done
UP_LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)

# Same bytes: what the service holds under run 1's two prefixes, read back
# with the SDK, has the same names and MD5s.
readback_md5s() { # BLOB_PREFIX
    "$PEERS" readback "$PEERS_DIR" --container "$UP_CONTAINER" --prefix "$1/" --no-tags |
        sed -n 's/.*"name":"[^"]*\/\([^"/]*\)".*"md5":"\([^"]*\)".*/\1 \2/p'
}
readback_md5s bench-r1-edgecap >"$WORK/rb.edgecap" || die "readback of edgecap's blobs failed"
readback_md5s bench-r1-curl >"$WORK/rb.curl" || die "readback of curl's blobs failed"
if [[ $(wc -l <"$WORK/rb.edgecap") != "$UP_SEGMENTS" ]] || ! cmp -s "$WORK/rb.edgecap" "$WORK/rb.curl"; then
    die "edgecap's and curl's blobs differ: $(diff "$WORK/rb.edgecap" "$WORK/rb.curl" | head -n 4)"
fi

"$PEERS" stop "$PEERS_DIR" >/dev/null 2>&1 || say "stopping the peers failed"
PEERS_DIR=""

umed() { cut -d' ' -f"$2" "$WORK/t.$1" | sort -g | sed -n "$(((UP_RUNS + 1) / 2))p"; }
ubest() { cut -d' ' -f"$2" "$WORK/t.$1" | sort -g | head -n 1; }
ucpu() { awk '{ print $2 + $3 }' "$WORK/t.$1" | sort -g | sed -n "$(((UP_RUNS + 1) / 2))p"; }
urss() { cut -d' ' -f4 "$WORK/t.$1" | sort -g | tail -n 1; }
# wall minus the time inside the requests, run by run, median
uoutside() {
    paste -d' ' <(cut -d' ' -f1 "$WORK/t.$1") <(cut -d' ' -f1 "$WORK/t.$1_inside") |
        awk '{ printf "%.2f\n", $1 - $2 }' | sort -g | sed -n "$(((UP_RUNS + 1) / 2))p"
}
per_s() { awk -v a="$1" -v t="$2" 'BEGIN { printf "%.0f", a / t }'; }
UE=$(umed up_edgecap 1)
UC=$(umed up_curl 1)
read -r e_conns e_tls _ e_reqs < <(head -n 1 "$WORK/t.up_edgecap_front")
read -r c_conns c_tls _ c_reqs < <(head -n 1 "$WORK/t.up_curl_front")
echo
echo "$("$EDGECAP" version 2>/dev/null | head -n 1) (libcurl on mbedTLS)," \
    "$(curl --version | head -n 1 | cut -d' ' -f1,2,4,5)"
echo "peers: $(/usr/sbin/nginx -v 2>&1 | sed 's/^nginx version: //') (mutual TLS, a new" \
    "connection to Azurite $(node -p "require('$PWD/tests/peers/node_modules/azurite/package.json').version" 2>/dev/null)" \
    "for each request; its data on $(stat -f -c %T "${SHM:-$WORK}")) on loopback, sharing this" \
    "machine's $(nproc) CPUs with the clients; load average $UP_LOAD_BEFORE before, $UP_LOAD_AFTER after"
echo "backlog: ${UP_AUDIO_S} s of audio in $UP_SEGMENTS segments of ${UP_SEGMENT_S} s, $UP_BYTES bytes" \
    "of Ogg Opus, the same bytes for both (run 1's blobs read back and compared);" \
    "Put Blob + HEAD per segment on one connection; median of $UP_RUNS runs (best in brackets)"
echo
echo "| measure | edgecap upload-once | curl CLI (one process, -K) | edgecap / curl |"
echo "|---|---|---|---|"
echo "| wall time, $UP_SEGMENTS segments ($((UP_AUDIO_S / 60)) min of audio), spool + audit log on disk |" \
    "$UE s ($(ubest up_edgecap 1) s) | $UC s ($(ubest up_curl 1) s) |" \
    "**$(ratio "$UE" "$UC")x** ($(ratio "$(ubest up_edgecap 1)" "$(ubest up_curl 1)")x) |"
if [[ -n $SHM ]]; then
    US=$(umed up_edgecap_shm 1)
    echo "| wall time, spool + audit log on tmpfs (fsyncs ~free) | $US s ($(ubest up_edgecap_shm 1) s) |" \
        "$UC s ($(ubest up_curl 1) s) | $(ratio "$US" "$UC")x" \
        "($(ratio "$(ubest up_edgecap_shm 1)" "$(ubest up_curl 1)")x) |"
fi
echo "| audio drained per second, on disk | $(per_s $UP_AUDIO_S "$UE") s/s |" \
    "$(per_s $UP_AUDIO_S "$UC") s/s | |"
[[ -z $SHM ]] || echo "| audio drained per second, on tmpfs | $(per_s $UP_AUDIO_S "$US") s/s | | |"
echo "| time inside the requests (edgecap: its segment_uploaded ms; curl: time_total), on disk |" \
    "$(umed up_edgecap_inside 1) s | $(umed up_curl_inside 1) s | |"
echo "| time outside them (start, spool list + decrypt, wipe, fsyncs, audit), on disk |" \
    "$(uoutside up_edgecap) s | $(uoutside up_curl) s | |"
[[ -z $SHM ]] || echo "| inside / outside, on tmpfs | $(umed up_edgecap_shm_inside 1) s /" \
    "$(uoutside up_edgecap_shm) s | | |"
echo "| server time (nginx request_time, summed over $e_reqs requests), on disk |" \
    "$(umed up_edgecap_front 3) s | $(umed up_curl_front 3) s | |"
[[ -z $SHM ]] || echo "| server time, on tmpfs | $(umed up_edgecap_shm_front 3) s | | |"
echo "| CPU time (user + sys), on disk | $(ucpu up_edgecap) s | $(ucpu up_curl) s |" \
    "$(ratio "$(ucpu up_edgecap)" "$(ucpu up_curl)")x |"
echo "| of which system time | $(umed up_edgecap 3) s | $(umed up_curl 3) s | |"
echo "| voluntary context switches | $(umed up_edgecap 5) | $(umed up_curl 5) | |"
echo "| peak RSS | $(mib "$(urss up_edgecap)") MiB | $(mib "$(urss up_curl)") MiB |" \
    "$(ratio "$(urss up_edgecap)" "$(urss up_curl)")x |"
echo "| requests, connections, TLS (nginx log, run 1) | $e_reqs, $e_conns, $e_tls |" \
    "$c_reqs, $c_conns, $c_tls | |"
echo
echo "The ratio in bold is the upload figure: edgecap draining its spool as a device"
echo "does, against curl sending the same plaintext from files. edgecap also lists and"
echo "authenticates the spool, decrypts each segment, and after each proof wipes its key"
echo "and fsyncs (segment, spool directory, audit line); the tmpfs row shows what the"
echo "fsyncs cost. Both clients and the peers share this machine's CPUs."
