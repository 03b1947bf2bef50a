/**
 * The main thread's side of the chunking workers (chunk-worker.ts): hands out files,
 * feeds each chunk to `onChunk` in file order, and returns the file's chunk IDs.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ChunkerParams } from './fastcdc.js';
import type { FromWorker, ToWorker, WorkerSetup } from './chunk-worker.js';
import type { SmallFileExtra } from './small-batch.js';
import type { CompressionMode } from '../repository/compress.js';

export { SMALL_STATUS, SmallStatus, type SmallFileExtra, type SmallFileStat } from './small-batch.js';

/** Jobs every running worker has before the next worker starts (see the constructor). */
const SPAWN_AT_LOAD = 2;
/**
 * What a batch of small files counts for in SPAWN_AT_LOAD: two thirds of a job, so the
 * next worker starts when a batch comes while the others have three each. Batches are
 * of 512 KiB (SMALL_BATCH_BYTES in backup.ts), half what they were; counted as a whole
 * job each, a second backup of the 50,000-file tree (a day of changes) started a second
 * worker for a few MiB of changed files, +10 MiB peak RSS for no gain in time. Counted as
 * half a job, a first backup never started a second worker (at most four batches are
 * out), 20% slower. Measured in one session: neither happens at two thirds.
 */
const BATCH_LOAD = 2 / 3;
/** Young-generation limit of each chunk worker's heap (see #spawn). */
const WORKER_YOUNG_MB = 8;

/** What a worker made of a batch of small files (see chunkBatch). */
export interface SmallFileBatch {
  /** Per file: SMALL_STATUS ints (SmallStatus offsets). */
  status: Int32Array;
  /** Per file: its lstat after the read (size, mtimeNs, ctimeNs, ino as unsigned 64-bit). */
  after: BigUint64Array;
  /** Errors and xattrs, by position. */
  extras: Map<number, SmallFileExtra>;
  /** 32 bytes per file: the keyed chunk ID of what was read. */
  ids: Buffer;
  /** The stored (compressed or raw) bytes of every file, back to back. */
  data: Buffer;
  /**
   * Gives `data` back to its worker for a later batch (idempotent). Call it only when
   * nothing refers to `data` or a view of it any more: the buffer is transferred, so every
   * view of it on this thread reads as empty from then on, and the worker overwrites it.
   * Not calling it is safe (the buffer is then garbage, as any other).
   */
  release(): void;
}

/** Tests only (issue 13): poison batch buffers when they come back, and count them. */
export const batchBuffersForTesting = { poison: false, returned: 0 };

export interface ChunkedFile {
  ids: Buffer[];
  size: number;
}

export class FileReadError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A chunk's stored form when its worker compressed it (`compress`): `data` is then what
 * is stored, with these blob flags (spec §7.1), and `rawLength` the chunk's own length.
 */
export interface StoredChunk {
  rawLength: number;
  flags: number;
}
export type OnChunk = (id: Buffer, data: Buffer, stored: StoredChunk | undefined) => Promise<void>;

interface Job {
  onChunk: OnChunk;
  ids: Buffer[];
  resolve: (r: ChunkedFile) => void;
  reject: (e: unknown) => void;
  batch?: (b: SmallFileBatch) => void;
  /** What it adds to its worker's load. */
  load: number;
}

interface PoolWorker {
  worker: Worker;
  load: number;
  chain: Promise<void>;
}

export class ChunkPool {
  readonly #workers: PoolWorker[] = [];
  readonly #jobs = new Map<number, Job>();
  #next = 0;
  #failure: unknown;

  readonly #setup: WorkerSetup;
  readonly #threads: number;

  /**
   * Up to `threads` workers, started as work arrives: the first with the first job, each
   * next one only when a job comes while every worker has SPAWN_AT_LOAD jobs already. A
   * backup that reads a few files here and there starts one (a worker costs ~0.1 s of
   * CPU to start, and its own heap); one that reads many starts the next at once.
   */
  constructor(setup: WorkerSetup, threads = Math.max(1, Math.min(2, availableParallelism()))) {
    this.#setup = setup;
    this.#threads = threads;
  }

  /** Starts the first worker now, before its first job: a thread takes ~0.1 s to come up. */
  prestart(): void {
    if (this.#workers.length === 0) this.#spawn();
  }

  /** How many workers have been started. */
  get started(): number {
    return this.#workers.length;
  }

  #spawn(): PoolWorker {
    // A small young generation: a worker's objects live for one batch or chunk, and the
    // default (up to 3 × 16 MiB per isolate) mostly held garbage, counted in peak RSS.
    const worker = new Worker(new URL('./chunk-worker.js', import.meta.url), { workerData: this.#setup, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB } });
    const pw: PoolWorker = { worker, load: 0, chain: Promise.resolve() };
    // Messages of one worker are handled strictly in order: a job's chunks, then its end.
    worker.on('message', (m: FromWorker) => {
      pw.chain = pw.chain.then(() => this.#handle(pw, m)).catch((e) => this.#fail(e));
    });
    worker.on('error', (e) => this.#fail(e));
    this.#workers.push(pw);
    return pw;
  }

  /** The least busy worker, or a new one when every worker is that busy and fewer than `threads` run. */
  #pick(load: number): PoolWorker {
    let pw: PoolWorker | undefined;
    for (const w of this.#workers) if (!pw || w.load < pw.load) pw = w;
    if (!pw || (pw.load >= SPAWN_AT_LOAD && this.#workers.length < this.#threads)) pw = this.#spawn();
    pw.load += load;
    return pw;
  }

  static setupFor(gearTable: Uint8Array, chunkIdKey: Uint8Array, params: ChunkerParams, compression: CompressionMode = 'off'): WorkerSetup {
    return { gearTable, chunkIdKey, params, compression, ...(batchBuffersForTesting.poison ? { poisonReturned: true } : {}) };
  }

  #fail(e: unknown): void {
    this.#failure ??= e;
    for (const j of this.#jobs.values()) j.reject(e);
    this.#jobs.clear();
  }

  async #handle(pw: PoolWorker, m: FromWorker): Promise<void> {
    const job = this.#jobs.get(m.job);
    if (m.type === 'chunk') {
      // Copied: the cloned ID may sit on a whole 8 KiB slab, which the index would keep.
      const id = Buffer.from(m.id);
      const giveBack = () => pw.worker.postMessage({ type: 'ack', buffer: m.data } satisfies ToWorker, [m.data]);
      if (!job) return giveBack();
      job.ids.push(id);
      // Not awaited: chunks of one worker are consumed concurrently, up to its credits;
      // the buffer goes back to the worker once consumed. Failures surface through the
      // consumer (the blob writer records them).
      const stored = m.flags === undefined ? undefined : { rawLength: m.rawLength, flags: m.flags };
      job.onChunk(id, Buffer.from(m.data, 0, m.length), stored).then(giveBack, (e) => {
        this.#fail(e);
      });
      return;
    }
    this.#jobs.delete(m.job);
    if (!job) return;
    pw.load -= job.load;
    if (m.type === 'batch') {
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        batchBuffersForTesting.returned++;
        try {
          pw.worker.postMessage({ type: 'batch-data', buffer: m.data } satisfies ToWorker, [m.data]);
        } catch {
          // the worker is gone (closed): the buffer is garbage
        }
      };
      if (!job.batch) return release();
      job.batch({ status: m.status, after: m.after, extras: new Map(m.extras.map((x) => [x.k, x])), ids: Buffer.from(m.ids), data: Buffer.from(m.data, 0, m.length), release });
    }
    else if (m.type === 'done') job.resolve({ ids: job.ids, size: m.size });
    else job.reject(new FileReadError(m.code, m.message));
  }

  /**
   * Chunks bytes [start, end) of a file on the least busy worker (the whole file by
   * default). Chunking restarts at `start`: see CHUNK_REGION_BYTES in backup.ts. With
   * `compress` the worker compresses each chunk (the setup's mode) and `onChunk` gets its
   * stored form: for new files, whose chunks are seldom in the repository already.
   */
  chunkFile(path: string | Uint8Array, onChunk: OnChunk, start = 0, end = Number.MAX_SAFE_INTEGER, compress = false): Promise<ChunkedFile> {
    if (this.#failure) return Promise.reject(this.#failure);
    const pw = this.#pick(1);
    const job = this.#next++;
    return new Promise<ChunkedFile>((resolve, reject) => {
      this.#jobs.set(job, { onChunk, ids: [], resolve, reject, load: 1 });
      pw.worker.postMessage({ type: 'file', job, path, start, end, compress } satisfies ToWorker);
    });
  }

  /**
   * Reads, hashes and compresses many small files (each at most the chunker's minimum
   * size, so one chunk) on the least busy worker, in one message each way. A file that
   * cannot be read comes back as `ok: false`; it does not fail the batch. Each file is
   * stat'ed again after its read there, and with `xattrs` its extended attributes read.
   */
  chunkBatch(paths: Uint8Array[], sizes: number[], xattrs = false): Promise<SmallFileBatch> {
    if (this.#failure) return Promise.reject(this.#failure);
    const pw = this.#pick(BATCH_LOAD);
    const job = this.#next++;
    // The paths travel as one transferred buffer, each followed by a NUL (which no path
    // holds): cloning hundreds of strings per message cost more than the rest of the batch.
    let total = 0;
    for (const p of paths) total += p.length + 1;
    const joined = new Uint8Array(total);
    let o = 0;
    for (const p of paths) {
      joined.set(p, o);
      o += p.length + 1;
    }
    const sizeArray = Float64Array.from(sizes);
    return new Promise<SmallFileBatch>((resolve, reject) => {
      this.#jobs.set(job, { onChunk: async () => {}, ids: [], resolve: () => {}, reject, batch: resolve, load: BATCH_LOAD });
      pw.worker.postMessage({ type: 'batch', job, paths: joined, sizes: sizeArray, xattrs } satisfies ToWorker, [joined.buffer, sizeArray.buffer]);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.worker.terminate()));
  }
}
