// The Speech contract (contract.json) as validators, with ajv.
//
//   const contract = require("./contract");
//   const r = contract.check("Transcription", body, "request");
//   r.valid          the body fits the contract (definitions + documented limits)
//   r.strictValid    ...and has no property the contract does not name and,
//                    for a request, no readOnly property
//   r.errors         [{path, message, keyword, detailedCode?}] for both
//
// Three views of the same definitions:
//   contract   as transcribed, each definition combined (allOf) with its
//              x-edgecap-limits entries: what the upstream schema and its
//              prose allow
//   request    strict copy: every object lists its properties exhaustively
//              (additionalProperties false) and readOnly properties are left
//              out, so sending one is an error
//   response   strict copy with the readOnly properties: what the peer itself
//              sends is checked against it before it goes out
"use strict";

const fs = require("fs");
const path = require("path");
const Ajv = require("ajv");
const addFormats = require("ajv-formats");

const CONTRACT = JSON.parse(fs.readFileSync(path.join(__dirname, "contract.json"), "utf8"));

function clone(x) {
    return JSON.parse(JSON.stringify(x));
}

function refName(schema) {
    const m = schema && typeof schema.$ref === "string" && schema.$ref.match(/^#\/definitions\/(.+)$/);
    return m ? m[1] : null;
}

// True when a property schema is readOnly itself or refers to a definition
// that is readOnly as a whole (TranscriptionLinks, Status, EntityError, ...).
function isReadOnly(defs, prop) {
    if (prop.readOnly === true) return true;
    const ref = refName(prop);
    return ref !== null && defs[ref] && defs[ref].readOnly === true;
}

// The strict copy of the definitions. READONLY collects "Definition.property"
// of every property a request must not carry; STRICT_DEFS maps each strict
// definition object to its name (ajv's errors carry the schema object that
// failed, not the definition's name).
const READONLY = new Set();
const STRICT_DEFS = new WeakMap();
function strictDefinitions(mode) {
    const defs = clone(CONTRACT.definitions);
    for (const [name, def] of Object.entries(defs)) {
        STRICT_DEFS.set(def, name);
        if (!def.properties) continue;
        if (def.additionalProperties === undefined) def.additionalProperties = false;
        if (mode !== "request") continue;
        for (const [prop, schema] of Object.entries(def.properties)) {
            if (isReadOnly(CONTRACT.definitions, schema)) {
                READONLY.add(`${name}.${prop}`);
                delete def.properties[prop];
            }
        }
    }
    return defs;
}

// The transcribed definitions with their documented limits: Definition ->
// {allOf: [definition, limit schema...]}. LIMIT_CODES maps every schema
// object inside a limit to the limit's DetailedErrorCode.
const LIMIT_CODES = new WeakMap();
function markLimit(schema, code) {
    if (schema === null || typeof schema !== "object") return;
    LIMIT_CODES.set(schema, code);
    for (const v of Object.values(schema)) markLimit(v, code);
}
function limitedDefinitions() {
    const defs = clone(CONTRACT.definitions);
    const extra = new Map();
    for (const limit of clone(CONTRACT["x-edgecap-limits"])) {
        if (!defs[limit.definition]) throw new Error(`limit for unknown definition ${limit.definition}`);
        if (!extra.has(limit.definition)) extra.set(limit.definition, []);
        extra.get(limit.definition).push(limit.schema);
        markLimit(limit.schema, limit.detailedCode);
    }
    for (const [name, schemas] of extra) {
        defs[name] = { allOf: [defs[name], ...schemas] };
    }
    return defs;
}

const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, verbose: true });
addFormats(ajv);
const VIEWS = {
    contract: { $id: "contract", definitions: limitedDefinitions() },
    request: { $id: "request", definitions: strictDefinitions("request") },
    response: { $id: "response", definitions: strictDefinitions("response") },
};
for (const v of Object.values(VIEWS)) ajv.addSchema(v);

function validator(view, name) {
    const v = ajv.getSchema(`${view}#/definitions/${name}`);
    if (!v) throw new Error(`contract has no definition ${name}`);
    return v;
}

// "/properties/channels/0" -> "properties.channels[0]"
function jsonPath(instancePath) {
    if (!instancePath) return "(body)";
    let out = "";
    for (const raw of instancePath.split("/").slice(1)) {
        const seg = raw.replace(/~1/g, "/").replace(/~0/g, "~");
        out += /^[0-9]+$/.test(seg) ? `[${seg}]` : (out ? "." : "") + seg;
    }
    return out;
}

// Error messages name the place and the rule, never the offending value (a
// value could be a SAS URL or a secret sent by mistake).
function describe(e) {
    const where = jsonPath(e.instancePath);
    const p = e.params || {};
    const def = e.parentSchema ? STRICT_DEFS.get(e.parentSchema) : undefined;
    switch (e.keyword) {
        case "required":
            return `${where}: missing required property "${p.missingProperty}"`;
        case "additionalProperties":
            if (def && READONLY.has(`${def}.${p.additionalProperty}`)) {
                return `${where}: read-only property "${p.additionalProperty}" must not be sent`;
            }
            return `${where}: unknown property "${p.additionalProperty}" (not in the contract)`;
        case "type":
            return `${where}: must be of type ${p.type}`;
        case "enum":
            return `${where}: must be one of ${p.allowedValues.join(", ")}`;
        case "format":
            return `${where}: must be a valid ${p.format}`;
        default:
            return `${where}: ${e.message}`;
    }
}

function detailedCode(e) {
    return e.parentSchema ? LIMIT_CODES.get(e.parentSchema) : undefined;
}

function convert(errors) {
    const out = [];
    const seen = new Set();
    for (const e of errors || []) {
        // "if/else" adds a summary error besides the real one.
        if (e.keyword === "if") continue;
        const message = describe(e);
        if (seen.has(message)) continue;
        seen.add(message);
        const item = { path: jsonPath(e.instancePath), keyword: e.keyword, message };
        const code = detailedCode(e);
        if (code) item.detailedCode = code;
        out.push(item);
    }
    return out;
}

// MODE "request": the contract plus the strict request view; "response": the
// contract plus the strict response view.
function check(name, data, mode) {
    const base = validator("contract", name);
    const valid = base(data);
    const errors = convert(base.errors);
    const strict = validator(mode === "request" ? "request" : "response", name);
    const strictValid = strict(data);
    const have = new Set(errors.map((e) => e.message));
    const strictErrors = convert(strict.errors).filter((e) => !have.has(e.message));
    for (const e of strictErrors) e.strict = true;
    return { valid, strictValid: valid && strictValid, errors: errors.concat(strictErrors) };
}

// A copy of DATA with only what definition NAME names (recursively through
// $ref, arrays and additionalProperties): what the peer may echo back from a
// request that was accepted without the strict checks.
function prune(name, data) {
    const defs = CONTRACT.definitions;
    const walk = (schema, v) => {
        const ref = refName(schema);
        if (ref) return walk(defs[ref], v);
        if (v === null || typeof v !== "object") return v;
        if (Array.isArray(v)) return schema.items ? v.map((x) => walk(schema.items, x)) : v;
        if (schema.properties) {
            const out = {};
            for (const [k, x] of Object.entries(v)) if (schema.properties[k]) out[k] = walk(schema.properties[k], x);
            return out;
        }
        if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
            const out = {};
            for (const [k, x] of Object.entries(v)) out[k] = walk(schema.additionalProperties, x);
            return out;
        }
        return v;
    };
    return walk(defs[name], clone(data));
}

module.exports = { check, prune, CONTRACT, READONLY, jsonPath };
