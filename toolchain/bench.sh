#!/bin/bash
# `make bench`: how fast and how small the audio pipeline is, next to the
# reference encoder. One run generates 10 minutes of speech-like audio, pushes
# it through `edgecap capture` (file source -> capture thread -> segmenting ->
# libopusenc -> AES-256-GCM -> fsync'd spool) and through opus-tools' `opusenc`
# with the same encoder settings, alternating, and prints wall and CPU times,
# the ratio, peak RSS and callgrind instructions per audio second. A benchmark,
# never a pass/fail test: it fails only when something does not run.
#
#   toolchain/bench.sh BUILD_DIR          e.g. toolchain/bench.sh build/x86_64
#
# Environment: EC_BENCH_RUNS (timed runs of each, odd, default 3),
# EC_BENCH_DIR (where the scratch directory and the on-disk spool go,
# default BUILD_DIR), EC_BENCH_CALLGRIND=0 to skip the callgrind pass.
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

# Scratch space: everything (audio, configs, keys, spools, outputs) lives in one
# directory removed on exit. The default location is the build directory,
# which is on the disk the project lives on (/tmp may be tmpfs).
BASE=${EC_BENCH_DIR:-$BUILD}
mkdir -p "$BASE"
WORK=$(mktemp -d "$(realpath "$BASE")/bench.XXXXXX")
SHM=""
cleanup() {
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
