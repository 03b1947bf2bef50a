/**
 * The client side of the relay HTTP API (spec/relay-api.md), over `fetch`, or over the
 * transport a Node caller gives (`uploads`: node-transport.ts). Isomorphic: no `node:*`,
 * so the same code runs in a browser. Every request has a deadline; a
 * network failure, a timeout or a 5xx becomes `UnavailableError`, 401 becomes
 * `InvalidCredentialsError`, 429 `RateLimitedError`. Bodies are never logged.
 */
import { LABELS, fromBase64Url, toBase64Url, utf8, concat, sha256, POW_LABEL, leadingZeroBits } from '@coffer/protocol/core';
import { CofferClientError, InvalidCredentialsError, RateLimitedError, UnavailableError } from './errors.js';

/** spec/relay-api.md §1: what a device signs to open a session. */
/** spec/relay-api.md §1; the one definition is @coffer/protocol's LABELS.relaySession. */
export const SESSION_SIGNATURE_LABEL = LABELS.relaySession;

/** `'coffer-relay/v1/session' || 0x00 || challenge` (spec/relay-api.md §1). */
/** The current account password, or a device key that signs a fresh challenge. */
export type AccountProof = { readonly currentPassword: string } | { readonly sign: (message: Uint8Array) => Promise<Uint8Array> | Uint8Array };

export function sessionSignatureInput(challenge: Uint8Array): Uint8Array {
  return concat(utf8(SESSION_SIGNATURE_LABEL), new Uint8Array([0]), challenge);
}

export interface RelayHttpOptions {
  /** Base URL, e.g. `http://127.0.0.1:7440`. */
  readonly server: string;
  /** The bearer token to send, or undefined for unauthenticated calls. */
  readonly token?: () => Promise<string | undefined> | string | undefined;
  /**
   * Called once when an authenticated request gets 401; returns true when it got a
   * fresh token (the request is then retried once).
   */
  readonly refreshToken?: () => Promise<boolean>;
  /** Per-request deadline in ms (default 30 s; blob transfers get `blobTimeoutMs`). */
  readonly timeoutMs?: number;
  /** Deadline for blob transfers (default 5 min). */
  readonly blobTimeoutMs?: number;
  readonly fetch?: typeof fetch;
  /**
   * Sends streamed uploads (`upload`) instead of `fetch`: on Node, `NodeUploadTransport`
   * (node-transport.ts), which writes a pack in a few large writes. Without it uploads go
   * through `fetch` as a ReadableStream.
   */
  readonly uploads?: UploadTransport;
  /**
   * Allow `http://` to a relay that is not on loopback (account passwords and tokens
   * then cross the network in clear text). Off by default: such a URL is refused.
   */
  readonly insecure?: boolean;
}

/** Whether `host` (a URL's hostname) is this machine: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Proof-of-work puzzles one password sign-in solves at most (each asked by a 428). */
const MAX_POW_ROUNDS = 4;

/** Solves the relay's proof-of-work puzzle (spec/relay-api.md §1): SHA-256(label || 0 || challenge || nonce) with `bits` leading zero bits. */
export async function solveRelayPow(pow: { challenge: string; bits: number }): Promise<{ challenge: string; bits: number; nonce: string }> {
  const prefix = concat(new TextEncoder().encode(POW_LABEL), new Uint8Array([0]), fromBase64Url(pow.challenge));
  const input = new Uint8Array(prefix.length + 8);
  input.set(prefix);
  const view = new DataView(input.buffer, prefix.length, 8);
  for (let i = 0; ; i++) {
    view.setUint32(0, Math.floor(i / 2 ** 32));
    view.setUint32(4, i >>> 0);
    if (leadingZeroBits(await sha256(input)) >= pow.bits) return { challenge: pow.challenge, bits: pow.bits, nonce: toBase64Url(input.subarray(prefix.length)) };
  }
}

export interface RelayErrorBody {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  readonly retryAfter?: number;
}

/** A relay answer that is not a success and not one the SDK maps by itself. */
export class RelayResponseError extends CofferClientError {
  override name = 'RelayResponseError';
  constructor(readonly relay: RelayErrorBody) {
    super('protocol', `the server answered ${relay.status} ${relay.code}: ${relay.message}`);
  }
}

/** A request body sent as it is produced: batches of bytes, each batch in one write. */
export type StreamedBody = AsyncIterable<readonly Uint8Array[]>;

/** One request with a streamed (chunked) body, as a transport sends it. */
export interface StreamedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: StreamedBody;
  /** Ends the exchange (the transport rejects with the signal's reason). */
  readonly signal: AbortSignal;
}

/** An answer read whole: the status, headers, and the (small, bounded) body. */
export interface TransportAnswer {
  readonly status: number;
  readonly statusText: string;
  header(name: string): string | null;
  readonly body: Uint8Array;
}

/**
 * Sends streamed uploads. Resolves once the answer has been read whole (it may come
 * before the body was sent whole: a refusal); rejects when there is no usable answer,
 * with an error whose `code` says why (ECONNRESET, ECONNREFUSED, BAD_ANSWER, …).
 *
 * `request`, when the transport has it, sends every other request too (instead of
 * `fetch`): on Node, NodeUploadTransport over node:http, so that a process that only
 * moves blobs never loads undici (issue 13).
 */
export interface UploadTransport {
  send(request: StreamedRequest): Promise<TransportAnswer>;
  request?(request: PlainRequest): Promise<RelayResponse>;
}

/** One request whose body (if any) is known whole. */
export interface PlainRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Uint8Array | string;
  /** Ends the exchange, the body's reading included (rejects with the signal's reason). */
  readonly signal: AbortSignal;
}

/** A response body read piece by piece (what this SDK reads of a WHATWG ReadableStream). */
export interface RelayResponseBody {
  getReader(): { read(): Promise<{ done: true; value?: undefined } | { done: false; value: Uint8Array }>; cancel(): Promise<void> };
  cancel(): Promise<void>;
}

/** What this SDK reads of an answer: a WHATWG `Response` has it all (the `fetch` path). */
export interface RelayResponse {
  readonly status: number;
  readonly statusText: string;
  readonly ok: boolean;
  readonly headers: { get(name: string): string | null };
  readonly body: RelayResponseBody | null;
  json(): Promise<unknown>;
  text(): Promise<string>;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** What the error mapping reads from an answer, whichever way it came. */
interface Answer {
  readonly status: number;
  readonly statusText: string;
  header(name: string): string | null;
  json(): Promise<unknown>;
}

/**
 * The most bytes of an answer read whole (its JSON, text or bytes: every answer but a
 * blob's, which is read as a stream). The relay's operator is an attacker too: an answer
 * without end must not take the client's memory with it.
 */
export const ANSWER_BODY_MAX = 1024 * 1024;

/** All of `body` (none: empty), refused as 'protocol' past `max` bytes (`what` names the answer). */
async function readAtMost(body: RelayResponseBody | null, max: number, what: string): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  try {
    for (;;) {
      const x = await reader.read();
      if (x.done) break;
      n += x.value.length;
      if (n > max) throw new CofferClientError('protocol', `${what} is over ${max} bytes`);
      parts.push(x.value);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return concat(...parts);
}

/** `res` whose json(), text() and arrayBuffer() read at most ANSWER_BODY_MAX bytes (its body stays as it is). */
function bounded(res: RelayResponse): RelayResponse {
  const all = () => readAtMost(res.body, ANSWER_BODY_MAX, "the server's answer");
  const text = async () => new TextDecoder().decode(await all());
  return {
    status: res.status,
    statusText: res.statusText,
    ok: res.ok,
    headers: res.headers,
    body: res.body,
    json: async () => JSON.parse(await text()) as unknown,
    text,
    arrayBuffer: async () => (await all()).buffer as ArrayBuffer,
  };
}

function responseAnswer(res: RelayResponse): Answer {
  return { status: res.status, statusText: res.statusText, header: (n) => res.headers.get(n), json: () => res.json() };
}

function transportAnswer(a: TransportAnswer): Answer {
  return { status: a.status, statusText: a.statusText, header: (n) => a.header(n), json: async () => JSON.parse(new TextDecoder().decode(a.body)) as unknown };
}

/** The body of an answer to an upload through `fetch`, read whole up to this many bytes. */
const UPLOAD_ANSWER_MAX = 64 * 1024;

interface Call {
  readonly method: string;
  readonly path: string;
  readonly auth: boolean;
  /**
   * A stream is sent as it is read (chunked, no content-length) and, being consumed,
   * is never sent twice: a 401 comes back to the caller (see `refreshSession`).
   */
  readonly body?: Uint8Array | object | ReadableStream<Uint8Array>;
  readonly headers?: Record<string, string>;
  readonly timeoutMs?: number;
  /** Ends the request instead of the deadline (the caller keeps its own). */
  readonly signal?: AbortSignal;
  /** Statuses returned to the caller instead of thrown. */
  readonly pass?: readonly number[];
}

/**
 * Whether a call's body is a web stream. The global `ReadableStream` is looked at only for
 * a body that reads like one: its first use loads Node's web streams (~0.1 MB of heap that
 * stays), which a process whose calls carry bytes or JSON never needs (issue 13: a backup's
 * heap sits at V8's 8 MB incremental-marking threshold).
 */
function isWebStream(body: unknown): body is ReadableStream<Uint8Array> {
  return typeof body === 'object' && body !== null && !(body instanceof Uint8Array) && typeof (body as { getReader?: unknown }).getReader === 'function' && body instanceof ReadableStream;
}

export class RelayHttp {
  readonly server: string;
  readonly #o: RelayHttpOptions;
  readonly #fetch: typeof fetch;

  constructor(options: RelayHttpOptions) {
    let url: URL;
    try {
      url = new URL(options.server);
    } catch {
      throw new CofferClientError('bad-config', `server: not a URL: ${options.server}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CofferClientError('bad-config', `server: must be an http(s) URL, got ${options.server}`);
    if (url.protocol === 'http:' && !isLoopbackHost(url.hostname) && !options.insecure) {
      throw new CofferClientError('bad-config', `server: ${url.origin} is plain http on another machine: account passwords and tokens would cross the network in clear text; use https:// (or --insecure / COFFER_INSECURE_HTTP=1 if you really mean it)`);
    }
    this.server = url.href.replace(/\/+$/, '');
    this.#o = options;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** One HTTP exchange with deadline and error mapping. */
  async call(c: Call): Promise<RelayResponse> {
    const first = await this.#once(c);
    if (first.status === 401 && isWebStream(c.body)) return this.#check({ ...c, pass: [...(c.pass ?? []), 401] }, first);
    if (first.status === 401 && c.auth && this.#o.refreshToken && !(c.pass ?? []).includes(401)) {
      await first.body?.cancel().catch(() => {});
      if (await this.#o.refreshToken()) return this.#check(c, await this.#once(c));
    }
    return this.#check(c, first);
  }

  /** Gets a fresh session when the SDK can (a device key); true if it did. */
  async refreshSession(): Promise<boolean> {
    return (await this.#o.refreshToken?.()) ?? false;
  }

  async #once(c: Call): Promise<RelayResponse> {
    const headers: Record<string, string> = { ...(c.headers ?? {}) };
    if (c.auth) {
      const token = await this.#o.token?.();
      if (!token) throw new CofferClientError('not-logged-in', 'not logged in: run `coffer account create` or `coffer login` first');
      headers.authorization = `Bearer ${token}`;
    }
    let body: Uint8Array | string | ReadableStream<Uint8Array> | undefined;
    const streamed = isWebStream(c.body);
    if (streamed) {
      body = c.body;
      headers['content-type'] ??= 'application/octet-stream';
    } else if (c.body instanceof Uint8Array) {
      body = c.body;
      headers['content-type'] ??= 'application/octet-stream';
    } else if (c.body !== undefined) {
      body = JSON.stringify(c.body);
      headers['content-type'] = 'application/json';
    }
    const timeout = c.timeoutMs ?? this.#o.timeoutMs ?? 30_000;
    const signal = c.signal ?? AbortSignal.timeout(timeout);
    try {
      // Through the transport when it has `request` (node:http: never follows a redirect)
      // and the caller brought no fetch of its own; a stream body always goes to fetch.
      const transport = this.#o.fetch ? undefined : this.#o.uploads;
      if (transport?.request && !streamed) return bounded(await transport.request({ method: c.method, url: `${this.server}${c.path}`, headers, ...(body !== undefined ? { body: body as Uint8Array | string } : {}), signal }));
      // Never follow a redirect: it would carry the bearer token (and passwords) elsewhere.
      // A stream body needs `duplex: 'half'` (Fetch standard; Node's fetch requires it).
      const init = { method: c.method, headers, redirect: 'error', ...(body !== undefined ? { body } : {}), ...(streamed ? { duplex: 'half' } : {}), signal } as RequestInit;
      return bounded(await this.#fetch(`${this.server}${c.path}`, init));
    } catch (e) {
      const name = (e as Error)?.name;
      if (c.signal?.aborted) throw new UnavailableError(`${c.method} ${c.path} was ended: ${describeFetchError(c.signal.reason ?? e)}`, e);
      if (name === 'TimeoutError' || name === 'AbortError') throw new UnavailableError(`${this.server} did not answer within ${Math.round(timeout / 1000)} s`, e);
      throw new UnavailableError(`cannot reach ${this.server}: ${describeFetchError(e)}`, e);
    }
  }

  async #check(c: Call, res: RelayResponse): Promise<RelayResponse> {
    if (res.ok || (c.pass ?? []).includes(res.status)) return res;
    return this.#refuse(responseAnswer(res));
  }

  /** The error for an answer that is neither a success nor one the caller handles. */
  async #refuse(res: Answer): Promise<never> {
    const err = await readError(res);
    if (res.status === 401) throw new InvalidCredentialsError();
    if (res.status === 429) throw new RateLimitedError(err.retryAfter ?? retryAfterHeader(res) ?? 1, `the server is limiting requests (${err.code})`);
    if (res.status >= 500) throw new UnavailableError(`the server failed: ${res.status} ${err.code}: ${err.message}`);
    throw new RelayResponseError(err);
  }

  /**
   * One authenticated upload whose body is sent as it is produced (chunked), through the
   * `uploads` transport when there is one, else `fetch`. The body is consumed, so it is
   * never sent twice: 401 comes back to the caller like the `pass` statuses; other
   * failures map as in `call`. Ended by `signal` only (the caller keeps its deadline).
   */
  async upload(u: { readonly path: string; readonly body: StreamedBody; readonly signal: AbortSignal; readonly pass: readonly number[] }): Promise<TransportAnswer> {
    const token = await this.#o.token?.();
    if (!token) throw new CofferClientError('not-logged-in', 'not logged in: run `coffer account create` or `coffer login` first');
    const request: StreamedRequest = {
      method: 'PUT',
      url: `${this.server}${u.path}`,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
      body: u.body,
      signal: u.signal,
    };
    let answer: TransportAnswer;
    try {
      answer = this.#o.uploads ? await this.#o.uploads.send(request) : await this.#fetchUpload(request);
    } catch (e) {
      if (e instanceof CofferClientError) throw e;
      if (u.signal.aborted) throw new UnavailableError(`PUT ${u.path} was ended: ${describeFetchError(u.signal.reason ?? e)}`, e);
      if ((e as { code?: unknown })?.code === 'BAD_ANSWER') throw new CofferClientError('protocol', `PUT ${u.path}: ${(e as Error).message}`, { cause: e });
      throw new UnavailableError(`cannot reach ${this.server}: ${describeFetchError(e)}`, e);
    }
    if ((answer.status >= 200 && answer.status < 300) || answer.status === 401 || u.pass.includes(answer.status)) return answer;
    return this.#refuse(transportAnswer(answer));
  }

  /** `upload` through `fetch`: the batches as a ReadableStream, the answer read whole. */
  async #fetchUpload(r: StreamedRequest): Promise<TransportAnswer> {
    const it = r.body[Symbol.asyncIterator]();
    let pending: Uint8Array[] = [];
    const body = new ReadableStream<Uint8Array>(
      {
        pull: async (ctl) => {
          while (pending.length === 0) {
            const n = await it.next();
            if (n.done) return ctl.close();
            pending = n.value.filter((p) => p.length > 0);
          }
          ctl.enqueue(pending.shift()!);
        },
        cancel: async () => {
          await it.return?.();
        },
      },
      { highWaterMark: 0 },
    );
    // Never follow a redirect (the bearer token); a stream body needs `duplex: 'half'`.
    const init = { method: r.method, headers: r.headers, redirect: 'error', body, duplex: 'half', signal: r.signal } as RequestInit;
    const res = await this.#fetch(r.url, init);
    const answer = await readAtMost(res.body, UPLOAD_ANSWER_MAX, `PUT ${r.url}: the answer's body`);
    return { status: res.status, statusText: res.statusText, header: (h) => res.headers.get(h), body: answer };
  }

  async json<T>(c: Call): Promise<T> {
    const res = await this.call(c);
    try {
      return (await res.json()) as T;
    } catch (e) {
      throw new CofferClientError('protocol', `${c.method} ${c.path}: the server's answer is not JSON`, { cause: e });
    }
  }

  // §1 accounts and sessions

  /** A built-in account holding `publicKey` and, when given, an account password (spec §1). */
  async createAccount(publicKey: Uint8Array, password?: string): Promise<string> {
    const body = { publicKey: toBase64Url(publicKey), ...(password !== undefined ? { password } : {}) };
    const r = await this.json<{ account?: unknown }>({ method: 'POST', path: '/v1/accounts', auth: false, body });
    if (typeof r.account !== 'string') throw new CofferClientError('protocol', 'POST /v1/accounts: no account in the answer');
    return r.account;
  }

  /** Challenge → signature → session token (spec §1). */
  async login(account: string, sign: (message: Uint8Array) => Promise<Uint8Array> | Uint8Array): Promise<{ token: string; expiresAt: number }> {
    const ch = await this.json<{ challenge?: unknown }>({ method: 'POST', path: '/v1/sessions/challenge', auth: false, body: { account } });
    if (typeof ch.challenge !== 'string') throw new CofferClientError('protocol', 'POST /v1/sessions/challenge: no challenge in the answer');
    const signature = await sign(sessionSignatureInput(fromBase64Url(ch.challenge)));
    const s = await this.json<{ token?: unknown; expiresAt?: unknown }>({
      method: 'POST',
      path: '/v1/sessions',
      auth: false,
      body: { account, challenge: ch.challenge, signature: toBase64Url(signature) },
    });
    if (typeof s.token !== 'string' || typeof s.expiresAt !== 'number') throw new CofferClientError('protocol', 'POST /v1/sessions: no token in the answer');
    return { token: s.token, expiresAt: s.expiresAt };
  }

  /**
   * A session from the account password (spec §1). The relay answers 401 for an unknown
   * account, no password set, or a wrong one (InvalidCredentialsError), 429 when limited.
   */
  async loginWithPassword(account: string, password: string): Promise<{ token: string; expiresAt: number }> {
    const res = await this.#callWithPow({ method: 'POST', path: '/v1/sessions/password', auth: false, body: { account, password } }, [401]);
    if (res.status === 401) {
      await res.body?.cancel().catch(() => {});
      throw new InvalidCredentialsError('the server refused the account password: wrong password, unknown account, or the account has no account password');
    }
    const s = (await res.json().catch(() => ({}))) as { token?: unknown; expiresAt?: unknown };
    if (typeof s.token !== 'string' || typeof s.expiresAt !== 'number') throw new CofferClientError('protocol', 'POST /v1/sessions/password: no token in the answer');
    return { token: s.token, expiresAt: s.expiresAt };
  }

  /** A fresh single-use challenge for `account` (spec §1). */
  async challenge(account: string): Promise<Uint8Array> {
    const ch = await this.json<{ challenge?: unknown }>({ method: 'POST', path: '/v1/sessions/challenge', auth: false, body: { account } });
    if (typeof ch.challenge !== 'string') throw new CofferClientError('protocol', 'POST /v1/sessions/challenge: no challenge in the answer');
    return fromBase64Url(ch.challenge);
  }

  /**
   * Proof of a long-term credential for the changes a session alone may not make
   * (spec §1): the current account password, or a device key's signature over a fresh
   * challenge of `account`.
   */
  async credentialProof(account: string, proof: AccountProof): Promise<Record<string, string>> {
    if ('currentPassword' in proof) return { currentPassword: proof.currentPassword };
    const challenge = await this.challenge(account);
    const signature = await proof.sign(sessionSignatureInput(challenge));
    return { challenge: toBase64Url(challenge), signature: toBase64Url(signature) };
  }

  /** Sets or replaces the signed-in built-in account's password (spec §1); other sessions end. */
  async setAccountPassword(account: string, password: string, proof: AccountProof, options: { revokeOtherDevices?: boolean } = {}): Promise<void> {
    const body = { password, ...(options.revokeOtherDevices ? { revokeOtherDevices: true } : {}), ...(await this.credentialProof(account, proof)) };
    await this.#proofCall({ method: 'PUT', path: '/v1/accounts/password', auth: true, body });
  }

  /** The signed-in account's device keys; `current` is the key of this session (null when it came from the password). */
  async listDeviceKeys(): Promise<{ keys: { publicKey: string; createdAt: number; lastUsedAt: number | null }[]; current: string | null }> {
    return this.json({ method: 'GET', path: '/v1/accounts/keys', auth: true });
  }

  /** Removes a device key (and ends its sessions); needs a proof like every credential change. */
  async removeDeviceKey(account: string, publicKey: string, proof: AccountProof): Promise<void> {
    const body = await this.credentialProof(account, proof);
    await this.#proofCall({ method: 'DELETE', path: `/v1/accounts/keys/${encodeURIComponent(publicKey)}`, auth: true, body });
  }

  /** Ends every other session of the account; how many. */
  async revokeOtherSessions(): Promise<number> {
    const r = await this.json<{ revoked?: unknown }>({ method: 'DELETE', path: '/v1/sessions', auth: true });
    return typeof r.revoked === 'number' ? r.revoked : 0;
  }

  /** Signs this session out. */
  async signOut(): Promise<void> {
    const res = await this.call({ method: 'DELETE', path: '/v1/sessions/current', auth: true });
    await res.body?.cancel().catch(() => {});
  }

  /** Registers another device key for the signed-in built-in account (spec §1). */
  async addDeviceKey(account: string, publicKey: Uint8Array, proof: AccountProof): Promise<void> {
    const body = { publicKey: toBase64Url(publicKey), ...(await this.credentialProof(account, proof)) };
    await this.#proofCall({ method: 'POST', path: '/v1/accounts/keys', auth: true, body });
  }

  /**
   * `c` (a JSON body), answering the relay's proof-of-work requests: the account's password
   * is being tried by others beyond its limit, and a password sign-in or a credential
   * change proved by `currentPassword` needs a solved puzzle (spec §1; not a lockout). A
   * puzzle that got easier than what the account asks by the time it is solved (others
   * kept trying) is answered with a new, harder one: solved again, a few times at most.
   */
  async #callWithPow(c: Call & { body: object }, pass: number[]): Promise<RelayResponse> {
    let res = await this.call({ ...c, pass: [...pass, 428] });
    for (let round = 1; res.status === 428; round++) {
      const j = (await res.json().catch(() => ({}))) as { error?: { pow?: { challenge?: unknown; bits?: unknown } } };
      const p = j.error?.pow;
      if (typeof p?.challenge !== 'string' || typeof p.bits !== 'number' || p.bits > 32) throw new CofferClientError('protocol', `${c.method} ${c.path}: a proof-of-work request without a usable puzzle`);
      const pow = await solveRelayPow({ challenge: p.challenge, bits: p.bits });
      res = await this.call({ ...c, body: { ...c.body, pow }, pass: round < MAX_POW_ROUNDS ? [...pass, 428] : pass });
    }
    return res;
  }

  async #proofCall(c: Call & { body: object }): Promise<void> {
    // A password proof may be asked for a proof-of-work, as a password sign-in is: while
    // the account is being guessed, its owner still changes the password or its keys.
    const res = await this.#callWithPow(c, [401]);
    if (res.status === 401) {
      const err = await readError(responseAnswer(res));
      if (err.code === 'invalid-credentials') throw new InvalidCredentialsError(`the server refused the proof: ${err.message}`);
      throw new InvalidCredentialsError();
    }
    await res.body?.cancel().catch(() => {});
  }

  /** The fleet key bundle JSON the relay publishes (spec §5), to pin on first use. */
  async fleetBundle(): Promise<string> {
    const res = await this.call({ method: 'GET', path: '/v1/fleet-bundle', auth: false });
    return await res.text();
  }

  // §2 vault messages

  /** One sealed vault request through the relay; the sealed response back. */
  async vault(request: Uint8Array): Promise<Uint8Array> {
    const res = await this.call({ method: 'POST', path: '/v1/vault', auth: true, body: request });
    return new Uint8Array(await res.arrayBuffer());
  }
}

async function readError(res: Answer): Promise<RelayErrorBody> {
  let code = `http-${res.status}`;
  let message = res.statusText || 'no message';
  let retryAfter: number | undefined;
  try {
    const j = (await res.json()) as { error?: { code?: unknown; message?: unknown; retryAfter?: unknown } };
    if (typeof j.error?.code === 'string') code = j.error.code;
    if (typeof j.error?.message === 'string') message = j.error.message;
    if (typeof j.error?.retryAfter === 'number') retryAfter = j.error.retryAfter;
  } catch {
    // not JSON: keep the status line
  }
  return { status: res.status, code, message, ...(retryAfter !== undefined ? { retryAfter } : {}) };
}

function retryAfterHeader(res: Answer): number | undefined {
  const h = res.header('retry-after');
  return h && /^\d+$/.test(h) ? Number(h) : undefined;
}

function describeFetchError(e: unknown): string {
  // A transport's own error (node-transport.ts) says what happened in its message.
  if ((e as Error)?.name === 'TransportError') return (e as Error).message;
  const cause = (e as { cause?: { code?: string; message?: string } })?.cause;
  if (cause?.code === 'ECONNREFUSED') return 'connection refused';
  if (cause?.code === 'ENOTFOUND') return 'host not found';
  if (cause?.code === 'ECONNRESET') return 'connection reset';
  return cause?.message ?? (e as Error)?.message ?? String(e);
}
