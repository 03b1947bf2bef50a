/**
 * The SQLite store's writer thread (see sqlite.ts). It owns the only writing
 * connection: each message is one batch of compare-and-swap operations, run in one
 * transaction and committed (WAL fsync, synchronous=FULL) before the reply is posted.
 * The fsync blocks this thread, not the vault's event loop.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';

export type WriterOp =
  | { readonly kind: 'put'; readonly account: string; readonly value: Uint8Array; readonly expected: string | null }
  | { readonly kind: 'delete'; readonly account: string; readonly expected: string };

/** Per op: the new version of a put, `true` for a delete done, `null` for a CAS miss. */
export type WriterReply = { readonly id: number; readonly results: (string | true | null)[] } | { readonly id: number; readonly error: string };

const port = parentPort!;
const db = new Database((workerData as { path: string }).path);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.pragma('busy_timeout = 5000');
const insert = db.prepare<[string, Buffer, number]>('INSERT INTO records (account, value, revision) VALUES (?, ?, ?) ON CONFLICT (account) DO NOTHING');
const update = db.prepare<[Buffer, number, string, number]>('UPDATE records SET value = ?, revision = ? WHERE account = ? AND revision = ?');
const remove = db.prepare<[string, number]>('DELETE FROM records WHERE account = ? AND revision = ?');
const bump = db.prepare<[], { revision: number }>('UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision');

function apply(op: WriterOp): string | true | null {
  const expected = op.expected === null ? null : Number(op.expected);
  if (expected !== null && !Number.isSafeInteger(expected)) return null;
  if (op.kind === 'delete') return remove.run(op.account, expected!).changes === 1 ? true : null;
  const revision = bump.get()!.revision;
  const value = Buffer.from(op.value.buffer, op.value.byteOffset, op.value.byteLength);
  const changes = expected === null ? insert.run(op.account, value, revision).changes : update.run(value, revision, op.account, expected).changes;
  return changes === 1 ? String(revision) : null;
}

const commit = db.transaction((ops: WriterOp[]) => ops.map(apply));

port.on('message', (msg: { id: number; ops: WriterOp[] } | { close: true }) => {
  if ('close' in msg) {
    db.close();
    port.close();
    return;
  }
  let reply: WriterReply;
  try {
    reply = { id: msg.id, results: commit(msg.ops) };
  } catch (err) {
    reply = { id: msg.id, error: (err as Error).message };
  }
  port.postMessage(reply);
});
