// Logs never carry secrets: after a full enable → recover → wrong password → change
// password run, no password, backup key, request or response bytes appear in the
// service's log lines; bodies appear as lengths.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { toBase64Url, toHex, VaultClient, INSECURE_FAST_KSF_FOR_TESTING } from '@coffer/protocol';
import { startHarness } from './helpers/vault-harness.js';

test('the service logs lengths, never outcomes, secrets or message bytes', async () => {
  const lines: string[] = [];
  const h = await startHarness({ logLines: lines });
  const K = new Uint8Array(32).map((_, i) => 0xa0 + i);
  const seen: Uint8Array[] = [];
  const c = new VaultClient({
    fleetKey: h.vault.fleet.fleetKey,
    account: 'logged-user',
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      seen.push(bytes);
      const res = await h.post('logged-user', bytes);
      seen.push(new Uint8Array(res.body));
      return new Uint8Array(res.body);
    },
  });
  try {
    await c.register('hunter2-secret-password', K);
    const r = await c.recover('hunter2-secret-password');
    assert.equal(r.outcome, 'ok');
    assert.equal(JSON.stringify(r).includes(toHex(K)), false, 'Secret values serialise as [redacted]');
    await c.recover('wrong-guess-password');
    await c.changePassword('hunter2-secret-password', 'new-secret-password');
  } finally {
    await h.close();
  }
  const log = lines.join('');
  assert.ok(lines.length >= 10, `expected request log lines, got ${lines.length}`);
  assert.match(log, /"bodyBytes":603/);
  // Per-request lines never carry the sealed outcome (issue 8 §2; vault-metrics-privacy.test.ts).
  assert.doesNotMatch(log, /"outcome"|wrong-password/);
  for (const secret of ['hunter2-secret-password', 'wrong-guess-password', 'new-secret-password', toHex(K), toBase64Url(K), Buffer.from(K).toString('base64')]) {
    assert.equal(log.includes(secret), false, `log contains ${secret}`);
  }
  for (const m of seen) {
    for (const enc of [toHex(m.subarray(10, 42)), toBase64Url(m.subarray(10, 42)), Buffer.from(m.subarray(10, 42)).toString('base64')]) assert.equal(log.includes(enc), false, 'log contains message bytes');
  }
});
