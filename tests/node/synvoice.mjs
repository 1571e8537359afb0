// A Synvoice client in JavaScript, written from the wire spec (engine/asyncapi.json)
// and the README's Integrator's guide only: subject names, header names, the token
// format and the signing rule are read from the spec file.
import { createHash, createHmac, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect, headers } from "@nats-io/transport-node";
import { decode, encode } from "@msgpack/msgpack";

const SPEC_FILE = new URL("../../engine/asyncapi.json", import.meta.url);
export const spec = JSON.parse(readFileSync(SPEC_FILE, "utf8"));
const schemas = spec.components.schemas;

export const subjects = Object.fromEntries(
  Object.entries(spec.channels)
    .filter(([, ch]) => typeof ch.address === "string")
    .map(([name, ch]) => [name, ch.address]),
);
// [device, time, nonce, signature] header names, in the order the signing rule gives them.
export const [HDR_DEVICE, HDR_TIME, HDR_NONCE, HDR_SIG] = spec["x-synvoice-signing"].headers;
export const [HDR_MSG_ID, HDR_POSITION, HDR_HASH] = schemas.StreamHeaders.required;
// The streams an integration may be told to read (its credentials name one).
export const STREAMS = schemas.IntegrationCredentials.properties.stream.enum;
export const LOG_SUBJECTS = schemas.IntegrationCredentials.properties.subjects.const;

/** The fields of an enrollment token (EnrollmentTokenV2). */
export function parseToken(token) {
  const prefix = spec["x-synvoice-token"].current;
  if (!token.startsWith(prefix)) throw new Error(`not a ${prefix} token`);
  const fields = decode(Buffer.from(token.slice(prefix.length), "base64url"));
  for (const key of schemas.EnrollmentTokenV2.required) {
    if (!(key in fields)) throw new Error(`token without ${key}`);
  }
  return fields;
}

export async function connectWith({ url, user, password, inboxPrefix }) {
  const opts = { servers: url.split(","), inboxPrefix };
  if (user) Object.assign(opts, { user, pass: password });
  return connect(opts);
}

/** The signing rule: hex HMAC-SHA256(secret, subject \n time \n nonce \n body). */
export function sign(deviceId, secret, subject, body) {
  const time = String(Math.floor(Date.now() / 1000));
  const nonce = randomBytes(16).toString("hex"); // random per request
  const mac = createHmac("sha256", secret);
  mac.update(`${subject}\n${time}\n${nonce}\n`);
  mac.update(body);
  const h = headers();
  h.set(HDR_DEVICE, deviceId);
  h.set(HDR_TIME, time);
  h.set(HDR_NONCE, nonce);
  h.set(HDR_SIG, mac.digest("hex"));
  return h;
}

export class Device {
  constructor(nc, token) {
    this.nc = nc;
    this.token = token;
    this.seq = 0;
  }

  static async open(tokenText) {
    const t = parseToken(tokenText);
    const nc = await connectWith({
      url: t.url,
      user: t.broker_user,
      password: t.broker_password,
      inboxPrefix: t.inbox_prefix,
    });
    return new Device(nc, t);
  }

  /** A signed request; returns [reply map, reply headers]. */
  async call(channel, payload) {
    const subject = subjects[channel];
    const body = encode(payload);
    const msg = await this.nc.request(subject, body, {
      timeout: 10000,
      headers: sign(this.token.device_id, this.token.secret, subject, body),
    });
    return [decode(msg.data), msg.headers];
  }

  event(type, docId, data, seen) {
    this.seq += 1;
    return {
      event_id: crypto.randomUUID(),
      type,
      schema_version: type === "document.created" ? 2 : 1,
      doc_id: docId,
      kind: "invoice",
      device_id: this.token.device_id,
      user: this.token.user,
      device_seq: this.seq,
      device_time: new Date().toISOString(),
      seen_position: seen,
      data,
    };
  }
}

// --- the hash chain: hash = sha256(previous hash || stored body) ---------------------
export const ZERO_HASH = Buffer.alloc(32);

export function chainHash(previous, body) {
  return createHash("sha256").update(previous).update(body).digest();
}

// --- decimals and totals (README: totals and rounding) -------------------------------
const SCALE = 18n;

function parseDecimal(text) {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(String(text));
  if (!m) throw new Error(`not a decimal: ${text}`);
  const digits = (m[2] || "0") + (m[3] || "");
  const exp = BigInt(m[4] || 0) - BigInt((m[3] || "").length);
  let v = BigInt(digits) * 10n ** SCALE;
  v = exp >= 0n ? v * 10n ** exp : v / 10n ** -exp; // exact for the values events carry
  return m[1] === "-" ? -v : v;
}

function mul(a, b) {
  return (a * b) / 10n ** SCALE;
}

function cents(v) {
  // round half to even, to 0.01
  const unit = 10n ** (SCALE - 2n);
  let q = v / unit;
  const r = v - q * unit;
  const twice = 2n * (r < 0n ? -r : r);
  if (twice > unit || (twice === unit && q % 2n !== 0n)) q += r < 0n ? -1n : 1n;
  return q;
}

function centsText(c) {
  const neg = c < 0n;
  const a = neg ? -c : c;
  return `${neg ? "-" : ""}${a / 100n}.${String(a % 100n).padStart(2, "0")}`;
}

/** [net, tax, total] as decimal strings: net = sum(quantity * unit_price), tax =
 * sum(net of line * tax_rate / 100), each rounded half-even to cents; total = net + tax. */
export function totals(lines) {
  let net = 0n;
  let tax = 0n;
  for (const ln of lines) {
    const n = mul(parseDecimal(ln.quantity), parseDecimal(ln.unit_price));
    net += n;
    tax += mul(n, parseDecimal(ln.tax_rate ?? "0")) / 100n;
  }
  const netC = cents(net);
  const taxC = cents(tax);
  return [centsText(netC), centsText(taxC), centsText(netC + taxC)];
}

// --- the document fold (README: merge rule, conversion and status) -------------------
export function fold(view, ev) {
  const v = view ?? {
    doc_id: ev.doc_id,
    kind: ev.kind,
    number: 0,
    number_source: "device",
    customer: null,
    lines: [],
    currency: "USD",
    issue_date: null,
    due_date: null,
    status: "draft",
    converted_from: null,
    converted_to: null,
    void_reason: null,
    events: 0,
    last_position: 0,
    numbered: false,
  };
  const d = ev.data;
  const locked = v.status === "issued" || v.status === "void";
  v.events += 1;
  v.last_position = Math.max(v.last_position, ev.position);
  switch (ev.type) {
    case "document.created":
      v.kind = ev.kind;
      if (d.number || !v.numbered) {
        v.number = d.number ?? 0;
        v.number_source = d.number_source ?? "device";
        v.numbered = true;
      }
      v.customer = d.customer ?? null;
      v.lines = d.lines ?? [];
      v.currency = d.currency ?? "USD";
      v.issue_date = d.issue_date ?? null;
      v.due_date = d.due_date ?? null;
      v.converted_from = d.converted_from ?? null;
      break;
    case "document.lines_changed":
      if (!locked) v.lines = d.lines;
      break;
    case "document.customer_changed":
      if (!locked) v.customer = d.customer;
      break;
    case "document.dates_changed":
      if (!locked) {
        v.issue_date = d.issue_date ?? null;
        v.due_date = d.due_date ?? null;
      }
      break;
    case "document.number_assigned":
      v.number = d.number;
      v.number_source = d.source;
      v.numbered = true;
      break;
    case "document.issued":
      if (v.status === "draft") v.status = "issued";
      break;
    case "document.voided":
      v.status = "void";
      v.void_reason = d.reason ?? null;
      break;
    case "document.converted":
      v.converted_to = d.invoice_id;
      if (v.status === "draft") v.status = "converted";
      break;
    default:
      break;
  }
  return v;
}

export function exportRow(v) {
  const [net, tax, total] = totals(v.lines);
  return {
    doc_id: v.doc_id,
    kind: v.kind,
    number: v.number,
    number_source: v.number_source,
    status: v.status,
    customer: v.customer ? v.customer.name : null,
    currency: v.currency,
    net,
    tax,
    total,
    issue_date: v.issue_date,
    due_date: v.due_date,
    converted_from: v.converted_from,
    converted_to: v.converted_to,
    void_reason: v.void_reason,
    events: v.events,
    last_position: v.last_position,
  };
}

export function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  return out;
}
