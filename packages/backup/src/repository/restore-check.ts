/**
 * Restore's blob-check thread (issue 13): a large blob (128 KiB or more raw) is unpadded,
 * decompressed and checked against its ID (HMAC-SHA256 under the chunk-ID key, spec
 * §6.2) on a worker thread, while the main thread goes on reading and decrypting the
 * next piece of the pack. The stored bytes are handed over (transferred, not copied).
 * A blob used once stays on the thread once it passed (hold) and is written there into
 * its file when the file's turn comes (writeHeld: the main thread opens the file and
 * passes the descriptor); one used more than once comes back (check) and the main
 * thread writes it everywhere it is used.
 *
 * Before, the main thread decompressed each large blob itself and had WebCrypto hash it
 * on the thread pool, which copies its input first: on the 1 GiB chat set those two were
 * ~0.3 s of the main thread, the restore's critical path.
 *
 * The thread starts with the first large blob, so a restore without one pays nothing for
 * it. A blob that fails its checks is refused with a CORRUPT_BLOB error (the main thread
 * says where, in the same words as its own checks); nothing of it is written or returned.
 */
import { Worker } from 'node:worker_threads';
import { chunkIdUnder, type ChunkIdKey, type ChunkIdKeySpec } from '../crypto/repository-keys.js';
import { CofferError } from '../errors.js';
import { allZero } from '../zeros.js';
import { decompressBlobHere } from './compress.js';
import { BLOB_NOT_ITS_ID, CORRUPT_BLOB, rebuildError, type ErrorInfo } from './restore-writer.js';

/** What a failed check is called before the main thread says where (decompressBlob's `WHERE: ` is cut off). */
const WHERE = 'blob';

/**
 * A stored blob's raw bytes once they pass its checks (unpadding, decompression, length,
 * ID); throws an error with code CORRUPT_BLOB otherwise. Used on worker threads: the
 * writer threads' small whole files and this module's thread. A compressed blob is
 * decompressed into `into` when given and large enough.
 */
export function checkStoredBlob(stored: Buffer, flags: number, rawLength: number, id: Uint8Array, chunkIdKey: ChunkIdKey | undefined, into?: Buffer): Buffer {
  let raw: Buffer;
  try {
    raw = decompressBlobHere(stored, flags, rawLength, WHERE, into);
  } catch (e) {
    const m = e instanceof CofferError ? e.message : String(e);
    throw Object.assign(new Error(m.startsWith(`${WHERE}: `) ? m.slice(WHERE.length + 2) : m), { code: CORRUPT_BLOB });
  }
  if (!chunkIdKey) throw Object.assign(new Error('no chunk-ID key to check the blob with'), { code: CORRUPT_BLOB });
  if (!chunkIdUnder(chunkIdKey, raw).equals(id)) throw Object.assign(new Error(BLOB_NOT_ITS_ID), { code: CORRUPT_BLOB });
  return raw;
}

/**
 * To the thread. `check`: a stored blob, its bytes in an ArrayBuffer of their own
 * (transferred), to check; its raw bytes come back, or with `hold` stay on the thread
 * under the request's number. `write`: the held blob `held` written at `pos` of the open
 * file `fd` (zero blocks skipped if `sparse`), then dropped. `drop`: dropped unwritten.
 */
export type CheckRequest =
  | { kind: 'check'; seq: number; bytes: ArrayBuffer; length: number; flags: number; rawLength: number; id: Uint8Array; hold: boolean }
  | { kind: 'write'; seq: number; held: number; fd: number; pos: number; sparse: boolean }
  | { kind: 'drop'; held: number };

/**
 * From the thread: the raw bytes (`bytes`, from `offset`, `length` long), or nothing (a
 * blob held, or written), with a stored blob's buffer handed back as `spare` once the
 * thread is done with it; or why the blob was refused or not written.
 */
export interface CheckAnswer {
  seq: number;
  spare?: ArrayBuffer;
  bytes?: ArrayBuffer;
  offset?: number;
  length?: number;
  error?: ErrorInfo;
}

interface Waiting {
  resolve: (raw: Buffer | undefined) => void;
  reject: (e: Error) => void;
}

/** Buffers for stored blobs are made in multiples of this, so that one handed back fits most later blobs. */
const SPARE_STEP = 256 * 1024;
/** At most this many bytes of buffers handed back are kept for later blobs. */
const SPARES_KEPT_BYTES = 8 * 1024 * 1024;

export class BlobCheckThread {
  readonly #chunkIdKey: ChunkIdKeySpec;
  /**
   * Buffers the thread handed back, for the next blobs' stored bytes: a buffer handed
   * over is freed only at the next garbage collection of the thread holding it, which
   * for a thread that allocates little is seldom, and the chat set's restore peaked at
   * 1.4 times the memory with a new buffer per blob.
   */
  readonly #spares: ArrayBuffer[] = [];
  #sparesBytes = 0;
  /** The buffers buffer() gave out (only those, and buffers wholly a blob's, are handed over whole). */
  readonly #ours = new WeakSet<ArrayBuffer>();
  #worker: Worker | undefined;
  readonly #waiting = new Map<number, Waiting>();
  #seq = 0;
  #broken: Error | undefined;

  constructor(chunkIdKey: ChunkIdKeySpec) {
    this.#chunkIdKey = chunkIdKey;
  }

  /**
   * The raw bytes of a stored blob once they pass its checks. `stored` is handed over:
   * the caller must not use it again. Its whole buffer goes when it came from buffer()
   * or is wholly the blob's; anything else (a view of a shared buffer) is copied first.
   */
  async check(stored: Buffer, flags: number, rawLength: number, id: Uint8Array): Promise<Buffer> {
    return (await this.#ask(stored, { flags, rawLength, id, hold: false }))!;
  }

  /**
   * Checks a stored blob and keeps its raw bytes on the thread; resolves to the number
   * writeHeld() and drop() take once the blob passed. Several blobs are checked while
   * the files they belong to wait for their earlier pieces; the raw bytes never come
   * back (a large blob's buffer handed back lived until this thread's next garbage
   * collection, and the chat set's restore peaked at 1.7 times the memory).
   * `stored` is handed over, as with check().
   */
  async hold(stored: Buffer, flags: number, rawLength: number, id: Uint8Array): Promise<number> {
    const seq = this.#seq;
    await this.#ask(stored, { flags, rawLength, id, hold: true });
    return seq;
  }

  /**
   * Writes a held blob's raw bytes at `pos` of the open file `fd` (held open by the
   * caller until this settles), skipping zero blocks if `sparse`, and drops them.
   */
  async writeHeld(held: number, fd: number, pos: number, sparse: boolean): Promise<void> {
    if (this.#broken) throw this.#broken;
    const seq = this.#seq++;
    await new Promise<Buffer | undefined>((resolve, reject) => {
      this.#waiting.set(seq, { resolve, reject });
      this.#thread().postMessage({ kind: 'write', seq, held, fd, pos, sparse } satisfies CheckRequest);
    });
  }

  /** Drops a held blob unwritten (its file failed before it came to be written). */
  drop(held: number): void {
    if (!this.#broken && this.#worker) this.#worker.postMessage({ kind: 'drop', held } satisfies CheckRequest);
  }

  /** Requests (blobs to check, held blobs to write) sent so far. */
  get sent(): number {
    return this.#seq;
  }

  /** Requests sent and not yet answered. */
  get pending(): number {
    return this.#waiting.size;
  }

  /** How many buffers handed back are kept for later blobs. */
  get spares(): number {
    return this.#spares.length;
  }

  /**
   * A buffer of `size` bytes for a blob's stored bytes, to pass to check() or
   * hold(): one the thread handed back if one fits, else a new one.
   */
  buffer(size: number): Buffer {
    for (let i = 0; i < this.#spares.length; i++) {
      const ab = this.#spares[i]!;
      if (ab.byteLength >= size && ab.byteLength < size + 4 * SPARE_STEP) {
        this.#spares.splice(i, 1);
        this.#sparesBytes -= ab.byteLength;
        return Buffer.from(ab, 0, size);
      }
    }
    const ab = new ArrayBuffer(Math.ceil(size / SPARE_STEP) * SPARE_STEP);
    this.#ours.add(ab);
    return Buffer.from(ab, 0, size);
  }

  /**
   * Takes back a buffer from buffer() that the caller used itself and is done with (it
   * and every view of it unused from now on), for later blobs.
   */
  recycle(b: Buffer): void {
    this.#keep(b.buffer as ArrayBuffer);
  }

  #keep(ab: ArrayBuffer): void {
    if (ab.byteLength === 0 || !this.#ours.has(ab) || this.#sparesBytes + ab.byteLength > SPARES_KEPT_BYTES) return;
    this.#spares.push(ab);
    this.#sparesBytes += ab.byteLength;
  }

  #ask(stored: Buffer, what: { flags: number; rawLength: number; id: Uint8Array; hold: boolean }): Promise<Buffer | undefined> {
    if (this.#broken) return Promise.reject(this.#broken);
    const ab = stored.buffer as ArrayBuffer;
    const whole = stored.byteOffset === 0 && (this.#ours.has(ab) || (stored.byteLength === ab.byteLength && ab.byteLength > Buffer.poolSize));
    const bytes = whole ? ab : new Uint8Array(stored).buffer;
    const seq = this.#seq++;
    const req: CheckRequest = { kind: 'check', seq, bytes, length: stored.length, ...what };
    return new Promise<Buffer | undefined>((resolve, reject) => {
      this.#waiting.set(seq, { resolve, reject });
      this.#thread().postMessage(req, [bytes]);
    });
  }

  #thread(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(new URL('./restore-check-worker.js', import.meta.url), {
      workerData: { chunkIdKey: this.#chunkIdKey },
      resourceLimits: { maxYoungGenerationSizeMb: 2 },
    });
    worker.on('message', (a: CheckAnswer) => {
      if (a.spare) {
        this.#ours.add(a.spare);
        this.#keep(a.spare);
      }
      const w = this.#waiting.get(a.seq);
      if (!w) return;
      this.#waiting.delete(a.seq);
      if (a.error) w.reject(rebuildError(a.error));
      else w.resolve(a.bytes ? Buffer.from(a.bytes, a.offset, a.length) : undefined);
    });
    worker.on('error', (e) => this.#fail(e));
    worker.on('exit', (code) => this.#fail(new Error(`the restore's blob-check thread stopped (exit code ${code})`)));
    return (this.#worker = worker);
  }

  #fail(e: Error): void {
    this.#broken ??= e;
    for (const w of this.#waiting.values()) w.reject(e);
    this.#waiting.clear();
  }

  /** Stops the thread; call once every check has settled. */
  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    this.#broken ??= new Error('the blob-check thread was closed');
    if (w) await w.terminate();
  }
}

const SPARSE_BLOCK = 4096;

/**
 * The ranges of `raw` (to be written at file offset `pos`) that hold data: all of it, or
 * in a sparse file everything but its all-zero pieces, cut at the file's 4 KiB block
 * boundaries. Pieces at either edge of `raw` may be shorter than a block (a chunk rarely
 * starts or ends on one); they are skipped too when all zero. The file is new (created
 * O_EXCL) and its size is set at the end, so whatever is never written reads as zeros:
 * a block whose data pieces all were zeros stays a hole, and one that a neighbouring
 * chunk writes is zero-filled around it by the file system.
 */
export function dataRuns(raw: Buffer, pos: number, sparse: boolean): Array<[number, number]> {
  if (!sparse) return raw.length > 0 ? [[0, raw.length]] : [];
  // A chunk of zeros (a disk image's unused space: one blob at thousands of places):
  // nothing to write, found by one native comparison, not block by block. (Not
  // remembered per buffer: buffers are reused for other blobs.)
  if (allZero(raw)) return [];
  const runs: Array<[number, number]> = [];
  let runStart = -1;
  for (let i = 0; i < raw.length; ) {
    const blockEnd = Math.min(raw.length, i + SPARSE_BLOCK - ((pos + i) % SPARSE_BLOCK));
    const zero = allZero(raw, i, blockEnd);
    if (!zero && runStart < 0) runStart = i;
    if (zero && runStart >= 0) {
      runs.push([runStart, i]);
      runStart = -1;
    }
    i = blockEnd;
  }
  if (runStart >= 0) runs.push([runStart, raw.length]);
  return runs;
}

