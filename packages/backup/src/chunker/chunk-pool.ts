/**
 * The main thread's side of the chunking workers (chunk-worker.ts): hands out files,
 * feeds each chunk to `onChunk` in file order, and returns the file's chunk IDs.
 */
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { ChunkerParams } from './fastcdc.js';
import type { FromWorker, ToWorker, WorkerSetup } from './chunk-worker.js';
import type { SmallFileExtra } from './small-batch.js';
import type { CompressionMode } from '../repository/compress.js';
import { WORKER_NICE_DELTA } from '../repository/thread-priority.js';
import type { ChunkIdKeySpec } from '../crypto/repository-keys.js';

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
/**
 * Bytes of work a worker is given ahead of what it is doing; the rest waits here and goes
 * to whichever worker gets below this first. Given out all at once, a large file's 64 MiB
 * regions (two per worker) left one worker idle while the other still had a region to
 * go: on the chat set's second backup (a changed 256 MB database) one worker sat idle for
 * ~400 ms of 1.3 s (issue 13). Enough for the worker never to wait for the main thread.
 */
const AHEAD_BYTES = 8 * 1024 * 1024;
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

/** Tests only: chunks a worker's idle peer compressed for it (see 'peer' in chunk-worker.ts). */
export const peerCompressedForTesting = { count: 0 };

/** Tests only: chunk workers started, and those still running (not yet exited). */
export const workersForTesting = { started: 0, live: 0 };

/** Tests only (issue 13): poison batch buffers when they come back, and count them. */
export const batchBuffersForTesting = { poison: false, returned: 0 };

export interface ChunkedFile {
  ids: Buffer[];
  size: number;
  /** Chunks taken at their parent chunk's length, by their hash, without FastCDC's pass (see `knownLengths`). */
  predicted: number;
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
  onKnown?: ((id: Buffer, rawLength: number) => void) | undefined;
  ids: Buffer[];
  resolve: (r: ChunkedFile) => void;
  reject: (e: unknown) => void;
  batch?: (b: SmallFileBatch) => void;
  /** What it adds to the pool's load (see SPAWN_AT_LOAD). */
  load: number;
  /** The bytes it reads (AHEAD_BYTES when not known). */
  bytes: number;
  /** Its message to a worker, and what that message transfers. */
  message: ToWorker;
  transfer: ArrayBuffer[];
  /** The worker it was given to, once given. */
  pw?: PoolWorker;
}

interface PoolWorker {
  worker: Worker;
  /** Jobs given to it and not finished, and their bytes. */
  jobs: number;
  bytes: number;
  chain: Promise<void>;
}

/** Where a file's chunking starts and ends, and how. */
export interface ChunkFileOptions {
  /** Bytes [start, end) of the file: the whole file by default. */
  start?: number;
  end?: number;
  /** The worker compresses each chunk (see ChunkPool.chunkFile). */
  compress?: boolean;
  /**
   * Chunks the repository has (32-byte IDs: the file's chunks in its parent snapshot, each
   * in the index): such a chunk's bytes do not travel, `onKnown` gets its ID instead of
   * `onChunk` its bytes. The file's `ids` list it all the same.
   */
  known?: Uint8Array;
  /**
   * `known`'s raw lengths, when `known` is the file's (region's) parent chunks in order:
   * the worker then tries the next parent chunk first, by its hash, before cutting.
   */
  knownLengths?: Uint32Array;
  onKnown?: (id: Buffer, rawLength: number) => void;
  /** How many bytes that is, when the caller knows (for sharing work between workers). */
  bytes?: number;
}

export class ChunkPool {
  readonly #workers: PoolWorker[] = [];
  readonly #jobs = new Map<number, Job>();
  /** Jobs not yet given to a worker, in the order they came. */
  readonly #waiting: Job[] = [];
  /** The load of every job not finished, given out or waiting. */
  #load = 0;
  #next = 0;
  #failure: unknown;
  /** The workers' flags once two run: each one's idle flag, then lastJobs's (see 'peer' in chunk-worker.ts). */
  #flags: Int32Array | undefined;
  #lastJobs = false;

  readonly #setup: WorkerSetup;
  readonly #threads: number;

  /**
   * Up to `threads` workers, started as work arrives: the first with the first job, each
   * next one only when a job comes while the work not finished is SPAWN_AT_LOAD jobs per
   * worker already. A backup that reads a few files here and there starts one (a worker
   * costs ~0.1 s of CPU to start, and its own heap); one that reads many starts the next
   * at once. Jobs wait here and go to the workers as they get through their work
   * (AHEAD_BYTES).
   */
  constructor(setup: WorkerSetup, threads = Math.max(1, Math.min(2, availableParallelism()))) {
    this.#setup = setup;
    this.#threads = threads;
  }

  /** Starts `n` workers now (at most `threads`), before their first jobs: a thread takes ~0.1 s to come up. */
  prestart(n = 1): void {
    while (this.#workers.length < Math.min(n, this.#threads)) this.#spawn();
  }

  /** Jobs not yet given to a worker (for tests). */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** How many workers have been started. */
  get started(): number {
    return this.#workers.length;
  }

  #spawn(): PoolWorker {
    // A small young generation: a worker's objects live for one batch or chunk, and the
    // default (up to 3 × 16 MiB per isolate) mostly held garbage, counted in peak RSS.
    const worker = new Worker(new URL('./chunk-worker.js', import.meta.url), { workerData: this.#setup, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB } });
    const pw: PoolWorker = { worker, jobs: 0, bytes: 0, chain: Promise.resolve() };
    workersForTesting.started++;
    workersForTesting.live++;
    worker.once('exit', () => void workersForTesting.live--);
    // Messages of one worker are handled strictly in order: a job's chunks, then its end.
    worker.on('message', (m: FromWorker) => {
      pw.chain = pw.chain.then(() => this.#handle(pw, m)).catch((e) => this.#fail(e));
    });
    worker.on('error', (e) => this.#fail(e));
    this.#workers.push(pw);
    if (this.#workers.length === 2) {
      // The two workers linked: one idle compresses the other's new chunks (see 'peer' in
      // chunk-worker.ts), so the last large region of a backup does not run on one core
      // beside an idle one (issue 13: a changed database's last 64 MiB, ~380 ms, 2/3 zstd).
      const { port1, port2 } = new MessageChannel();
      const idle = (this.#flags = new Int32Array(new SharedArrayBuffer(12)));
      this.#allGiven();
      this.#workers[0]!.worker.postMessage({ type: 'peer', port: port1, idle, self: 0 } satisfies ToWorker, [port1]);
      worker.postMessage({ type: 'peer', port: port2, idle, self: 1 } satisfies ToWorker, [port2]);
    }
    return pw;
  }

  /**
   * Queues a job: a new worker first when none runs, or when the work not finished is
   * SPAWN_AT_LOAD per worker already and fewer than `threads` run.
   */
  #submit(id: number, job: Job): void {
    if (this.#workers.length === 0 || (this.#load >= SPAWN_AT_LOAD * this.#workers.length && this.#workers.length < this.#threads)) this.#spawn();
    this.#load += job.load;
    this.#jobs.set(id, job);
    this.#waiting.push(job);
    this.#giveOut();
  }

  /** Gives waiting jobs, in order, to the workers with less than AHEAD_BYTES of work (the least loaded first). */
  #giveOut(): void {
    while (this.#waiting.length > 0) {
      let pw: PoolWorker | undefined;
      for (const w of this.#workers) if ((w.jobs === 0 || w.bytes < AHEAD_BYTES) && (!pw || w.bytes < pw.bytes)) pw = w;
      if (!pw) return;
      const job = this.#waiting.shift()!;
      job.pw = pw;
      pw.jobs++;
      pw.bytes += job.bytes;
      pw.worker.postMessage(job.message, job.transfer);
    }
    this.#allGiven();
  }

  /** A job is over (answered, failed, or its batch came back): its worker may take more. */
  #finished(job: Job): void {
    this.#load -= job.load;
    if (job.pw) {
      job.pw.jobs--;
      job.pw.bytes -= job.bytes;
    }
    this.#giveOut();
  }

  static setupFor(gearTable: Uint8Array, chunkIdKey: ChunkIdKeySpec, params: ChunkerParams, compression: CompressionMode = 'off'): WorkerSetup {
    return { gearTable, chunkIdKey, params, compression, niceDelta: WORKER_NICE_DELTA, ...(batchBuffersForTesting.poison ? { poisonReturned: true } : {}) };
  }

  #fail(e: unknown): void {
    this.#failure ??= e;
    for (const j of this.#jobs.values()) j.reject(e);
    this.#jobs.clear();
    this.#waiting.length = 0;
  }

  async #handle(pw: PoolWorker, m: FromWorker): Promise<void> {
    const job = this.#jobs.get(m.job);
    if (m.type === 'known') {
      if (!job) return;
      const id = Buffer.from(m.id);
      job.ids.push(id);
      job.onKnown?.(id, m.rawLength);
      return;
    }
    if (m.type === 'chunk') {
      // Copied: the cloned ID may sit on a whole 8 KiB slab, which the index would keep.
      const id = Buffer.from(m.id);
      const giveBack = () => pw.worker.postMessage({ type: 'ack', buffer: m.data } satisfies ToWorker, [m.data]);
      if (!job) return giveBack();
      job.ids.push(id);
      // Not awaited: chunks of one worker are consumed concurrently, up to its credits;
      // the buffer goes back to the worker once consumed. Failures surface through the
      // consumer (the blob writer records them).
      if (m.byPeer) peerCompressedForTesting.count++;
      const stored = m.flags === undefined ? undefined : { rawLength: m.rawLength, flags: m.flags };
      job.onChunk(id, Buffer.from(m.data, 0, m.length), stored).then(giveBack, (e) => {
        this.#fail(e);
      });
      return;
    }
    this.#jobs.delete(m.job);
    if (!job) return;
    this.#finished(job);
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
    else if (m.type === 'done') job.resolve({ ids: job.ids, size: m.size, predicted: m.predicted });
    else job.reject(new FileReadError(m.code, m.message));
  }

  /**
   * Chunks bytes [start, end) of a file on the first worker free (the whole file by
   * default). Chunking restarts at `start`: see CHUNK_REGION_BYTES in backup.ts. With
   * `compress` the worker compresses each chunk (the setup's mode) and `onChunk` gets its
   * stored form; chunks whose ID is in `known` (chunks the repository has) go to `onKnown`
   * as their IDs alone.
   */
  chunkFile(path: string | Uint8Array, onChunk: OnChunk, opts: ChunkFileOptions = {}): Promise<ChunkedFile> {
    if (this.#failure) return Promise.reject(this.#failure);
    const job = this.#next++;
    const { start = 0, end = Number.MAX_SAFE_INTEGER, compress = false, known, knownLengths, onKnown, bytes = AHEAD_BYTES } = opts;
    const message: ToWorker = { type: 'file', job, path, start, end, compress, ...(known ? { known } : {}), ...(known && knownLengths ? { knownLengths } : {}) };
    return new Promise<ChunkedFile>((resolve, reject) => {
      this.#submit(job, { onChunk, onKnown, ids: [], resolve, reject, load: 1, bytes, message, transfer: [] });
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
    let bytes = 0;
    for (const n of sizes) bytes += n;
    const message: ToWorker = { type: 'batch', job, paths: joined, sizes: sizeArray, xattrs };
    return new Promise<SmallFileBatch>((resolve, reject) => {
      this.#submit(job, { onChunk: async () => {}, ids: [], resolve: () => {}, reject, batch: resolve, load: BATCH_LOAD, bytes, message, transfer: [joined.buffer, sizeArray.buffer] });
    });
  }

  /**
   * Says that every job has been submitted: once they are all given out, an idle worker's
   * core has nothing else coming, and it compresses the other's new chunks (see 'peer' in chunk-worker.ts).
   * Before, a worker is idle between jobs while the main thread, busy, has not handed it
   * the next (on a first backup, most of the time): it would take work from a thread that
   * needs no help, and a core that has none to spare.
   */
  lastJobs(): void {
    this.#lastJobs = true;
    this.#allGiven();
  }

  /** Sets the workers' flag once every job is submitted (lastJobs) and given to a worker. */
  #allGiven(): void {
    if (this.#flags && this.#lastJobs && this.#waiting.length === 0) Atomics.store(this.#flags, 2, 1);
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.worker.terminate()));
  }
}
