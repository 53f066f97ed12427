// Reads blobs back from Azurite with the official SDK, for tests to compare
// with what the device sent.
//
//   node readback.js --container NAME [--prefix P] [--out-dir DIR] [--no-tags]
//   node readback.js --container NAME --cat BLOB        (bytes to stdout)
//
// Lists the blobs under PREFIX (all when absent), downloads each one and prints
// one JSON line per blob, in name order:
//   {"name","size","contentMD5","md5","sha256","contentType","contentEncoding",
//    "blobType","metadata","tags","file"}
// contentMD5 is what the service stores (base64, null when none); md5 and
// sha256 are computed here over the downloaded bytes (base64 / hex), so a test
// can check both the stored value and the content. With --out-dir the bytes
// are written to DIR/<blob name> (sub-directories as in the name) and "file"
// is that path. Exit status: 0 on success (also when nothing matches), 2 on a
// usage error, 1 on a service error.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const { fail, parseArgs, serviceClient } = require("./common");

async function download(blob) {
    const r = await blob.download(0);
    const chunks = [];
    for await (const c of r.readableStreamBody) chunks.push(c);
    return Buffer.concat(chunks);
}

function safeJoin(dir, name) {
    const p = path.resolve(dir, name);
    if (!p.startsWith(path.resolve(dir) + path.sep)) fail(`blob name escapes --out-dir: ${name}`);
    return p;
}

async function main() {
    const o = parseArgs(process.argv.slice(2), {
        container: "value",
        prefix: "value",
        "out-dir": "value",
        cat: "value",
        "no-tags": "flag",
    });
    if (!o.container) fail("--container NAME is required");
    const container = serviceClient().getContainerClient(o.container);

    if (o.cat) {
        process.stdout.write(await download(container.getBlobClient(o.cat)));
        return;
    }

    const listOptions = { includeMetadata: true, includeTags: !o["no-tags"] };
    if (o.prefix) listOptions.prefix = o.prefix;
    const items = [];
    for await (const item of container.listBlobsFlat(listOptions)) items.push(item);
    items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

    for (const item of items) {
        const blob = container.getBlobClient(item.name);
        const bytes = await download(blob);
        const p = item.properties;
        let tags = null;
        if (!o["no-tags"]) {
            tags = item.tags ?? (await blob.getTags()).tags ?? {};
        }
        let file = null;
        if (o["out-dir"]) {
            file = safeJoin(o["out-dir"], item.name);
            fs.mkdirSync(path.dirname(file), { recursive: true });
            fs.writeFileSync(file, bytes);
        }
        const line = {
            name: item.name,
            size: bytes.length,
            contentLength: p.contentLength,
            contentMD5: p.contentMD5 ? Buffer.from(p.contentMD5).toString("base64") : null,
            md5: crypto.createHash("md5").update(bytes).digest("base64"),
            sha256: crypto.createHash("sha256").update(bytes).digest("hex"),
            contentType: p.contentType ?? null,
            contentEncoding: p.contentEncoding ?? null,
            blobType: p.blobType,
            metadata: item.metadata ?? {},
            tags,
            file,
        };
        process.stdout.write(JSON.stringify(line) + "\n");
    }
}

main().catch((e) => {
    process.stderr.write(`readback.js: ${e.statusCode ?? ""} ${e.code ?? ""} ${e.message}\n`);
    process.exit(1);
});
