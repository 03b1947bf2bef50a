/**
 * Issue 10's "done when": on the same tree, what Coffer restores matches what restic
 * restores — owners, modes, xattrs, hard links, nanosecond mtimes, non-UTF-8 names,
 * symlinks and special files — and Coffer also keeps sparse files sparse, which restic
 * 0.14 does not. Skipped when restic is not installed (it is a comparison, not a
 * dependency); owners and devices need root.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { backup, restore } from '../src/index.js';
import { xattrs } from '../src/repository/fs-meta.js';
import { newRepo, tempDir } from './fixtures/trees.js';

const hasRestic = spawnSync('restic', ['version']).status === 0;
const isRoot = process.getuid?.() === 0;

/** Everything both tools are meant to keep, per path (names as hex bytes). */
async function describe(root: Buffer): Promise<Map<string, Record<string, unknown>>> {
  const out = new Map<string, Record<string, unknown>>();
  const api = xattrs();
  const walk = async (abs: Buffer, rel: string) => {
    const st = await fs.lstat(abs, { bigint: true });
    const d: Record<string, unknown> = { mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), mtimeUs: String(st.mtimeNs / 1000n) };
    if (st.isFile()) {
      d.sha = createHash('sha256').update(await fs.readFile(abs)).digest('hex');
      d.nlink = Number(st.nlink);
    }
    if (st.isSymbolicLink()) d.target = (await fs.readlink(abs, { encoding: 'buffer' })).toString('hex');
    if (st.isCharacterDevice() || st.isBlockDevice()) d.rdev = Number(st.rdev);
    if (api && (st.isFile() || st.isDirectory())) {
      const names = (await api.listAttributes(abs.toString('latin1')).catch(() => [] as string[])).filter((n) => n.startsWith('user.')).sort();
      if (names.length > 0) d.xattrs = await Promise.all(names.map(async (n) => [n, (await api.getAttribute(abs.toString('latin1'), n))?.toString('hex')]));
    }
    out.set(rel, d);
    if (st.isDirectory()) {
      for (const n of (await fs.readdir(abs, { encoding: 'buffer' })).sort(Buffer.compare)) await walk(Buffer.concat([abs, Buffer.from('/'), n]), `${rel}/${n.toString('hex')}`);
    }
  };
  await walk(root, '.');
  return out;
}

test('metadata parity with restic on the same tree', { skip: !hasRestic && 'restic is not installed' }, async (t) => {
  const base = await tempDir(t, 'src');
  const src = join(base, 'tree');
  const at = (...p: Array<string | Buffer>) => Buffer.concat([Buffer.from(src), ...p.map((x) => Buffer.concat([Buffer.from('/'), typeof x === 'string' ? Buffer.from(x) : x]))]);
  await fs.mkdir(join(src, 'dir/deeper'), { recursive: true });
  await fs.writeFile(at('plain.txt'), 'plain');
  await fs.chmod(at('plain.txt'), 0o640);
  await fs.writeFile(at(Buffer.from([0x6e, 0xe4, 0x6d, 0x65])), 'latin-1 name'); // "näme" in Latin-1
  await fs.link(at('plain.txt'), at('dir', 'plain-link'));
  await fs.symlink('../plain.txt', at('dir', 'symlink'));
  execFileSync('mkfifo', [at('fifo').toString()]);
  const sp = await fs.open(at('sparse'), 'w');
  await sp.write(Buffer.alloc(4096, 1), 0, 4096, 8 << 20);
  await sp.truncate(16 << 20);
  await sp.close();
  if (isRoot) {
    await fs.writeFile(at('owned'), 'owned');
    await fs.chown(at('owned'), 2345, 3456);
    await fs.chmod(at('owned'), 0o2750);
    execFileSync('mknod', [at('null').toString(), 'c', '1', '3']);
  }
  await xattrs()?.setAttribute(at('plain.txt').toString(), 'user.k', Buffer.from('v'));
  execFileSync('touch', ['-h', '-d', '@1600000000.123456789', at('dir', 'symlink').toString()]);
  for (const p of ['plain.txt', 'sparse', 'dir/deeper', 'dir', '.']) execFileSync('touch', ['-d', '@1650000000.987654321', join(src, p)]);

  // restic
  const env = { ...process.env, RESTIC_PASSWORD: 'parity', RESTIC_REPOSITORY: join(base, 'restic-repo') };
  execFileSync('restic', ['init', '-q'], { env });
  execFileSync('restic', ['backup', '-q', src], { env });
  const resticOut = await tempDir(t, 'restic-out');
  execFileSync('restic', ['restore', '-q', 'latest', '--target', resticOut], { env });

  // coffer
  const tr = await newRepo(t);
  await backup(tr.repo, { paths: [src] });
  const [rec] = await tr.repo.snapshots();
  const cofferOut = await tempDir(t, 'coffer-out');
  await restore(tr.repo, rec!, { target: cofferOut });

  const r = await describe(Buffer.from(join(resticOut, src)));
  const c = await describe(Buffer.from(join(cofferOut, 'tree')));
  r.delete('.');
  c.delete('.');
  assert.deepEqual([...c.keys()], [...r.keys()], 'the same names (as bytes)');
  for (const [p, want] of r) assert.deepEqual(c.get(p), want, `entry ${p}`);

  // Beyond restic 0.14: the sparse file keeps its holes.
  const sparse = await fs.stat(join(cofferOut, 'tree/sparse'));
  const orig = await fs.stat(at('sparse'));
  if (orig.blocks * 512 < orig.size) assert.ok(sparse.blocks * 512 <= 64 * 1024, `coffer: ${sparse.blocks * 512} bytes on disk`);
});
