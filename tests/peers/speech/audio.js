// What the Speech peer knows about audio: whether a file is one well-formed
// Ogg Opus stream (opusinfo) and how long it is, to the sample (opusdec).
//
//   const { probe } = require("./audio");
//   await probe(FILE) -> {ogg_opus, reason, channels, samples, duration_ms, opusinfo_ms}
//
// ogg_opus is true only for exactly one logical stream of type opus and an
// opusinfo run without a WARNING or ERROR line; reason says what was wrong
// otherwise (never any audio bytes). samples is the count opusdec decodes at
// 48 kHz (pre-skip and end trimming applied), duration_ms = round(samples / 48);
// opusinfo_ms is opusinfo's own "Playback length", for comparison.
"use strict";

const { execFile, spawn } = require("child_process");

const TIMEOUT_MS = 60e3;

function run(cmd, args) {
    return new Promise((resolve) => {
        execFile(cmd, args, { timeout: TIMEOUT_MS, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
            resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, out: `${stdout}\n${stderr}` });
        });
    });
}

// "Playback length: 0m:02.575s" or "1h:02m:03.456s" -> milliseconds.
function playbackMs(text) {
    const m = text.match(/Playback length:\s*(?:(\d+)h:)?(\d+)m:(\d+)\.(\d{3})s/);
    if (!m) return null;
    return ((Number(m[1] ?? 0) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1000 + Number(m[4]);
}

function decodedBytes(file) {
    return new Promise((resolve) => {
        const p = spawn("opusdec", ["--quiet", "--rate", "48000", file, "-"], {
            stdio: ["ignore", "pipe", "pipe"],
        });
        let bytes = 0;
        let err = "";
        const timer = setTimeout(() => p.kill("SIGKILL"), TIMEOUT_MS);
        p.stdout.on("data", (c) => (bytes += c.length));
        p.stderr.on("data", (c) => (err += c.toString().slice(0, 400)));
        p.on("error", (e) => {
            clearTimeout(timer);
            resolve({ code: -1, bytes: 0, err: e.message });
        });
        p.on("close", (code) => {
            clearTimeout(timer);
            resolve({ code: code ?? -1, bytes, err });
        });
    });
}

async function probe(file) {
    const info = await run("opusinfo", [file]);
    const streams = [...info.out.matchAll(/New logical stream \(#\d+, serial: [0-9a-f]+\): type (\S+)/g)].map(
        (m) => m[1],
    );
    const bad = info.out.split("\n").find((l) => /^(WARNING|ERROR)/.test(l.trim()));
    let reason = null;
    if (info.code !== 0 && /No Ogg data found|probably not Ogg/i.test(info.out)) reason = "not an Ogg file";
    else if (info.code !== 0) reason = `opusinfo exit status ${info.code}`;
    else if (streams.length === 0) reason = "no logical stream";
    else if (streams.length > 1) reason = `${streams.length} logical streams (${streams.join(", ")})`;
    else if (streams[0] !== "opus") reason = `an Ogg ${streams[0]} stream, not Opus`;
    else if (bad) reason = `opusinfo: ${bad.trim().slice(0, 120)}`;
    if (reason) return { ogg_opus: false, reason };

    const channels = Number((info.out.match(/Channels:\s*(\d+)/) || [])[1] ?? 1);
    const dec = await decodedBytes(file);
    if (dec.code !== 0) return { ogg_opus: false, reason: `opusdec exit status ${dec.code}` };
    const samples = dec.bytes / (2 * channels);
    return {
        ogg_opus: true,
        reason: null,
        channels,
        samples,
        duration_ms: Math.round(samples / 48),
        opusinfo_ms: playbackMs(info.out),
    };
}

module.exports = { probe };
