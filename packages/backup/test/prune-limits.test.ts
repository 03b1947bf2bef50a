/**
 * restic's prune limits: `maxUnused` as the unused data the repository may keep after
 * prune (a share of its data, bytes, or unlimited), packs repacked most unused first,
 * and `maxRepackBytes`; Coffer's default (every pack more than 10% unused) unchanged.
 * Two packs of ten 100 KiB files each: after forgetting, one is 20% unused, one 50%.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { backup, check, forgetSnapshots, prune, restore, Repository, type PruneOptions } from '../src/index.js';
import { LocalBackend } from '../src/storage/local.js';
import { newRepo, prng, tempDir } from './fixtures/trees.js';

async function twoPartlyUsedPacks(t: TestContext): Promise<{ dir: string; key: Parameters<typeof Repository.open>[1]; src: string }> {
  const tr = await newRepo(t);
  const src = await tempDir(t, 'prune-limits-src');
  const forget = [];
  for (const [d, drop] of [['f', 2], ['g', 5]] as const) {
    await fs.mkdir(join(src, d));
    for (let i = 0; i < 10; i++) await fs.writeFile(join(src, d, `${i}`), prng(d.charCodeAt(0) * 100 + i, 100 * 1024));
    forget.push((await backup(tr.repo, { paths: [join(src, d)] })).id);
    for (let i = 0; i < drop; i++) await fs.rm(join(src, d, `${i}`));
    await backup(tr.repo, { paths: [join(src, d)] });
  }
  await forgetSnapshots(tr.repo, forget.map((id) => ({ id })));
  return { dir: tr.dir, key: tr.key, src };
}

test('prune maxUnused / maxRepackBytes (restic\'s --max-unused, --max-repack-size): the most unused packs are repacked until the unused data left is within the limit', async (t) => {
  const fx = await twoPartlyUsedPacks(t);
  const cases: Array<[string, PruneOptions, number]> = [
    ['default: every pack over 10% unused', {}, 2],
    ['5% of the data', { maxUnused: { percent: 5 } }, 2],
    ['30%: the 50%-unused pack is enough', { maxUnused: { percent: 30 } }, 1],
    ['60%', { maxUnused: { percent: 60 } }, 0],
    ['unlimited', { maxUnused: 'unlimited' }, 0],
    ['300 KiB', { maxUnused: { bytes: 300 * 1024 } }, 1],
    ['5% but at most 1.5 MiB repacked', { maxUnused: { percent: 5 }, maxRepackBytes: 1.5 * 1024 * 1024 }, 1],
    ['5% but at most 600 KiB repacked', { maxUnused: { percent: 5 }, maxRepackBytes: 600 * 1024 }, 0],
  ];
  for (const [what, opts, repacked] of cases) {
    const dir = await tempDir(t, 'prune-limits-repo');
    await fs.cp(fx.dir, dir, { recursive: true });
    const repo = await Repository.open(new LocalBackend(dir), fx.key);
    const r = await prune(repo, opts);
    assert.equal(r.packsRepacked, repacked, what);
    const c = await check(await Repository.open(new LocalBackend(dir), fx.key), { readData: true });
    assert.deepEqual(c.problems, [], what);
    // Every kept file still restores.
    const out = await tempDir(t, 'prune-limits-out');
    for (const s of await repo.snapshots()) await restore(repo, s, { target: out, overwrite: true });
    for (const [d, from] of [['f', 2], ['g', 5]] as const) {
      for (let i = from; i < 10; i++) assert.ok((await fs.readFile(join(out, d, `${i}`))).equals(prng(d.charCodeAt(0) * 100 + i, 100 * 1024)), `${what}: ${d}/${i}`);
    }
  }
  await assert.rejects(prune(await Repository.open(new LocalBackend(fx.dir), fx.key), { maxUnused: 1.5 }), /a fraction from 0 to 1/);
});
