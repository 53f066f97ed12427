// Shared by the peer scripts: the account endpoint and key from the
// environment (peers.sh exports them from peers.env), and a tiny option parser.
// Talks to Azurite directly (not through nginx); Azurite's CA must be trusted
// through NODE_EXTRA_CA_CERTS, which node reads only at start-up.
"use strict";

// Debian 12's own nodejs is 18, where Web Crypto is not yet a global; the
// Azure SDK's core libraries use globalThis.crypto (randomUUID). Harmless on
// node >= 20, where it is already there.
if (typeof globalThis.crypto === "undefined") {
    globalThis.crypto = require("crypto").webcrypto;
}

const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");

function fail(msg) {
    process.stderr.write(`${require("path").basename(process.argv[1])}: ${msg}\n`);
    process.exit(2);
}

function env(name) {
    const v = process.env[name];
    if (!v) fail(`${name} is not set (source peers.env or run through peers.sh)`);
    return v;
}

// --name value / --flag; every option must be in `spec` (name -> "value" | "flag").
function parseArgs(argv, spec) {
    const out = {};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (!a.startsWith("--")) fail(`unexpected argument "${a}"`);
        const name = a.slice(2);
        if (!(name in spec)) fail(`unknown option ${a}`);
        if (spec[name] === "flag") {
            out[name] = true;
        } else {
            if (i + 1 >= argv.length) fail(`${a} needs a value`);
            out[name] = argv[++i];
        }
    }
    return out;
}

function credential() {
    return new StorageSharedKeyCredential(env("ACCOUNT"), env("ACCOUNT_KEY"));
}

// AZURITE_URL is the account endpoint, https://127.0.0.1:PORT/devstoreaccount1
// (path style: Azurite takes the account from the first path segment when the
// host is an IP address).
function serviceClient() {
    return new BlobServiceClient(env("AZURITE_URL"), credential());
}

module.exports = { fail, env, parseArgs, credential, serviceClient };
