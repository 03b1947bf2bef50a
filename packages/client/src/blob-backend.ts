/**
 * A StorageBackend over the relay's blob API (spec/relay-api.md §3): the repository's
 * encrypted objects live in the account's namespace on the front end. Objects are
 * already sealed by the backup engine; this layer only moves bytes.
 *
 * Uploads stream: an object written piece by piece (a pack) goes to the relay as it is
 * produced, in one chunked PUT, with back-pressure. Sequential reads of large ranges (a
 * restore reading a pack piece by piece) are served from one open-ended ranged GET that
 * later pieces continue, instead of one request per piece.
 *
 * Errors follow the StorageBackend contract: CofferError('missing-object') for 404,
 * CofferError('storage') for everything else (unreachable, timeout, quota, conflict,
 * refused credentials), each message naming the object and the cause.
 */
import type { ByteRange, ObjectInfo, ObjectReader, ObjectWriter, StorageBackend } from '@coffer/backup';
import { CofferError } from '@coffer/backup/errors';
import { readChunksInto } from '@coffer/backup/storage/read-into';
import { CofferClientError } from './errors.js';
import type { RelayHttp, RelayResponse, RelayResponseBody, StreamedBody, TransportAnswer } from './relay-http.js';
import { UnavailableError } from './errors.js';

/**
 * Bytes written but not yet taken by the connection, beyond which `write` waits. The
 * parts are kept until commit anyway, so this is above a pack (8 MiB): the engine is
 * not held to the network's pace within a pack (its upload window bounds packs), only
 * an object much larger than a pack is.
 */
const UNSENT_MAX = 16 * 1024 * 1024;
/** A ranged read at least this long is expected to be followed by the next piece. */
const READ_AHEAD_MIN = 256 * 1024;
/** An open read-ahead GET not continued for this long is closed. */
const READ_AHEAD_IDLE_MS = 2_000;
/** Open read-ahead GETs at most (the oldest is closed first). */
const READ_AHEAD_MAX = 4;
/** Bytes an open read-ahead GET reads before they are asked for (then back-pressure). */
const READ_AHEAD_BYTES = 4 * 1024 * 1024;
/** Tries of an idempotent request answered 429/503 (honouring Retry-After up to 5 s). */
const BUSY_TRIES = 5;

type BodyReader = ReturnType<RelayResponseBody['getReader']>;

const NAME_RE = /^[a-z0-9]+(\/[a-z0-9]+)*$/;

function checkName(name: string): void {
  if (!NAME_RE.test(name) || name.length > 200) throw new RangeError(`name: not a valid object name: ${JSON.stringify(name).slice(0, 80)}`);
}

export class RelayBlobBackend implements StorageBackend {
  readonly location: string;
  /** A streamed upload keeps its bytes until commit, to send them once more (StreamedUpload). */
  readonly keepsUntilCommit = true;
  readonly #relay: RelayHttp;
  readonly #timeoutMs: number;

  /** `location` is only for messages (e.g. `coffer:` + the server URL). */
  constructor(relay: RelayHttp, options: { location?: string; timeoutMs?: number } = {}) {
    this.#relay = relay;
    this.location = options.location ?? `${relay.server}/v1/blobs`;
    this.#timeoutMs = options.timeoutMs ?? 5 * 60_000;
  }

  #fail(action: string, name: string, e: unknown): CofferError {
    if (e instanceof CofferError) return e;
    const why = e instanceof CofferClientError ? e.message : (e as Error)?.message ?? String(e);
    return new CofferError('storage', `${action} ${name} at ${this.location} failed: ${why}`, { cause: e });
  }

  async put(name: string, parts: readonly Uint8Array[]): Promise<void> {
    checkName(name);
    const body = concatParts(parts);
    let res: RelayResponse;
    try {
      res = await this.#relay.call({ method: 'PUT', path: `/v1/blobs/${name}`, auth: true, body, timeoutMs: this.#timeoutMs, pass: [409, 413, 507] });
    } catch (e) {
      throw this.#fail('writing', name, e);
    }
    await res.body?.cancel().catch(() => {});
    if (res.status === 409) throw new CofferError('storage', `object ${name} already exists at ${this.location}: objects are immutable`);
    if (res.status === 413) throw new CofferError('storage', `writing ${name} at ${this.location} failed: the object (${body.length} bytes) is above the server's size limit`);
    if (res.status === 507) throw new CofferError('storage', `writing ${name} at ${this.location} failed: the account's storage quota is exceeded`);
  }

  /**
   * A writer that streams: the PUT starts with the first write and each write's parts
   * go out as the connection takes them (`write` waits while more than UNSENT_MAX bytes
   * are queued); commit ends the body and waits for the relay's 201 (durable). The
   * bytes are kept until commit (copied into reused blocks, see SPOOL_BLOCK), so that
   * when the relay cut the stream off for a reason that a second try can cure (a pause
   * longer than its body idle timeout while the engine produced nothing, an expired
   * session, a busy relay, a dropped connection), commit sends the object once more.
   */
  async create(name: string): Promise<ObjectWriter> {
    checkName(name);
    return new StreamedUpload(this, name);
  }

  /** One streamed PUT of `body`; the answer for the statuses the writer handles. */
  putStream(name: string, body: StreamedBody, signal: AbortSignal): Promise<TransportAnswer> {
    return this.#relay.upload({ path: `/v1/blobs/${name}`, body, signal, pass: [401, 408, 409, 413, 429, 503, 507] });
  }

  refreshSession(): Promise<boolean> {
    return this.#relay.refreshSession();
  }

  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  /** The StorageBackend error for a PUT answered `status` (not 2xx). */
  putError(name: string, status: number, bytes: number): CofferError {
    if (status === 409) return new CofferError('storage', `object ${name} already exists at ${this.location}: objects are immutable`);
    if (status === 413) return new CofferError('storage', `writing ${name} at ${this.location} failed: the object (${bytes} bytes) is above the server's size limit`);
    if (status === 507) return new CofferError('storage', `writing ${name} at ${this.location} failed: the account's storage quota is exceeded`);
    if (status === 401) return new CofferError('storage', `writing ${name} at ${this.location} failed: the server refused this device's credentials (run \`coffer login\`)`);
    return new CofferError('storage', `writing ${name} at ${this.location} failed: the server answered ${status}`);
  }

  failure(action: string, name: string, e: unknown): CofferError {
    return this.#fail(action, name, e);
  }

  async get(name: string, range?: ByteRange): Promise<Uint8Array> {
    checkName(name);
    return this.#get(name, range, undefined);
  }

  /**
   * The object opened for several ranged reads (a restore reads each pack in 1 MiB
   * pieces), each read into the caller's buffer when it gives one: no new buffer per
   * piece (issue 13: a restore through the relay allocated, and first touched, a fresh
   * 1 MiB for every piece of every pack). Sequential pieces continue one read-ahead GET,
   * as with `get`; `close` ends it.
   */
  async openReader(name: string): Promise<ObjectReader> {
    checkName(name);
    let closed = false;
    return {
      read: (range, into) => {
        if (closed) return Promise.reject(new CofferError('storage', `reading ${name} at ${this.location} failed: the reader is closed`));
        if (into && into.length < range.length) return Promise.reject(new RangeError(`read into: ${into.length} bytes is less than the ${range.length} asked for`));
        return this.#get(name, range, into);
      },
      close: async () => {
        closed = true;
        const s = this.#ahead.get(name);
        if (s && !s.busy) this.#closeAhead(name);
      },
    };
  }

  /** `get`, into `into` (at least `range.length` bytes) when given. */
  async #get(name: string, range: ByteRange | undefined, into: Uint8Array | undefined): Promise<Uint8Array> {
    if (range && range.length === 0) return new Uint8Array(0);
    try {
      // A long piece opens a read-ahead GET; any piece where an open one stands (a pack's
      // short last piece) continues it, rather than a GET of its own beside it.
      if (range && (range.length >= READ_AHEAD_MIN || this.#continues(name, range))) return await this.#readAhead(name, range, into);
      const res = await this.#open(name, range ? `bytes=${range.offset}-${range.offset + range.length - 1}` : undefined);
      if (!res) return new Uint8Array(0);
      const skip = range && res.status === 200 ? range.offset : 0; // the server ignored Range
      const reader = res.body!.getReader();
      try {
        return await readInto(reader, skip, range ? range.length : contentLength(res), into);
      } finally {
        await reader.cancel().catch(() => {});
      }
    } catch (e) {
      throw this.#fail('reading', name, e);
    }
  }

  /** Open read-ahead GETs by object name: where the next sequential piece starts. */
  readonly #ahead = new Map<string, { pos: number; pre: Prefetch; busy: boolean; timer: ReturnType<typeof setTimeout> | undefined }>();

  /** Whether an open read-ahead GET of `name` stands at `range.offset`, not in use. */
  #continues(name: string, range: ByteRange): boolean {
    const s = this.#ahead.get(name);
    return s !== undefined && !s.busy && s.pos === range.offset;
  }

  #closeAhead(name: string): void {
    const s = this.#ahead.get(name);
    if (!s) return;
    this.#ahead.delete(name);
    clearTimeout(s.timer);
    s.pre.cancel();
  }

  /**
   * `range` from the open GET of `name` when it stands at `range.offset`; else a new GET
   * from `range.offset` to the end, kept open for the next piece. Bytes beyond what was
   * asked stay in the connection (back-pressure), not in memory.
   */
  async #readAhead(name: string, range: ByteRange, into: Uint8Array | undefined): Promise<Uint8Array> {
    let s = this.#ahead.get(name);
    if (s && (s.busy || s.pos !== range.offset)) {
      if (s.busy) s = undefined;
      else {
        this.#closeAhead(name);
        s = undefined;
      }
    }
    if (!s) {
      const res = await this.#open(name, `bytes=${range.offset}-`);
      if (!res) return new Uint8Array(0);
      const reader = res.body!.getReader();
      if (res.status === 200) {
        // The server ignored Range: read what was asked from the whole object, once.
        try {
          return await readInto(reader, range.offset, range.length, into);
        } finally {
          await reader.cancel().catch(() => {});
        }
      }
      s = { pos: range.offset, pre: new Prefetch(reader, READ_AHEAD_BYTES), busy: false, timer: undefined };
      if (!this.#ahead.has(name)) {
        if (this.#ahead.size >= READ_AHEAD_MAX) this.#closeAhead(this.#ahead.keys().next().value!);
        this.#ahead.set(name, s);
      }
    }
    const mine = s;
    mine.busy = true;
    clearTimeout(mine.timer);
    try {
      const out = into ? into.subarray(0, range.length) : new Uint8Array(range.length);
      let n = 0;
      while (n < out.length) {
        const chunk = await mine.pre.take(out.length - n);
        if (!chunk) break;
        out.set(chunk, n);
        n += chunk.length;
      }
      mine.pos += n;
      if (n < out.length) {
        // The object ended: nothing more to continue.
        if (this.#ahead.get(name) === mine) this.#closeAhead(name);
        else mine.pre.cancel();
        return out.subarray(0, n);
      }
      if (this.#ahead.get(name) === mine) {
        mine.timer = setTimeout(() => this.#ahead.get(name) === mine && this.#closeAhead(name), READ_AHEAD_IDLE_MS);
        // A process done with its reads exits now, not once the timer has closed this GET.
        (mine.timer as { unref?: () => void }).unref?.();
      }
      else mine.pre.cancel();
      return out;
    } catch (e) {
      if (this.#ahead.get(name) === mine) this.#closeAhead(name);
      throw e;
    } finally {
      mine.busy = false;
    }
  }

  /**
   * A GET (ranged when `range` is given), tried again when the relay is busy (429/503,
   * within Retry-After up to 5 s; reads are idempotent). Null for an unsatisfiable range
   * (like a short read of a local file: nothing at that offset).
   */
  async #open(name: string, range: string | undefined): Promise<RelayResponse | null> {
    for (let tries = 1; ; tries++) {
      let res: RelayResponse;
      try {
        res = await this.#relay.call({ method: 'GET', path: `/v1/blobs/${name}`, auth: true, headers: range ? { range } : {}, timeoutMs: this.#timeoutMs, pass: [404, 416, 429, 503] });
      } catch (e) {
        throw this.#fail('reading', name, e);
      }
      if (res.status === 404) {
        await res.body?.cancel().catch(() => {});
        throw new CofferError('missing-object', `${name} is missing from the repository at ${this.location}`);
      }
      if (res.status === 416) {
        await res.body?.cancel().catch(() => {});
        return null;
      }
      if (res.status === 429 || res.status === 503) {
        await res.body?.cancel().catch(() => {});
        const wait = Math.min(5, Number(res.headers.get('retry-after')) || 1);
        if (tries >= BUSY_TRIES) throw new CofferError('storage', `reading ${name} at ${this.location} failed: the server stayed busy (${res.status}) after ${tries} tries`);
        await new Promise((r) => setTimeout(r, wait * 1000));
        continue;
      }
      return res;
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    checkName(name);
    try {
      const res = await this.#relay.call({ method: 'HEAD', path: `/v1/blobs/${name}`, auth: true, pass: [404] });
      await res.body?.cancel().catch(() => {});
      if (res.status === 404) return null;
      const size = Number(res.headers.get('content-length'));
      if (!Number.isSafeInteger(size) || size < 0) throw new CofferError('storage', `HEAD ${name} at ${this.location}: no content-length`);
      return { name, size };
    } catch (e) {
      throw this.#fail('reading', name, e);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    try {
      const r = await this.#relay.json<{ blobs?: { name?: unknown; size?: unknown }[] }>({
        method: 'GET',
        path: `/v1/blobs?prefix=${encodeURIComponent(prefix)}`,
        auth: true,
        timeoutMs: this.#timeoutMs,
      });
      if (!Array.isArray(r.blobs)) throw new CofferError('storage', `listing ${prefix || '/'} at ${this.location}: malformed answer`);
      const out: ObjectInfo[] = [];
      for (const b of r.blobs) {
        if (typeof b?.name !== 'string' || typeof b.size !== 'number' || !b.name.startsWith(prefix)) throw new CofferError('storage', `listing ${prefix || '/'} at ${this.location}: malformed entry`);
        out.push({ name: b.name, size: b.size });
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    } catch (e) {
      throw this.#fail('listing', prefix || '/', e);
    }
  }

  async delete(name: string): Promise<void> {
    checkName(name);
    try {
      const res = await this.#relay.call({ method: 'DELETE', path: `/v1/blobs/${name}`, auth: true, pass: [404] });
      await res.body?.cancel().catch(() => {});
    } catch (e) {
      throw this.#fail('deleting', name, e);
    }
  }

  /** A PUT is durable when the relay answers 201, so there is nothing to flush. */
  async sync(): Promise<void> {}
}

function concatParts(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Statuses after which the same PUT may go again (see `create`). */
const RETRYABLE = new Set([401, 408, 429, 503]);

/**
 * An upload keeps its bytes until commit (to send them once more), copied into blocks
 * of this size rather than as the engine's parts: parts kept for the tens of
 * milliseconds a pack takes to go out and be synced outlive a young-generation
 * collection or two, so each pack's parts (8 MiB of array buffers) were freed only by a
 * full collection — and that external memory made V8 start one about every pack
 * (issue 13). Blocks are reused: the upload window's packs in flight need about 24.
 */
const SPOOL_BLOCK = 1024 * 1024;
/** Blocks kept for reuse between uploads (at most this many MiB idle). */
const SPOOL_KEPT = 32;
const spoolPool: Uint8Array[] = [];

/** One attempt at sending the object: a chunked PUT fed from the kept bytes. */
interface Attempt {
  readonly abort: AbortController;
  /** Offset of the next byte to hand to the connection. */
  next: number;
  /** The relay's answer (or the failure to get one), once it came. */
  settled: { status: number; retryAfter?: number } | { error: unknown } | undefined;
  readonly answer: Promise<void>;
  wakePull: (() => void) | undefined;
}

class StreamedUpload implements ObjectWriter {
  readonly #backend: RelayBlobBackend;
  readonly #name: string;
  /** The object's bytes so far, SPOOL_BLOCK to a block (the last one filled to #bytes). */
  #blocks: Uint8Array[] = [];
  #bytes = 0;
  #ended = false;
  #aborted = false;
  #attempt: Attempt | undefined;
  #wakeWriter: (() => void) | undefined;

  constructor(backend: RelayBlobBackend, name: string) {
    this.#backend = backend;
    this.#name = name;
  }

  #start(): Attempt {
    const attempt: Attempt = { abort: new AbortController(), next: 0, settled: undefined, answer: Promise.resolve(), wakePull: undefined };
    (attempt as { answer: Promise<void> }).answer = this.#backend.putStream(this.#name, this.#batches(attempt), attempt.abort.signal).then(
      (res) => {
        const retryAfter = Number(res.header('retry-after'));
        attempt.settled = { status: res.status, ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfter } : {}) };
      },
      (error: unknown) => {
        attempt.settled = { error };
      },
    );
    void attempt.answer.then(() => {
      this.#wakeWriter?.();
      attempt.wakePull?.();
    });
    return attempt;
  }

  /**
   * The body of one attempt: every byte not yet handed to the connection, as one batch
   * (views of the blocks; the transport writes a batch at once), until commit ends it.
   */
  async *#batches(attempt: Attempt): AsyncGenerator<readonly Uint8Array[]> {
    for (;;) {
      if (attempt.next < this.#bytes) {
        const batch = this.#views(attempt.next, this.#bytes);
        attempt.next = this.#bytes;
        this.#wakeWriter?.();
        yield batch;
        continue;
      }
      if (this.#ended || attempt.settled || this.#aborted) return;
      await new Promise<void>((r) => (attempt.wakePull = r));
      attempt.wakePull = undefined;
    }
  }

  /** A refusal no second try cures, if the relay answered one (409, 413, 507, …). */
  #final(a: Attempt): CofferError | undefined {
    const s = a.settled;
    if (!s || 'error' in s) return undefined;
    if (s.status >= 200 && s.status < 300) return undefined;
    if (RETRYABLE.has(s.status)) return undefined;
    return this.#backend.putError(this.#name, s.status, this.#bytes);
  }

  async write(more: readonly Uint8Array[]): Promise<void> {
    if (this.#aborted || this.#ended) throw new CofferError('storage', `writing ${this.#name}: the writer is closed`);
    for (const p of more) this.#append(p);
    const a = (this.#attempt ??= this.#start());
    const refused = this.#final(a);
    if (refused) throw refused;
    a.wakePull?.();
    // Back-pressure: wait while the connection is behind, unless this attempt is over
    // (a retryable end: the parts are kept for commit).
    while (!a.settled && this.#unsent(a) > UNSENT_MAX) {
      await new Promise<void>((r) => (this.#wakeWriter = r));
      this.#wakeWriter = undefined;
    }
    const late = this.#final(a);
    if (late) throw late;
  }

  #unsent(a: Attempt): number {
    return this.#bytes - a.next;
  }

  /** Copies `p` after the bytes so far, into the last block and new ones from the pool. */
  #append(p: Uint8Array): void {
    let done = 0;
    while (done < p.length) {
      const at = this.#bytes % SPOOL_BLOCK;
      if (at === 0 && this.#bytes === this.#blocks.length * SPOOL_BLOCK) this.#blocks.push(spoolPool.pop() ?? new Uint8Array(SPOOL_BLOCK));
      const block = this.#blocks[this.#blocks.length - 1]!;
      const n = Math.min(p.length - done, SPOOL_BLOCK - at);
      block.set(n === p.length ? p : p.subarray(done, done + n), at);
      done += n;
      this.#bytes += n;
    }
  }

  /** Views of the bytes [from, to). */
  #views(from: number, to: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let at = from; at < to; ) {
      const i = Math.floor(at / SPOOL_BLOCK);
      const start = at - i * SPOOL_BLOCK;
      const end = Math.min(SPOOL_BLOCK, to - i * SPOOL_BLOCK);
      out.push(this.#blocks[i]!.subarray(start, end));
      at += end - start;
    }
    return out;
  }

  /** The blocks go back to the pool: no attempt sends from them any more. */
  #release(): void {
    for (const b of this.#blocks) if (spoolPool.length < SPOOL_KEPT) spoolPool.push(b);
    this.#blocks = [];
  }

  async commit(): Promise<void> {
    if (this.#aborted) throw new CofferError('storage', `writing ${this.#name}: the writer was aborted`);
    this.#ended = true;
    try {
      let a = (this.#attempt ??= this.#start());
      for (let tries = 0; ; tries++) {
        a.wakePull?.();
        // The body is complete: the relay owes an answer within the deadline.
        const timer = setTimeout(() => a.abort.abort(new UnavailableError(`${this.#backend.location} did not answer within ${Math.round(this.#backend.timeoutMs / 1000)} s`)), this.#backend.timeoutMs);
        try {
          await a.answer;
        } finally {
          clearTimeout(timer);
        }
        const s = a.settled!;
        if (!('error' in s) && s.status >= 200 && s.status < 300) return;
        const refused = this.#final(a);
        if (refused) throw refused;
        if (tries >= 1) {
          if ('error' in s) throw this.#backend.failure('writing', this.#name, s.error);
          throw this.#backend.putError(this.#name, s.status, this.#bytes);
        }
        // Once more, from the kept bytes: a fresh session after a 401, a pause after busy.
        if (!('error' in s) && s.status === 401 && !(await this.#backend.refreshSession())) throw this.#backend.putError(this.#name, 401, this.#bytes);
        if (!('error' in s) && (s.status === 429 || s.status === 503)) await new Promise((r) => setTimeout(r, Math.min(5, s.retryAfter ?? 1) * 1000));
        a = this.#attempt = this.#start();
      }
    } finally {
      // Every attempt has settled (or was ended): nothing sends from the blocks now.
      this.#release();
    }
  }

  async abort(): Promise<void> {
    this.#aborted = true;
    const a = this.#attempt;
    if (a && !a.settled) {
      // The relay sees the connection end mid-body and keeps nothing.
      a.abort.abort(new CofferError('storage', 'aborted'));
      a.wakePull?.();
      await a.answer;
    }
    this.#release();
    this.#wakeWriter?.();
  }
}

function contentLength(res: RelayResponse): number | undefined {
  const n = Number(res.headers.get('content-length') ?? NaN);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** A body's bytes after `skip`, `length` of them (to the end when undefined), into `into` when given (storage/read-into.ts). */
function readInto(reader: BodyReader, skip: number, length: number | undefined, into?: Uint8Array): Promise<Uint8Array> {
  return readChunksInto(() => reader.read(), skip, length, into);
}

/**
 * Reads a response body ahead of the caller, up to `limit` bytes, so the next sequential
 * piece is usually there when asked for; beyond `limit` it stops reading and TCP holds
 * the sender back.
 */
class Prefetch {
  readonly #queue: Uint8Array[] = [];
  #bytes = 0;
  #done = false;
  #error: unknown;
  #pumping = false;
  #wake: (() => void) | undefined;

  constructor(
    readonly reader: BodyReader,
    readonly limit: number,
  ) {
    void this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (!this.#done && this.#bytes < this.limit) {
        const r = await this.reader.read();
        if (r.done) {
          this.#done = true;
          break;
        }
        this.#queue.push(r.value);
        this.#bytes += r.value.length;
        this.#wake?.();
      }
    } catch (e) {
      this.#error ??= e;
      this.#done = true;
    } finally {
      this.#pumping = false;
      this.#wake?.();
    }
  }

  /** The next bytes, at most `max`; undefined at the end of the body. */
  async take(max: number): Promise<Uint8Array | undefined> {
    for (;;) {
      const head = this.#queue[0];
      if (head) {
        let c = head;
        if (c.length > max) {
          this.#queue[0] = c.subarray(max);
          c = c.subarray(0, max);
        } else this.#queue.shift();
        this.#bytes -= c.length;
        if (!this.#done) void this.#pump();
        return c;
      }
      if (this.#error !== undefined) throw this.#error;
      if (this.#done) return undefined;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = undefined;
    }
  }

  cancel(): void {
    this.#done = true;
    this.#queue.length = 0;
    void this.reader.cancel().catch(() => {});
  }
}
