// `node scripts/bench-vault-store.mjs [OTHER_ROOT…] [--rounds N] [--commits N] [--batch N]` (after `npx tsc -b`)
// CPU per group commit of the embedded SQLite store (store/sqlite.ts commitBatch: one
// transaction with --batch record puts of a sealed record's size and a log entry, then the
// WAL sync on the thread pool), of this build and of other builds (each OTHER_ROOT a built
// copy of the repository), each on its own database in a temporary directory, rounds
// interleaved; process CPU of all threads (the sync's kernel work included). bench:vault
// sees ~13 record changes per log entry at 32 concurrent recoveries.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argNumber, positionalArgs } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 7);
const COMMITS = argNumber('commits', 200);
const BATCH = argNumber('batch', 13);
const ACCOUNTS = 768;
const RECORD_BYTES = 3100; // a sealed record: 12-byte nonce ‖ 3072 padded bytes ‖ 16-byte tag
const roots = [root, ...positionalArgs()];
const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-store-'));
try {
  const stores = await Promise.all(
    roots.map(async (r, i) => {
      const { SqliteRecordStore } = await import(join(r, 'packages/vault/dist/src/store/sqlite.js'));
      return { store: new SqliteRecordStore(join(dir, `build-${i}.db`), { exclusive: true }), index: 0, next: 0 };
    }),
  );
  const value = (n) => new Uint8Array(RECORD_BYTES).fill(n & 0xff);
  const entry = new Uint8Array(136).fill(9);
  const commit = (s) => {
    const changes = Array.from({ length: BATCH }, () => {
      const k = s.next++ % ACCOUNTS;
      return { account: `bench-${k}`, value: value(s.next) };
    });
    return s.store.commitBatch(changes, ++s.index, entry);
  };
  for (const s of stores) for (let i = 0; i < Math.ceil(ACCOUNTS / BATCH) + 50; i++) await commit(s); // every account written once, warm-up
  const rounds = stores.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, s] of stores.entries()) {
      const c = process.cpuUsage();
      for (let k = 0; k < COMMITS; k++) await commit(s);
      const u = process.cpuUsage(c);
      rounds[i].push((u.user + u.system) / COMMITS);
    }
  }
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log(`sqlite store: CPU per group commit of ${BATCH} records (all threads; ${COMMITS} commits per round, ${ROUNDS} interleaved rounds; µs):`);
  roots.forEach((r, i) => console.log(`  ${r}: median ${median(rounds[i]).toFixed(1)}  rounds ${rounds[i].map((x) => x.toFixed(0)).join(' ')}`));
  for (let b = 1; b < roots.length; b++) {
    const per = rounds[0].map((x, i) => x / rounds[b][i]);
    console.log(`  ${roots[0]} / ${roots[b]}, per round: median ${median(per).toFixed(3)} (rounds ${per.map((x) => x.toFixed(3)).join(' ')})`);
  }
  for (const s of stores) await s.store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
