// Container SAS tokens and containers for the test peers, with the official
// SDK (generateBlobSASQueryParameters + StorageSharedKeyCredential).
//
//   node sas.js --container NAME [--create] [--permissions rcwt]
//               [--hours 24] [--start-minutes 15] [--version YYYY-MM-DD]
//
// Prints the SAS query string (no leading "?") on stdout. --create first
// makes the container on Azurite when it does not exist yet.
//
// Default permissions "rcwt" are what the device needs and no more:
//   r  Get Blob Properties (HEAD), used for the acknowledgment check
//   c  Put Blob of a new blob (with If-None-Match: *)
//   w  Put Block, Put Block List (and Put Blob)
//   t  x-ms-tags on Put Blob / Put Block List
// Tests that need to list or delete ask for "l" / "d" explicitly.
"use strict";

// ./common first: it prepares the globals the SDK expects.
const { fail, parseArgs, credential, serviceClient } = require("./common");
const {
    ContainerSASPermissions,
    SASProtocol,
    generateBlobSASQueryParameters,
} = require("@azure/storage-blob");

async function main() {
    const o = parseArgs(process.argv.slice(2), {
        container: "value",
        create: "flag",
        permissions: "value",
        hours: "value",
        "start-minutes": "value",
        version: "value",
    });
    if (!o.container) fail("--container NAME is required");
    const hours = Number(o.hours ?? 24);
    const startMinutes = Number(o["start-minutes"] ?? 15);
    if (!Number.isFinite(hours)) fail("--hours must be a number");
    if (!Number.isFinite(startMinutes)) fail("--start-minutes must be a number");
    const perms = o.permissions ?? "rcwt";
    if (!/^[racwdxyltmeopi]+$/.test(perms)) fail(`bad --permissions "${perms}"`);

    if (o.create) {
        await serviceClient().getContainerClient(o.container).createIfNotExists();
    }

    const now = Date.now();
    const sas = generateBlobSASQueryParameters(
        {
            containerName: o.container,
            permissions: ContainerSASPermissions.parse(perms),
            // Back-dated so that a device clock a little behind still accepts it.
            startsOn: new Date(now - startMinutes * 60e3),
            expiresOn: new Date(now + hours * 3600e3),
            protocol: SASProtocol.Https,
            ...(o.version ? { version: o.version } : {}),
        },
        credential(),
    );
    process.stdout.write(sas.toString() + "\n");
}

main().catch((e) => fail(e.message));
