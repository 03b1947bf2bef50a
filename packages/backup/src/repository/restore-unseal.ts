/**
 * The main thread's side of restore's worker threads (restore-worker/worker.ts), which
 * decrypt packs, decompress blobs and check each blob against its ID (issue 13: on the
 * main thread these took about as long as the writes, one after the other). A pack is a
 * job: its pieces go to one worker in order, and the verified blobs come back in order,
 * each piece's in one message. Every message is checked before it is believed: a
 * malformed one, or a worker that stops, fails the restore with an error saying so.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { CofferError, DecryptionError, type CofferErrorCode } from '../errors.js';
import type { FromRestoreWorker, PackBlobs, RestoreWorkerSetup, ToRestoreWorker } from '../restore-worker/worker.js';

export type { PackBlobs, RestoreWorkerSetup } from '../restore-worker/worker.js';

/** Young-generation limit of each worker's heap: its objects live for one piece. */
const WORKER_YOUNG_MB = 4;

/** A pack the worker found damaged: `error` is what restore throws, naming the pack. */
export class UnsealFailure extends Error {
  constructor(readonly error: Error) {
    super(error.message);
  }
}

/** Codes a worker may report (the errors opening and decompressing can raise). */
const REPORTABLE: ReadonlySet<string> = new Set<CofferErrorCode>(['corrupt', 'unsupported-version']);

/** `data`: blobs first..first+count-1, back to back; `consumed`: sealed bytes handed over that the worker is done with. */
export type OnBlobs = (first: number, count: number, data: Buffer, consumed: number) => void;

export interface UnsealJob {
  /** Hands the pack's next sealed bytes over (the buffer is transferred when it can be: don't use it after). */
  piece(data: Uint8Array): void;
  /** No more bytes: the worker checks the pack's end. */
  end(): void;
  /** Forget the job (restore failed elsewhere). */
  drop(): void;
  /** Settles once the worker has answered `end` (after the last onBlobs); rejects with UnsealFailure or a worker failure. */
  readonly done: Promise<void>;
}

interface Job {
  count: number;
  rawLength: Float64Array;
  next: number;
  /** Sealed bytes sent and not yet reported consumed. */
  outstanding: number;
  onBlobs: OnBlobs;
  resolve: () => void;
  reject: (e: unknown) => void;
  worker: PoolWorker;
}

interface PoolWorker {
  worker: Worker;
  jobs: number;
}

export class RestoreWorkers {
  readonly #setup: RestoreWorkerSetup;
  readonly #threads: number;
  readonly #workers: PoolWorker[] = [];
  readonly #jobs = new Map<number, Job>();
  #nextJob = 0;
  #failure: Error | undefined;
  #closing = false;

  constructor(setup: RestoreWorkerSetup, threads = Math.max(1, Math.min(2, availableParallelism()))) {
    this.#setup = setup;
    this.#threads = threads;
  }

  /** Starts a job for one pack: `blobs` in pack order, `name` its object name (for messages). */
  open(name: string, packId: Buffer, blobs: PackBlobs, onBlobs: OnBlobs): UnsealJob {
    const pw = this.#pick();
    const id = this.#nextJob++;
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => {}); // the caller awaits it; a failure before then is not unhandled
    const job: Job = { count: blobs.offset.length, rawLength: blobs.rawLength, next: 0, outstanding: 0, onBlobs, resolve, reject, worker: pw };
    if (this.#failure) reject(this.#failure);
    else {
      this.#jobs.set(id, job);
      pw.jobs++;
      this.#post(pw, { t: 'open', job: id, name, packId: new Uint8Array(packId), blobs });
    }
    return {
      piece: (data) => {
        if (!this.#jobs.has(id)) return;
        // Transferred when the bytes are a whole buffer of their own, else copied once.
        const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && !(data.buffer instanceof SharedArrayBuffer) ? new Uint8Array(data.buffer, 0, data.byteLength) : new Uint8Array(data);
        job.outstanding += own.byteLength;
        this.#post(pw, { t: 'piece', job: id, data: own }, [own.buffer as ArrayBuffer]);
      },
      end: () => {
        if (this.#jobs.has(id)) this.#post(pw, { t: 'end', job: id });
      },
      drop: () => {
        if (this.#end(id)) this.#post(pw, { t: 'drop', job: id });
      },
      done,
    };
  }

  /** Stops the workers (after the restore, whatever its outcome). */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.all(this.#workers.map((pw) => pw.worker.terminate()));
  }

  #pick(): PoolWorker {
    const idle = this.#workers.find((w) => w.jobs === 0);
    if (idle) return idle;
    if (this.#workers.length < this.#threads) return this.#spawn();
    return this.#workers.reduce((a, b) => (b.jobs < a.jobs ? b : a));
  }

  #spawn(): PoolWorker {
    const worker = new Worker(new URL('../restore-worker/worker.js', import.meta.url), { workerData: this.#setup, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB } });
    const pw: PoolWorker = { worker, jobs: 0 };
    worker.on('message', (m: unknown) => {
      try {
        this.#handle(m);
      } catch (e) {
        this.#fail(e as Error);
      }
    });
    worker.on('error', (e) => this.#fail(new Error(`restore worker failed: ${e.message}`, { cause: e })));
    worker.on('exit', (code) => {
      if (!this.#closing) this.#fail(new Error(`restore worker stopped unexpectedly (exit code ${code})`));
    });
    this.#workers.push(pw);
    return pw;
  }

  #post(pw: PoolWorker, m: ToRestoreWorker, transfer?: ArrayBuffer[]): void {
    pw.worker.postMessage(m, transfer);
  }

  #end(id: number): Job | undefined {
    const job = this.#jobs.get(id);
    if (!job) return undefined;
    this.#jobs.delete(id);
    job.worker.jobs--;
    return job;
  }

  /** Believes nothing a worker says that does not fit the job it names. */
  #handle(raw: unknown): void {
    const bad = (why: string) => new Error(`restore worker sent a malformed message (${why})`);
    if (typeof raw !== 'object' || raw === null) throw bad('not an object');
    const m = raw as Partial<FromRestoreWorker>;
    const int = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
    if (!int(m.job)) throw bad('job');
    const job = this.#jobs.get(m.job);
    if (!job) return; // dropped (the restore failed elsewhere): its answers no longer matter
    if (m.t === 'fail') {
      const f = m as Partial<Extract<FromRestoreWorker, { t: 'fail' }>>;
      if (f.kind === 'decrypt') {
        this.#end(m.job);
        job.reject(new DecryptionError());
        return;
      }
      if (f.kind !== 'error' || typeof f.code !== 'string' || !REPORTABLE.has(f.code) || typeof f.message !== 'string') throw bad('failure');
      this.#end(m.job);
      job.reject(new UnsealFailure(new CofferError(f.code as CofferErrorCode, f.message)));
      return;
    }
    if (m.t !== 'blobs') throw bad('type');
    const b = m as Partial<Extract<FromRestoreWorker, { t: 'blobs' }>>;
    if (!int(b.first) || b.first !== job.next) throw bad('blob order');
    if (!int(b.count) || b.first + b.count > job.count) throw bad('blob count');
    if (!int(b.consumed) || b.consumed > job.outstanding) throw bad('bytes consumed');
    if (!(b.data instanceof Uint8Array)) throw bad('data');
    if (typeof b.done !== 'boolean' || (b.done && b.first + b.count !== job.count)) throw bad('end');
    let total = 0;
    for (let i = b.first; i < b.first + b.count; i++) total += job.rawLength[i]!;
    if (total !== b.data.byteLength) throw bad('blob lengths');
    job.next += b.count;
    job.outstanding -= b.consumed;
    job.onBlobs(b.first, b.count, Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength), b.consumed);
    if (b.done) {
      this.#end(m.job);
      job.resolve();
    }
  }

  #fail(e: Error): void {
    this.#failure ??= e;
    for (const id of [...this.#jobs.keys()]) this.#end(id)!.reject(this.#failure);
  }
}
