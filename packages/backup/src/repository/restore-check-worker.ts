/**
 * The restore's blob-check thread (restore-check.ts): unpads, decompresses and checks
 * each stored blob it is sent against its ID, and hands back the raw bytes, or keeps
 * them until told which open file they go into (and writes them there), or says why the
 * blob was refused or not written. It touches no other file, and none by name.
 */
import { writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { chunkIdKeyOf, type ChunkIdKeySpec } from '../crypto/repository-keys.js';
import { BLOB_COMPRESSED } from './blob.js';
import { checkStoredBlob, dataRuns, type CheckAnswer, type CheckRequest } from './restore-check.js';
import { errorInfo } from './restore-writer.js';

const port = parentPort!;
const chunkIdKey = chunkIdKeyOf((workerData as { chunkIdKey: ChunkIdKeySpec }).chunkIdKey);

/** Blobs checked and kept until written: the raw bytes, and the buffer to hand back once they are. */
const held = new Map<number, { raw: Buffer; spare?: ArrayBuffer; scratch?: Buffer }>();
/**
 * Buffers compressed held blobs were decompressed into, kept for the next ones (at most
 * SCRATCH_KEPT_BYTES): a new one each time was freed only at this thread's next garbage
 * collection, seldom in a thread that allocates little else (the chat set's restore
 * peaked 20-30 MiB higher; handed to the main thread instead, higher still).
 */
const scratches: Buffer[] = [];
let scratchBytes = 0;
const SCRATCH_KEPT_BYTES = 16 * 1024 * 1024;
const SCRATCH_STEP = 256 * 1024;

function scratchFor(n: number): Buffer {
  // The smallest kept buffer that fits; a new one is made in steps of 256 KiB, so that it
  // fits most later blobs too.
  let best = -1;
  for (let i = 0; i < scratches.length; i++) if (scratches[i]!.length >= n && (best < 0 || scratches[i]!.length < scratches[best]!.length)) best = i;
  if (best < 0) return Buffer.allocUnsafeSlow(Math.ceil(n / SCRATCH_STEP) * SCRATCH_STEP);
  const b = scratches.splice(best, 1)[0]!;
  scratchBytes -= b.length;
  return b;
}

function keepScratch(b: Buffer | undefined): void {
  if (!b || scratchBytes + b.length > SCRATCH_KEPT_BYTES) return;
  scratches.push(b);
  scratchBytes += b.length;
}

port.on('message', (r: CheckRequest) => {
  if (r.kind === 'drop') {
    keepScratch(held.get(r.held)?.scratch);
    held.delete(r.held);
    return;
  }
  let answer: CheckAnswer;
  try {
    if (r.kind === 'write') {
      const h = held.get(r.held);
      if (!h) throw new Error(`no blob held as ${r.held}`);
      held.delete(r.held);
      for (const [from, to] of dataRuns(h.raw, r.pos, r.sparse)) {
        for (let w = from; w < to; ) w += writeSync(r.fd, h.raw, w, to - w, r.pos + w);
      }
      keepScratch(h.scratch);
      if (h.spare) port.postMessage({ seq: r.seq, spare: h.spare } satisfies CheckAnswer, [h.spare]);
      else port.postMessage({ seq: r.seq } satisfies CheckAnswer);
      return;
    }
    const stored = Buffer.from(r.bytes, 0, r.length);
    if (r.hold) {
      const scratch = (r.flags & BLOB_COMPRESSED) !== 0 ? scratchFor(r.rawLength) : undefined;
      let raw: Buffer;
      try {
        raw = checkStoredBlob(stored, r.flags, r.rawLength, Buffer.from(r.id), chunkIdKey, scratch);
      } catch (e) {
        keepScratch(scratch);
        throw e;
      }
      // Raw bytes in the stored buffer (not compressed): it goes back once they are
      // written; decompressed into the scratch buffer: it goes back now.
      if (!scratch) {
        held.set(r.seq, { raw, spare: r.bytes });
        port.postMessage({ seq: r.seq } satisfies CheckAnswer);
      } else {
        held.set(r.seq, { raw, scratch });
        port.postMessage({ seq: r.seq, spare: r.bytes } satisfies CheckAnswer, [r.bytes]);
      }
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
