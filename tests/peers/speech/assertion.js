// Signs a certificate client assertion (a JWT) with node's crypto, for the
// peers' self-test only: the device signs its own in C, and the token
// endpoint verifies with jose, so neither side checks itself.
//
//   node assertion.js --key KEY.pem --cert CERT.pem --client-id ID --aud URL
//                     [--alg ES256|PS256|RS256] [--lifetime S] [--iat-offset S]
//                     [--no-iat] [--nbf-offset S] [--jti ID] [--typ T]
//                     [--x5t-cert OTHER.pem]
//
// Prints the compact JWS on stdout. Header: alg (default from the key type:
// ES256 for EC, PS256 for RSA), typ (JWT), x5t#S256 (base64url SHA-256 of
// CERT's DER, or of OTHER's with --x5t-cert). Claims: aud, iss = sub = ID,
// jti (random unless given), iat = now + iat-offset (left out with
// --no-iat), nbf = now + nbf-offset (default the iat offset), exp = iat +
// lifetime (default 300 s).
"use strict";

const crypto = require("crypto");
const fs = require("fs");

function fail(msg) {
    process.stderr.write(`assertion.js: ${msg}\n`);
    process.exit(2);
}

// --name value / --flag (a later one wins); every option must be in SPEC.
// (Not ../common's parser: that module loads the Azure SDK, slow to start.)
function parseArgs(argv, spec) {
    const out = {};
    for (let i = 0; i < argv.length; i++) {
        const name = argv[i].startsWith("--") ? argv[i].slice(2) : null;
        if (name === null || !(name in spec)) fail(`unknown argument ${argv[i]}`);
        if (spec[name] === "flag") out[name] = true;
        else if (i + 1 < argv.length) out[name] = argv[++i];
        else fail(`--${name} needs a value`);
    }
    return out;
}

const o = parseArgs(process.argv.slice(2), {
    key: "value",
    cert: "value",
    "client-id": "value",
    aud: "value",
    alg: "value",
    lifetime: "value",
    "iat-offset": "value",
    "no-iat": "flag",
    "nbf-offset": "value",
    jti: "value",
    typ: "value",
    "x5t-cert": "value",
});
for (const k of ["key", "cert", "client-id", "aud"]) if (!o[k]) fail(`--${k} is required`);

const key = crypto.createPrivateKey(fs.readFileSync(o.key));
const alg = o.alg ?? (key.asymmetricKeyType === "ec" ? "ES256" : "PS256");
const der = new crypto.X509Certificate(fs.readFileSync(o["x5t-cert"] ?? o.cert)).raw;
const now = Math.floor(Date.now() / 1000);
const iat = now + Number(o["iat-offset"] ?? 0);
const header = { alg, typ: o.typ ?? "JWT", "x5t#S256": crypto.createHash("sha256").update(der).digest("base64url") };
const claims = {
    aud: o.aud,
    iss: o["client-id"],
    sub: o["client-id"],
    jti: o.jti ?? crypto.randomUUID(),
    nbf: now + Number(o["nbf-offset"] ?? o["iat-offset"] ?? 0),
    exp: iat + Number(o.lifetime ?? 300),
};
if (!o["no-iat"]) claims.iat = iat;

const b64 = (x) => Buffer.from(JSON.stringify(x)).toString("base64url");
const input = `${b64(header)}.${b64(claims)}`;
let signature;
if (alg === "ES256") {
    signature = crypto.sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
} else if (alg === "PS256") {
    signature = crypto.sign("sha256", Buffer.from(input), {
        key,
        padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
        saltLength: 32,
    });
} else if (alg === "RS256") {
    signature = crypto.sign("sha256", Buffer.from(input), { key, padding: crypto.constants.RSA_PKCS1_PADDING });
} else {
    fail(`unsupported --alg ${alg}`);
}
process.stdout.write(`${input}.${signature.toString("base64url")}\n`);
