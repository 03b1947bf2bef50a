/**
 * A minimal relay written from spec/relay-api.md alone, for the SDK's unit tests and as
 * a stand-in in the end-to-end test while @coffer/relay is being built: built-in accounts
 * (device keys, challenge, session), app tokens (ES256 JWTs checked with one public key),
 * vault forwarding with the link MAC, the blob API in memory, and GET /v1/fleet-bundle.
 * No limits, no logs: the real relay's job.
 */
import { createHash, createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { relayAuthHeader } from '@coffer/protocol';
import { sessionSignatureInput } from '../../src/relay-http.js';

export interface SpecRelayOptions {
  readonly vaultUrl: string;
  readonly linkKey?: Uint8Array;
  readonly fleetBundle?: string;
  /** Public key that app tokens (ES256 JWT) must be signed with. */
  readonly appTokenKey?: KeyObject;
}

export interface SpecRelay {
  readonly url: string;
  readonly blobs: Map<string, Buffer>;
  close(): Promise<void>;
}

function b64u(b: Uint8Array): string {
  return Buffer.from(b).toString('base64url');
}

export async function startSpecRelay(o: SpecRelayOptions): Promise<SpecRelay> {
  const accountKeys = new Map<string, KeyObject[]>();
  const challenges = new Map<string, { account: string; expiresAt: number }>();
  const sessions = new Map<string, string>();
  const blobs = new Map<string, Buffer>();

  const send = (res: ServerResponse, status: number, body?: object | Buffer, headers: Record<string, string | number> = {}): void => {
    if (body === undefined) {
      res.writeHead(status, headers).end();
    } else if (Buffer.isBuffer(body)) {
      res.writeHead(status, { 'content-type': 'application/octet-stream', 'content-length': body.length, ...headers }).end(body);
    } else {
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
    }
  };
  const error = (res: ServerResponse, status: number, code: string): void => send(res, status, { error: { code, message: code } });
  const readBody = async (req: IncomingMessage): Promise<Buffer> => {
    const parts: Buffer[] = [];
    for await (const p of req) parts.push(p as Buffer);
    return Buffer.concat(parts);
  };
  const ed25519 = (raw: Buffer): KeyObject => createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(raw) }, format: 'jwk' });

  const authenticate = (req: IncomingMessage): string | null => {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return null;
    const token = m[1]!;
    const session = sessions.get(token);
    if (session) return session;
    const parts = token.split('.');
    if (!o.appTokenKey || parts.length !== 3) return null;
    const ok = verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key: o.appTokenKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(parts[2]!, 'base64url'));
    if (!ok) return null;
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString()) as { sub: string; exp: number };
    if (claims.exp * 1000 < Date.now()) return null;
    return `app:${claims.sub}`;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://relay');
    const body = await readBody(req);
    const route = `${req.method} ${url.pathname}`;
    if (route === 'GET /healthz') return send(res, 200, { status: 'ok' });
    if (route === 'GET /v1/fleet-bundle') return o.fleetBundle ? send(res, 200, Buffer.from(o.fleetBundle), { 'content-type': 'application/json' }) : error(res, 404, 'not-found');
    if (route === 'POST /v1/accounts') {
      const { publicKey } = JSON.parse(body.toString()) as { publicKey: string };
      const id = randomBytes(16).toString('hex').slice(0, 26);
      accountKeys.set(id, [ed25519(Buffer.from(publicKey, 'base64url'))]);
      return send(res, 201, { account: id });
    }
    if (route === 'POST /v1/sessions/challenge') {
      const { account } = JSON.parse(body.toString()) as { account: string };
      const challenge = b64u(randomBytes(32));
      challenges.set(challenge, { account, expiresAt: Date.now() + 120_000 });
      return send(res, 200, { challenge, expiresAt: Date.now() + 120_000 });
    }
    if (route === 'POST /v1/sessions') {
      const { account, challenge, signature } = JSON.parse(body.toString()) as { account: string; challenge: string; signature: string };
      const c = challenges.get(challenge);
      challenges.delete(challenge);
      const msg = sessionSignatureInput(Buffer.from(challenge, 'base64url'));
      const ok = c && c.account === account && c.expiresAt > Date.now() && (accountKeys.get(account) ?? []).some((k) => verify(null, msg, k, Buffer.from(signature, 'base64url')));
      if (!ok) return error(res, 401, 'invalid-credentials');
      const token = b64u(randomBytes(32));
      sessions.set(token, `local:${account}`);
      return send(res, 200, { token, expiresAt: Date.now() + 86_400_000 });
    }
    const account = authenticate(req);
    if (!account) return error(res, 401, 'invalid-credentials');
    if (route === 'POST /v1/accounts/keys') {
      // A session alone may not add keys: a device-key proof (this stand-in has no account passwords).
      const { publicKey, challenge, signature } = JSON.parse(body.toString()) as { publicKey: string; challenge?: string; signature?: string };
      const id = account.replace(/^local:/, '');
      if (challenge === undefined || signature === undefined) return error(res, 403, 'proof-required');
      const c = challenges.get(challenge);
      challenges.delete(challenge);
      const msg = sessionSignatureInput(Buffer.from(challenge, 'base64url'));
      if (!(c && c.account === id && c.expiresAt > Date.now() && (accountKeys.get(id) ?? []).some((k) => verify(null, msg, k, Buffer.from(signature, 'base64url'))))) return error(res, 401, 'invalid-credentials');
      accountKeys.get(id)?.push(ed25519(Buffer.from(publicKey, 'base64url')));
      return send(res, 201, {});
    }
    if (route === 'POST /v1/vault') {
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'coffer-account': account };
      if (o.linkKey) headers['coffer-relay-auth'] = await relayAuthHeader(o.linkKey, { method: 'POST', path: '/v1/request', account, body }, Date.now());
      let vr: Response;
      try {
        vr = await fetch(`${o.vaultUrl}/v1/request`, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000) });
      } catch {
        return error(res, 503, 'vault-unavailable');
      }
      const out = Buffer.from(await vr.arrayBuffer());
      return send(res, vr.status, vr.ok ? out : JSON.parse(out.toString()));
    }
    if (url.pathname === '/v1/blobs' && req.method === 'GET') {
      const prefix = `${account}/${url.searchParams.get('prefix') ?? ''}`;
      const list = [...blobs.entries()].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => ({ name: k.slice(account.length + 1), size: v.length }));
      return send(res, 200, { blobs: list.sort((a, b) => (a.name < b.name ? -1 : 1)) });
    }
    const m = /^\/v1\/blobs\/([a-z0-9]+(?:\/[a-z0-9]+)*)$/.exec(url.pathname);
    if (m) {
      const key = `${account}/${m[1]}`;
      const blob = blobs.get(key);
      if (req.method === 'PUT') {
        if (blob) return error(res, 409, 'blob-exists');
        blobs.set(key, body);
        return send(res, 201);
      }
      if (req.method === 'DELETE') {
        blobs.delete(key);
        return send(res, 204);
      }
      if (!blob) return error(res, 404, 'blob-not-found');
      if (req.method === 'HEAD') return send(res, 200, undefined, { 'content-length': blob.length });
      const r = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
      if (r) {
        const a = Number(r[1]);
        const b = Math.min(Number(r[2]), blob.length - 1);
        if (a >= blob.length) return error(res, 416, 'range-not-satisfiable');
        return send(res, 206, blob.subarray(a, b + 1));
      }
      return send(res, 200, blob);
    }
    return error(res, 404, 'not-found');
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => error(res, 500, 'internal'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    blobs,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A sha256 hex for comparisons in tests. */
export function sha256hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}
