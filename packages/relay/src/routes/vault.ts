/** POST /v1/vault: forward one sealed vault message (spec/relay-api.md §2). */
import type { FastifyInstance } from 'fastify';
import { REQUEST_LENGTH } from '@coffer/protocol';
import type { Authenticator } from '../auth/authenticate.js';
import { RelayError } from '../errors.js';
import type { VaultForwarder } from '../vault-forwarder.js';

export const VAULT_BODY_LIMIT = 4096;

export async function vaultRoutes(app: FastifyInstance, o: { forwarder: VaultForwarder; authenticate: Authenticator }): Promise<void> {
  app.post('/v1/vault', { preHandler: o.authenticate, bodyLimit: VAULT_BODY_LIMIT }, async (req, reply) => {
    const body = req.body;
    if (!Buffer.isBuffer(body)) throw new RelayError('unsupported-media-type', { message: 'the body must be application/octet-stream' });
    // Every vault request is exactly REQUEST_LENGTH bytes (spec/vault-protocol.md): refuse
    // any other length here rather than make a vault node parse it.
    if (body.length !== REQUEST_LENGTH) throw new RelayError('bad-request', { message: `a vault message is exactly ${REQUEST_LENGTH} bytes, not ${body.length}` });
    const r = await o.forwarder.forward(req.account, body);
    if (r.kind === 'unavailable') {
      req.log.warn({ account: req.account, bodyBytes: body.length, tried: r.attempts }, 'vault unavailable');
      throw new RelayError('vault-unavailable', { retryAfter: 1 });
    }
    // Lengths and status only: the bytes are sealed to the vault and never logged.
    req.logFields = { bodyBytes: body.length, vaultStatus: r.status, responseBytes: r.body.length, node: r.node };
    if (r.status >= 200 && r.status < 300) return reply.code(r.status).type(r.contentType).send(r.body);
    // A vault error: only its code (and retryAfter) reaches the client, under the relay's
    // own message — never the upstream body, whose details are for the vault's logs.
    const e = vaultError(r.body);
    if (!e) throw new RelayError('vault-unavailable', { retryAfter: 1 });
    return reply.code(r.status).type('application/json').send({ error: { code: e.code, message: `the vault refused the request (${e.code})`, ...(e.retryAfter !== undefined ? { retryAfter: e.retryAfter } : {}) } });
  });
}

/** The code and retryAfter of a vault error body, or null when it is not one. */
function vaultError(body: Buffer): { code: string; retryAfter?: number } | null {
  try {
    const e = (JSON.parse(body.toString('utf8')) as { error?: { code?: unknown; retryAfter?: unknown } }).error;
    if (typeof e?.code !== 'string' || !/^[a-z0-9-]{1,64}$/.test(e.code)) return null;
    const retryAfter = typeof e.retryAfter === 'number' && Number.isFinite(e.retryAfter) && e.retryAfter >= 0 ? Math.ceil(e.retryAfter) : undefined;
    return { code: e.code, ...(retryAfter !== undefined ? { retryAfter } : {}) };
  } catch {
    return null;
  }
}
