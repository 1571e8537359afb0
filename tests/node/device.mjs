// A device in JavaScript: signs, pushes, gets server numbers, pulls the log.
// Usage: node device.mjs --token svd2.… --docs N   (prints a JSON summary)
import { encode } from "@msgpack/msgpack";
import { Device, ZERO_HASH, args, chainHash } from "./synvoice.mjs";

const opt = args(process.argv.slice(2));
const n = Number(opt.docs ?? 10);
const dev = await Device.open(opt.token);
const out = { device_id: dev.token.device_id };

const [status] = await dev.call("status", {});
let seen = status.head;
out.mode = status.mode;

// Create the documents unnumbered, then ask the server for their numbers.
const docs = Array.from({ length: n }, () => crypto.randomUUID());
const created = docs.map((doc, i) =>
  dev.event("document.created", doc, {
    number: 0,
    number_source: "device",
    customer: { name: `Node customer ${i}`, email: `ap${i}@node.test` },
    lines: [{ description: "Widget", quantity: String(i + 1), unit_price: "10.05", tax_rate: "19" }],
    currency: "EUR",
    issue_date: "2026-12-01",
  }, seen),
);
const [pushed] = await dev.call("push", { events: created });
if (pushed.error) throw new Error(`push refused: ${JSON.stringify(pushed.error)}`);
out.pushed = pushed.results.length;
out.positions = pushed.results.map((r) => r.position);
seen = pushed.head;

const [numbered] = await dev.call("numbers", {
  items: docs.map((doc_id) => ({ kind: "invoice", doc_id })),
});
if (numbered.error) throw new Error(`numbers refused: ${JSON.stringify(numbered.error)}`);
out.numbers = numbered.numbers;

// Edit, issue and void some of them (content edits after issue are not applied).
const later = [];
docs.forEach((doc, i) => {
  if (i % 2 === 0) {
    later.push(dev.event("document.lines_changed", doc, {
      lines: [{ description: "Widget v2", quantity: "3", unit_price: "7.333", tax_rate: "7.5" }],
    }, seen));
  }
  if (i % 3 === 0) later.push(dev.event("document.issued", doc, {}, seen));
  if (i % 3 === 0) later.push(dev.event("document.customer_changed", doc, {
    customer: { name: "too late" } }, seen));
  if (i === 1) later.push(dev.event("document.voided", doc, { reason: "test" }, seen));
});
const [again] = await dev.call("push", { events: later });
if (again.error) throw new Error(`push refused: ${JSON.stringify(again.error)}`);
out.edits = again.results.length;

// The same push again: stored once (duplicate: true), nothing new.
const [dup] = await dev.call("push", { events: later.slice(0, 2) });
out.duplicates = dup.results.filter((r) => r.duplicate).length;

// A refusal is an error map, flagged in the headers too.
const [bad, badHeaders] = await dev.call("push", {
  events: [{ ...later[0], event_id: crypto.randomUUID(), data: { lines: "nope" } }],
});
out.error_code = bad.error?.code;
out.error_header = badHeaders?.get("Nats-Service-Error-Code");

// Pull the whole log page by page, checking the hash chain.
let after = 0;
let previous = ZERO_HASH;
let chainOk = true;
const pulled = [];
for (;;) {
  const [page] = await dev.call("pull", { after, limit: 7, hashes: true });
  page.events.forEach((ev, i) => {
    if (ev.position !== after + 1 + i) chainOk = false;
    // The chain covers the stored bytes; msgpack re-encodes a decoded event to them.
    previous = chainHash(previous, encode(ev));
    if (!previous.equals(Buffer.from(page.hashes[i]))) chainOk = false;
  });
  pulled.push(...page.events);
  after += page.events.length;
  out.head = page.head;
  if (!page.more) break;
}
out.pulled = pulled.length;
out.chain_ok = chainOk;
out.assigned = pulled
  .filter((e) => e.type === "document.number_assigned" && docs.includes(e.doc_id))
  .map((e) => e.data.number);
out.docs = docs;
await dev.nc.close();
console.log(JSON.stringify(out));
