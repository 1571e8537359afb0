// Prints an integration's export file as rows (one per document), for comparison.
// Usage: node export.mjs FILE
import { readFileSync } from "node:fs";
import { exportRow } from "./synvoice.mjs";

const state = JSON.parse(readFileSync(process.argv[2], "utf8"));
const rows = Object.fromEntries(Object.values(state.docs).map((v) => [v.doc_id, exportRow(v)]));
console.log(JSON.stringify({ position: state.position, documents: rows }));
