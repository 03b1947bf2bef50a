/**
 * The blob API (spec/relay-api.md §3): per-account namespaces of immutable objects,
 * ranges, list by prefix, delete, per-object size limit and per-account quota.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Authenticator } from '../auth/authenticate.js';
import { RelayError } from '../errors.js';
import type { RelayMetrics } from '../metrics.js';
import { BLOB_PREFIX, BlobStoreError, isBlobName, namespaceOf, type BlobStore, type ByteRange } from '../blobs/store.js';
import { UploadMeter } from '../blobs/upload-meter.js';

export interface BlobRoutesOptions {
  readonly store: BlobStore;
  readonly authenticate: Authenticator;
  readonly maxObjectBytes: number;
  /** Per-account total; 0 = unlimited. */
  readonly quotaBytes: number;
  /**
   * Upload body bytes in flight (received or announced, not yet stored) across these
   * routes (≥ maxObjectBytes). Bodies stream to the store, so this bounds unfinished
   * uploads, not memory.
   */
  readonly maxInFlightBytes: number;
  /** Upload body bytes in flight for one account. */
  readonly maxInFlightBytesPerAccount: number;
  /** An upload body that sends nothing for this long is ended with 408 (ms; 0 = never). */
  readonly bodyIdleTimeoutMs: number;
  readonly metrics: RelayMetrics;
}

/** A request that declares a body: a length above 0, or a transfer coding (chunked). */
function hasBody(req: FastifyRequest): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** `application/octet-stream`, with parameters or not, in any case. */
function isOctetStream(type: string | undefined): boolean {
  return type !== undefined && type.split(';', 1)[0]!.trim().toLowerCase() === 'application/octet-stream';
}

/** What an upload holds while it runs: bytes in flight and quota, released once. */
interface UploadBudget {
  readonly ns: string;
  /** The declared Content-Length, if any. */
  readonly declared: number | undefined;
  inFlight: number;
  quota: number;
  /** Released (answered or aborted): nothing more may be reserved. */
  closed: boolean;
}

const UPLOAD = Symbol('coffer.upload');
type WithUpload = { [UPLOAD]?: UploadBudget };

/**
 * Bytes used per namespace: computed from a listing on first use, then kept up to date
 * by this process (a put reserves its size before writing).
 */
class Usage {
  readonly #bytes = new Map<string, number>();
  readonly #loading = new Map<string, Promise<number>>();
  constructor(readonly store: BlobStore) {}

  async #load(ns: string): Promise<void> {
    if (this.#bytes.has(ns)) return;
    let p = this.#loading.get(ns);
    if (!p) {
      p = this.store.list(ns, '').then((l) => l.reduce((s, b) => s + b.size, 0));
      this.#loading.set(ns, p);
      p.then(
        (n) => {
          if (!this.#bytes.has(ns)) this.#bytes.set(ns, n);
          this.#loading.delete(ns);
        },
        () => this.#loading.delete(ns),
      );
    }
    const n = await p;
    if (!this.#bytes.has(ns)) this.#bytes.set(ns, n);
  }

  /** Check and reserve in one synchronous step after loading, so concurrent puts cannot both pass. */
  async reserve(ns: string, size: number, quota: number): Promise<boolean> {
    await this.#load(ns);
    return this.grow(ns, size, quota);
  }

  /** Reserves more for a namespace already loaded (a streaming body, buffer by buffer). */
  grow(ns: string, size: number, quota: number): boolean {
    const used = this.#bytes.get(ns) ?? 0;
    if (quota > 0 && used + size > quota) return false;
    this.#bytes.set(ns, used + size);
    return true;
  }

  release(ns: string, size: number): void {
    const used = this.#bytes.get(ns);
    if (used !== undefined) this.#bytes.set(ns, Math.max(0, used - size));
  }
}

function blobName(req: FastifyRequest): string {
  const name = (req.params as { '*': string })['*'];
  if (!isBlobName(name)) throw new RelayError('bad-blob-name');
  return name;
}

/** Single `bytes=a-b` / `bytes=a-` / `bytes=-n` range; undefined = whole object; 'bad' = unsatisfiable. */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined | 'bad' {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined; // not a single byte range: ignored (RFC 9110 §14.2)
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'bad';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  // last-pos below first-pos is an invalid range, not an unsatisfiable one: ignored (RFC 9110 §14.1.1, §14.2).
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || start > end) return 'bad';
  return { start, end };
}

function storeFailure(err: unknown): never {
  if (err instanceof BlobStoreError) throw new RelayError(err.full ? 'blob-store-full' : 'blob-store-unavailable', { cause: err, ...(err.full ? {} : { retryAfter: 5 }) });
  throw err;
}

export async function blobRoutes(app: FastifyInstance, o: BlobRoutesOptions): Promise<void> {
  const usage = new Usage(o.store);
  let inFlight = 0;
  const perAccount = new Map<string, number>();
  /** Whether `bytes` more would fit the in-flight budgets for `account`, or which is full. */
  const wouldExceed = (account: string, bytes: number): RelayError | undefined => {
    // One account cannot hold the relay's budget: its own uploads are capped first.
    if ((perAccount.get(account) ?? 0) + bytes > o.maxInFlightBytesPerAccount) return new RelayError('account-uploads-busy', { retryAfter: 1 });
    if (inFlight + bytes > o.maxInFlightBytes) return new RelayError('uploads-busy', { retryAfter: 1 });
    return undefined;
  };
  /** Takes `bytes` more of the in-flight budgets for `account`, or says which is full. */
  const takeInFlight = (account: string, bytes: number): RelayError | undefined => {
    const full = wouldExceed(account, bytes);
    if (full) return full;
    inFlight += bytes;
    o.metrics.uploadBytesInFlight.set(inFlight);
    perAccount.set(account, (perAccount.get(account) ?? 0) + bytes);
    return undefined;
  };
  /** Gives back the in-flight bytes, and the quota unless the object was stored. */
  const settle = (req: FastifyRequest, stored: boolean): void => {
    const u = (req as WithUpload)[UPLOAD];
    if (!u || u.closed) return;
    u.closed = true;
    inFlight -= u.inFlight;
    o.metrics.uploadBytesInFlight.set(inFlight);
    const left = (perAccount.get(req.account) ?? 0) - u.inFlight;
    if (left > 0) perAccount.set(req.account, left);
    else perAccount.delete(req.account);
    if (!stored) usage.release(u.ns, u.quota);
  };
  // Authenticate before anything else happens: no budget reserved, no byte read, no
  // 100-continue sent for a request without valid credentials.
  app.addHook('onRequest', o.authenticate);
  // Only an upload has a body. A GET, HEAD or DELETE that sends one (spec/relay-api.md
  // §3) is refused before a byte of it is read, so a body cannot stream in unbounded
  // beside an answer; the error handler closes the connection after answering.
  // An upload's body must be application/octet-stream: anything else (JSON, a form) is
  // 415 from its headers, not whatever that type's parser would say about its size.
  app.addHook('onRequest', (req, _reply, done) => {
    if (req.method !== 'PUT') {
      if (hasBody(req)) return done(new RelayError('bad-request', { message: `a ${req.method} of a blob takes no body` }));
    } else if (hasBody(req) && !isOctetStream(req.headers['content-type'])) {
      return done(new RelayError('unsupported-media-type', { message: 'the body must be application/octet-stream' }));
    }
    done();
  });

  // Upload bodies are not buffered: the handler gets the body as a stream (an
  // UploadMeter) and the store reads it into place.
  app.removeContentTypeParser('application/octet-stream');
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  app.put('/v1/blobs/*', {
    // Refuse before reading the body (and before 100-continue) what can be refused
    // from the headers: a bad name, a declared length above the limit, budgets.
    preParsing: async (req, reply, payload) => {
      blobName(req);
      const header = req.headers['content-length'];
      const declared = header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined;
      if (declared !== undefined && declared > o.maxObjectBytes) throw new RelayError('blob-too-large');
      const ns = namespaceOf(req.account);
      // In-flight budgets are taken buffer by buffer as the body arrives, for every body: a
      // declared length that already breaks them is refused here, but not held up front,
      // or a few free accounts each announcing a large body and sending a byte every few
      // seconds held the whole relay's budget, and every other upload got 503 for minutes.
      // The quota (the account's own storage) is reserved whole for a declared length;
      // for a body without one (chunked), as it arrives. Either is cut off when spent.
      const upfront = declared ?? 0;
      const busy = wouldExceed(req.account, upfront);
      if (busy) throw busy;
      const u: UploadBudget = { ns, declared, inFlight: 0, quota: 0, closed: false };
      (req as WithUpload)[UPLOAD] = u;
      if (!(await usage.reserve(ns, upfront, o.quotaBytes).catch(storeFailure))) throw new RelayError('quota-exceeded');
      u.quota = upfront;
      if (req.headers.expect?.toLowerCase() === '100-continue') reply.raw.writeContinue();
      const reserve = (bytes: number): RelayError | undefined => {
        if (u.closed) return new RelayError('bad-request', { message: 'the upload was cut off before its end' });
        const refused = takeInFlight(req.account, bytes);
        if (refused) return refused;
        u.inFlight += bytes;
        if (declared !== undefined) return undefined; // its quota is reserved whole, above
        if (!usage.grow(ns, bytes, o.quotaBytes)) return new RelayError('quota-exceeded');
        u.quota += bytes;
        return undefined;
      };
      return new UploadMeter(payload, { maxBytes: o.maxObjectBytes, idleMs: o.bodyIdleTimeoutMs, ...(declared !== undefined ? { declared } : {}), reserve });
    },
    onResponse: async (req) => settle(req, false),
    onRequestAbort: async (req) => {
      // Only the in-flight bytes: a put still running settles its quota when it ends.
      const u = (req as WithUpload)[UPLOAD];
      if (u && !u.closed) {
        inFlight -= u.inFlight;
        o.metrics.uploadBytesInFlight.set(inFlight);
        const left = (perAccount.get(req.account) ?? 0) - u.inFlight;
        if (left > 0) perAccount.set(req.account, left);
        else perAccount.delete(req.account);
        u.inFlight = 0;
      }
    },
  }, async (req, reply) => {
    const name = blobName(req);
    const u = (req as WithUpload)[UPLOAD]!;
    let body = req.body as UploadMeter | Buffer | undefined;
    if (body === undefined && u.declared === 0) body = Buffer.alloc(0); // an empty object
    if (!(body instanceof UploadMeter) && !Buffer.isBuffer(body)) throw new RelayError('unsupported-media-type', { message: 'the body must be application/octet-stream' });
    let result: 'created' | 'exists';
    try {
      result = await o.store.put(u.ns, name, body, u.declared !== undefined ? { length: u.declared } : {});
    } catch (err) {
      settle(req, false);
      // The body was cut off (a limit, a stall, the client gone): that is the answer.
      if (body instanceof UploadMeter && body.failure) throw body.failure;
      storeFailure(err);
    }
    if (result === 'exists') {
      settle(req, false);
      if (body instanceof UploadMeter && !body.readableEnded) body.destroy();
      throw new RelayError('blob-exists');
    }
    const size = body instanceof UploadMeter ? body.bytes : body.length;
    settle(req, true);
    o.metrics.blobBytes.inc({ direction: 'in' }, size);
    req.logFields = { blobBytes: size };
    return reply.code(201).send();
  });

  app.get('/v1/blobs/*', { exposeHeadRoute: false }, async (req, reply) => {
    const name = blobName(req);
    const ns = namespaceOf(req.account);
    const size = await o.store.size(ns, name).catch(storeFailure);
    if (size === null) throw new RelayError('blob-not-found');
    const range = parseRange(typeof req.headers.range === 'string' ? req.headers.range : undefined, size);
    if (range === 'bad') {
      void reply.header('content-range', `bytes */${size}`);
      throw new RelayError('range-not-satisfiable');
    }
    const stream = await o.store.read(ns, name, range).catch(storeFailure);
    if (!stream) throw new RelayError('blob-not-found');
    const length = range ? range.end - range.start + 1 : size;
    o.metrics.blobBytes.inc({ direction: 'out' }, length);
    void reply.header('accept-ranges', 'bytes').header('content-length', length).type('application/octet-stream');
    if (range) void reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`);
    return reply.send(stream);
  });

  app.head('/v1/blobs/*', async (req, reply) => {
    const name = blobName(req);
    const size = await o.store.size(namespaceOf(req.account), name).catch(storeFailure);
    if (size === null) return reply.code(404).send();
    return reply.code(200).header('accept-ranges', 'bytes').header('content-length', size).type('application/octet-stream').send();
  });

  app.get('/v1/blobs', async (req) => {
    const prefix = (req.query as { prefix?: unknown }).prefix ?? '';
    if (typeof prefix !== 'string' || !BLOB_PREFIX.test(prefix)) throw new RelayError('bad-request', { message: 'prefix: [a-z0-9/]*, at most 200 characters' });
    const blobs = await o.store.list(namespaceOf(req.account), prefix).catch(storeFailure);
    return { blobs };
  });

  // Deletes of one name run one after another, and quota is released only by the one
  // that removed the object: concurrent deletes must not each give its size back.
  const deleting = new Map<string, Promise<unknown>>();
  app.delete('/v1/blobs/*', async (req, reply) => {
    const name = blobName(req);
    const ns = namespaceOf(req.account);
    const key = `${ns}/${name}`;
    const previous = deleting.get(key) ?? Promise.resolve();
    const run = previous.then(async () => {
      const size = await o.store.size(ns, name);
      const removed = await o.store.delete(ns, name);
      if (removed && size !== null) usage.release(ns, size);
    });
    const settled = run.catch(() => {});
    deleting.set(key, settled);
    void settled.then(() => {
      if (deleting.get(key) === settled) deleting.delete(key);
    });
    await run.catch(storeFailure);
    return reply.code(204).send();
  });
}
