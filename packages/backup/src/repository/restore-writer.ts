/**
 * Restore's writer threads (issue 13): whole small files are created, written, given
 * their metadata and renamed into place by worker threads, in batches, while the main
 * thread goes on reading, decrypting, decompressing and checking the next blobs (in a
 * staged restore, restore.ts, created under their own names and not renamed).
 *
 * On an ordinary tree most files are one chunk, and restoring one costs six or seven
 * system calls (create, write, owner, mode, times, close, rename; a staged restore four
 * when the owner and mode need no call) whose kernel time (inode allocation, directory
 * insertion) is most of the restore; on the main thread it
 * came on top of the main thread's own work, one file after another. A full batch goes
 * to a thread at once, a partial one after a millisecond without more; a thread holds up
 * to two, so it never waits for the main thread to read its answer. When both are
 * taken and a whole batch waits, the main thread writes the next file itself.
 *
 * A file whose blob is used once can go as the blob's stored form (padded, compressed):
 * the thread unpads and decompresses it and checks it against its ID (spec §6.2) before
 * it creates the file, so that work leaves the main thread too (issue 13: on the
 * 50,000-file tree it was a fifth of the main thread's time). A blob that fails its
 * check fails its file, as CORRUPT_BLOB, and nothing of it is written.
 *
 * What the main thread keeps: the plan, the directory handles (held open until the
 * batch naming them is answered), the list of temporary names to remove on failure,
 * warnings and progress. A thread touches only the paths it is sent.
 */
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { ChunkIdKeySpec } from '../crypto/repository-keys.js';

/** A batch holds at most this many files… */
const BATCH_FILES = 64;
/** …and at most about this many bytes of data. */
const BATCH_BYTES = 256 * 1024;
/**
 * Each thread has up to this many batches sent and not answered: it starts the next as
 * soon as it is done with one, without waiting for the main thread (busy writing files
 * itself, it reads the thread's answer only when it next yields). With 2 the main thread
 * found it backlogged and wrote ~60% of the 50,000-file tree's files itself while the
 * thread used ~0.6 s of CPU against its ~1.6 s (issue 13); with 4 (and restore.ts's 512
 * files in flight) the thread takes more of them off the main thread.
 */
const BATCHES_IN_FLIGHT = 4;
/**
 * A batch smaller than a full one waits this long for more files before it goes to an
 * idle thread: blobs finish one callback at a time, and a message per file (about 30 µs
 * of the main thread each) cost more than the thread saved.
 */
const BATCH_WAIT_MS = 1;
/**
 * Batch buffers come back with the answer and carry later batches (at most this many kept,
 * each BATCH_BUFFER bytes): a buffer handed over is freed only at its thread's next garbage
 * collection, so a new one per batch piled up to tens of MiB.
 */
const BATCH_BUFFERS_KEPT = 4;
const BATCH_BUFFER = 2 * BATCH_BYTES;

/**
 * A batch's bytes: per file a 44-byte header (u32 tmp length, u32 dest length, u32 data
 * length, u32 mode, i32 uid and i32 gid (-1: leave the owner), u32 flags (bit 0:
 * overwrite; bit 1: `exactMode`, the file is created with its mode, not fchmod'ed), u32 time
 * length, u32 blob flags (RAW_DATA: the data is the file's bytes), u32 raw length, u32
 * ID length (0 or 32)), then the temporary path, the destination path, the data, the
 * time and the blob ID. The time is futimes' string of seconds (Latin-1 digits): Node
 * takes a negative number for "now" but a negative string as given, so times before 1970
 * travel as strings. Little-endian.
 */
export const FILE_HEADER = 44;
/** In a file header's blob flags: the data is the file's bytes, not a stored blob to check. */
export const RAW_DATA = 0xffffffff;
/** The error code a thread gives a file whose blob failed its checks (unpadding, decompression, ID). */
export const CORRUPT_BLOB = 'CORRUPT_BLOB';
/** A CORRUPT_BLOB failure's message when the blob's bytes are not what its ID says (the other failures: decompressBlob's words). */
export const BLOB_NOT_ITS_ID = 'the blob does not match its ID';

export interface WriteBatch {
  id: number;
  count: number;
  bytes: Uint8Array;
}

export interface ErrorInfo {
  message: string;
  code?: string;
  syscall?: string;
  errno?: number;
}

/** Something about one file of a batch the main thread must know. */
export interface FileNote {
  /** The file's number in its batch. */
  i: number;
  /** With overwrite: a file was at the destination and was replaced. */
  existed?: boolean;
  ownerError?: ErrorInfo;
  timeError?: ErrorInfo;
}

export interface WrittenFile {
  existed: boolean;
  ownerError?: ErrorInfo;
  timeError?: ErrorInfo;
}

export interface WriteBatchResult {
  id: number;
  /** The batch's buffer, handed back. */
  bytes: Uint8Array;
  /** How many files, from the first, were written. */
  done: number;
  notes: FileNote[];
  /** The failure of the file after those: it ends the batch (the files after it were not started). */
  error?: ErrorInfo;
}

export interface WholeFile {
  /**
   * The temporary name and the destination, as paths through a directory handle; an empty
   * `tmp`: the file is created at `dest` itself (exclusively) and not renamed (a staged
   * restore, restore.ts).
   */
  tmp: Buffer;
  dest: Buffer;
  /** The file's bytes, or with `blob` the stored form of its one blob. */
  data: Buffer;
  /** `data` is a stored blob: its flags (§7.1), raw length and ID, checked on the thread. */
  blob?: { flags: number; rawLength: number; id: Uint8Array };
  mode: number;
  owner?: { uid: number; gid: number };
  /** The modification (and access) time: seconds as a decimal string, as futimes takes it. */
  time: string;
  overwrite: boolean;
  /**
   * Created with `mode` itself (which the umask leaves whole, and no default ACL changes:
   * a staged restore knows, restore.ts), so not chmod'ed after; otherwise created 0600
   * and given its mode after its owner.
   */
  exactMode?: boolean;
}

/** Told once a file is in place (`w`), or why it is not (`err`). */
export type WriteDone = (w: WrittenFile | undefined, err?: Error) => void;

interface Pending {
  file: WholeFile;
  done: WriteDone;
}

interface Thread {
  worker: Worker;
  /** Where the thread answers: read as messages come, and polled (receiveMessageOnPort) by `backlogged`. */
  answers: MessagePort;
  /** Batches sent and not yet answered, oldest first (at most BATCHES_IN_FLIGHT). */
  sent: Pending[][];
}

/** A file's bytes in a batch. */
function fileBytes(f: WholeFile): number {
  return FILE_HEADER + f.tmp.length + f.dest.length + f.data.length + f.time.length + (f.blob ? f.blob.id.length : 0);
}

/** What a thread says of an error: the system call's code, syscall and errno with its message. */
export function errorInfo(e: unknown): ErrorInfo {
  const err = e as NodeJS.ErrnoException;
  return { message: err?.message ?? String(e), ...(err?.code ? { code: err.code } : {}), ...(err?.syscall ? { syscall: err.syscall } : {}), ...(err?.errno !== undefined ? { errno: err.errno } : {}) };
}

/** An error as the failing system call made it (code, syscall), rebuilt on this thread. */
export function rebuildError(info: ErrorInfo): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(info.message);
  if (info.code) e.code = info.code;
  if (info.syscall) e.syscall = info.syscall;
  if (info.errno !== undefined) e.errno = info.errno;
  return e;
}

/** What most files' writes resolve to: written, nothing to say. */
const PLAIN: WrittenFile = Object.freeze({ existed: false });

export class RestoreWriter {
  readonly #threads: Thread[] = [];
  readonly #max: number;
  #queue: Pending[] = [];
  #nextId = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly #buffers: Uint8Array[] = [];
  #broken: Error | undefined;
  readonly #chunkIdKey: ChunkIdKeySpec | undefined;

  /** @param chunkIdKey the repository's chunk-ID key (spec §6.2), for files sent as stored blobs */
  constructor(threads: number, chunkIdKey?: ChunkIdKeySpec) {
    this.#max = Math.max(1, threads);
    this.#chunkIdKey = chunkIdKey;
  }

  /**
   * Whether a whole batch is waiting while every thread is busy: the caller had better
   * write the file itself than queue it.
   */
  get backlogged(): boolean {
    // Answers the main thread has not read yet are taken now: busy with the blobs, it
    // yields to the event loop seldom, and its threads sat idle with two batches done but
    // unread, while it wrote the files itself (issue 13: the writer thread was 20–30% busy).
    this.#poll();
    return this.#threads.length >= this.#max && this.#threads.every((t) => t.sent.length >= BATCHES_IN_FLIGHT) && this.#full();
  }

  /** How many threads have been started (they start as batches need them). */
  get started(): number {
    return this.#threads.length;
  }

  /**
   * Starts the first thread now, before any batch: a thread takes ~50 ms of CPU to come up
   * (its isolate, this module's imports), which a restore can spend while it still lists
   * the snapshot's tree on its own thread.
   */
  prestart(): void {
    if (this.#threads.length === 0 && !this.#broken) this.#spawn();
  }

  /** Writes one whole file; resolves once it is in place (or rejects with the system call's error). */
  write(file: WholeFile): Promise<WrittenFile> {
    return new Promise<WrittenFile>((resolve, reject) => this.send(file, (w, err) => (err ? reject(err) : resolve(w!))));
  }

  /**
   * write() without a promise: `done` is called once the file is in place or failed,
   * later (never from within send), either from the event loop or from within poll()
   * or `backlogged`, which take the threads' answers at once: a caller that counts
   * its files in flight sees them written as soon as it looks, not only once it yields.
   */
  send(file: WholeFile, done: WriteDone): void {
    const broken = this.#broken;
    if (broken) {
      queueMicrotask(() => done(undefined, broken));
      return;
    }
    this.#queue.push({ file, done });
    this.#dispatch();
  }

  /** Takes every answer the threads have sent (their files' `done` called now). */
  poll(): void {
    this.#poll();
  }

  #dispatch(): void {
    if (this.#full()) {
      this.#send();
    } else if (this.#queue.length > 0 && !this.#timer) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#send();
      }, BATCH_WAIT_MS);
    }
  }

  /** Whether the queue holds a whole batch. */
  #full(): boolean {
    if (this.#queue.length >= BATCH_FILES) return true;
    let bytes = 0;
    for (const { file: f } of this.#queue) if ((bytes += fileBytes(f)) >= BATCH_BYTES) return true;
    return false;
  }

  /** Hands what is queued to threads with room for a batch, starting one where none has room. */
  #send(): void {
    this.#poll();
    while (this.#queue.length > 0) {
      let t = this.#threads.find((x) => x.sent.length < BATCHES_IN_FLIGHT);
      // Another thread only for a backlog (a whole batch waiting while every thread is
      // busy): where the disk keeps up with one, a second would cost memory for nothing.
      if (!t && this.#threads.length < this.#max && (this.#threads.length === 0 || this.#full())) t = this.#spawn();
      if (!t) return; // every thread busy: the queue grows into the next batch
      let n = 0;
      let total = 0;
      while (n < this.#queue.length && n < BATCH_FILES && (n === 0 || total < BATCH_BYTES)) {
        const f = this.#queue[n]!.file;
        total += fileBytes(f);
        n++;
      }
      const batch = this.#queue.splice(0, n);
      // A buffer of our own (never one of Buffer's shared pool), handed over, not copied again.
      const bytes = (total <= BATCH_BUFFER ? this.#buffers.pop() : undefined) ?? new Uint8Array(Math.max(total, BATCH_BUFFER));
      const view = new DataView(bytes.buffer);
      let at = 0;
      for (const { file: f } of batch) {
        view.setUint32(at, f.tmp.length, true);
        view.setUint32(at + 4, f.dest.length, true);
        view.setUint32(at + 8, f.data.length, true);
        view.setUint32(at + 12, f.mode, true);
        view.setInt32(at + 16, f.owner ? f.owner.uid : -1, true);
        view.setInt32(at + 20, f.owner ? f.owner.gid : -1, true);
        view.setUint32(at + 24, (f.overwrite ? 1 : 0) | (f.exactMode ? 2 : 0), true);
        view.setUint32(at + 28, f.time.length, true);
        view.setUint32(at + 32, f.blob ? f.blob.flags : RAW_DATA, true);
        view.setUint32(at + 36, f.blob ? f.blob.rawLength : f.data.length, true);
        view.setUint32(at + 40, f.blob ? f.blob.id.length : 0, true);
        at += FILE_HEADER;
        for (const b of [f.tmp, f.dest, f.data]) {
          bytes.set(b, at);
          at += b.length;
        }
        for (let i = 0; i < f.time.length; i++) bytes[at++] = f.time.charCodeAt(i);
        if (f.blob) {
          bytes.set(f.blob.id, at);
          at += f.blob.id.length;
        }
      }
      t.sent.push(batch);
      const msg: WriteBatch = { id: this.#nextId++, count: batch.length, bytes };
      t.worker.postMessage(msg, [bytes.buffer as ArrayBuffer]);
    }
  }

  /** Takes every answer waiting on the threads' ports, without waiting for the event loop. */
  #poll(): void {
    for (const t of this.#threads) this.#takeAnswers(t);
  }

  #takeAnswers(t: Thread): void {
    for (let m = receiveMessageOnPort(t.answers); m !== undefined; m = receiveMessageOnPort(t.answers)) this.#answer(t, m.message as WriteBatchResult);
  }

  #spawn(): Thread {
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(new URL('./restore-write-worker.js', import.meta.url), {
      workerData: { answers: port2, chunkIdKey: this.#chunkIdKey },
      transferList: [port2],
      resourceLimits: { maxYoungGenerationSizeMb: 2 },
    });
    const t: Thread = { worker, answers: port1, sent: [] };
    port1.on('message', (r: WriteBatchResult) => this.#answer(t, r));
    worker.on('error', (e) => this.#fail(t, e));
    worker.on('exit', (code) => {
      // Answers sent before it stopped count: they may still be on the port.
      this.#takeAnswers(t);
      port1.close();
      if (t.sent.length > 0) this.#fail(t, new Error(`a restore writer thread stopped (exit code ${code})`));
    });
    this.#threads.push(t);
    return t;
  }

  #answer(t: Thread, r: WriteBatchResult): void {
    const batch = t.sent.shift() ?? [];
    if (r.bytes.byteLength === BATCH_BUFFER && this.#buffers.length < BATCH_BUFFERS_KEPT) this.#buffers.push(r.bytes);
    // Most files have no note: they share one answer (issue 13: an object per small file).
    const written: Array<WrittenFile | undefined> = [];
    for (const n of r.notes) {
      if (n.i >= r.done) continue; // the file that failed
      const w = (written[n.i] ??= { existed: false });
      if (n.existed) w.existed = true;
      if (n.ownerError) w.ownerError = n.ownerError;
      if (n.timeError) w.timeError = n.timeError;
    }
    for (let i = 0; i < r.done; i++) batch[i]!.done(written[i] ?? PLAIN);
    if (r.error) {
      batch[r.done]!.done(undefined, rebuildError(r.error));
      // The files after it were not started: each is tried again, for its own outcome.
      this.#queue.unshift(...batch.slice(r.done + 1));
    }
    this.#dispatch();
  }

  #fail(t: Thread, e: Error): void {
    this.#broken ??= e;
    const lost = [...t.sent.flat(), ...this.#queue];
    t.sent = [];
    this.#queue = [];
    for (const p of lost) p.done(undefined, e);
  }

  /** Stops the threads; call once every write has settled. */
  async close(): Promise<void> {
    await Promise.all(this.#threads.map((t) => t.worker.terminate()));
    for (const t of this.#threads) t.answers.close();
    this.#threads.length = 0;
  }
}
