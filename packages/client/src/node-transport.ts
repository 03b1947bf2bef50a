/**
 * Streamed uploads over node:http / node:https (Node only; RelayHttp's fetch path stays
 * the isomorphic default). Measured on a backup to the relay (issue 13): `fetch` sent a
 * pack as one web-stream read, one chunk frame and one socket write per sealed piece —
 * ciphertext and 16-byte tag apart, ~8,400 small writes per 260 MiB, each its own TCP
 * segment for the relay to parse. Here each batch the engine hands over (about a chunk's
 * sealed segments) goes out corked, as one writev.
 *
 * Keep-alive sockets (a few per origin) are reused between objects. TLS uses Node's
 * default trust store, as `fetch` does (the system CAs plus NODE_EXTRA_CA_CERTS);
 * redirects are never followed (a 3xx is just an answer).
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { StreamedRequest, TransportAnswer, UploadTransport } from './relay-http.js';

/** The answer to an upload is a status and perhaps a small JSON error; more is refused. */
const ANSWER_MAX = 64 * 1024;
/** Keep-alive sockets per origin: the engine commits two packs while filling a third. */
const SOCKETS_PER_ORIGIN = 4;

/** A failure of the exchange itself (no usable answer), with a code for the caller's message. */
export class TransportError extends Error {
  override name = 'TransportError';
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface NodeUploadTransportOptions {
  /** Sockets kept per origin (default 4). */
  readonly maxSockets?: number;
}

export class NodeUploadTransport implements UploadTransport {
  readonly #http: HttpAgent;
  readonly #https: HttpsAgent;

  constructor(options: NodeUploadTransportOptions = {}) {
    const maxSockets = options.maxSockets ?? SOCKETS_PER_ORIGIN;
    this.#http = new HttpAgent({ keepAlive: true, maxSockets, scheduling: 'lifo' });
    this.#https = new HttpsAgent({ keepAlive: true, maxSockets, scheduling: 'lifo' });
  }

  /** Closes the kept sockets. */
  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }

  send(r: StreamedRequest): Promise<TransportAnswer> {
    const url = new URL(r.url);
    const https = url.protocol === 'https:';
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
      const req: ClientRequest = (https ? httpsRequest : httpRequest)(url, {
        method: r.method,
        headers: { ...r.headers, 'transfer-encoding': 'chunked' },
        agent: https ? this.#https : this.#http,
      });
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
      header: (name) => {
        const v = headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
      },
      body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, n),
    });
  });
}

function exchangeError(e: Error, req: ClientRequest): TransportError {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (code.startsWith('HPE_')) return new TransportError(`the answer is not valid HTTP (${code})`, 'BAD_ANSWER', { cause: e });
  if (code === 'ECONNRESET' && req.reusedSocket) return new TransportError('connection reset (a kept-alive connection the server had closed)', code, { cause: e });
  if (code === 'ECONNRESET') return new TransportError('connection reset', code, { cause: e });
  if (code === 'ECONNREFUSED') return new TransportError('connection refused', code, { cause: e });
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new TransportError('host not found', code, { cause: e });
  return new TransportError(e.message || code || String(e), code || 'ERR', { cause: e });
}

let shared: NodeUploadTransport | undefined;

/** One transport per process: its kept-alive sockets serve every RelayHttp. */
export function nodeUploadTransport(): NodeUploadTransport {
  return (shared ??= new NodeUploadTransport());
}
