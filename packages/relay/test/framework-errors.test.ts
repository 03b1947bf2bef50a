// Requests Fastify's router refuses by itself (a malformed percent-escape in the path, a
// route parameter above its maximum length) get the catalogue's error body, on the public
// and on the admin listener: never Fastify's own body, which echoes the path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, tempDir, testConfig } from './helpers.js';

test('a malformed path or an over-long route parameter is a catalogue 400 bad-request', async (t) => {
  const r = await startRelay(t, testConfig(tempDir(t)));
  const cases: [FastifyApp, string, string][] = [
    [r.relay.app, 'GET', '/v1/blobs/a%zz'],
    [r.relay.app, 'GET', '/nothing%zz'],
    [r.relay.app, 'DELETE', `/v1/accounts/keys/${'A'.repeat(150)}`],
    [r.relay.admin, 'GET', '/metrics%zz'],
  ];
  for (const [app, method, url] of cases) {
    const res = await app.inject({ method: method as 'GET', url });
    assert.equal(res.statusCode, 400, `${method} ${url}`);
    assert.deepEqual(res.json(), { error: { code: 'bad-request', message: 'malformed request' } }, `${method} ${url}`);
  }
});

type FastifyApp = Awaited<ReturnType<typeof startRelay>>['relay']['app'];
