/** The relay's Fastify options: no deprecated option (Fastify warns once per process). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startRelay, tempDir, testConfig } from './helpers.js';

test('building the relay with request logging off prints no Fastify deprecation warning', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error & { code?: string }): void => void warnings.push(`${w.code ?? w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.after(() => void process.off('warning', onWarning));
  const r = await startRelay(t, testConfig(tempDir(t)), { logger: { level: 'info', stream: { write: () => {} } } });
  assert.equal((await r.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  // Warnings are emitted on the next tick.
  await new Promise((res) => setImmediate(res));
  assert.deepEqual(warnings.filter((w) => /FSTDEP|deprecat/i.test(w)), []);
});
