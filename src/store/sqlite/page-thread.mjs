// The thread that reads replays' history pages from the SQLite file (src/store/sqlite/page-reader.ts
// starts it and explains why). Plain JavaScript, not TypeScript: a worker thread does not inherit
// the tsx loader the server runs under, and registering it again made a new thread take about
// 210 ms to start instead of 50. It opens its own read-only connection (WAL lets it read beside
// the server's writer), runs each page's statement and the bounds statements (event-bounds.ts)
// in one read transaction, and answers with the page packed as PackedPage (page-reader.ts)
// describes, its buffers transferred, not copied.
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/** @type {{ file: string, oldestSql: string, latestSql: string, statementsKept: number }} */
const { file, oldestSql, latestSql, statementsKept } = workerData;

/** The connection and its bounds statements, opened at the first page (a failure to open fails that page, and the next tries again). */
let source;

function opened() {
  if (source === undefined) {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    db.pragma("busy_timeout = 5000");
    db.defaultSafeIntegers(true);
    source = { db, oldest: db.prepare(oldestSql), latest: db.prepare(latestSql), readPage: db.transaction(readPage) };
  }
  return source;
}

/** Page statements by SQL (one per shape of filter in use), the oldest dropped past statementsKept. */
const pageStatements = new Map();

function pageStatement(sql) {
  let statement = pageStatements.get(sql);
  if (statement === undefined) {
    if (pageStatements.size >= statementsKept) pageStatements.delete(pageStatements.keys().next().value);
    statement = opened().db.prepare(sql).raw(true);
    pageStatements.set(sql, statement);
  }
  return statement;
}

/** The page's rows ([sequence, profile, operation_type, labels, data, data_form]) and the bounds statements' rows, packed. */
function pack(rows, oldestRow, latestRow) {
  const count = rows.length;
  const page = {
    sequences: new BigInt64Array(count),
    operationTypes: new Int32Array(count),
    forms: new Uint8Array(count),
    profiles: new Uint32Array(count),
    labels: new Uint32Array(count),
    dataEnds: new Uint32Array(count),
    data: new Uint8Array(rows.reduce((size, row) => size + row[4].byteLength, 0)),
    strings: [],
    oldestRow,
    latestRow,
  };
  const stringIndex = new Map();
  const intern = (text) => {
    let index = stringIndex.get(text);
    if (index === undefined) stringIndex.set(text, (index = page.strings.push(text) - 1));
    return index;
  };
  let end = 0;
  rows.forEach(([sequence, profile, operationType, labels, data, form], index) => {
    page.sequences[index] = sequence;
    page.profiles[index] = intern(profile);
    page.operationTypes[index] = Number(operationType);
    page.labels[index] = intern(labels);
    page.data.set(data, end);
    end += data.byteLength;
    page.dataEnds[index] = end;
    page.forms[index] = Number(form);
  });
  return page;
}

/** Runs in a read transaction: the page and the bounds are of one snapshot. */
function readPage(sql, values) {
  return pack(pageStatement(sql).all(...values), source.oldest.get(), source.latest.get());
}

parentPort.on("message", ({ id, sql, values }) => {
  try {
    const page = opened().readPage(sql, values);
    const buffers = [page.sequences, page.operationTypes, page.forms, page.profiles, page.labels, page.dataEnds, page.data].map((array) => array.buffer);
    parentPort.postMessage({ id, page }, buffers);
  } catch (error) {
    parentPort.postMessage({ id, error: error instanceof Error ? error.message : String(error) });
  }
});
