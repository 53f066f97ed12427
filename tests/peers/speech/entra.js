// The Entra ID (login.microsoftonline.com) side of the Speech peer: the v2.0
// token endpoint for the client-credentials grant with a certificate client
// assertion, checked with jose (independently of the device's mbedTLS code),
// and the bearer tokens it issued.
//
//   const entra = new Entra({tenantId, loginHost, clients: [{id, cert}], skewS, maxAssertionS});
//   await entra.token(tenant, contentType, params, lifetimeS, info, storageMode) -> {status, body}
//   entra.bearer(token) -> {kind: "bearer"|"expired"|"invalid", reason, scope}
//
// Checks, in this order; the first that fails decides the answer, and its
// reason (the text after "edgecap peer: " in error_description, and `reason`
// in the request record) names it. No reason quotes the assertion.
//   tenant            the provisioned tenant GUID                    AADSTS90002
//   content type      application/x-www-form-urlencoded              AADSTS900144
//   parameters        each at most once; grant_type, client_id, scope,
//                     client_assertion_type, client_assertion present AADSTS900144
//   grant_type        client_credentials                             AADSTS70003
//   client_id         registered                                     AADSTS700016
//   scope             https://cognitiveservices.azure.com/.default or
//                     https://storage.azure.com/.default             AADSTS70011
//   assertion type    urn:ietf:params:oauth:client-assertion-type:jwt-bearer
//                                                                    AADSTS700025
//   assertion         a compact JWS                                  AADSTS50027
//   alg               PS256 (RSA certificate) or ES256 (EC P-256)    AADSTS700027
//   typ               JWT                                            AADSTS700027
//   x5t#S256          base64url SHA-256 of the registered certificate's DER
//                                                                    AADSTS700027
//   signature         by the registered certificate's key            AADSTS700027
//   aud               exactly https://LOGIN_HOST/TENANT/oauth2/v2.0/token
//                                                                    AADSTS50012
//   iss, sub          both equal to client_id                        AADSTS700021
//   exp               present and in the future                      AADSTS700024
//   nbf, iat          not more than skewS (60 s) in the future       AADSTS700024
//   lifetime          exp - iat (or exp - nbf without iat) <= maxAssertionS (600 s)
//                                                                    AADSTS700024
//   jti               present, never seen before                     AADSTS50027
// The AADSTS numbers only resemble Entra's; tests should match the reason.
//
// Tokens are JWTs signed RS256 (as Entra signs its access tokens) by an RSA
// key made at start, with the claims Azurite's --oauth basic checks on a
// storage-scope token: aud https://storage.azure.com (exactly), iss starting
// https://sts.windows.net/ (here https://sts.windows.net/TENANT/), iat, nbf
// and exp all present, nbf <= now <= exp. Azurite does not verify the
// signature, the tenant or the scope. A storage token can be made one that
// Azurite refuses (storageMode, the control setting storage_token_mode):
//   valid      as above
//   expired    exp 60 s in the past (iat, nbf before it); expires_in in the
//              answer still says token_lifetime_s, as when a service
//              refuses a token its client still believes in
//   wrong_aud  aud https://cognitiveservices.azure.com (a Speech token)
//   wrong_iss  iss https://login.example.com/TENANT/ (not an Entra issuer)
// The peer remembers each token's SHA-256 (never the token) with its scope
// and expiry, so a token of an earlier peer process is "invalid".
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const jose = require("jose");

const ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SCOPES = {
    "https://cognitiveservices.azure.com/.default": "https://cognitiveservices.azure.com",
    "https://storage.azure.com/.default": "https://storage.azure.com",
};
const SPEECH_SCOPE = "https://cognitiveservices.azure.com/.default";
const STORAGE_SCOPE = "https://storage.azure.com/.default";
const STORAGE_MODES = ["valid", "expired", "wrong_aud", "wrong_iss"];
const PARAMS = ["grant_type", "client_id", "scope", "client_assertion_type", "client_assertion"];

function sha256(x) {
    return crypto.createHash("sha256").update(x).digest();
}

class Refusal extends Error {
    constructor(status, error, code, reason) {
        super(reason);
        this.status = status;
        this.error = error;
        this.code = code;
    }
}

class Entra {
    constructor({ tenantId, loginHost, clients, skewS = 60, maxAssertionS = 600 }) {
        this.tenantId = tenantId;
        this.loginHost = loginHost;
        this.skewS = skewS;
        this.maxAssertionS = maxAssertionS;
        this.clients = new Map();
        for (const c of clients) {
            const pem = fs.readFileSync(c.cert, "utf8");
            const x509 = new crypto.X509Certificate(pem);
            const type = x509.publicKey.asymmetricKeyType; // "ec" | "rsa"
            this.clients.set(c.id, {
                id: c.id,
                pem,
                type,
                alg: type === "ec" ? "ES256" : "PS256",
                x5tS256: sha256(x509.raw).toString("base64url"),
                subject: x509.subject.replace(/\n/g, ", "),
            });
        }
        this.jtis = new Map(); // jti -> exp (s)
        this.tokens = new Map(); // sha256(token) hex -> {scope, exp, clientId}
        this.keyPromise = jose.generateKeyPair("RS256", { modulusLength: 2048 });
    }

    endpoint(tenant) {
        return `https://${this.loginHost}/${tenant}/oauth2/v2.0/token`;
    }

    registration() {
        return {
            tenant_id: this.tenantId,
            token_endpoint: this.endpoint(this.tenantId),
            clients: [...this.clients.values()].map((c) => ({
                client_id: c.id,
                key_type: c.type,
                alg: c.alg,
                "x5t#S256": c.x5tS256,
                subject: c.subject,
            })),
        };
    }

    // Entra's error answer; `reason` goes into error_description.
    static errorBody(refusal) {
        const now = new Date();
        const trace = crypto.randomUUID();
        const correlation = crypto.randomUUID();
        const stamp = now.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
        return {
            error: refusal.error,
            error_description:
                `AADSTS${refusal.code}: edgecap peer: ${refusal.message}. ` +
                `Trace ID: ${trace} Correlation ID: ${correlation} Timestamp: ${stamp}`,
            error_codes: [refusal.code],
            timestamp: stamp,
            trace_id: trace,
            correlation_id: correlation,
            error_uri: `https://${"login.microsoftonline.com"}/error?code=${refusal.code}`,
        };
    }

    async verifyAssertion(client, assertion, tenant, info) {
        const bad = (code, reason, status = 401, error = "invalid_client") => {
            throw new Refusal(status, error, code, reason);
        };
        if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(assertion)) {
            bad(50027, "client_assertion is not a compact JWS (three base64url parts)", 400, "invalid_request");
        }
        let header;
        try {
            header = jose.decodeProtectedHeader(assertion);
        } catch {
            bad(50027, "client_assertion header is not base64url JSON", 400, "invalid_request");
        }
        info.alg = typeof header.alg === "string" ? header.alg : null;
        if (header.alg !== "PS256" && header.alg !== "ES256") {
            bad(700027, `alg ${String(header.alg ?? "(none)").slice(0, 20)} not allowed (PS256 or ES256)`);
        }
        if (header.alg !== client.alg) {
            bad(700027, `alg ${header.alg} does not fit the registered ${client.type.toUpperCase()} certificate (${client.alg})`);
        }
        if (header.typ !== "JWT") bad(700027, `typ must be JWT, not ${String(header.typ ?? "(none)").slice(0, 20)}`);
        if (typeof header["x5t#S256"] !== "string") bad(700027, "x5t#S256 missing from the header");
        info.x5t_match = header["x5t#S256"] === client.x5tS256;
        if (!info.x5t_match) {
            bad(700027, "x5t#S256 does not match the certificate registered for client_id");
        }
        const key = await jose.importX509(client.pem, client.alg);
        let payload;
        try {
            const r = await jose.compactVerify(assertion, key, { algorithms: [client.alg] });
            payload = JSON.parse(Buffer.from(r.payload).toString("utf8"));
        } catch (e) {
            if (e instanceof SyntaxError) bad(50027, "payload is not JSON", 400, "invalid_request");
            bad(700027, "signature verification failed");
        }
        if (payload === null || typeof payload !== "object") bad(50027, "payload is not a JSON object", 400, "invalid_request");
        const want = this.endpoint(tenant);
        const aud = Array.isArray(payload.aud) && payload.aud.length === 1 ? payload.aud[0] : payload.aud;
        if (aud !== want) bad(50012, `aud does not match the token endpoint ${want}`);
        if (payload.iss !== client.id) bad(700021, "iss is not the client_id");
        if (payload.sub !== client.id) bad(700021, "sub is not the client_id");
        const now = Math.floor(Date.now() / 1000);
        const num = (v) => typeof v === "number" && Number.isFinite(v);
        if (!num(payload.exp)) bad(700024, "exp missing or not a number");
        if (payload.exp <= now) bad(700024, `assertion expired (exp is ${now - payload.exp} s in the past)`);
        if (payload.nbf !== undefined && !num(payload.nbf)) bad(700024, "nbf is not a number");
        if (payload.iat !== undefined && !num(payload.iat)) bad(700024, "iat is not a number");
        if (num(payload.nbf) && payload.nbf > now + this.skewS) bad(700024, "nbf is in the future");
        if (num(payload.iat) && payload.iat > now + this.skewS) bad(700024, "iat is in the future");
        const start = num(payload.iat) ? payload.iat : payload.nbf;
        if (!num(start)) bad(700024, "neither iat nor nbf: the assertion lifetime is unknown");
        info.assertion_lifetime_s = payload.exp - start;
        if (payload.exp - start > this.maxAssertionS) {
            bad(
                700024,
                `assertion lifetime exceeds ${this.maxAssertionS} s (exp - ${num(payload.iat) ? "iat" : "nbf"} = ${payload.exp - start} s)`,
            );
        }
        if (typeof payload.jti !== "string" || payload.jti === "") bad(50027, "jti missing");
        info.jti = payload.jti.slice(0, 128);
        for (const [j, exp] of this.jtis) if (exp + this.skewS < now) this.jtis.delete(j);
        if (this.jtis.has(payload.jti)) bad(50027, "jti replayed (this assertion was already used)");
        this.jtis.set(payload.jti, payload.exp);
    }

    // PARAMS: URLSearchParams of the request body (null when the content type
    // was wrong). Returns {status, body}; INFO gets the record fields.
    // STORAGEMODE: one of STORAGE_MODES, for storage-scope tokens only.
    async token(tenant, contentType, params, lifetimeS, info, storageMode = "valid") {
        try {
            if (tenant !== this.tenantId) {
                throw new Refusal(400, "invalid_request", 90002, "tenant not found (not the provisioned tenant)");
            }
            if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(contentType || "")) {
                throw new Refusal(400, "invalid_request", 900144, "the request body must be application/x-www-form-urlencoded");
            }
            for (const name of PARAMS) {
                if (params.getAll(name).length > 1) {
                    throw new Refusal(400, "invalid_request", 900144, `parameter '${name}' given more than once`);
                }
            }
            info.grant_type = params.get("grant_type");
            info.client_id = params.get("client_id");
            info.scope = params.get("scope");
            info.client_assertion_type = params.get("client_assertion_type");
            info.client_assertion_present = params.has("client_assertion");
            if (params.has("client_secret")) info.client_secret_present = true;
            for (const name of PARAMS) {
                if (!params.get(name)) {
                    throw new Refusal(400, "invalid_request", 900144, `the request body must contain the parameter '${name}'`);
                }
            }
            if (info.grant_type !== "client_credentials") {
                throw new Refusal(400, "unsupported_grant_type", 70003, "grant_type must be client_credentials");
            }
            const client = this.clients.get(info.client_id);
            if (!client) {
                throw new Refusal(400, "unauthorized_client", 700016, "unknown client_id (no application registered)");
            }
            info.client_key_type = client.type;
            if (!SCOPES[info.scope]) {
                throw new Refusal(400, "invalid_scope", 70011, "invalid scope (want https://cognitiveservices.azure.com/.default or https://storage.azure.com/.default)");
            }
            if (info.client_assertion_type !== ASSERTION_TYPE) {
                throw new Refusal(400, "invalid_request", 700025, `client_assertion_type must be ${ASSERTION_TYPE}`);
            }
            await this.verifyAssertion(client, params.get("client_assertion"), tenant, info);
            const mode = info.scope === STORAGE_SCOPE ? storageMode : "valid";
            const token = await this.issue(client, info.scope, lifetimeS, mode);
            info.result = "issued";
            if (info.scope === STORAGE_SCOPE) info.token_mode = mode;
            info.expires_in = lifetimeS;
            return {
                status: 200,
                body: { token_type: "Bearer", expires_in: lifetimeS, ext_expires_in: lifetimeS, access_token: token },
            };
        } catch (e) {
            if (!(e instanceof Refusal)) throw e;
            info.result = "refused";
            info.reason = e.message;
            info.error = e.error;
            info.error_code = e.code;
            return { status: e.status, body: Entra.errorBody(e) };
        }
    }

    async issue(client, scope, lifetimeS, mode = "valid") {
        const { privateKey } = await this.keyPromise;
        const now = Math.floor(Date.now() / 1000);
        // expired: it lapsed a minute ago, after a lifetime of lifetimeS
        const exp = mode === "expired" ? now - 60 : now + lifetimeS;
        const iat = exp - lifetimeS;
        const aud = mode === "wrong_aud" ? SCOPES[SPEECH_SCOPE] : SCOPES[scope];
        const iss = mode === "wrong_iss" ? `https://login.example.com/${this.tenantId}/` : `https://sts.windows.net/${this.tenantId}/`;
        const token = await new jose.SignJWT({
            appid: client.id,
            azp: client.id,
            tid: this.tenantId,
            oid: client.id,
            idtyp: "app",
            ver: "1.0",
        })
            .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: "edgecap-peer" })
            .setAudience(aud)
            .setIssuer(iss)
            .setSubject(client.id)
            .setIssuedAt(iat)
            .setNotBefore(iat - 5)
            .setExpirationTime(exp)
            .setJti(crypto.randomUUID())
            .sign(privateKey);
        this.tokens.set(sha256(token).toString("hex"), { scope, exp, clientId: client.id });
        return token;
    }

    // A bearer token presented to the Speech host.
    bearer(token) {
        const t = this.tokens.get(sha256(token).toString("hex"));
        if (!t) return { kind: "invalid", reason: "bearer token not issued by this peer (or by an earlier peer process)" };
        if (t.exp <= Date.now() / 1000) return { kind: "expired", reason: "bearer token expired", clientId: t.clientId };
        if (t.scope !== SPEECH_SCOPE) {
            return { kind: "invalid", reason: `bearer token is for ${t.scope}, not ${SPEECH_SCOPE}`, clientId: t.clientId };
        }
        return { kind: "bearer", reason: null, clientId: t.clientId };
    }
}

module.exports = { Entra, ASSERTION_TYPE, SPEECH_SCOPE, STORAGE_SCOPE, STORAGE_MODES };
