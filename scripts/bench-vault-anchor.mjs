// `node scripts/bench-vault-anchor.mjs [OTHER_ROOT…] [--rounds N] [--writes N]` (after `npx tsc -b`)
// CPU per software-platform anchor write (platform/software-anchor.ts: the slot's pwrite and
// its fdatasync), of this build and of other builds (each OTHER_ROOT a built copy of the
// repository), rounds interleaved; process CPU of all threads (the thread pool's fdatasync and
// the kernel's work for it included). The vault makes one anchor write per group commit.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './ensure-setup.mjs';
import { argNumber, positionalArgs } from './bench-args.mjs';

const ROUNDS = argNumber('rounds', 7);
const WRITES = argNumber('writes', 300);
const roots = [root, ...positionalArgs()];
const mods = await Promise.all(roots.map((r) => import(join(r, 'packages/vault/dist/src/platform/software-anchor.js'))));
const dir = mkdtempSync(join(tmpdir(), 'coffer-bench-anchor-'));
try {
  const anchors = mods.map((m, i) => new m.SoftwareAnchor(join(dir, `build-${i}.anchor`)));
  const value = new Uint8Array(56).fill(3); // the size of a log anchor (group ‖ index ‖ MAC)
  for (const a of anchors) for (let i = 0; i < 50; i++) await a.write(value); // warm-up, slotted file made
  const rounds = anchors.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, a] of anchors.entries()) {
      const c = process.cpuUsage();
      for (let k = 0; k < WRITES; k++) await a.write(value);
      const u = process.cpuUsage(c);
      rounds[i].push((u.user + u.system) / WRITES);
    }
  }
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log(`software anchor: CPU per write (all threads; ${WRITES} writes per round, ${ROUNDS} interleaved rounds; µs):`);
  roots.forEach((r, i) => console.log(`  ${r}: median ${median(rounds[i]).toFixed(1)}  rounds ${rounds[i].map((x) => x.toFixed(0)).join(' ')}`));
  for (let b = 1; b < roots.length; b++) {
    const per = rounds[0].map((x, i) => x / rounds[b][i]);
    console.log(`  ${roots[0]} / ${roots[b]}, per round: median ${median(per).toFixed(3)} (rounds ${per.map((x) => x.toFixed(3)).join(' ')})`);
  }
  for (const a of anchors) await a.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
