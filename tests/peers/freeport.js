// Prints COUNT distinct TCP ports that could be bound on 127.0.0.1 just now,
// one per line. Candidates are drawn at random below the kernel's ephemeral
// range (so outgoing connections do not take them meanwhile); each one is
// bind-tested and released. A caller that still loses a race retries.
//
//   node freeport.js [COUNT]
"use strict";

const net = require("net");

const LOW = 20000;
const HIGH = 32000; // net.ipv4.ip_local_port_range starts at 32768 by default

function tryBind(port) {
    return new Promise((resolve) => {
        const s = net.createServer();
        s.once("error", () => resolve(false));
        s.listen({ host: "127.0.0.1", port, exclusive: true }, () => s.close(() => resolve(true)));
    });
}

async function main() {
    const count = Number(process.argv[2] ?? 1);
    const found = new Set();
    for (let tries = 0; found.size < count; tries++) {
        if (tries > 1000) {
            process.stderr.write("freeport.js: no free port found\n");
            process.exit(1);
        }
        const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
        if (!found.has(port) && (await tryBind(port))) found.add(port);
    }
    process.stdout.write([...found].join("\n") + "\n");
}

main();
