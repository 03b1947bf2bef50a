/**
 * The blob API (spec/relay-api.md §3): per-account namespaces of immutable objects,
 * ranges, list by prefix, delete, per-object size limit and per-account quota.
 */
import { Transform } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Authenticator } from '../auth/authenticate.js';
import { RelayError } from '../errors.js';
import type { RelayMetrics } from '../metrics.js';
import { BLOB_PREFIX, BlobStoreError, isBlobName, namespaceOf, type BlobStore, type ByteRange } from '../blobs/store.js';

export interface BlobRoutesOptions {
  readonly store: BlobStore;
  readonly authenticate: Authenticator;
  readonly maxObjectBytes: number;
  /** Per-account total; 0 = unlimited. */
  readonly quotaBytes: number;
  /** Upload body bytes buffered at once across these routes (≥ maxObjectBytes). */
  readonly maxInFlightBytes: number;
  /** Upload body bytes buffered at once for one account. */
  readonly maxInFlightBytesPerAccount: number;
  /** An upload body that sends nothing for this long is ended with 408 (ms; 0 = never). */
  readonly bodyIdleTimeoutMs: number;
  readonly metrics: RelayMetrics;
}

const IN_FLIGHT = Symbol('coffer.inFlightBytes');

/** Passes the body through, failing it with 408 request-timeout when it stalls for `ms`. */
function idleTimeout(source: NodeJS.ReadableStream, ms: number): Transform {
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => out.destroy(new RelayError('request-timeout', { message: `no body bytes for ${Math.round(ms / 1000)} s` })), ms);
  };
  const out = new Transform({
    transform(chunk, _enc, cb) {
      arm();
      cb(null, chunk);
    },
    flush(cb) {
      clearTimeout(timer);
      cb();
    },
    destroy(err, cb) {
      clearTimeout(timer);
      cb(err);
    },
  });
  // Fastify reads the length check (receivedEncodedLength) from the stream it is given.
  arm();
  source.on('error', (e) => out.destroy(e));
  source.pipe(out);
  return out;
}

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
    const used = this.#bytes.get(ns)!;
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
  const release = (req: FastifyRequest): void => {
    const r = req as unknown as Record<symbol, number | undefined>;
    const bytes = r[IN_FLIGHT];
    if (bytes === undefined) return;
    r[IN_FLIGHT] = undefined;
    inFlight -= bytes;
    const left = (perAccount.get(req.account) ?? 0) - bytes;
    if (left > 0) perAccount.set(req.account, left);
    else perAccount.delete(req.account);
  };
  // Authenticate before anything else happens: no budget reserved, no byte read, no
  // 100-continue sent for a request without valid credentials.
  app.addHook('onRequest', o.authenticate);

  app.put('/v1/blobs/*', {
    bodyLimit: o.maxObjectBytes,
    // Refuse before reading the body when the declared length is already too much.
    preParsing: async (req, reply, payload) => {
      const declared = Number(req.headers['content-length']);
      if (Number.isFinite(declared) && declared > o.maxObjectBytes) throw new RelayError('blob-too-large');
      // Bodies are buffered in memory: bound the total across the relay (a chunked body
      // without a length counts as the largest allowed object).
      const bytes = Number.isFinite(declared) && declared >= 0 ? declared : o.maxObjectBytes;
      // One account cannot hold the relay's budget: its own uploads are capped first.
      const mine = perAccount.get(req.account) ?? 0;
      if (mine + bytes > o.maxInFlightBytesPerAccount) throw new RelayError('account-uploads-busy', { retryAfter: 1 });
      if (inFlight + bytes > o.maxInFlightBytes) throw new RelayError('uploads-busy', { retryAfter: 1 });
      inFlight += bytes;
      perAccount.set(req.account, mine + bytes);
      (req as unknown as Record<symbol, number>)[IN_FLIGHT] = bytes;
      if (req.headers.expect?.toLowerCase() === '100-continue') reply.raw.writeContinue();
      return o.bodyIdleTimeoutMs > 0 ? idleTimeout(payload, o.bodyIdleTimeoutMs) : payload;
    },
    onResponse: async (req) => release(req),
    onRequestAbort: async (req) => release(req),
  }, async (req, reply) => {
    const name = blobName(req);
    const body = req.body;
    if (!Buffer.isBuffer(body)) throw new RelayError('unsupported-media-type', { message: 'the body must be application/octet-stream' });
    const ns = namespaceOf(req.account);
    if (!(await usage.reserve(ns, body.length, o.quotaBytes).catch(storeFailure))) throw new RelayError('quota-exceeded');
    let result: 'created' | 'exists';
    try {
      result = await o.store.put(ns, name, body);
    } catch (err) {
      usage.release(ns, body.length);
      storeFailure(err);
    }
    if (result === 'exists') {
      usage.release(ns, body.length);
      throw new RelayError('blob-exists');
    }
    o.metrics.blobBytes.inc({ direction: 'in' }, body.length);
    req.log.info({ account: req.account, blobBytes: body.length }, 'blob stored');
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
