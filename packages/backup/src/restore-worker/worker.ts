/**
 * Worker thread of restore (issue 13): opens packs. The main thread reads a pack's
 * sealed bytes from storage and hands them over piece by piece (transferred, not
 * copied); here each segment is authenticated and decrypted (spec §5.3), the blobs the
 * restore needs are cut out of the plaintext, decompressed (§7.2) and checked against
 * their IDs (§6.2: HMAC-SHA256 of the plaintext), and every blob completed by a piece
 * goes back in one message with one transferred buffer. The main thread only writes.
 *
 * Nothing unverified leaves this thread: a blob whose bytes do not hash to its ID, a
 * segment that fails authentication or a blob that does not decompress ends the job
 * with a `fail` message instead of data.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { ObjectKind, ObjectOpener } from '../crypto/sealed-object.js';
import { CofferError, DecryptionError } from '../errors.js';
import { hex } from '../repository/blob.js';
import { decompressBlob } from '../repository/compress.js';

export interface RestoreWorkerSetup {
  objectMaster: Uint8Array;
  chunkIdKey: Uint8Array;
  /** Tests only: misbehave after the first reply ('exit': the thread dies; 'garbage': a malformed message). */
  faultForTesting?: 'exit' | 'garbage';
}

/** The blobs of one pack the restore needs, in pack order (columns; `ids`: 32 bytes each). */
export interface PackBlobs {
  offset: Float64Array;
  storedLength: Float64Array;
  rawLength: Float64Array;
  flags: Uint8Array;
  ids: Uint8Array;
}

export type ToRestoreWorker =
  | { t: 'open'; job: number; name: string; packId: Uint8Array; blobs: PackBlobs }
  | { t: 'piece'; job: number; data: Uint8Array }
  | { t: 'end'; job: number }
  | { t: 'drop'; job: number };

export type FromRestoreWorker =
  /**
   * `consumed`: sealed bytes of this job's pieces now done with (the piece this answers);
   * blobs first..first+count-1 of the job, their raw bytes back to back in `data`;
   * `done`: the pack ended and authenticated (the answer to `end`).
   */
  | { t: 'blobs'; job: number; consumed: number; first: number; count: number; data: Uint8Array; done: boolean }
  /** `decrypt`: a segment failed authentication; `error`: a CofferError (`code`, `message`: whole, naming the pack). */
  | { t: 'fail'; job: number; kind: 'decrypt' | 'error'; code: string; message: string };

interface Job {
  name: string;
  blobs: PackBlobs;
  opener: ObjectOpener;
  /** The first blob not yet complete; plaintext offset of the next segment. */
  next: number;
  plainPos: number;
  current: Buffer | undefined;
  /** Pieces are handled strictly in order (decompression is asynchronous). */
  chain: Promise<void>;
  failed: boolean;
}

if (parentPort) {
  const port = parentPort;
  const setup = workerData as RestoreWorkerSetup;
  const jobs = new Map<number, Job>();
  let replies = 0;

  const chunkId = (raw: Uint8Array) => createHmac('sha256', setup.chunkIdKey).update(raw).digest();

  /** Cuts the blobs out of authenticated segments; returns the numbers of those completed (with their stored bytes). */
  const feed = (job: Job, segs: Buffer[], done: Array<{ i: number; stored: Buffer }>) => {
    const b = job.blobs;
    for (const seg of segs) {
      const segEnd = job.plainPos + seg.length;
      while (job.next < b.offset.length) {
        const i = job.next;
        const off = b.offset[i]!;
        const end = off + b.storedLength[i]!;
        if (off >= segEnd) break;
        job.current ??= Buffer.allocUnsafe(b.storedLength[i]!);
        const from = Math.max(off, job.plainPos);
        const to = Math.min(end, segEnd);
        seg.copy(job.current, from - off, from - job.plainPos, to - job.plainPos);
        if (to < end) break;
        done.push({ i, stored: job.current });
        job.current = undefined;
        job.next++;
      }
      job.plainPos = segEnd;
    }
  };

  /** Decompresses and verifies the completed blobs, and sends them in one buffer. */
  const deliver = async (id: number, job: Job, done: Array<{ i: number; stored: Buffer }>, consumed: number, last: boolean) => {
    const b = job.blobs;
    const raws = await Promise.all(done.map(({ i, stored }) => decompressBlob(stored, b.flags[i]!, b.rawLength[i]!, `${job.name} (blob at ${b.offset[i]!})`)));
    let total = 0;
    for (let k = 0; k < done.length; k++) {
      const i = done[k]!.i;
      const want = b.ids.subarray(i * 32, i * 32 + 32);
      // Spec §6.2: a blob is what its ID says, or it is not restored. The pack
      // authenticated, but an index pointing at the wrong blob would otherwise restore
      // the wrong bytes.
      if (!timingSafeEqual(chunkId(raws[k]!), want)) {
        throw new CofferError('corrupt', `${job.name}: the blob at ${b.offset[i]!} does not match its ID: it is not ${hex(Buffer.from(want)).slice(0, 16)}, which the index places there`);
      }
      total += raws[k]!.length;
    }
    const data = new Uint8Array(total);
    let at = 0;
    for (const r of raws) {
      data.set(r, at);
      at += r.length;
    }
    if (setup.faultForTesting === 'garbage' && replies > 0) {
      port.postMessage({ t: 'blobs', job: id, consumed, first: (done[0]?.i ?? 0) + 7, count: done.length + 1, data: 'not bytes', done: last });
      return;
    }
    const msg: FromRestoreWorker = { t: 'blobs', job: id, consumed, first: done[0]?.i ?? job.next, count: done.length, data, done: last };
    port.postMessage(msg, [data.buffer]);
    if (setup.faultForTesting === 'exit' && replies > 0) process.exit(70);
    replies++;
  };

  const fail = (id: number, job: Job, e: unknown) => {
    job.failed = true;
    jobs.delete(id);
    if (e instanceof DecryptionError) port.postMessage({ t: 'fail', job: id, kind: 'decrypt', code: 'corrupt', message: '' } satisfies FromRestoreWorker);
    else if (e instanceof CofferError) port.postMessage({ t: 'fail', job: id, kind: 'error', code: e.code, message: e.message } satisfies FromRestoreWorker);
    else throw e;
  };

  port.on('message', (m: ToRestoreWorker) => {
    if (m.t === 'open') {
      jobs.set(m.job, {
        name: m.name,
        blobs: m.blobs,
        opener: new ObjectOpener(setup.objectMaster, { kind: ObjectKind.Pack, id: m.packId }),
        next: 0,
        plainPos: 0,
        current: undefined,
        chain: Promise.resolve(),
        failed: false,
      });
      return;
    }
    if (m.t === 'drop') {
      jobs.delete(m.job);
      return;
    }
    const job = jobs.get(m.job);
    if (!job) return; // dropped, or failed already
    job.chain = job.chain.then(async () => {
      if (job.failed) return;
      try {
        const done: Array<{ i: number; stored: Buffer }> = [];
        /** The header's errors name no object: say which pack. */
        const open = (f: () => Buffer[]) => {
          try {
            return f();
          } catch (e) {
            if (CofferError.is(e, 'corrupt')) throw new CofferError('corrupt', `${job.name}: ${e.message}`);
            throw e;
          }
        };
        if (m.t === 'piece') {
          feed(job, open(() => job.opener.update(m.data)), done);
          await deliver(m.job, job, done, m.data.length, false);
        } else {
          feed(job, open(() => job.opener.final()), done);
          if (job.next < job.blobs.offset.length) throw new CofferError('corrupt', `${job.name}: index points outside the pack`);
          jobs.delete(m.job);
          await deliver(m.job, job, done, 0, true);
        }
      } catch (e) {
        fail(m.job, job, e);
      }
    });
  });
}
