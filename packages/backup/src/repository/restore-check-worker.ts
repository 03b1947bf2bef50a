/**
 * The restore's blob-check thread (restore-check.ts): unpads, decompresses and checks
 * each stored blob it is sent against its ID, and writes the raw bytes into the open
 * file it is given (or hands them back), or says why the blob was refused or not
 * written. It touches no other file, and none by name.
 */
import { createSecretKey } from 'node:crypto';
import { writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { checkStoredBlob, dataRuns, type CheckAnswer, type CheckRequest } from './restore-check.js';
import { errorInfo } from './restore-writer.js';

const port = parentPort!;
const chunkIdKey = createSecretKey((workerData as { chunkIdKey: Uint8Array }).chunkIdKey);
/** Where compressed blobs that are written here are decompressed (grown to the largest). */
let scratch = Buffer.allocUnsafe(0);

port.on('message', (r: CheckRequest) => {
  let answer: CheckAnswer;
  try {
    const stored = Buffer.from(r.bytes, 0, r.length);
    if (r.fd !== undefined) {
      // Written here and dropped: decompressed into the thread's one scratch buffer, and
      // the stored bytes' buffer goes back for the next blob (restore-check.ts).
      if (scratch.length < r.rawLength) scratch = Buffer.allocUnsafe(r.rawLength);
      const raw = checkStoredBlob(stored, r.flags, r.rawLength, Buffer.from(r.id), chunkIdKey, scratch);
      const pos = r.pos ?? 0;
      for (const [from, to] of dataRuns(raw, pos, r.sparse === true)) {
        for (let w = from; w < to; ) w += writeSync(r.fd, raw, w, to - w, pos + w);
      }
      port.postMessage({ seq: r.seq, spare: r.bytes } satisfies CheckAnswer, [r.bytes]);
      return;
    }
    const raw = checkStoredBlob(stored, r.flags, r.rawLength, Buffer.from(r.id), chunkIdKey);
    // Its buffer is either the one sent (a view of it once unpadded) or zstd's output of
    // the raw length (128 KiB or more, never Buffer's shared pool): handed back whole.
    const bytes = raw.buffer.byteLength > Buffer.poolSize ? (raw.buffer as ArrayBuffer) : new Uint8Array(raw).buffer;
    answer = { seq: r.seq, bytes, offset: bytes === raw.buffer ? raw.byteOffset : 0, length: raw.length };
    port.postMessage(answer, [bytes]);
  } catch (e) {
    answer = { seq: r.seq, error: errorInfo(e) };
    port.postMessage(answer);
  }
});
