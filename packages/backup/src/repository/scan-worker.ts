/**
 * The backup walk's scan-ahead thread (scan-ahead.ts): for each directory it is sent, it
 * lists the names (NameList: the order the walk uses) and lstat's every entry, and sends
 * back the names and their stats packed. It reads nothing else and writes nothing.
 */
import { lstatSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { NameList } from './name-list.js';
import { STAT_FIELDS, type ScanReply, type ScanRequest } from './scan-ahead.js';

function errorOf(e: unknown): { code?: string; message: string } {
  const code = (e as NodeJS.ErrnoException)?.code;
  return { ...(typeof code === 'string' ? { code } : {}), message: String((e as Error)?.message ?? e) };
}

function scan(req: ScanRequest): ScanReply {
  const dir = Buffer.from(req.dir.buffer, req.dir.byteOffset, req.dir.byteLength);
  let names: NameList;
  try {
    names = new NameList(dir);
  } catch (e) {
    return { id: req.id, error: errorOf(e) };
  }
  const n = names.length;
  let size = 0;
  for (let k = 0; k < n; k++) size += names.name(k).length;
  const bytes = new Uint8Array(size);
  const offs = new Uint32Array(n + 1);
  const stats = new BigInt64Array(n * STAT_FIELDS);
  const failed: Array<{ k: number; code?: string; message: string }> = [];
  const path = Buffer.allocUnsafe(dir.length + 1 + 256);
  dir.copy(path, 0);
  path[dir.length] = 0x2f; // '/'
  let at = 0;
  for (let k = 0; k < n; k++) {
    const name = names.name(k);
    bytes.set(name, at);
    at += name.length;
    offs[k + 1] = at;
    const p = dir.length + 1 + name.length <= path.length ? path : Buffer.allocUnsafe(dir.length + 1 + name.length);
    if (p !== path) path.copy(p, 0, 0, dir.length + 1);
    name.copy(p, dir.length + 1);
    try {
      const st = lstatSync(p.subarray(0, dir.length + 1 + name.length), { bigint: true });
      const o = k * STAT_FIELDS;
      stats[o] = st.dev;
      stats[o + 1] = st.ino;
      stats[o + 2] = st.mode;
      stats[o + 3] = st.nlink;
      stats[o + 4] = st.uid;
      stats[o + 5] = st.gid;
      stats[o + 6] = st.rdev;
      stats[o + 7] = st.size;
      stats[o + 8] = st.blocks;
      stats[o + 9] = st.mtimeNs;
      stats[o + 10] = st.ctimeNs;
    } catch (e) {
      failed.push({ k, ...errorOf(e) });
    }
  }
  return { id: req.id, bytes, offs, stats, ...(failed.length > 0 ? { failed } : {}) };
}

parentPort!.on('message', (req: ScanRequest) => {
  const reply = scan(req);
  parentPort!.postMessage(reply, reply.error ? [] : [reply.bytes!.buffer as ArrayBuffer, reply.offs!.buffer as ArrayBuffer, reply.stats!.buffer as ArrayBuffer]);
});
