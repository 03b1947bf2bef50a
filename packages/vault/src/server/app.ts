/**
 * The coffer-vault HTTP service (internal: only the front end talks to it).
 *
 *   POST /v1/request   body: the sealed request (application/octet-stream, 603 bytes)
 *                      header coffer-account: the account the front end authenticated
 *                      → 200 with the sealed response (560 bytes) for every outcome,
 *                        or a 4xx/5xx JSON error from the catalogue (errors.ts)
 *   GET  /healthz      liveness and what the vault runs on
 *   POST /v1/group/ack a fleet member's ack, sent straight to the leader (spec §13.7;
 *                      body: node ID ‖ ack statement, 80 bytes) → 204, or 503 not-leader
 *
 * The admin listener (`buildAdminApp`, its own address and port: config `admin`) serves
 *
 *   GET  /metrics      Prometheus (metrics.ts: coarse labels only)
 *   GET  /healthz      the same as above
 *
 * and nothing else; the request listener has no /metrics (404), so whoever holds the
 * relay link key sees no metrics at all.
 *
 * `buildApp` returns an app that is not listening, for `app.inject()` tests.
 * Logs never carry secrets: request bodies appear as their length only. The per-request
 * line names the account but never the sealed outcome (wrong password, ok, locked, …):
 * whoever reads the logs must not learn whether a given user's guess was right. It
 * carries the operation, sizes, timing and, for a refused or failed request, the error.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { closeIdleUntilClosed } from '@coffer/protocol/node';
import { errorBody, ERRORS, type ErrorCode } from './errors.js';
import { requestClass, type VaultMetrics } from './metrics.js';
import type { VaultService } from './vault-service.js';
import { checkRelayAuth } from './relay-auth.js';
import { RELAY_AUTH_HEADER } from '@coffer/protocol';

export const ACCOUNT_HEADER = 'coffer-account';
/** Far above the fixed request size; anything larger is refused before it is read. */
export const BODY_LIMIT = 4096;

export interface AppOptions {
  readonly service: VaultService;
  readonly metrics: VaultMetrics;
  readonly describe: { readonly platform: string; readonly store: string };
  /** pino options, or false for silence (tests). */
  readonly logger?: FastifyServerOptions['logger'];
  /** The relay link key: when set, /v1/request needs a valid coffer-relay-auth (relay-auth.ts). */
  readonly linkKey?: Uint8Array;
  /** A fleet member: takes acks other members send straight to it while it leads (POST /v1/group/ack). */
  readonly group?: { readonly ackBodyLength: number; receiveAck(body: Uint8Array): Promise<boolean> };
}

/**
 * What Fastify's router refuses by itself (a path with a malformed percent-escape, a route
 * parameter above maxParamLength) names no endpoint: the catalogue's 404, not Fastify's
 * own body (which echoes the path).
 */
function frameworkError(_err: Error, _req: FastifyRequest, reply: FastifyReply): void {
  void reply.code(404).send(errorBody('not-found'));
}

export function buildApp(options: AppOptions): FastifyInstance {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: BODY_LIMIT,
    // Request IDs come from the server, never from a client header.
    requestIdHeader: false,
    // Fastify's own two lines per request (incoming / completed) duplicate the one line
    // each handler below writes, and cost ~0.1 ms per request at the vault's rates.
    logController: new LogController({ disableRequestLogging: true }),
    frameworkErrors: frameworkError,
  });
  // Kept-alive connections that turn idle while closing are closed at once (@coffer/protocol/node graceful-close.ts).
  app.addHook('preClose', (done) => {
    closeIdleUntilClosed(app.server);
    done();
  });
  const { metrics, service } = options;

  // Only octet-stream bodies exist in this API; every other type is a 415.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: { code?: string; statusCode?: number; message: string }, req, reply) => {
    let code: ErrorCode = 'internal';
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') code = 'body-too-large';
    else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.code === 'FST_ERR_CTP_EMPTY_TYPE') code = 'unsupported-media-type';
    else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) code = 'bad-length';
    if (code === 'internal') req.log.error({ err }, 'unhandled error');
    else req.log.info({ url: req.url.slice(0, 256), error: code }, 'vault request refused');
    metrics.requests.inc({ op: 'unknown', result: requestClass(ERRORS[code].status) });
    metrics.errors.inc({ code });
    void reply.code(ERRORS[code].status).send(errorBody(code));
  });
  app.setNotFoundHandler((req, reply) => {
    req.log.info({ method: req.method, url: req.url.slice(0, 256), error: 'not-found' }, 'no such route');
    void reply.code(404).send(errorBody('not-found'));
  });

  app.post('/v1/request', async (req, reply) => {
    const started = process.hrtime.bigint();
    const account = req.headers[ACCOUNT_HEADER];
    const body = req.body as Buffer;
    if (options.linkKey) {
      const check = await checkRelayAuth(options.linkKey, 'POST', '/v1/request', typeof account === 'string' ? account : '', body, req.headers[RELAY_AUTH_HEADER]);
      if (check !== 'ok') {
        metrics.requests.inc({ op: 'unknown', result: 'refused' });
        metrics.errors.inc({ code: 'relay-auth' });
        req.log.warn({ check, bodyBytes: body.length }, 'vault request refused: relay link authentication');
        return reply.code(401).send(errorBody('relay-auth'));
      }
    }
    const result = await service.handle(typeof account === 'string' ? account : '', new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (result.kind === 'error') {
      metrics.requests.inc({ op: result.op, result: requestClass(ERRORS[result.code].status) });
      metrics.errors.inc({ code: result.code });
      const level = ERRORS[result.code].status >= 500 && result.code !== 'not-leader' ? 'error' : 'info';
      req.log[level]({ account: typeof account === 'string' ? account.slice(0, 128) : null, op: result.op, error: result.code, detail: result.detail, bodyBytes: body.length }, 'vault request refused');
      // `detail` (etcd URLs, HSM messages) is for the log only: the body is the catalogue's.
      if (result.leader) void reply.header('coffer-vault-leader', result.leader);
      return reply.code(ERRORS[result.code].status).send(errorBody(result.code));
    }
    const d = result.decision;
    metrics.requests.inc({ op: d.op, result: 'answered' });
    metrics.duration.observe({ op: d.op }, seconds);
    // No outcome, no guessCounted/erased flags: they would tell the log's reader whether
    // this account's guess was right (issue 8 §2). Aggregates are in the metrics.
    req.log.info({ account, op: d.op, bodyBytes: body.length, responseBytes: d.response.length, ms: Math.round(seconds * 1e4) / 10 }, 'vault request');
    return reply.code(200).type('application/octet-stream').send(Buffer.from(d.response.buffer, d.response.byteOffset, d.response.byteLength));
  });

  // Fleet members' acks, straight to the leader (spec §13.7). No relay link auth: the
  // other members send these, and an ack proves itself (its MACs under the group's log
  // key are checked exactly like one read from etcd; a replayed one is older, so it is
  // dropped before any MAC is computed). Not leading: 503 not-leader (put it in etcd).
  const group = options.group;
  if (group) {
    app.post('/v1/group/ack', async (req, reply) => {
      const body = req.body as Buffer;
      if (body.length !== group.ackBodyLength) return reply.code(400).send(errorBody('bad-length'));
      const taken = await group.receiveAck(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
      return taken ? reply.code(204).send() : reply.code(503).send(errorBody('not-leader'));
    });
  }

  app.get('/healthz', async () => ({ status: 'ok', platform: options.describe.platform, store: options.describe.store }));

  return app;
}

export interface AdminAppOptions {
  readonly metrics: VaultMetrics;
  readonly describe: { readonly platform: string; readonly store: string };
  /** The request app's logger (`app.log`), shared; default silent. */
  readonly log?: FastifyBaseLogger;
}

/** The admin listener: /metrics and /healthz, nothing that touches a record. */
export function buildAdminApp(options: AdminAppOptions): FastifyInstance {
  const app = Fastify({ ...(options.log ? { loggerInstance: options.log } : { logger: false }), requestIdHeader: false, logController: new LogController({ disableRequestLogging: true }), frameworkErrors: frameworkError });
  app.setNotFoundHandler((_req, reply) => void reply.code(404).send(errorBody('not-found')));
  app.get('/healthz', async () => ({ status: 'ok', platform: options.describe.platform, store: options.describe.store }));
  app.get('/metrics', async (_req, reply) => reply.type(options.metrics.registry.contentType).send(await options.metrics.registry.metrics()));
  // Kept-alive connections that turn idle while closing are closed at once (@coffer/protocol/node graceful-close.ts).
  app.addHook('preClose', (done) => {
    closeIdleUntilClosed(app.server);
    done();
  });
  return app;
}
