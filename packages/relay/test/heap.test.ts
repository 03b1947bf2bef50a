import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RELAY_MAIN, startChild, tempDir, writeLinkKey } from './helpers.js';

/**
 * A preload for the relay: on SIGUSR2 it grows the old generation by some 30 MB and
 * writes the kinds of collections V8 ran for it to GC_KINDS: 8
 * (NODE_PERFORMANCE_GC_INCREMENTAL) only when incremental marking is on.
 */
const PROBE = `import { PerformanceObserver } from 'node:perf_hooks';
import { renameSync, writeFileSync } from 'node:fs';
process.on('SIGUSR2', () => {
  const kinds = {};
  const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) kinds[e.detail.kind] = (kinds[e.detail.kind] ?? 0) + 1; });
  obs.observe({ entryTypes: ['gc'] });
  const keep = [];
  for (let i = 0; i < 400000; i++) keep.push({ a: i, b: [i, i + 1] });
  // Written aside, then renamed: the test polls for the file and reads it at once.
  setTimeout(() => { obs.disconnect(); writeFileSync(process.env.GC_KINDS + '.tmp', JSON.stringify(kinds)); renameSync(process.env.GC_KINDS + '.tmp', process.env.GC_KINDS); keep.length = 0; }, 100);
});
`;

async function gcKinds(dir: string, name: string, env: Record<string, string> = {}): Promise<Record<string, number>> {
  const probe = join(dir, 'gc-probe.mjs');
  writeFileSync(probe, PROBE);
  const out = join(dir, `gc-kinds-${name}.json`);
  const full: Record<string, string> = { COFFER_RELAY_DATA_DIR: join(dir, `relay-${name}`), COFFER_RELAY_PORT: '0', COFFER_RELAY_ADMIN: '0', COFFER_RELAY_LINK_KEY_FILE: writeLinkKey(dir), COFFER_RELAY_LOG_LEVEL: 'warn', NODE_OPTIONS: `--import=${pathToFileURL(probe).href}`, GC_KINDS: out, COFFER_V8_DEFAULT_HEAP: '', ...env };
  const relay = await startChild(RELAY_MAIN, full, 'coffer-relay');
  try {
    relay.child.kill('SIGUSR2');
    for (let i = 0; i < 600 && !existsSync(out); i++) await new Promise((r) => setTimeout(r, 50));
    return JSON.parse(readFileSync(out, 'utf8')) as Record<string, number>;
  } finally {
    await relay.stop();
  }
}

test('coffer-relay serve runs V8 without incremental marking; COFFER_V8_DEFAULT_HEAP=1 keeps it', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const off = await gcKinds(dir, 'tuned');
  assert.ok(Object.keys(off).length > 0, 'the probe saw collections');
  assert.equal(off['8'], undefined, `incremental marking ran: ${JSON.stringify(off)}`);
  // The probe does see incremental marking where it stays on.
  const kept = await gcKinds(dir, 'default', { COFFER_V8_DEFAULT_HEAP: '1' });
  assert.ok((kept['8'] ?? 0) > 0, `no incremental marking with COFFER_V8_DEFAULT_HEAP=1: ${JSON.stringify(kept)}`);
});
