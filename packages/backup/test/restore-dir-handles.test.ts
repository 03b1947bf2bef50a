/**
 * Issue 13: a restore of a node_modules tree (13,246 files in 2,113 directories) opened
 * directories 18,194 times with 32 idle handles kept — every directory is made first,
 * then files come in the backup's order, which jumps between directories, and each
 * reopened directory needed its parents reopened — and took 1.5x restic's time. The
 * number of idle handles now follows the descriptor limit (openDirsFor), which keeps a
 * tree of a few thousand directories open under an ordinary limit and stays at 32 under
 * a small one (`ulimit -n 256`: bench:tree-fds, restore-target-held.test.ts). In a fresh
 * (staged) restore a directory is made before it is opened, not looked for first, and
 * directories are made, and given their metadata level by level, 16 at a time.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { backup, restore } from '../src/index.js';
import { dirOpensForTesting, MAX_OPEN_DIRS, openDirsFor, softDescriptorLimit } from '../src/repository/restore-target.js';
import { newRepo, tempDir } from './fixtures/trees.js';
import { bytes } from './helpers.js';

test('idle directory handles follow the descriptor limit: 32 under 512, a quarter of it above, at most 4,096', () => {
  assert.equal(openDirsFor(undefined), MAX_OPEN_DIRS);
  assert.equal(openDirsFor(256), 32);
  assert.equal(openDirsFor(511), 32);
  assert.equal(openDirsFor(512), 128);
  assert.equal(openDirsFor(1024), 256);
  assert.equal(openDirsFor(20_000), 4096);
  assert.equal(openDirsFor(Infinity), 4096);
  assert.equal(openDirsFor(Number.NaN), 32);
});

test('the soft descriptor limit is read from /proc/self/limits (a child under ulimit -n 300 sees 300)', { skip: process.platform !== 'linux' && 'reads /proc/self/limits' }, () => {
  const mod = new URL('../src/repository/restore-target.js', import.meta.url).href;
  const out = execFileSync('sh', ['-c', `ulimit -n 300 && "${process.execPath}" --input-type=module -e "const m = await import('${mod}'); console.log(m.softDescriptorLimit(), m.openDirsFor(m.softDescriptorLimit()))"`], { encoding: 'utf8' });
  assert.equal(out.trim(), '300 32');
  const here = softDescriptorLimit();
  assert.ok(here === undefined || here === Infinity || (Number.isInteger(here) && here > 0), String(here));
});

test('a node_modules-like tree (packages of nested directories, shared files) restores opening each directory about twice, not once per file', async (t) => {
  const dirs = 360;
  const limit = softDescriptorLimit();
  if (limit === undefined || limit < 4 * (dirs + 20)) return t.skip(`a descriptor limit of ${limit} keeps fewer directories open than the tree has`);
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'nm-src'), 'node_modules');
  const license = bytes(1100, 7);
  let made = 0;
  for (let p = 0; made < dirs; p++) {
    for (const sub of ['', 'lib', 'lib/internal', 'dist/cjs', 'dist/esm', 'test/fixtures']) {
      const d = join(src, `pkg-${p}`, sub);
      await fs.mkdir(d, { recursive: true });
      made++;
      await fs.writeFile(join(d, 'index.js'), `module.exports = ${p} /* ${sub} */;\n`.repeat(1 + (p % 7)));
      await fs.writeFile(join(d, 'LICENSE'), license); // the same bytes in every directory: one blob, many places
    }
  }
  // Each directory its own modification time, set after its contents (deepest first), so
  // the restore's directory pass must give every level its times after the levels below.
  const all = execFileSync('find', [src, '-type', 'd'], { encoding: 'utf8' }).trim().split('\n');
  all.sort((a, b) => b.split('/').length - a.split('/').length);
  for (const [i, d] of all.entries()) await fs.utimes(d, 1_600_000_000 + i, 1_500_000_000 + 7 * i);
  const r = await backup(tr.repo, { paths: [src] });
  const target = await tempDir(t, 'nm-out');
  const before = dirOpensForTesting.count;
  await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target });
  const opens = dirOpensForTesting.count - before;
  const restoredDirs = Number(execFileSync('sh', ['-c', `find "${target}" -mindepth 1 -type d | wc -l`], { encoding: 'utf8' }).trim());
  assert.ok(restoredDirs >= made, `${restoredDirs} directories restored`);
  // A fresh target is built in a staging directory: each directory made (mkdir first, it
  // cannot be there yet) and opened once; a few more for the target and the staging directory.
  assert.ok(opens <= restoredDirs + 8, `${opens} directory opens for ${restoredDirs} directories`);
  execFileSync('diff', ['-r', src, join(target, 'node_modules')]);
  for (const d of all) {
    const [a, b] = [await fs.stat(d), await fs.stat(join(target, 'node_modules', d.slice(src.length)))];
    assert.equal(b.mtimeMs, a.mtimeMs, `mtime of ${d.slice(src.length) || '/'}`);
  }
});

test('symlinks, hard links and FIFOs across many directories (made 16 at a time) all come back: targets, link counts, modes, times', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'links-src'), 'farm');
  for (const d of ['a', 'b', 's']) for (let k = 0; k < 12; k++) await fs.mkdir(join(src, d, String(k)), { recursive: true });
  const n = 240;
  for (let i = 0; i < n; i++) {
    const f = join(src, 'a', String(i % 12), `f${i}`);
    await fs.writeFile(f, `file ${i}\n`.repeat(1 + (i % 5)));
    await fs.link(f, join(src, 'b', String((i * 5) % 12), `h${i}`));
    await fs.symlink(`../../a/${i % 12}/f${i}`, join(src, 's', String(i % 12), `l${i}`));
    await fs.lutimes(join(src, 's', String(i % 12), `l${i}`), 1_400_000_000 + i, 1_400_000_000 + i);
  }
  execFileSync('mkfifo', ['-m', '0640', join(src, 'a', '0', 'pipe')]);
  const r = await backup(tr.repo, { paths: [src] });
  const target = await tempDir(t, 'links-out');
  const res = await restore(tr.repo, { id: r.id, snapshot: r.snapshot }, { target });
  assert.deepEqual(res.warnings, []);
  const out = join(target, 'farm');
  execFileSync('diff', ['-r', '--no-dereference', '-x', 'pipe', src, out]);
  for (let i = 0; i < n; i++) {
    const [f, h] = [await fs.stat(join(out, 'a', String(i % 12), `f${i}`)), await fs.stat(join(out, 'b', String((i * 5) % 12), `h${i}`))];
    assert.equal(h.ino, f.ino, `h${i} is a link to f${i}`);
    assert.equal(f.nlink, 2);
    const l = join(out, 's', String(i % 12), `l${i}`);
    assert.equal(await fs.readlink(l), `../../a/${i % 12}/f${i}`);
    assert.equal((await fs.lstat(l)).mtimeMs, (1_400_000_000 + i) * 1000);
  }
  const p = await fs.lstat(join(out, 'a', '0', 'pipe'));
  assert.ok(p.isFIFO() && (p.mode & 0o777) === 0o640);
});
