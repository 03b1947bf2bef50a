/**
 * The backup walk's scan-ahead thread (scan-ahead.ts): for each directory it is sent, it
 * lists the names (NameList: the order the walk uses) and lstat's every entry, and sends
 * back the names and their stats packed. It reads nothing else and writes nothing.
 */
import { parentPort } from 'node:worker_threads';
import { scanDir, type ScanRequest } from './scan-ahead.js';

parentPort!.on('message', (req: ScanRequest) => {
  const reply = scanDir(Buffer.from(req.dir.buffer, req.dir.byteOffset, req.dir.byteLength), req.id, req.statsMax);
  const move = reply.error ? [] : [reply.bytes!.buffer as ArrayBuffer, reply.offs!.buffer as ArrayBuffer, ...(reply.stats ? [reply.stats.buffer as ArrayBuffer] : [])];
  parentPort!.postMessage(reply, move);
});
