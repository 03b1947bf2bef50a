// Issue 11, client side of the relay: https required off loopback unless insecure,
// redirects never followed (the bearer token must not travel on), proof-of-work solved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RelayHttp, isLoopbackHost } from '../src/relay-http.js';
import { NodeUploadTransport } from '../src/node-transport.js';
import { CofferClientError } from '../src/errors.js';

async function serve(t: { after: (f: () => Promise<void>) => void }, handler: Parameters<typeof createServer>[1]): Promise<{ url: string; server: Server }> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

test('plain http:// is refused off loopback unless insecure; loopback and https are fine', () => {
  for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '[::1]']) assert.doesNotThrow(() => new RelayHttp({ server: `http://${h}:7440` }), h);
  assert.throws(() => new RelayHttp({ server: 'http://relay.example:7440' }), /clear text/);
  assert.throws(() => new RelayHttp({ server: 'http://10.0.0.5:7440' }), /clear text/);
  assert.doesNotThrow(() => new RelayHttp({ server: 'http://relay.example:7440', insecure: true }));
  assert.doesNotThrow(() => new RelayHttp({ server: 'https://relay.example' }));
  assert.equal(isLoopbackHost('128.0.0.1'), false);
});

test('a redirect is an error: the bearer token never reaches the other server', async (t) => {
  let stolen = 0;
  const elsewhere = await serve(t, (req, res) => {
    if (req.headers.authorization) stolen++;
    res.end('{}');
  });
  const relay = await serve(t, (_req, res) => {
    res.writeHead(307, { location: `${elsewhere.url}/v1/vault` });
    res.end();
  });
  const http = new RelayHttp({ server: relay.url, token: () => 'cs1.secret-token' });
  await assert.rejects(http.vault(new Uint8Array(603)));
  assert.equal(stolen, 0);
});

test('password sign-in solves the relay\'s proof-of-work when asked (428) and retries once', async (t) => {
  const challenge = Buffer.alloc(32, 9).toString('base64url');
  let calls = 0;
  const relay = await serve(t, (req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      calls++;
      const j = JSON.parse(body) as { pow?: { challenge: string; bits: number; nonce: string } };
      if (!j.pow) {
        res.writeHead(428, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'proof-of-work-required', message: 'm', pow: { challenge, bits: 10 } } }));
        return;
      }
      const d = createHash('sha256').update('coffer-relay/v1/pow').update(Buffer.from([0])).update(Buffer.from(j.pow.challenge, 'base64url')).update(Buffer.from(j.pow.nonce, 'base64url')).digest();
      const ok = j.pow.challenge === challenge && j.pow.bits === 10 && d[0] === 0 && (d[1]! & 0xc0) === 0;
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok ? { token: 'cs1.t', expiresAt: 1 } : { error: { code: 'invalid-credentials', message: 'm' } }));
    });
  });
  const s = await new RelayHttp({ server: relay.url }).loginWithPassword('a'.repeat(26), 'pw');
  assert.equal(s.token, 'cs1.t');
  assert.equal(calls, 2);
});

test('password sign-in solves again when the relay answers its solution with a harder puzzle (the account was tried meanwhile)', async (t) => {
  const puzzles = [{ challenge: Buffer.alloc(32, 1).toString('base64url'), bits: 6 }, { challenge: Buffer.alloc(32, 2).toString('base64url'), bits: 8 }];
  let calls = 0;
  const relay = await serve(t, (req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const j = JSON.parse(body) as { pow?: { challenge: string; bits: number; nonce: string } };
      const asked = puzzles[calls++];
      if (!j.pow || j.pow.bits < 8) {
        res.writeHead(428, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'proof-of-work-required', message: 'm', pow: asked ?? puzzles[1] } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: 'cs1.t', expiresAt: 1 }));
    });
  });
  const s = await new RelayHttp({ server: relay.url }).loginWithPassword('a'.repeat(26), 'pw');
  assert.equal(s.token, 'cs1.t');
  assert.equal(calls, 3);
});

test('credential changes proved by the current password answer the relay\'s proof-of-work too (the owner of an account being guessed changes its password)', async (t) => {
  const seen: Array<{ method: string; url: string; pow: boolean }> = [];
  const relay = await serve(t, (req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const j = JSON.parse(body || '{}') as { currentPassword?: string; pow?: { bits: number } };
      seen.push({ method: req.method!, url: req.url!, pow: j.pow !== undefined });
      if (j.currentPassword !== undefined && (!j.pow || j.pow.bits < 6)) {
        res.writeHead(428, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'proof-of-work-required', message: 'm', pow: { challenge: Buffer.alloc(32, 3).toString('base64url'), bits: 6 } } }));
        return;
      }
      res.writeHead(204);
      res.end();
    });
  });
  const http = new RelayHttp({ server: relay.url, token: () => 'cs1.t' });
  const account = 'a'.repeat(26);
  await http.setAccountPassword(account, 'new password here', { currentPassword: 'old password here' });
  await http.addDeviceKey(account, new Uint8Array(32).fill(9), { currentPassword: 'old password here' });
  await http.removeDeviceKey(account, 'key', { currentPassword: 'old password here' });
  assert.deepEqual(
    seen.map((x) => `${x.method} ${x.url} ${x.pow}`),
    ['PUT /v1/accounts/password false', 'PUT /v1/accounts/password true', 'POST /v1/accounts/keys false', 'POST /v1/accounts/keys true', 'DELETE /v1/accounts/keys/key false', 'DELETE /v1/accounts/keys/key true'],
  );
});

test('an answer without end (a vault message, a JSON error, the fleet bundle) is refused at 1 MiB, through fetch and through the node transport, and the client moves on', async (t) => {
  let served = 0;
  const relay = await serve(t, (req, res) => {
    served++;
    // Status by path: a success for the vault and the bundle, an error for the rest.
    const status = req.url === '/v1/vault' || req.url === '/v1/fleet-bundle' ? 200 : 400;
    res.writeHead(status, { 'content-type': status === 200 ? 'application/octet-stream' : 'application/json' });
    const piece = Buffer.alloc(64 * 1024, 0x20);
    let sent = 0;
    const more = (): void => {
      // 64 MiB at most (the test must end even if the client read it all).
      while (sent < 1024 && res.write(piece)) sent++;
      if (sent >= 1024) res.end();
      else res.once('drain', more);
    };
    res.on('close', () => res.destroy());
    more();
  });
  const viaFetch = new RelayHttp({ server: relay.url, token: () => 'cs1.t', fetch: (u, i) => fetch(u, i) });
  const viaNode = new RelayHttp({ server: relay.url, token: () => 'cs1.t', uploads: new NodeUploadTransport() });
  for (const [how, http] of [['fetch', viaFetch], ['node transport', viaNode]] as const) {
    const big = (e: unknown) => e instanceof CofferClientError && e.code === 'protocol' && /over 1048576 bytes/.test(e.message);
    await assert.rejects(http.vault(new Uint8Array(603)), big, `${how}: vault`);
    await assert.rejects(http.fleetBundle(), big, `${how}: fleet bundle`);
    await assert.rejects(http.call({ method: 'GET', path: '/v1/anything', auth: true }), (e: unknown) => e instanceof Error && !(e instanceof RangeError), `${how}: an error answer`);
  }
  assert.ok(served >= 6);
});
