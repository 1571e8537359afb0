// An integration in JavaScript: exports every document from the stream, applying
// events in position order from a checkpoint kept in the same file as the export.
// Usage: node integration.mjs --url U --user int-N --password P --inbox-prefix _INBOX.int-N
//        --stream S (the credentials' stream)
//          --durable D --export FILE [--batch 50] [--pause-ms 0] [--ack-wait-ms 2000]
// Prints {"position": p} after each committed batch.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { decode } from "@msgpack/msgpack";
import {
  HDR_HASH, HDR_POSITION, LOG_SUBJECTS, STREAMS, ZERO_HASH, args, chainHash, connectWith, fold,
} from "./synvoice.mjs";

const opt = args(process.argv.slice(2));
const batch = Number(opt.batch ?? 50);
const pause = Number(opt["pause-ms"] ?? 0);
const ackWait = Number(opt["ack-wait-ms"] ?? 2000);
const file = opt.export;

// The checkpoint (position and hash of the last applied event) and the export, one file.
let state = { position: 0, hash: ZERO_HASH.toString("hex"), docs: {} };
if (existsSync(file)) state = JSON.parse(readFileSync(file, "utf8"));

function commit() {
  // One atomic write: the export and its checkpoint can never disagree.
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, "w");
  writeSync(fd, JSON.stringify(state));
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, file);
}

const nc = await connectWith({
  url: opt.url, user: opt.user, password: opt.password, inboxPrefix: opt["inbox-prefix"],
});
const STREAM = opt.stream;
if (!STREAMS.includes(STREAM)) throw new Error(`--stream must be one of ${STREAMS}`);
const jsm = await jetstreamManager(nc);
await jsm.consumers.add(STREAM, {
  durable_name: opt.durable,
  ack_policy: AckPolicy.Explicit,
  deliver_policy: DeliverPolicy.All,
  filter_subject: LOG_SUBJECTS,
  ack_wait: ackWait * 1_000_000, // nanoseconds
  max_ack_pending: 10 * batch,
});
const consumer = await jetstream(nc).consumers.get(STREAM, opt.durable);

const held = new Map(); // position -> message, waiting behind a hole
for (;;) {
  const msgs = await consumer.fetch({ max_messages: batch, expires: 1000 });
  for await (const m of msgs) {
    const pos = Number(m.headers?.get(HDR_POSITION));
    if (!pos) { m.ack(); continue; }
    if (pos <= state.position) m.ack(); // a redelivery of what is applied
    else held.set(pos, m);
  }
  if (pause) await new Promise((r) => setTimeout(r, pause)); // (tests: a window to crash in)
  // Apply the run of positions that extends the checkpoint; keep the rest.
  const applied = [];
  let hash = Buffer.from(state.hash, "hex");
  while (held.has(state.position + 1)) {
    const m = held.get(state.position + 1);
    held.delete(state.position + 1);
    hash = chainHash(hash, m.data);
    if (hash.toString("hex") !== m.headers.get(HDR_HASH)) {
      throw new Error(`hash chain broken at position ${state.position + 1}`);
    }
    const ev = decode(m.data);
    if (ev.doc_id) state.docs[ev.doc_id] = fold(state.docs[ev.doc_id], ev);
    state.position = ev.position;
    state.hash = hash.toString("hex");
    applied.push(m);
  }
  if (applied.length) {
    commit();
    for (const m of applied) m.ack(); // only after the commit
    await nc.flush();
    console.log(JSON.stringify({ position: state.position, held: held.size }));
  } else if (held.size) {
    console.log(JSON.stringify({ position: state.position, held: held.size }));
  }
}

