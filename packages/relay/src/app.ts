/**
 * The coffer-relay HTTP service (spec/relay-api.md): client authentication, limits,
 * forwarding of sealed vault messages, and the blob API.
 *
 * `buildApp` returns an app that is not listening, for `app.inject()` tests; `main.ts`
 * listens. Logs never carry request bodies or the authorization header.
 */
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import type { AccountStore } from './auth/account-store.js';
import { makeAuthenticator } from './auth/authenticate.js';
import type { JwtVerifier } from './auth/jwt.js';
import type { BlobStore } from './blobs/store.js';
import { errorBody, ERRORS, rawErrorResponse, RelayError, type ErrorCode } from './errors.js';
import type { RelayMetrics } from './metrics.js';
import { addressKey, TokenBuckets, type BucketRule } from './rate-limit.js';
import { accountRoutes, DEFAULT_POW, type PowRule } from './routes/accounts.js';
import { prepareDummyPasswordHash, type PasswordKdf } from './auth/password.js';
import { blobRoutes } from './routes/blobs.js';
import { lingerAfterAnswer } from './lingering-close.js';
import { closeIdleUntilClosed } from '@coffer/protocol/node';
import { capConnectionsPerAddress, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, proxyMatcher } from './connection-cap.js';
import { vaultRoutes, VAULT_BODY_LIMIT } from './routes/vault.js';
import type { VaultForwarder } from './vault-forwarder.js';

export interface RateLimits {
  /** Every request from one address (except /healthz and /metrics). */
  readonly perAddress: BucketRule;
  /** Every authenticated request of one account. */
  readonly perAccount: BucketRule;
  /** POST /v1/accounts per address. */
  readonly accountCreation: BucketRule;
  /** Sign-in (challenge, session, password) per address, every attempt. */
  readonly signInByAddress: BucketRule;
  /**
   * Failed device-key sign-ins (and device-key proofs) per (account, address), counted
   * only for a wrong signature over a live challenge issued for that account. There is
   * no per-account device-key bucket: a signature cannot be guessed, so strangers have
   * nothing to gain and must not be able to spend the owner's budget.
   */
  readonly signInByAccountAddress: BucketRule;
  /** Accepted for older configs; no longer used (see signInByAccountAddress). */
  readonly signInByAccount: BucketRule;
  /** Failed account-password attempts (sign-in, proofs) per (account, address) and per account. */
  readonly passwordSignInByAccountAddress: BucketRule;
  /** Beyond it, attempts need a proof-of-work of growing difficulty (`passwordPow`), not a lockout. */
  readonly passwordSignInByAccount: BucketRule;
  readonly passwordPow: PowRule;
}

export const DEFAULT_LIMITS: RateLimits = {
  perAddress: { perSecond: 100, burst: 400 },
  perAccount: { perSecond: 20, burst: 100 },
  accountCreation: { perSecond: 1 / 60, burst: 10 },
  signInByAddress: { perSecond: 1, burst: 20 },
  signInByAccountAddress: { perSecond: 0.2, burst: 10 },
  // Device-key signatures cannot be guessed: this cap only bounds the work.
  signInByAccount: { perSecond: 1, burst: 60 },
  passwordSignInByAccountAddress: { perSecond: 1 / 300, burst: 5 },
  // 30 wrong passwords, then one a minute: ~1,440 guesses a day at most against one
  // account, from all addresses together.
  passwordSignInByAccount: { perSecond: 1 / 60, burst: 30 },
  passwordPow: DEFAULT_POW,
};

export const DEFAULT_MAX_OBJECT_BYTES = 64 * 1024 * 1024;
/** Blob upload bytes in flight (announced or received, not yet stored), across the relay. */
export const DEFAULT_MAX_IN_FLIGHT_BYTES = 256 * 1024 * 1024;
/** An upload body that sends nothing for this long is ended (408). */
export const DEFAULT_BODY_IDLE_TIMEOUT_MS = 15_000;

/** Redacted from every log line. */
export const LOG_REDACT = ['req.headers.authorization', 'req.headers["coffer-relay-auth"]', 'req.headers.cookie', 'res.headers["set-cookie"]'];

export interface AppOptions {
  readonly accounts: AccountStore | null;
  readonly jwt: JwtVerifier | null;
  readonly forwarder: VaultForwarder;
  readonly blobs: BlobStore;
  readonly metrics: RelayMetrics;
  readonly limits?: Partial<RateLimits>;
  readonly maxObjectBytes?: number;
  /** Per-account blob quota in bytes; 0 = unlimited. */
  readonly quotaBytes?: number;
  /** The account-password KDF (tests count calls through it); default scrypt. */
  readonly passwordKdf?: PasswordKdf;
  /** Upload bytes in flight across the relay; more is 503 uploads-busy. */
  readonly maxInFlightBytes?: number;
  /** Upload bytes in flight for one account; more is 429 account-uploads-busy. Default: maxObjectBytes. */
  readonly maxInFlightBytesPerAccount?: number;
  /** An upload body idle this long is ended with 408 (ms); default 15 s. */
  readonly bodyIdleTimeoutMs?: number;
  /**
   * Proxies in front whose X-Forwarded-For is believed: a hop count or a list of
   * addresses/CIDRs (Fastify's trustProxy). Unset: the socket's address is the client.
   */
  readonly trustProxy?: number | readonly string[];
  /** pino options (redaction is added), or false for silence. */
  readonly logger?: FastifyServerOptions['logger'];
  /** Whole-request timeout (ms) for slow clients; 0 = none. */
  readonly requestTimeoutMs?: number;
  /** Open connections per client address (connection-cap.ts); 0 = no cap. Default 256. */
  readonly maxConnectionsPerAddress?: number;
  readonly https?: { readonly cert: Buffer; readonly key: Buffer } | null;
  /** File with the fleet key bundle JSON for GET /v1/fleet-bundle; null/absent = 404. */
  readonly fleetBundleFile?: string | null;
  /** Clock for the rate limiter (tests). */
  readonly now?: () => number;
}

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'body-too-large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported-media-type',
  FST_ERR_CTP_EMPTY_TYPE: 'unsupported-media-type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad-request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'bad-request',
  FST_ERR_CTP_INVALID_JSON_BODY: 'bad-request',
  FST_ERR_REQ_TIMEOUT: 'request-timeout',
};

/** Fastify's router's own refusals (frameworkErrors), as the catalogue's 400. */
function frameworkError(_err: Error, _req: FastifyRequest, reply: FastifyReply): void {
  void reply.code(400).send(errorBody('bad-request'));
}

function hopCount(hops: number): (address: string, i: number) => boolean {
  return (_address, i) => i < hops;
}

export function buildApp(options: AppOptions): FastifyInstance {
  const logger = options.logger === undefined || options.logger === false ? false : { ...(typeof options.logger === 'object' ? options.logger : {}), redact: LOG_REDACT };
  const app = Fastify({
    logger,
    bodyLimit: VAULT_BODY_LIMIT,
    requestIdHeader: false,
    // One log line per request (the onResponse hook below), not Fastify's two: the relay
    // forwards each vault message in a request of its own, and per request a third of its
    // CPU went to three log lines (issue 13, bench:relay profile). (The LogController form:
    // Fastify's `disableRequestLogging` option is deprecated.)
    logController: new LogController({ disableRequestLogging: true }),
    // A list: only those peers' X-Forwarded-For is believed (proxy-addr), hop by hop. A hop
    // count trusts that many hops whoever the peer is (Fastify itself refuses numbers):
    // only for a relay that nothing can reach except through its proxies.
    ...(options.trustProxy !== undefined ? { trustProxy: typeof options.trustProxy === 'number' ? hopCount(options.trustProxy) : [...options.trustProxy] } : {}),
    // Errors before a request exists (header overflow, a malformed request line, a
    // header timeout) get the catalogue's body shape too.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket: Socket) => {
      if (!socket.writable || (err as { code?: string }).code === 'ECONNRESET') {
        socket.destroy();
        return;
      }
      const c = err.code === 'HPE_HEADER_OVERFLOW' ? 'headers-too-large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request-timeout' : 'bad-request';
      socket.end(rawErrorResponse(c));
    },
    // What Fastify's router refuses itself (a malformed percent-escape in the path, a route
    // parameter above maxParamLength) gets the catalogue's shape too, not Fastify's own
    // body echoing the path.
    frameworkErrors: frameworkError,
    requestTimeout: options.requestTimeoutMs ?? 120_000,
    connectionTimeout: 0,
    keepAliveTimeout: 65_000,
    // The /v1/blobs/* names are checked by the routes; no trailing-slash magic.
    // Request/header timeouts are checked every second (Node's default is every 30 s).
    ...(options.https ? { https: { cert: options.https.cert, key: options.https.key, connectionsCheckingInterval: 1000 } as never } : { http: { connectionsCheckingInterval: 1000 } }),
  }) as unknown as FastifyInstance;
  // Node applies requestTimeout to a request's body only while headersTimeout ≤
  // requestTimeout (otherwise it swaps the two), and Fastify leaves headersTimeout at
  // Node's 60 s: a requestTimeoutMs below 60 s would end slow headers at requestTimeoutMs
  // but let a body trickle in for 60 s.
  const requestTimeout = options.requestTimeoutMs ?? 120_000;
  if (requestTimeout > 0 && app.server.headersTimeout > requestTimeout) app.server.headersTimeout = requestTimeout;
  // Behind proxies given as a hop count every peer is a proxy: no per-address cap there.
  if (typeof options.trustProxy !== 'number') {
    const exempt = options.trustProxy ? proxyMatcher(options.trustProxy) : () => false;
    capConnectionsPerAddress(app.server, options.maxConnectionsPerAddress ?? DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, { tls: !!options.https, exempt, onRefused: () => options.metrics.connectionsRefused.inc() });
  }
  const logging = logger !== false;
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const now = options.now ? { now: options.now } : {};
  const perAddress = new TokenBuckets(limits.perAddress, now);
  const perAccount = new TokenBuckets(limits.perAccount, now);
  const authenticate = makeAuthenticator({ accounts: options.accounts, jwt: options.jwt, perAccount });
  const { metrics } = options;
  // Kept-alive connections that turn idle while closing are closed at once (@coffer/protocol/node graceful-close.ts).
  app.addHook('preClose', (done) => {
    closeIdleUntilClosed(app.server);
    done();
  });
  const addressOf = (req: { ip: string }): string => addressKey(req.ip);

  // Expect: 100-continue is answered only once the request may send its body: after
  // authentication (and, for uploads, after the byte budget is reserved), never by
  // Node before any hook ran.
  app.server.on('checkContinue', (req, res) => app.server.emit('request', req, res));
  // The hooks that run on every request are callback-style and synchronous: an async hook
  // costs a promise and a microtask hop per request (issue 13, bench:relay profile).
  app.addHook('preParsing', (req, reply, payload, done) => {
    if (req.headers.expect?.toLowerCase() === '100-continue' && !(req.method === 'PUT' && req.url.startsWith('/v1/blobs/'))) reply.raw.writeContinue();
    done(null, payload);
  });

  app.decorateRequest('account', '');
  app.decorateRequest('logFields', null);

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string) as unknown);
    } catch {
      done(new RelayError('bad-request', { message: 'the body is not valid JSON' }), undefined);
    }
  });

  app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, req, reply) => {
    let code: ErrorCode;
    let retryAfter: number | undefined;
    let message: string | undefined;
    if (err instanceof RelayError) {
      code = err.code;
      retryAfter = err.options.retryAfter;
      message = err.options.message;
      if (code === 'blob-store-unavailable' || code === 'blob-store-full') req.log.error({ err: err.cause }, 'blob store failed');
    } else if (err.code && FASTIFY_CODES[err.code]) {
      code = FASTIFY_CODES[err.code]!;
      if (code === 'body-too-large' && req.url.startsWith('/v1/blobs/')) code = 'blob-too-large';
    } else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      code = 'bad-request';
    } else {
      code = 'internal';
      req.log.error({ err }, 'unhandled error');
    }
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter));
    // Refused while its body is still arriving (an unauthenticated upload, one above the
    // size limit): close rather than read the whole body, but linger (read and discard a
    // bounded amount first) so the client sees this answer, not a reset connection.
    if (!req.raw.complete && (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined)) {
      void reply.header('connection', 'close');
      lingerAfterAnswer(req.raw);
    }
    const pow = err instanceof RelayError ? err.options.pow : undefined;
    const body = errorBody(code, { ...(message !== undefined ? { message } : {}), ...(retryAfter !== undefined ? { retryAfter } : {}), ...(pow ? { pow } : {}) });
    void reply.code(ERRORS[code].status).send(body);
  });
  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).send(errorBody('not-found'));
  });

  app.addHook('onRequest', (req, _reply, done) => {
    if (req.url === '/healthz') return done();
    const wait = perAddress.take(addressOf(req));
    done(wait > 0 ? new RelayError('rate-limited', { retryAfter: wait }) : undefined);
  });
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unknown';
    metrics.requests.inc({ route, status: String(reply.statusCode) });
    // The request's one line: what Fastify's "incoming request" and "request completed"
    // said (no headers, no body), plus what the route added (lengths, never bytes).
    if (logging) {
      req.log.info({ method: req.method, url: req.url, route, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10, ...(req.account ? { account: req.account } : {}), ...req.logFields }, 'request');
    }
    done();
  });

  // The dummy scrypt record for unknown accounts, before the first request (auth/password.ts).
  if (options.accounts) app.addHook('onReady', async () => void (await prepareDummyPasswordHash()));
  void app.register(accountRoutes, {
    accounts: options.accounts,
    authenticate,
    accountCreation: new TokenBuckets(limits.accountCreation, now),
    signInByAddress: new TokenBuckets(limits.signInByAddress, now),
    addressOf,
    rules: { keyFailuresByAccountAddress: limits.signInByAccountAddress, passwordFailuresByAccountAddress: limits.passwordSignInByAccountAddress, passwordFailuresByAccount: limits.passwordSignInByAccount, pow: limits.passwordPow },
    ...(options.passwordKdf ? { passwordKdf: options.passwordKdf } : {}),
  });
  void app.register(vaultRoutes, { forwarder: options.forwarder, authenticate });
  void app.register(blobRoutes, { store: options.blobs, authenticate, maxObjectBytes: options.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES, quotaBytes: options.quotaBytes ?? 0, maxInFlightBytes: options.maxInFlightBytes ?? Math.max(DEFAULT_MAX_IN_FLIGHT_BYTES, options.maxObjectBytes ?? 0), maxInFlightBytesPerAccount: options.maxInFlightBytesPerAccount ?? options.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES, bodyIdleTimeoutMs: options.bodyIdleTimeoutMs ?? DEFAULT_BODY_IDLE_TIMEOUT_MS, metrics });

  app.get('/v1/fleet-bundle', async (req, reply) => {
    if (!options.fleetBundleFile) throw new RelayError('not-found');
    let text: string;
    try {
      text = await readFile(options.fleetBundleFile, 'utf8');
    } catch (err) {
      req.log.warn({ err: (err as Error).message }, 'fleet bundle file unreadable');
      throw new RelayError('not-found');
    }
    return reply.type('application/json').send(text);
  });
  app.get('/healthz', async () => ({ status: 'ok' }));

  return app;
}

/**
 * The admin listener: /metrics (counts by route and status are for the operator, not
 * the public) and /healthz. Bind it to loopback or a private network.
 */
export function buildAdminApp(metrics: RelayMetrics): FastifyInstance {
  const admin = Fastify({ logger: false, requestIdHeader: false, frameworkErrors: frameworkError }) as unknown as FastifyInstance;
  admin.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  admin.get('/healthz', async () => ({ status: 'ok' }));
  admin.setNotFoundHandler((_req, reply) => void reply.code(404).send(errorBody('not-found')));
  // Kept-alive connections that turn idle while closing are closed at once (@coffer/protocol/node graceful-close.ts).
  admin.addHook('preClose', (done) => {
    closeIdleUntilClosed(admin.server);
    done();
  });
  return admin;
}
