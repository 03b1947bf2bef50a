// TLS when given a certificate and key (spec/relay-api.md §4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { startRelay, tempDir, testConfig } from './helpers.js';

test('serves HTTPS with the configured certificate', async (t) => {
  const dir = tempDir(t);
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  if (r.status !== 0) return t.skip(`openssl unavailable: ${r.stderr}`);
  const relay = await startRelay(t, testConfig(dir, { COFFER_RELAY_TLS_CERT: cert, COFFER_RELAY_TLS_KEY: key }));
  const url = await relay.relay.app.listen({ host: '127.0.0.1', port: 0 });
  assert.match(url, /^https:/);
  const body = await new Promise<string>((resolve, reject) => {
    request(`${url}/healthz`, { ca: readFileSync(cert) }, (res) => {
      let s = '';
      res.on('data', (d) => (s += d));
      res.on('end', () => resolve(s));
    })
      .on('error', reject)
      .end();
  });
  assert.deepEqual(JSON.parse(body), { status: 'ok' });
});
