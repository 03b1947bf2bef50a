/** POST /v1/vault: forward one sealed vault message (spec/relay-api.md §2). */
import type { FastifyInstance } from 'fastify';
import type { Authenticator } from '../auth/authenticate.js';
import { RelayError } from '../errors.js';
import type { VaultForwarder } from '../vault-forwarder.js';

export const VAULT_BODY_LIMIT = 4096;

export async function vaultRoutes(app: FastifyInstance, o: { forwarder: VaultForwarder; authenticate: Authenticator }): Promise<void> {
  app.post('/v1/vault', { preHandler: o.authenticate, bodyLimit: VAULT_BODY_LIMIT }, async (req, reply) => {
    const body = req.body;
    if (!Buffer.isBuffer(body)) throw new RelayError('unsupported-media-type', { message: 'the body must be application/octet-stream' });
    const r = await o.forwarder.forward(req.account, body);
    if (r.kind === 'unavailable') {
      req.log.warn({ account: req.account, bodyBytes: body.length, tried: r.attempts }, 'vault unavailable');
      throw new RelayError('vault-unavailable', { retryAfter: 1 });
    }
    // Lengths and status only: the bytes are sealed to the vault and never logged.
    req.log.info({ account: req.account, bodyBytes: body.length, status: r.status, responseBytes: r.body.length, node: r.node }, 'vault message');
    return reply.code(r.status).type(r.contentType).send(r.body);
  });
}
