/**
 * Streamed uploads over node:http / node:https (Node only; RelayHttp's fetch path stays
 * the isomorphic default). Measured on a backup to the relay (issue 13): `fetch` sent a
 * pack as one web-stream read, one chunk frame and one socket write per sealed piece —
 * ciphertext and 16-byte tag apart, ~8,400 small writes per 260 MiB, each its own TCP
 * segment for the relay to parse. Here each batch the engine hands over (about a chunk's
 * sealed segments) goes out corked, as one writev.
 *
 * Every other request goes over node:http too (`request`), so that a process that only
 * moves blobs never loads undici (issue 13: its heap kept V8 running full collections
 * through a backup).
 *
 * Keep-alive sockets (a few per origin for uploads, as many as needed for the other
 * requests) are reused between objects. TLS uses Node's
 * default trust store, as `fetch` does (the system CAs plus NODE_EXTRA_CA_CERTS);
 * redirects are never followed (a 3xx is just an answer).
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import type * as Https from 'node:https';
import { createRequire } from 'node:module';
import type { PlainRequest, RelayResponse, RelayResponseBody, StreamedRequest, TransportAnswer, UploadTransport } from './relay-http.js';

/** The answer to an upload is a status and perhaps a small JSON error; more is refused. */
const ANSWER_MAX = 64 * 1024;
/** Keep-alive sockets per origin: the engine commits two packs while filling a third. */
const SOCKETS_PER_ORIGIN = 4;

/**
 * node:https (and node:tls under it), loaded with the first https:// request: ~0.1 MB of
 * heap a process that talks to a loopback relay over http never needs (issue 13).
 */
let httpsModule: typeof Https | undefined;
function https(): typeof Https {
  return (httpsModule ??= createRequire(import.meta.url)('node:https') as typeof Https);
}

/** A failure of the exchange itself (no usable answer), with a code for the caller's message. */
export class TransportError extends Error {
  override name = 'TransportError';
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown; staleSocket?: boolean },
  ) {
    super(message, options);
    this.staleSocket = options?.staleSocket ?? false;
  }

  /** The server had closed the kept-alive socket this request went out on: nothing reached it. */
  readonly staleSocket: boolean;
}

export interface NodeUploadTransportOptions {
  /** Sockets kept per origin (default 4). */
  readonly maxSockets?: number;
}

export class NodeUploadTransport implements UploadTransport {
  readonly #http: HttpAgent;
  readonly #maxSockets: number;
  #https: Https.Agent | undefined;
  /**
   * Other requests have agents of their own, without a socket limit (as fetch's pool):
   * an open read-ahead GET holds its socket while paused, and a lock check must not wait
   * behind streaming uploads.
   */
  #plainHttp: HttpAgent | undefined;
  #plainHttps: Https.Agent | undefined;

  constructor(options: NodeUploadTransportOptions = {}) {
    const maxSockets = options.maxSockets ?? SOCKETS_PER_ORIGIN;
    this.#http = new HttpAgent({ keepAlive: true, maxSockets, scheduling: 'lifo' });
    this.#maxSockets = maxSockets;
  }

  /** A request on this transport's agent for the URL's protocol. */
  #open(url: URL, o: { method: string; headers: Record<string, string> }, plain = false): ClientRequest {
    if (url.protocol !== 'https:') return httpRequest(url, { ...o, agent: plain ? (this.#plainHttp ??= new HttpAgent({ keepAlive: true, scheduling: 'lifo' })) : this.#http });
    const m = https();
    const agent = plain ? (this.#plainHttps ??= new m.Agent({ keepAlive: true, scheduling: 'lifo' })) : (this.#https ??= new m.Agent({ keepAlive: true, maxSockets: this.#maxSockets, scheduling: 'lifo' }));
    return m.request(url, { ...o, agent });
  }

  /** Closes the kept sockets. */
  close(): void {
    this.#http.destroy();
    this.#https?.destroy();
    this.#plainHttp?.destroy();
    this.#plainHttps?.destroy();
  }

  /**
   * Every request but the streamed uploads, as RelayHttp's `call` makes it (instead of
   * `fetch`, which loads undici: ~1.6 MB more heap and its start-up, in a process that
   * otherwise only moves blobs). Resolves with the status and headers; the body is read
   * as the caller asks (`body.getReader()`, `json()`, …; a small one is read at once).
   * `signal` ends it, the body's reading included. A GET or HEAD whose kept-alive socket
   * turns out closed by the server before any answer goes once more on a new one.
   */
  async request(r: PlainRequest): Promise<RelayResponse> {
    try {
      return await this.#request(r);
    } catch (e) {
      if (!(e instanceof TransportError) || !e.staleSocket || (r.method !== 'GET' && r.method !== 'HEAD') || r.signal.aborted) throw e;
      return this.#request(r);
    }
  }

  #request(r: PlainRequest): Promise<RelayResponse> {
    const url = new URL(r.url);
    return new Promise<RelayResponse>((resolve, reject) => {
      let answered = false;
      let body: NodeResponseBody | undefined;
      const onAbort = (): void => {
        const reason = r.signal.reason ?? new TransportError('aborted', 'ABORT_ERR');
        if (body) body.fail(reason);
        req.destroy();
        if (!answered) reject(reason);
      };
      // The length always said: node:http sends a DELETE's body unframed otherwise.
      const sent = typeof r.body === 'string' ? Buffer.from(r.body, 'utf8') : r.body;
      const req: ClientRequest = this.#open(url, { method: r.method, headers: sent ? { ...r.headers, 'content-length': String(sent.length) } : r.headers }, true);
      if (r.signal.aborted) return onAbort();
      r.signal.addEventListener('abort', onAbort, { once: true });
      req.on('error', (e) => {
        if (answered) return;
        answered = true;
        r.signal.removeEventListener('abort', onAbort);
        reject(exchangeError(e, req));
      });
      req.on('response', (res) => {
        answered = true;
        const empty = r.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304;
        // An answer without a body ends at once: read to its end, its socket is reused.
        body = new NodeResponseBody(res, () => r.signal.removeEventListener('abort', onAbort));
        resolve(nodeResponse(res, empty ? null : body));
      });
      req.end(sent);
    });
  }

  send(r: StreamedRequest): Promise<TransportAnswer> {
    const url = new URL(r.url);
    return new Promise<TransportAnswer>((resolve, reject) => {
      let done = false;
      const finish = (err: unknown, answer?: TransportAnswer): void => {
        if (done) return;
        done = true;
        r.signal.removeEventListener('abort', onAbort);
        if (err !== undefined) {
          req.destroy();
          reject(err);
        } else resolve(answer!);
      };
      const onAbort = (): void => finish(r.signal.reason ?? new TransportError('aborted', 'ABORT_ERR'));
      const req: ClientRequest = this.#open(url, { method: r.method, headers: { ...r.headers, 'transfer-encoding': 'chunked' } });
      if (r.signal.aborted) return onAbort();
      r.signal.addEventListener('abort', onAbort, { once: true });
      req.on('error', (e) => finish(exchangeError(e, req)));
      req.on('response', (res) => readAnswer(res, req, finish));
      void pump(r.body, req, () => done).then(
        () => {
          // Not answered yet: end the body (an early answer ends the exchange instead).
          if (!done && !req.destroyed) req.end();
        },
        (e: unknown) => finish(e),
      );
    });
  }
}

/** Writes the batches, each corked into one writev; waits for drain (back-pressure). */
async function pump(body: AsyncIterable<readonly Uint8Array[]>, req: ClientRequest, over: () => boolean): Promise<void> {
  for await (const batch of body) {
    if (over() || req.destroyed) return;
    req.cork();
    writeBatch(req, batch);
    req.uncork();
    if (req.writableNeedDrain) await drained(req);
    if (over() || req.destroyed) return;
  }
}

/**
 * Bytes of small parts gathered into one write. Every write of a chunked request is
 * an HTTP chunk of its own, and the relay handles each chunk as a buffer of its own
 * through its streams: a sealed segment and its 16-byte tag as two chunks cost the relay
 * more than copying them here into one (bench-relay-upload.mjs, issue 13).
 */
const GATHER_BYTES = 1024 * 1024;
/** Parts at least this long go out as they are (the copy would cost more than the chunk). */
const GATHER_PART_MAX = 256 * 1024;
/** Gather buffers kept for reuse (a fresh megabyte per write costs page faults). */
const GATHER_KEPT = 4;
const gatherPool: Buffer[] = [];

/**
 * Writes a batch as few chunks: runs of small parts copied into a pooled buffer, which
 * goes back to the pool once the socket has taken it (the write's callback), never
 * before; large parts as they are.
 */
function writeBatch(req: ClientRequest, batch: readonly Uint8Array[]): void {
  let live = 0;
  for (const p of batch) if (p.length > 0) live++;
  if (live <= 1) {
    for (const p of batch) if (p.length > 0) req.write(p);
    return;
  }
  let buf: Buffer | undefined;
  let n = 0;
  const flush = (): void => {
    if (!buf || n === 0) return;
    const b = buf;
    req.write(b.subarray(0, n), () => {
      if (gatherPool.length < GATHER_KEPT) gatherPool.push(b);
    });
    buf = undefined;
    n = 0;
  };
  for (const p of batch) {
    if (p.length === 0) continue;
    if (p.length >= GATHER_PART_MAX) {
      flush();
      req.write(p);
      continue;
    }
    if (buf && n + p.length > buf.length) flush();
    buf ??= gatherPool.pop() ?? Buffer.allocUnsafeSlow(GATHER_BYTES);
    buf.set(p, n);
    n += p.length;
  }
  flush();
}

function drained(req: ClientRequest): Promise<void> {
  return new Promise<void>((resolve) => {
    const go = (): void => {
      req.off('drain', go);
      req.off('close', go);
      resolve();
    };
    req.on('drain', go);
    req.on('close', go);
  });
}

function readAnswer(res: IncomingMessage, req: ClientRequest, finish: (err: unknown, answer?: TransportAnswer) => void): void {
  const chunks: Buffer[] = [];
  let n = 0;
  res.on('data', (c: Buffer) => {
    n += c.length;
    if (n > ANSWER_MAX) return finish(new TransportError(`the answer's body is over ${ANSWER_MAX} bytes`, 'ANSWER_TOO_LARGE'));
    chunks.push(c);
  });
  res.on('error', (e) => finish(exchangeError(e, req)));
  res.on('aborted', () => finish(new TransportError('the connection closed in the middle of the answer', 'ECONNRESET')));
  res.on('end', () => {
    const status = res.statusCode ?? 0;
    const headers = res.headers;
    // An answer before the body was sent whole (a refusal): the socket is mid-request,
    // not reusable.
    if (!req.writableFinished) req.destroy();
    finish(undefined, {
      status,
      statusText: res.statusMessage ?? '',
      header: (name) => headerOf(headers, name),
      body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, n),
    });
  });
}

function exchangeError(e: Error, req: ClientRequest): TransportError {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (code.startsWith('HPE_')) return new TransportError(`the answer is not valid HTTP (${code})`, 'BAD_ANSWER', { cause: e });
  if ((code === 'ECONNRESET' || code === 'EPIPE') && req.reusedSocket) return new TransportError('connection reset (a kept-alive connection the server had closed)', code, { cause: e, staleSocket: true });
  if (code === 'ECONNRESET') return new TransportError('connection reset', code, { cause: e });
  if (code === 'ECONNREFUSED') return new TransportError('connection refused', code, { cause: e });
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new TransportError('host not found', code, { cause: e });
  return new TransportError(e.message || code || String(e), code || 'ERR', { cause: e });
}

/** Body bytes read ahead of the caller before the socket is paused. */
const BODY_AHEAD = 1024 * 1024;

/**
 * A response body as RelayResponseBody: the socket's buffers as they come, without
 * copies (a Readable's `read()` would join what is buffered into a new buffer); reading
 * pauses once BODY_AHEAD bytes wait. A body no one reads is read up to that bound (a
 * small one whole, freeing the socket for the next request); `cancel` drops the rest.
 */
class NodeResponseBody implements RelayResponseBody {
  readonly #res: IncomingMessage;
  readonly #queue: Buffer[] = [];
  #bytes = 0;
  #ended = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  readonly #done: () => void;

  constructor(res: IncomingMessage, done: () => void) {
    this.#res = res;
    this.#done = done;
    res.on('data', (c: Buffer) => {
      this.#queue.push(c);
      this.#bytes += c.length;
      if (this.#bytes >= BODY_AHEAD) res.pause();
      this.#wakeUp();
    });
    res.on('end', () => {
      this.#ended = true;
      this.#done();
      this.#wakeUp();
    });
    res.on('aborted', () => this.fail(new TransportError('the connection closed in the middle of the answer', 'ECONNRESET')));
    res.on('error', (e) => this.fail(new TransportError(e.message || 'the answer failed', (e as NodeJS.ErrnoException).code ?? 'ERR', { cause: e })));
    res.on('close', () => {
      if (!this.#ended) this.fail(new TransportError('the connection closed in the middle of the answer', 'ECONNRESET'));
    });
  }

  #wakeUp(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /** Ends the body with `err` (the first reason wins); the socket is closed. */
  fail(err: unknown): void {
    if (this.#ended || this.#error !== undefined) return;
    this.#error = err;
    this.#done();
    this.#res.destroy();
    this.#wakeUp();
  }

  async #read(): Promise<{ done: true; value?: undefined } | { done: false; value: Uint8Array }> {
    for (;;) {
      const c = this.#queue.shift();
      if (c) {
        this.#bytes -= c.length;
        if (this.#bytes < BODY_AHEAD && this.#res.isPaused() && !this.#ended) this.#res.resume();
        return { done: false, value: c };
      }
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return { done: true };
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  getReader(): ReturnType<RelayResponseBody['getReader']> {
    return { read: () => this.#read(), cancel: () => this.cancel() };
  }

  async cancel(): Promise<void> {
    this.#queue.length = 0;
    this.#bytes = 0;
    if (this.#ended || this.#error !== undefined) return;
    this.#error = new TransportError('the body was cancelled', 'ABORT_ERR');
    this.#done();
    this.#res.destroy();
  }

  /** The rest of the body, whole. */
  async all(): Promise<Buffer> {
    const parts: Buffer[] = [];
    let n = 0;
    for (;;) {
      const r = await this.#read();
      if (r.done) break;
      parts.push(r.value as Buffer);
      n += r.value.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }
}

/** A header of a Node answer as fetch's `Headers.get` gives it (repeated ones joined), or null. */
function headerOf(headers: IncomingMessage['headers'], name: string): string | null {
  const v = headers[name.toLowerCase()];
  return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
}

function nodeResponse(res: IncomingMessage, body: NodeResponseBody | null): RelayResponse {
  const status = res.statusCode ?? 0;
  const headers = res.headers;
  const all = async (): Promise<Buffer> => (body ? body.all() : Buffer.alloc(0));
  return {
    status,
    statusText: res.statusMessage ?? '',
    ok: status >= 200 && status < 300,
    headers: {
      get: (name) => headerOf(headers, name),
    },
    body,
    json: async () => JSON.parse((await all()).toString('utf8')) as unknown,
    text: async () => (await all()).toString('utf8'),
    arrayBuffer: async () => {
      const b = await all();
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
    },
  };
}

let shared: NodeUploadTransport | undefined;

/** One transport per process: its kept-alive sockets serve every RelayHttp. */
export function nodeUploadTransport(): NodeUploadTransport {
  return (shared ??= new NodeUploadTransport());
}
