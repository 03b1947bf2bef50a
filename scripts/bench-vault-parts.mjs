// `node scripts/bench-vault-parts.mjs [OTHER_ROOT] [--rounds N]` (after `npx tsc -b`)
// CPU (process.cpuUsage, µs) and JS heap allocated per operation of three small parts of a
// recovery, this build against OTHER_ROOT (a built checkout), rounds interleaved, medians:
//   - dh-reuse: DhReuse.keep + take for one account and enc (twice per recovery);
//   - tree:     RecordTree.root() after 32 changed records in a tree of 4,096 accounts (one log
//               entry covers ~15–30 record changes under bench:vault, ~2 per recovery);
//   - queue:    AccountQueue.run of an async task for an idle account (twice per recovery).
// CPU only: the bytes allocated per recovery come from `bench-vault-ab --heap-profile`.
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argNumber, positionalArgs } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 7);
const roots = [root, ...positionalArgs([])];
const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
const P = await import(join(root, 'packages/protocol/dist/src/index.js'));

const builds = [];
for (const r of roots) {
  const { DhReuse } = await import(join(r, 'packages/vault/dist/src/core/dh-reuse.js'));
  const { RecordTree } = await import(join(r, 'packages/vault/dist/src/core/rollback.js'));
  const { AccountQueue } = await import(join(r, 'packages/vault/dist/src/server/account-queue.js'));
  const { useCryptoProvider } = await import(join(r, 'packages/protocol/dist/src/index.js'));
  const { nodeCryptoProvider } = await import(join(r, 'packages/protocol/dist/src/node/node-crypto.js'));
  useCryptoProvider(nodeCryptoProvider);
  const tree = await RecordTree.create();
  const accounts = Array.from({ length: 4096 }, (_, i) => `account-${i}`);
  for (const a of accounts) await tree.set(a, await P.sha256(P.utf8(a)));
  await tree.root();
  builds.push({ root: r, DhReuse, tree, accounts, queue: new AccountQueue(), useCryptoProvider, nodeCryptoProvider });
}
const encs = Array.from({ length: 1024 }, () => P.webRandom(65));
const dh = new Uint8Array(32).fill(7);

async function dhReuse(b, n) {
  const c = new b.DhReuse(60_000);
  const t = cpuUs();
  for (let i = 0; i < n; i++) {
    const e = encs[i & 1023];
    c.keep(`account-${i & 4095}`, e, dh, i);
    c.take(`account-${i & 4095}`, e, i);
  }
  return (cpuUs() - t) / n;
}
async function treeRoot(b, n) {
  b.useCryptoProvider(b.nodeCryptoProvider);
  const digest = new Uint8Array(32);
  let t = 0;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < 32; k++) {
      digest[0] = i;
      digest[1] = k;
      b.tree.setKnown(b.accounts[(i * 131 + k * 127) & 4095], digest);
    }
    const c = cpuUs();
    await b.tree.root();
    t += cpuUs() - c;
  }
  return t / n;
}
async function queue(b, n) {
  const task = async () => 1;
  const t = cpuUs();
  for (let i = 0; i < n; i += 64) await Promise.all(Array.from({ length: 64 }, (_, k) => b.queue.run(`account-${i + k}`, task)));
  return (cpuUs() - t) / n;
}
const parts = { 'dh-reuse keep+take': [dhReuse, 50_000], 'tree root, 32 changes': [treeRoot, 400], 'queue run': [queue, 50_000] };
const results = builds.map(() => Object.fromEntries(Object.keys(parts).map((k) => [k, []])));
for (const [, [f, n]] of Object.entries(parts)) for (const b of builds) await f(b, n / 5); // warm-up
for (let r = 0; r < ROUNDS; r++) {
  for (const [k, [f, n]] of Object.entries(parts)) {
    for (const [i, b] of builds.entries()) results[i][k].push(await f(b, n));
  }
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
console.log(`CPU µs per operation, median of ${ROUNDS} interleaved rounds [min–max]:`);
for (const k of Object.keys(parts)) {
  console.log(`  ${k}`);
  for (const [i, b] of builds.entries()) console.log(`    ${b.root}: ${median(results[i][k]).toFixed(2)} [${Math.min(...results[i][k]).toFixed(2)}–${Math.max(...results[i][k]).toFixed(2)}]`);
  if (builds.length > 1) console.log(`    ratio per round (this / other): ${results[0][k].map((x, r) => (x / results[1][k][r]).toFixed(3)).join(' ')}`);
}
