// The Speech service and Entra ID token endpoint peer of edgecap's tests: one
// node process, plain HTTP on loopback behind nginx (which terminates TLS with
// the same mutual TLS as the blob front), checked against contract.json.
//
//   node server.js --config DIR/speech/config.json
//
// The configuration file (written by peers.sh) names the ports, host names,
// tenant, registered clients, key files, log and scratch directory; see
// README.md beside this file for the whole interface. Two listeners:
//   127.0.0.1:port         the service, routed by Host:
//                          SPEECH_HOST  /speechtotext/... (api-version 2024-11-15)
//                          LOGIN_HOST   /{tenant}/oauth2/v2.0/token
//   127.0.0.1:controlPort  the test control API (never behind nginx):
//                          GET /health /requests /jobs /config /registration,
//                          POST /config /reset /keys/regenerate
// Every request record is also one JSON line in the log file. No record, log
// line or answer carries a token, key, assertion or SAS signature.
"use strict";

// ../common first: it prepares the globals the Azure SDK expects.
const { parseArgs, serviceClient } = require("../common");
const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const path = require("path");
const contract = require("./contract");
const { probe } = require("./audio");
const { Entra, STORAGE_MODES } = require("./entra");

const API_VERSION = "2024-11-15";
const MAX_JSON_BYTES = 1 << 20;
const MAX_AUDIO_BYTES = 100 << 20; // nginx's client_max_body_size
const MAX_RECORDS = 10000;
const DEFAULTS = {
    token_lifetime_s: 3600,
    storage_token_mode: "valid",
    storage_token_mode_count: 0,
    retry_after_s: 1,
    fail_jobs: 0,
    drop_submit_answers: 0,
    revoke_primary_key: false,
    revoke_secondary_key: false,
    unauthorized_next: 0,
    transcribe_status: 0,
    transcribe_status_count: 1,
    inject: [],
    strict: true,
    transcript_text: "edgecap test transcript",
    hold_jobs: false,
};
const OPS = ["submit", "list", "get", "delete", "files", "file", "transcribe", "token", "any"];

const o = parseArgs(process.argv.slice(2), { config: "value" });
if (!o.config) {
    process.stderr.write("server.js: --config FILE is required\n");
    process.exit(2);
}
const CFG = JSON.parse(fs.readFileSync(o.config, "utf8"));
const SPEECH_BASE = `https://${CFG.speechHost}/speechtotext`;
const KEYS = {
    primary: fs.readFileSync(CFG.keyFiles.primary, "utf8").trim(),
    secondary: fs.readFileSync(CFG.keyFiles.secondary, "utf8").trim(),
};
// Values that POST /keys/regenerate replaced: key id -> slot (they are
// refused from then on, as Azure refuses a regenerated key).
const retiredKeys = new Map();
const entra = new Entra({ tenantId: CFG.tenantId, loginHost: CFG.loginHost, clients: CFG.clients });
fs.mkdirSync(CFG.tmpDir, { recursive: true, mode: 0o700 });

let settings = structuredClone(DEFAULTS);
let records = [];
let seq = 0;
const jobs = new Map();

// ---- small helpers ----------------------------------------------------------

function isoNow() {
    return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

function log(line) {
    fs.appendFileSync(CFG.log, JSON.stringify(line) + "\n");
}

// The query without anything secret-looking.
function cleanQuery(searchParams) {
    const out = {};
    for (const [k, v] of searchParams) {
        out[k] = /^(sig|code|client_secret|client_assertion|access_token|subscription-key|token)$/i.test(k)
            ? "REDACTED"
            : v;
    }
    return out;
}

// A URL as recorded: no query (a SAS would be there), only whether it had one.
function urlForRecord(u) {
    try {
        const p = new URL(u);
        return `${p.protocol}//${p.host}${p.pathname}`;
    } catch {
        return "(not a URL)";
    }
}

function readBody(req, limit) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on("data", (c) => {
            size += c.length;
            if (size > limit) {
                reject(Object.assign(new Error(`body larger than ${limit} bytes`), { tooLarge: true }));
                req.destroy();
                return;
            }
            chunks.push(c);
        });
        req.on("end", () => resolve(Buffer.concat(chunks)));
        req.on("error", reject);
    });
}

// What a record says about a subscription key instead of its value: the
// first 12 hex digits of its SHA-256 (a test compares it with
// `printf %s KEY | sha256sum`), enough to tell the old value from the new.
function keyId(value) {
    return crypto.createHash("sha256").update(value).digest("hex").slice(0, 12);
}

function safeEqual(a, b) {
    const ha = crypto.createHash("sha256").update(a).digest();
    const hb = crypto.createHash("sha256").update(b).digest();
    return crypto.timingSafeEqual(ha, hb);
}

// An Error body of the contract: CODE (ErrorCode), MESSAGE, optional
// innerError code (DetailedErrorCode), target and details.
function errorBody(code, message, { inner, target, details } = {}) {
    const body = { code, message: `edgecap peer: ${message}` };
    if (target) body.target = target;
    if (details && details.length) body.details = details;
    if (inner) body.innerError = { code: inner, message: body.message };
    return body;
}

// ---- answering ----------------------------------------------------------------

// Sends BODY (an object, or null for none) as JSON after checking it against
// the contract's DEF in the strict response view: a peer bug is a 500 and a
// log line, never a malformed answer.
function send(res, rec, status, body, { def = null, headers = {} } = {}) {
    if (def && body !== null) {
        const r = contract.check(def, body, "response");
        if (!r.strictValid) {
            rec.peer_bug = r.errors.map((e) => e.message);
            process.stderr.write(`server.js: PEER BUG: ${def} answer does not fit the contract: ${rec.peer_bug.join("; ")}\n`);
            status = 500;
            body = errorBody("InternalServerError", "peer bug: its own answer does not fit the contract");
            headers = {};
        }
    }
    rec.status = status;
    const h = { ...headers };
    let data = "";
    if (body !== null) {
        data = JSON.stringify(body);
        h["Content-Type"] = "application/json; charset=utf-8";
    }
    h["Content-Length"] = Buffer.byteLength(data);
    h["apim-request-id"] = rec.request_id;
    res.writeHead(status, h);
    res.end(data);
}

function finish(rec) {
    rec.seq = ++seq;
    rec.duration_ms = Date.now() - rec.t0;
    delete rec.t0;
    records.push(rec);
    if (records.length > MAX_RECORDS) records = records.slice(-MAX_RECORDS);
    log(rec);
}

// ---- authentication (Speech) ----------------------------------------------------

function authenticate(req) {
    const authz = req.headers.authorization;
    const key = req.headers["ocp-apim-subscription-key"];
    if (authz !== undefined) {
        const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(authz);
        if (!m) return { kind: "invalid", reason: "Authorization is not a Bearer token" };
        const b = entra.bearer(m[1]);
        return { kind: b.kind, reason: b.reason, client_id: b.clientId };
    }
    if (key !== undefined) {
        const key_id = keyId(key);
        if (safeEqual(key, KEYS.primary)) {
            return settings.revoke_primary_key
                ? { kind: "invalid", reason: "subscription key revoked (primary)", key_id }
                : { kind: "key-primary", reason: null, key_id };
        }
        if (safeEqual(key, KEYS.secondary)) {
            return settings.revoke_secondary_key
                ? { kind: "invalid", reason: "subscription key revoked (secondary)", key_id }
                : { kind: "key-secondary", reason: null, key_id };
        }
        if (retiredKeys.has(key_id))
            return { kind: "invalid", reason: `subscription key regenerated (old ${retiredKeys.get(key_id)})`, key_id };
        return { kind: "invalid", reason: "subscription key not provisioned", key_id };
    }
    return { kind: "none", reason: "no credential (Authorization or Ocp-Apim-Subscription-Key)" };
}

// The next injected status for OP, if any (consumed).
function takeInjection(op) {
    for (const inj of settings.inject) {
        if (inj.count > 0 && (inj.op === op || inj.op === "any")) {
            inj.count--;
            return inj.status;
        }
    }
    if (op === "transcribe" && settings.transcribe_status && settings.transcribe_status_count > 0) {
        settings.transcribe_status_count--;
        return settings.transcribe_status;
    }
    return 0;
}

const INJECTED_CODES = {
    400: "InvalidRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "UnprocessableEntity",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "InternalCommunicationFailed",
    503: "ServiceUnavailable",
    504: "InternalCommunicationFailed",
};

function retryHeaders(status) {
    return status === 429 || status === 503 ? { "Retry-After": String(settings.retry_after_s) } : {};
}

// ---- transcription jobs ------------------------------------------------------------

function jobUrls(id) {
    return {
        self: `${SPEECH_BASE}/transcriptions/${id}?api-version=${API_VERSION}`,
        files: `${SPEECH_BASE}/transcriptions/${id}/files?api-version=${API_VERSION}`,
    };
}

// The Transcription answer for a job (contentUrls are never returned).
function transcriptionView(job) {
    const b = contract.prune("Transcription", job.body);
    delete b.properties.durationMilliseconds;
    delete b.properties.error;
    const t = {
        self: jobUrls(job.id).self,
        links: { files: jobUrls(job.id).files },
        properties: b.properties,
        locale: b.locale,
        displayName: b.displayName,
        status: job.status,
        createdDateTime: job.created,
        lastActionDateTime: job.lastAction,
    };
    for (const k of ["description", "customProperties", "model", "dataset"]) {
        if (b[k] !== undefined) t[k] = b[k];
    }
    if (job.status === "Succeeded") t.properties.durationMilliseconds = job.durationMs;
    if (job.status === "Failed") t.properties.error = structuredClone(job.error);
    return t;
}

function jobSummary(job) {
    return {
        id: job.id,
        status: job.status,
        outcome: job.outcome,
        error: job.error,
        polls: job.polls,
        created: job.created,
        lastAction: job.lastAction,
        deleted: job.deleted,
        durationMilliseconds: job.durationMs,
        content_urls: job.urls,
        displayName: job.body.displayName,
        locale: job.body.locale,
        properties: job.body.properties,
        customProperties: job.body.customProperties ?? null,
        auth: job.auth,
    };
}

function advance(job) {
    job.polls++;
    const before = job.status;
    if (job.status === "NotStarted") job.status = "Running";
    else if (job.status === "Running" && !settings.hold_jobs) job.status = job.outcome;
    if (job.status !== before) job.lastAction = isoNow();
    if (job.status === "Succeeded" && !job.files) makeFiles(job);
    if (job.status === "Failed" && !job.files) makeFiles(job);
}

function makeFiles(job) {
    const created = isoNow();
    const files = [];
    if (job.status === "Succeeded") {
        job.urls.forEach((u, i) => {
            files.push({
                id: crypto.randomUUID(),
                name: `contenturl_${i}.json`,
                kind: "Transcription",
                created,
                content: {
                    source: u.url,
                    timestamp: created,
                    durationMilliseconds: u.duration_ms,
                    combinedRecognizedPhrases: [{ channel: 0, lexical: settings.transcript_text, display: settings.transcript_text }],
                },
            });
        });
    }
    files.push({
        id: crypto.randomUUID(),
        name: "report.json",
        kind: "TranscriptionReport",
        created,
        content: {
            successfulTranscriptionsCount: job.status === "Succeeded" ? job.urls.length : 0,
            failedTranscriptionsCount: job.status === "Succeeded" ? 0 : job.urls.length,
            details: job.urls.map((u) => ({ source: u.url, status: job.status })),
        },
    });
    job.files = files;
}

function fileView(job, f) {
    return {
        self: `${SPEECH_BASE}/transcriptions/${job.id}/files/${f.id}?api-version=${API_VERSION}`,
        name: f.name,
        kind: f.kind,
        properties: { size: Buffer.byteLength(JSON.stringify(f.content)) },
        createdDateTime: f.created,
        links: { contentUrl: `https://${CFG.speechHost}/edgecap-peer-results/${job.id}/${f.id}.json` },
    };
}

// Reads one contentUrl's blob from Azurite (with the account key, as the
// service's managed identity would) and probes it. Never records the query.
async function checkBlob(u) {
    const out = { url: urlForRecord(u), sas: false };
    const p = new URL(u);
    out.sas = p.searchParams.has("sig");
    out.host = p.hostname;
    const segs = p.pathname.split("/").slice(1);
    out.container = decodeURIComponent(segs[0] || "");
    out.blob = decodeURIComponent(segs.slice(1).join("/"));
    const tmp = path.join(CFG.tmpDir, `${crypto.randomUUID()}.ogg`);
    try {
        const blob = serviceClient().getContainerClient(out.container).getBlobClient(out.blob);
        try {
            await blob.downloadToFile(tmp);
        } catch (e) {
            out.found = false;
            out.reason = e.statusCode === 404 ? "blob not found" : `blob read failed (${e.statusCode ?? ""} ${e.code ?? e.message})`;
            return out;
        }
        fs.chmodSync(tmp, 0o600);
        out.found = true;
        out.size = fs.statSync(tmp).size;
        const a = await probe(tmp);
        out.ogg_opus = a.ogg_opus;
        if (!a.ogg_opus) {
            out.reason = `not Ogg Opus: ${a.reason}`;
            return out;
        }
        out.samples = a.samples;
        out.duration_ms = a.duration_ms;
        out.opusinfo_ms = a.opusinfo_ms;
        return out;
    } finally {
        fs.rmSync(tmp, { force: true });
    }
}

// The checks beyond the schema for a submit body; returns an Error body or null.
function submitSemantics(b) {
    if (b.properties && b.properties.destinationContainerUrl !== undefined) {
        return errorBody("InvalidArgument", "properties.destinationContainerUrl is not allowed: this Speech resource uses BYOS (bring your own storage)", {
            inner: "InvalidParameterValue",
            target: "properties.destinationContainerUrl",
        });
    }
    const sources = ["contentUrls", "contentContainerUrl", "dataset"].filter((k) => b[k] !== undefined);
    if (sources.length !== 1) {
        return errorBody("InvalidArgument", `exactly one of contentUrls, contentContainerUrl, dataset must be given (got ${sources.length})`, {
            inner: "OnlyOneOfUrlsOrContainerOrDataset",
        });
    }
    if (sources[0] !== "contentUrls") {
        return errorBody("InvalidArgument", `${sources[0]} is not supported by the edgecap peer (contentUrls only)`, {
            inner: "InvalidParameter",
            target: sources[0],
        });
    }
    if (b.contentUrls.length === 0) {
        return errorBody("InvalidArgument", "contentUrls is empty", { inner: "InvalidRecordingsUri", target: "contentUrls" });
    }
    for (let i = 0; i < b.contentUrls.length; i++) {
        let p;
        try {
            p = new URL(b.contentUrls[i]);
        } catch {
            p = null;
        }
        const why = !p
            ? "not a URL"
            : p.protocol !== "https:"
              ? "not https"
              : !CFG.blobHosts.includes(p.hostname) || p.port !== ""
                ? `host is not the storage account (${CFG.blobHosts.join(" or ")})`
                : p.pathname.split("/").filter(Boolean).length < 2
                  ? "path is not /<container>/<blob>"
                  : null;
        if (why) {
            return errorBody("InvalidArgument", `contentUrls[${i}]: ${why}`, {
                inner: "InvalidRecordingsUri",
                target: `contentUrls[${i}]`,
            });
        }
    }
    return null;
}

// Contract errors -> one 400 Error body listing them all.
function contractErrorBody(what, errors) {
    const inner = errors.find((e) => e.detailedCode)?.detailedCode ?? "InvalidPayload";
    return errorBody("InvalidRequest", `${what} does not fit the contract: ${errors.map((e) => e.message).join("; ")}`, {
        inner,
        details: errors.map((e) => {
            const d = { code: "InvalidArgument", target: e.path, message: e.message };
            if (e.detailedCode) d.innerError = { code: e.detailedCode, message: e.message };
            return d;
        }),
    });
}

async function onSubmit(req, res, rec) {
    if (!/^application\/json\s*(;|$)/i.test(req.headers["content-type"] || "")) {
        return send(res, rec, 415, errorBody("UnsupportedMediaType", "Content-Type must be application/json"), { def: "Error" });
    }
    const raw = await readBody(req, MAX_JSON_BYTES);
    let b;
    try {
        b = JSON.parse(raw.toString("utf8"));
    } catch {
        rec.schema_valid = false;
        rec.errors = ["(body): not JSON"];
        return send(res, rec, 400, errorBody("InvalidRequest", "the body is not JSON", { inner: "InvalidRequestBodyFormat" }), { def: "Error" });
    }
    const r = contract.check("Transcription", b, "request");
    rec.schema_valid = r.valid;
    rec.strict_valid = r.strictValid;
    rec.errors = r.errors.map((e) => e.message);
    rec.body = sanitizeSubmit(b);
    const errs = settings.strict ? r.errors : r.errors.filter((e) => !e.strict);
    if (errs.length) return send(res, rec, 400, contractErrorBody("the transcription", errs), { def: "Error" });
    const semantic = submitSemantics(b);
    if (semantic) {
        rec.errors.push(semantic.message.replace(/^edgecap peer: /, ""));
        return send(res, rec, 400, semantic, { def: "Error" });
    }

    const urls = [];
    for (const u of b.contentUrls) urls.push(await checkBlob(u));
    rec.content_urls = urls;
    const id = crypto.randomUUID();
    const now = isoNow();
    const job = {
        id,
        body: stripSources(b),
        urls,
        status: "NotStarted",
        created: now,
        lastAction: now,
        polls: 0,
        files: null,
        auth: rec.auth,
        durationMs: urls.reduce((s, u) => s + (u.duration_ms || 0), 0),
    };
    const bad = urls.findIndex((u) => !u.found || !u.ogg_opus);
    if (settings.fail_jobs > 0) {
        settings.fail_jobs--;
        job.outcome = "Failed";
        job.error = { code: "InvalidData", message: "edgecap peer: injected failure (fail_jobs)" };
    } else if (bad >= 0) {
        job.outcome = "Failed";
        job.error = {
            code: "InvalidData",
            message: `edgecap peer: contentUrls[${bad}] (${urls[bad].container}/${urls[bad].blob}): ${urls[bad].reason}`,
        };
    } else {
        job.outcome = "Succeeded";
    }
    jobs.set(id, job);
    rec.job_id = id;
    rec.job_outcome = job.outcome;
    if (settings.drop_submit_answers > 0) {
        // the job exists, but its 201 never reaches the device (a lost answer)
        settings.drop_submit_answers--;
        rec.status = 0;
        rec.dropped = true;
        return res.destroy(); // nginx answers 502 (upstream closed), as a gateway would
    }
    return send(res, rec, 201, transcriptionView(job), { def: "Transcription", headers: { Location: jobUrls(id).self } });
}

// The submit body as recorded: contentUrls without their query.
function sanitizeSubmit(b) {
    if (b === null || typeof b !== "object" || Array.isArray(b)) return b;
    const c = structuredClone(b);
    if (Array.isArray(c.contentUrls)) c.contentUrls = c.contentUrls.map((u) => (typeof u === "string" ? urlForRecord(u) : u));
    if (typeof c.contentContainerUrl === "string") c.contentContainerUrl = urlForRecord(c.contentContainerUrl);
    if (c.properties && typeof c.properties.destinationContainerUrl === "string") {
        c.properties.destinationContainerUrl = urlForRecord(c.properties.destinationContainerUrl);
    }
    return c;
}

function stripSources(b) {
    const c = structuredClone(b);
    delete c.contentUrls;
    delete c.contentContainerUrl;
    return c;
}

function findJob(res, rec, id) {
    const job = jobs.get(id);
    if (!job || job.deleted) {
        send(res, rec, 404, errorBody("NotFound", `no transcription ${id}`), { def: "Error" });
        return null;
    }
    rec.job_id = id;
    return job;
}

function pollHeaders(job) {
    return job.status === "NotStarted" || job.status === "Running" ? { "Retry-After": String(settings.retry_after_s) } : {};
}

function onGet(res, rec, id) {
    const job = findJob(res, rec, id);
    if (!job) return;
    advance(job);
    rec.job_status = job.status;
    send(res, rec, 200, transcriptionView(job), { def: "Transcription", headers: pollHeaders(job) });
}

// Transcriptions_List: every job, or those whose displayName equals the one
// in filter=displayName eq '...' (the only expression the device sends).
function onList(res, rec, url) {
    const filter = url.searchParams.get("filter");
    let name = null;
    if (filter !== null) {
        const m = /^displayName eq '((?:[^']|'')*)'$/.exec(filter);
        if (!m) {
            rec.schema_valid = false;
            rec.errors = [`filter: unsupported expression ${JSON.stringify(filter)}`];
            return send(res, rec, 400, errorBody("InvalidArgument", "the peer serves only filter=displayName eq '...'"), { def: "Error" });
        }
        name = m[1].replace(/''/g, "'");
    }
    rec.filter_display_name = name;
    const values = [...jobs.values()].filter((j) => !j.deleted && (name === null || j.body.displayName === name)).map(transcriptionView);
    rec.listed = values.length;
    send(res, rec, 200, { values }, { def: "PaginatedTranscriptions" });
}

function onDelete(res, rec, id) {
    const job = jobs.get(id);
    if (job) job.deleted = true;
    rec.job_id = id;
    send(res, rec, 204, null);
}

function onFiles(res, rec, id) {
    const job = findJob(res, rec, id);
    if (!job) return;
    rec.job_status = job.status;
    const values = (job.files || []).map((f) => fileView(job, f));
    send(res, rec, 200, { values }, { def: "PaginatedFiles", headers: pollHeaders(job) });
}

function onFile(res, rec, id, fileId) {
    const job = findJob(res, rec, id);
    if (!job) return;
    const f = (job.files || []).find((x) => x.id === fileId);
    if (!f) return send(res, rec, 404, errorBody("NotFound", `no file ${fileId}`), { def: "Error" });
    send(res, rec, 200, fileView(job, f), { def: "File" });
}

function onResult(res, rec, id, fileId) {
    const job = jobs.get(id);
    const f = job && !job.deleted && (job.files || []).find((x) => `${x.id}.json` === fileId);
    if (!f) return send(res, rec, 404, errorBody("NotFound", "no such result file"), { def: "Error" });
    send(res, rec, 200, f.content);
}

// ---- fast transcription: multipart/form-data (RFC 7578) ---------------------------------

// "form-data; name=\"audio\"; filename=\"x.ogg\"" -> {type, params}
function headerParams(value) {
    const semi = value.indexOf(";");
    const type = (semi < 0 ? value : value.slice(0, semi)).trim().toLowerCase();
    const params = {};
    const re = /;\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g;
    let m;
    while ((m = re.exec(value)) !== null) {
        let v = m[2].trim();
        if (v.startsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, "$1");
        params[m[1].toLowerCase()] = v;
    }
    return { type, params };
}

function parseMultipart(body, boundary) {
    const fail = (why) => {
        throw Object.assign(new Error(`malformed multipart body: ${why}`), { multipart: true });
    };
    const first = Buffer.from(`--${boundary}`);
    const delim = Buffer.from(`\r\n--${boundary}`);
    let pos;
    if (body.subarray(0, first.length).equals(first)) {
        pos = first.length;
    } else {
        const i = body.indexOf(delim);
        if (i < 0) fail("no boundary delimiter");
        pos = i + delim.length; // a preamble is allowed
    }
    const parts = [];
    for (;;) {
        if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return parts; // close delimiter
        while (body[pos] === 0x20 || body[pos] === 0x09) pos++;
        if (body[pos] !== 0x0d || body[pos + 1] !== 0x0a) fail("no CRLF after a boundary delimiter");
        pos += 2;
        let dataStart;
        let headerText = "";
        if (body[pos] === 0x0d && body[pos + 1] === 0x0a) {
            dataStart = pos + 2;
        } else {
            const end = body.indexOf("\r\n\r\n", pos);
            if (end < 0) fail("part headers not terminated by an empty line");
            headerText = body.subarray(pos, end).toString("latin1");
            dataStart = end + 4;
        }
        const headers = {};
        for (const line of headerText ? headerText.split("\r\n") : []) {
            const colon = line.indexOf(":");
            if (colon <= 0 || /^[ \t]/.test(line)) fail("bad part header line");
            const name = line.slice(0, colon).trim().toLowerCase();
            if (headers[name] !== undefined) fail(`part header ${name} repeated`);
            headers[name] = line.slice(colon + 1).trim();
        }
        const next = body.indexOf(delim, dataStart);
        if (next < 0) fail("no closing boundary delimiter");
        if (!headers["content-disposition"]) fail("part without Content-Disposition");
        const cd = headerParams(headers["content-disposition"]);
        if (cd.type !== "form-data" || !cd.params.name) fail("Content-Disposition is not form-data with a name");
        parts.push({
            name: cd.params.name,
            filename: cd.params.filename ?? null,
            contentType: headers["content-type"] ?? null,
            data: body.subarray(dataStart, next),
        });
        if (parts.length > 8) fail("more than 8 parts");
        pos = next + delim.length;
    }
}

async function onTranscribe(req, res, rec) {
    const ct = req.headers["content-type"] || "";
    const { type, params } = headerParams(ct);
    if (type !== "multipart/form-data" || !params.boundary) {
        return send(res, rec, 415, errorBody("UnsupportedMediaType", "Content-Type must be multipart/form-data with a boundary"), { def: "Error" });
    }
    const raw = await readBody(req, MAX_AUDIO_BYTES);
    const bad = (message, inner = "InvalidPayload", target) => {
        rec.errors = (rec.errors || []).concat(message);
        return send(res, rec, 400, errorBody("InvalidArgument", message, { inner, target }), { def: "Error" });
    };
    let parts;
    try {
        parts = parseMultipart(raw, params.boundary);
    } catch (e) {
        if (!e.multipart) throw e;
        rec.schema_valid = false;
        return bad(e.message, "InvalidRequestBodyFormat");
    }
    rec.parts = parts.map((p) => ({ name: p.name, filename: p.filename !== null, content_type: p.contentType, bytes: p.data.length }));
    for (const p of parts) {
        if (p.name !== "audio" && p.name !== "definition") return bad(`unknown form field "${p.name.slice(0, 40)}"`, "InvalidParameter", p.name.slice(0, 40));
        if (parts.filter((x) => x.name === p.name).length > 1) return bad(`form field "${p.name}" given more than once`, "InvalidParameter", p.name);
    }
    const audio = parts.find((p) => p.name === "audio");
    const defPart = parts.find((p) => p.name === "definition");
    let definition = null;
    if (defPart) {
        if (defPart.contentType && !/^(application\/json|text\/plain)\s*(;|$)/i.test(defPart.contentType)) {
            return bad("the definition part must be JSON (application/json)", "InvalidRequestBodyFormat", "definition");
        }
        try {
            definition = JSON.parse(defPart.data.toString("utf8"));
        } catch {
            rec.schema_valid = false;
            return bad("the definition part is not JSON", "InvalidRequestBodyFormat", "definition");
        }
        const r = contract.check("TranscribeDefinition", definition, "request");
        rec.schema_valid = r.valid;
        rec.strict_valid = r.strictValid;
        rec.definition = definition;
        const errs = settings.strict ? r.errors : r.errors.filter((e) => !e.strict);
        if (errs.length) {
            rec.errors = r.errors.map((e) => e.message);
            return send(res, rec, 400, contractErrorBody("the definition", errs), { def: "Error" });
        }
    } else {
        rec.schema_valid = true;
        rec.strict_valid = true;
    }
    if (!audio) return bad('the form field "audio" is required', "InvalidPayload", "audio");
    const at = headerParams(audio.contentType || "").type;
    rec.audio_bytes = audio.data.length;
    // the device names the part after its segment (DEVICE-SEQ.ogg): tests
    // count deliveries per segment by it
    if (audio.filename !== null) rec.audio_filename = String(audio.filename).replace(/[^A-Za-z0-9._-]/g, "?").slice(0, 120);
    rec.audio_content_type = audio.contentType;
    if (at !== "audio/ogg") return bad(`the audio part must be audio/ogg, not ${JSON.stringify(audio.contentType)}`, "InvalidPayload", "audio");
    const tmp = path.join(CFG.tmpDir, `${crypto.randomUUID()}.ogg`);
    let a;
    try {
        fs.writeFileSync(tmp, audio.data, { mode: 0o600 });
        a = await probe(tmp);
    } finally {
        fs.rmSync(tmp, { force: true });
    }
    rec.ogg_opus = a.ogg_opus;
    if (!a.ogg_opus) return bad(`the audio is not Ogg Opus: ${a.reason}`, "InvalidPayload", "audio");
    rec.samples = a.samples;
    rec.duration_ms = a.duration_ms;
    rec.opusinfo_ms = a.opusinfo_ms;

    const text = settings.transcript_text;
    const locale = definition && Array.isArray(definition.locales) && definition.locales.length ? definition.locales[0] : "en-US";
    const channels = definition && Array.isArray(definition.channels) && definition.channels.length ? definition.channels : null;
    const speaker = definition && definition.diarization && definition.diarization.enabled ? 1 : undefined;
    const result = { durationMilliseconds: a.duration_ms, combinedPhrases: [], phrases: [] };
    for (const ch of channels ?? [null]) {
        const c = ch === null ? {} : { channel: ch };
        result.combinedPhrases.push({ ...c, text });
        const phrase = { ...c, offsetMilliseconds: 0, durationMilliseconds: a.duration_ms, text, locale, confidence: 0.9 };
        if (speaker !== undefined) phrase.speaker = speaker;
        result.phrases.push(phrase);
    }
    send(res, rec, 200, result, { def: "TranscribeResult" });
}

// ---- the token endpoint --------------------------------------------------------------

async function onToken(req, res, rec, tenant) {
    const raw = await readBody(req, 64 << 10);
    const info = {};
    const ct = req.headers["content-type"] || "";
    const params = new URLSearchParams(/^application\/x-www-form-urlencoded/i.test(ct) ? raw.toString("utf8") : "");
    const r = await entra.token(tenant, ct, params, settings.token_lifetime_s, info, settings.storage_token_mode);
    // storage_token_mode_count N > 0: the mode is for the next N storage tokens
    if (info.token_mode && info.token_mode !== "valid" && settings.storage_token_mode_count > 0) {
        if (--settings.storage_token_mode_count === 0) settings.storage_token_mode = "valid";
    }
    Object.assign(rec, { tenant_ok: tenant === CFG.tenantId }, info);
    send(res, rec, r.status, r.body, { headers: { "Cache-Control": "no-store", Pragma: "no-cache" } });
}

// ---- routing ------------------------------------------------------------------------------

const UUID = "([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})";
const ROUTES = [
    ["POST", /^\/speechtotext\/transcriptions:submit$/, "submit"],
    ["GET", /^\/speechtotext\/transcriptions$/, "list"],
    ["POST", /^\/speechtotext\/transcriptions:transcribe$/, "transcribe"],
    ["GET", new RegExp(`^/speechtotext/transcriptions/${UUID}$`), "get"],
    ["DELETE", new RegExp(`^/speechtotext/transcriptions/${UUID}$`), "delete"],
    ["GET", new RegExp(`^/speechtotext/transcriptions/${UUID}/files$`), "files"],
    ["GET", new RegExp(`^/speechtotext/transcriptions/${UUID}/files/${UUID}$`), "file"],
];

async function onSpeech(req, res, rec, url) {
    let pathname;
    try {
        pathname = decodeURIComponent(url.pathname);
    } catch {
        pathname = url.pathname;
    }
    const result = new RegExp(`^/edgecap-peer-results/${UUID}/([0-9a-fA-F-]{36}\\.json)$`).exec(pathname);
    if (req.method === "GET" && result) {
        rec.op = "result";
        return onResult(res, rec, result[1], result[2]);
    }
    let route = null;
    let args = [];
    let pathKnown = false;
    for (const [method, re, op] of ROUTES) {
        const m = re.exec(pathname);
        if (!m) continue;
        pathKnown = true;
        if (method === req.method) {
            route = op;
            args = m.slice(1);
            break;
        }
    }
    rec.op = route ?? "unknown";
    const auth = authenticate(req);
    rec.auth = auth.kind;
    if (auth.reason) rec.auth_reason = auth.reason;
    if (auth.client_id) rec.token_client_id = auth.client_id;
    if (auth.key_id) rec.key_id = auth.key_id;
    const good = ["bearer", "key-primary", "key-secondary"].includes(auth.kind);
    if (!good) {
        return send(res, rec, 401, errorBody("Unauthorized", auth.reason), { def: "Error", headers: { "WWW-Authenticate": "Bearer" } });
    }
    if (settings.unauthorized_next > 0) {
        settings.unauthorized_next--;
        rec.injected = "unauthorized";
        return send(res, rec, 401, errorBody("Unauthorized", "injected 401 (unauthorized_next)"), { def: "Error", headers: { "WWW-Authenticate": "Bearer" } });
    }
    if (!route) {
        if (pathKnown) return send(res, rec, 405, errorBody("NotAllowed", `${req.method} is not allowed here`), { def: "Error" });
        return send(res, rec, 404, errorBody("NotFound", "no such operation in the contract"), { def: "Error" });
    }
    const api = url.searchParams.getAll("api-version");
    if (api.length !== 1 || api[0] !== API_VERSION) {
        rec.schema_valid = false;
        rec.errors = [`api-version must be ${API_VERSION}`];
        return send(res, rec, 400, errorBody("InvalidRequest", `the query parameter api-version must be ${API_VERSION}`, {
            inner: "InvalidParameterValue",
            target: "api-version",
        }), { def: "Error" });
    }
    const injected = takeInjection(route);
    if (injected) {
        rec.injected = `status ${injected}`;
        return send(res, rec, injected, errorBody(INJECTED_CODES[injected] ?? "InternalServerError", `injected ${injected}`), {
            def: "Error",
            headers: retryHeaders(injected),
        });
    }
    switch (route) {
        case "submit":
            return onSubmit(req, res, rec);
        case "transcribe":
            return onTranscribe(req, res, rec);
        case "list":
            return onList(res, rec, url);
        case "get":
            return onGet(res, rec, args[0].toLowerCase());
        case "delete":
            return onDelete(res, rec, args[0].toLowerCase());
        case "files":
            return onFiles(res, rec, args[0].toLowerCase());
        case "file":
            return onFile(res, rec, args[0].toLowerCase(), args[1].toLowerCase());
    }
}

async function onLogin(req, res, rec, url) {
    const m = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url.pathname);
    rec.op = m ? "token" : "unknown";
    if (!m || req.method !== "POST") {
        return send(res, rec, 404, { error: "invalid_request", error_description: "edgecap peer: only POST /{tenant}/oauth2/v2.0/token is served" });
    }
    const injected = takeInjection("token");
    if (injected) {
        rec.injected = `status ${injected}`;
        const e = { status: injected, error: "temporarily_unavailable", code: 90033, message: `injected ${injected}` };
        return send(res, rec, injected, Entra.errorBody(Object.assign(new Error(e.message), e)), { headers: retryHeaders(injected) });
    }
    return onToken(req, res, rec, decodeURIComponent(m[1]));
}

async function onService(req, res) {
    const url = new URL(req.url, "http://placeholder");
    const host = (req.headers.host || "").replace(/:\d+$/, "").toLowerCase();
    const fp = req.headers["x-edgecap-client-fp"] || null;
    const rec = {
        seq: 0,
        time: isoNow(),
        t0: Date.now(),
        request_id: crypto.randomUUID(),
        host,
        method: req.method,
        path: url.pathname,
        query: cleanQuery(url.searchParams),
        front: req.headers["x-edgecap-front"] || null,
        tls: req.headers["x-edgecap-tls"] || null,
        client_fp: fp,
        client_cert: fp === null ? null : (CFG.clientFingerprints[fp] ?? "unknown"),
        op: null,
        auth: null,
        schema_valid: null,
        errors: [],
        status: null,
    };
    try {
        if (host === CFG.speechHost) await onSpeech(req, res, rec, url);
        else if (host === CFG.loginHost) await onLogin(req, res, rec, url);
        else send(res, rec, 421, errorBody("NotFound", "this peer serves only the Speech and login hosts"), { def: "Error" });
    } catch (e) {
        if (e.tooLarge) {
            send(res, rec, 413, errorBody("InvalidRequest", e.message), { def: "Error" });
        } else {
            rec.peer_bug = [String(e.stack || e).slice(0, 500)];
            process.stderr.write(`server.js: PEER BUG: ${e.stack || e}\n`);
            if (!res.headersSent) send(res, rec, 500, errorBody("InternalServerError", "peer bug (see its log)"), { def: "Error" });
            else res.destroy();
        }
    }
    // peers.sh's own readiness probe is not recorded.
    if (req.headers["x-edgecap-peers-probe"] === undefined) finish(rec);
}

// ---- the control API ------------------------------------------------------------------------

// Compact JSON; an array has one element a line, so that a test can grep a
// record ('"op":"submit".*"status":201') as well as parse the whole.
function controlSend(res, status, body) {
    const data =
        Array.isArray(body) && body.length
            ? `[\n${body.map((x) => JSON.stringify(x)).join(",\n")}\n]\n`
            : `${JSON.stringify(body)}\n`;
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) });
    res.end(data);
}

const CONFIG_CHECKS = {
    token_lifetime_s: (v) => Number.isInteger(v) && v >= 1 && v <= 86400,
    storage_token_mode: (v) => STORAGE_MODES.includes(v),
    storage_token_mode_count: (v) => Number.isInteger(v) && v >= 0,
    retry_after_s: (v) => Number.isInteger(v) && v >= 0 && v <= 3600,
    fail_jobs: (v) => Number.isInteger(v) && v >= 0,
    drop_submit_answers: (v) => Number.isInteger(v) && v >= 0,
    revoke_primary_key: (v) => typeof v === "boolean",
    revoke_secondary_key: (v) => typeof v === "boolean",
    unauthorized_next: (v) => Number.isInteger(v) && v >= 0,
    transcribe_status: (v) => v === 0 || (Number.isInteger(v) && v >= 400 && v <= 599),
    transcribe_status_count: (v) => Number.isInteger(v) && v >= 0,
    inject: (v) =>
        (Array.isArray(v) ? v : [v]).every(
            (i) =>
                i && OPS.includes(i.op) && Number.isInteger(i.status) && i.status >= 400 && i.status <= 599 &&
                (i.count === undefined || (Number.isInteger(i.count) && i.count >= 0)),
        ),
    strict: (v) => typeof v === "boolean",
    transcript_text: (v) => typeof v === "string" && v.length > 0 && v.length <= 1000,
    // jobs stay Running while set (a test holds them across a daemon restart)
    hold_jobs: (v) => typeof v === "boolean",
};

function applyConfig(c) {
    if (c === null || typeof c !== "object" || Array.isArray(c)) return "the body must be a JSON object";
    for (const [k, v] of Object.entries(c)) {
        if (!CONFIG_CHECKS[k]) return `unknown setting ${k} (known: ${Object.keys(CONFIG_CHECKS).join(", ")})`;
        if (!CONFIG_CHECKS[k](v)) return `bad value for ${k}`;
    }
    for (const [k, v] of Object.entries(c)) {
        if (k === "inject") {
            // Appended to what is pending; an empty list clears it.
            const list = Array.isArray(v) ? v : [v];
            settings.inject = list.length ? settings.inject.concat(list.map((i) => ({ op: i.op, status: i.status, count: i.count ?? 1 }))) : [];
        } else if (k === "transcribe_status") {
            settings.transcribe_status = v;
            if (c.transcribe_status_count === undefined) settings.transcribe_status_count = 1;
        } else if (k === "storage_token_mode") {
            // without a count: every storage token from now on
            settings.storage_token_mode = v;
            if (c.storage_token_mode_count === undefined) settings.storage_token_mode_count = 0;
        } else {
            settings[k] = v;
        }
    }
    return null;
}

// A control request's JSON body, or undefined when it is not JSON.
async function controlJson(req) {
    try {
        return JSON.parse((await readBody(req, 1 << 16)).toString("utf8"));
    } catch {
        return undefined;
    }
}

async function onControl(req, res) {
    const url = new URL(req.url, "http://placeholder");
    try {
        if (req.method === "GET" && url.pathname === "/health") return controlSend(res, 200, { ok: true, pid: process.pid });
        if (req.method === "GET" && url.pathname === "/requests") {
            const op = url.searchParams.get("op");
            const since = Number(url.searchParams.get("since") ?? 0);
            const last = Number(url.searchParams.get("last") ?? 0);
            const list = records.filter((r) => (!op || r.op === op) && r.seq > since);
            return controlSend(res, 200, last > 0 ? list.slice(-last) : list);
        }
        if (req.method === "GET" && url.pathname === "/jobs") return controlSend(res, 200, [...jobs.values()].map(jobSummary));
        if (req.method === "GET" && url.pathname === "/config") return controlSend(res, 200, settings);
        if (req.method === "GET" && url.pathname === "/registration") return controlSend(res, 200, entra.registration());
        if (req.method === "POST" && url.pathname === "/config") {
            const c = await controlJson(req);
            if (c === undefined) return controlSend(res, 400, { error: "the body is not JSON" });
            const why = applyConfig(c);
            if (why) return controlSend(res, 400, { error: why });
            log({ time: isoNow(), control: "config", settings });
            return controlSend(res, 200, settings);
        }
        if (req.method === "POST" && url.pathname === "/keys/regenerate") {
            const c = await controlJson(req);
            if (c === undefined) return controlSend(res, 400, { error: "the body is not JSON" });
            const slot = c && c.slot;
            if (slot !== "primary" && slot !== "secondary") return controlSend(res, 400, { error: "slot must be primary or secondary" });
            // As Azure's "Regenerate key": a new value in the slot, the old
            // one refused from now on. The new value goes to the slot's key
            // file (0600, replaced atomically) for the test to provision.
            const value = crypto.randomBytes(16).toString("hex");
            const file = CFG.keyFiles[slot];
            const tmp = `${file}.new`;
            fs.writeFileSync(tmp, value, { mode: 0o600 });
            fs.renameSync(tmp, file);
            const retired = keyId(KEYS[slot]);
            retiredKeys.set(retired, slot);
            KEYS[slot] = value;
            const answer = { slot, key_id: keyId(value), retired_key_id: retired };
            log({ time: isoNow(), control: "regenerate_key", ...answer });
            return controlSend(res, 200, answer);
        }
        if (req.method === "POST" && url.pathname === "/reset") {
            settings = structuredClone(DEFAULTS);
            records = [];
            jobs.clear();
            log({ time: isoNow(), control: "reset" });
            return controlSend(res, 200, { ok: true });
        }
        return controlSend(res, 404, { error: `no ${req.method} ${url.pathname}` });
    } catch (e) {
        process.stderr.write(`server.js: control: ${e.stack || e}\n`);
        return controlSend(res, 500, { error: String(e.message || e) });
    }
}

// ---- start ------------------------------------------------------------------------------------

function listen(server, port, what) {
    return new Promise((resolve) => {
        server.once("error", (e) => {
            // peers.sh looks for EADDRINUSE to pick other ports.
            process.stderr.write(`server.js: ${what} 127.0.0.1:${port}: ${e.code || e.message}\n`);
            process.exit(e.code === "EADDRINUSE" ? 3 : 1);
        });
        server.listen({ host: "127.0.0.1", port, exclusive: true }, resolve);
    });
}

async function main() {
    const service = http.createServer((req, res) => onService(req, res));
    service.keepAliveTimeout = 65e3;
    const control = http.createServer((req, res) => onControl(req, res));
    await listen(service, CFG.port, "service");
    await listen(control, CFG.controlPort, "control");
    log({ time: isoNow(), start: { pid: process.pid, port: CFG.port, controlPort: CFG.controlPort } });
    process.stdout.write(`server.js: serving ${CFG.speechHost} and ${CFG.loginHost} on 127.0.0.1:${CFG.port}, control on 127.0.0.1:${CFG.controlPort}\n`);
    const stop = () => {
        service.close();
        control.close();
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((e) => {
    process.stderr.write(`server.js: ${e.stack || e}\n`);
    process.exit(1);
});
