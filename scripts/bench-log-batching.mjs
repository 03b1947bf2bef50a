// `node scripts/bench-log-batching.mjs [--seconds N] [--lanes N]` (after `npx tsc -b packages/vault`)
// What group commit buys rollback protection (spec §13.4) on the embedded default: full
// recoveries (both round trips, in process through app.inject, SQLite + the software
// anchor with fsync) with `lanes` concurrent clients, three ways in one run:
//   unprotected (no log, no anchor), protected with batching, protected with one record
//   change per log entry (no batching: one store commit + one anchor write per request).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { root } from './ensure-setup.mjs';
import { argNumber } from './bench-args.mjs';

const SECONDS = argNumber('seconds', 6);
const LANES = argNumber('lanes', 16);
const { startHarness, KEY_K } = await import(join(root, 'packages/vault/dist/test/helpers/vault-harness.js'));

async function run(label, options, tweak) {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-log-'));
  const h = await startHarness({ dir, policy: { loginsPerWindow: 64 }, ...options });
  try {
    tweak?.(h);
    const accounts = Array.from({ length: LANES }, (_, i) => `bench-${i}`);
    for (const a of accounts) await h.client(a).register('pw', KEY_K);
    const lat = [];
    let done = 0;
    const end = performance.now() + SECONDS * 1000;
    await Promise.all(accounts.map(async (a) => {
      const c = h.client(a);
      while (performance.now() < end) {
        const t = performance.now();
        const r = await c.recover('pw');
        if (r.outcome !== 'ok') throw new Error(r.outcome);
        lat.push(performance.now() - t);
        done++;
      }
    }));
    lat.sort((x, y) => x - y);
    const p = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))].toFixed(1);
    const entries = await h.metric('coffer_vault_log_entries_total');
    const rate = done / SECONDS;
    console.log(`${label.padEnd(34)} ${rate.toFixed(0).padStart(5)} recoveries/s  p50 ${p(0.5)} ms  p99 ${p(0.99)} ms  log entries ${entries} (${entries ? ((done * 2 + LANES * 2) / entries).toFixed(1) : '-'} writes/entry)`);
    return { rate, p99: Number(p(0.99)) };
  } finally {
    await h.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`${LANES} concurrent clients, ${SECONDS} s each, in process (app.inject), software platform, SQLite`);
const off = await run('unprotected', { config: { insecureNoRollbackProtectionForTesting: true } });
const on = await run('protected, group commit', {});
const one = await run('protected, one change per entry', {}, (h) => Object.defineProperty(h.vault.store, 'maxBatchChanges', { value: 1 }));
console.log(`protected/unprotected throughput ${(on.rate / off.rate).toFixed(2)}, p99 ${(on.p99 / off.p99).toFixed(2)}; batching buys ${(on.rate / one.rate).toFixed(2)}x throughput`);
