/**
 * The walk's scan-ahead thread (scan-ahead.ts, scan-worker.ts): a backup with a parent
 * takes each directory's names and stats from it. It must list and stat exactly as the
 * walk does on its own thread, stay bounded, follow the walk's exclusions, and let the
 * walk go on alone when the thread fails.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { backup } from '../src/index.js';
import { NameList } from '../src/repository/name-list.js';
import { SCAN_AHEAD_DIRS, SCAN_AHEAD_FROM_ENTRIES, SCAN_STATS_MAX, ScanAhead, ScannedDir, STAT_FIELDS, type EntryStat } from '../src/repository/scan-ahead.js';
import { newRepo, tempDir } from './fixtures/trees.js';

const FIELDS = ['dev', 'ino', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'size', 'blocks', 'mtimeNs', 'ctimeNs'] as const;
const KINDS = ['isFile', 'isDirectory', 'isSymbolicLink', 'isFIFO', 'isSocket', 'isCharacterDevice', 'isBlockDevice'] as const;

/** A tree of `dirs` nested and sibling directories with files, a symlink, a FIFO and a name that is not UTF-8. */
async function tree(root: string, dirs = 40): Promise<void> {
  for (let d = 0; d < dirs; d++) {
    // Depth first order differs from creation order: d/… nests under d-1 every third one.
    const dir = join(root, ...Array.from({ length: 1 + (d % 3) }, (_, i) => `d${d - i}`));
    await fs.mkdir(dir, { recursive: true });
    for (let i = 0; i < 5; i++) await fs.writeFile(join(dir, `f${i}`), `file ${d}/${i}\n`.repeat(1 + i));
  }
  await fs.symlink('d0/f1', join(root, 'link'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  await fs.writeFile(Buffer.from(`${root}/name-\xff-not-utf8`, 'latin1'), 'x');
}

function expectSame(got: EntryStat, want: EntryStat, where: string): void {
  for (const f of FIELDS) assert.equal(got[f], want[f], `${where}: ${f}`);
  for (const k of KINDS) assert.equal(got[k](), want[k](), `${where}: ${k}`);
}

for (const statsMax of [SCAN_STATS_MAX, 2]) test(`a scanned directory has the names NameList gives, in its order, each with what lstat gives (stats sent for up to ${statsMax} entries)`, async (t) => {
  const root = await tempDir(t, 'scan');
  await tree(root);
  const s = new ScanAhead(undefined, 0, statsMax);
  t.after(() => s.close());
  let namesOnly = 0;
  const walk = async (dir: Buffer): Promise<number> => {
    const d = await s.take(dir);
    assert.ok(d instanceof ScannedDir, `${dir.toString()}: scanned`);
    assert.equal(d.hasStats, d.length <= statsMax, 'a directory of more entries comes back with its names only');
    if (!d.hasStats) namesOnly++;
    const names = new NameList(dir);
    assert.equal(d.length, names.length);
    let n = 1;
    for (let k = 0; k < d.length; k++) {
      assert.deepEqual(d.name(k), names.name(k));
      const abs = Buffer.concat([dir, Buffer.from('/'), d.name(k)]);
      const st = d.stat(k);
      expectSame(st, lstatSync(abs, { bigint: true }), abs.toString('latin1'));
      if (st.isDirectory()) {
        n += await walk(abs);
        s.forget(abs); // done with (a no-op: taken)
      }
    }
    return n;
  };
  const dirs = (await fs.readdir(root, { recursive: true, withFileTypes: true })).filter((e) => e.isDirectory()).length;
  assert.equal(await walk(Buffer.from(root)), 1 + dirs);
  assert.ok(statsMax > 100 ? namesOnly === 0 : namesOnly > 10, `${namesOnly} directories with names only`);
});

test('scan-ahead: errors as node:fs gives them; at most SCAN_AHEAD_DIRS directories held; nothing after close', async (t) => {
  const root = await tempDir(t, 'scan');
  await tree(root, 3 * SCAN_AHEAD_DIRS);
  const s = new ScanAhead(undefined, 0);
  const missing = await s.take(Buffer.from(join(root, 'nope')));
  assert.ok(missing instanceof Error && (missing as NodeJS.ErrnoException).code === 'ENOENT', 'a missing directory: ENOENT');
  const notDir = await s.take(Buffer.from(join(root, 'd0', 'f0')));
  assert.ok(notDir instanceof Error && (notDir as NodeJS.ErrnoException).code === 'ENOTDIR');
  // The root is taken and nothing else: the thread scans ahead, then stops at its bound.
  assert.ok((await s.take(Buffer.from(root))) instanceof ScannedDir);
  // No timing assumed (a loaded machine starts a thread slowly): wait until the thread
  // has filled its bound, then check that it stays there.
  const until = async (what: string, ok: () => boolean) => {
    for (const t0 = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 10))) {
      if (Date.now() - t0 > 60_000) assert.fail(`${what}: held ${s.held}`);
    }
  };
  await until('the bound is reached', () => s.held === SCAN_AHEAD_DIRS);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(s.held, SCAN_AHEAD_DIRS, 'it stops at its bound');
  // Forgetting what it scanned lets it go on; every directory below the root is found.
  const below = (await fs.readdir(root, { recursive: true, withFileTypes: true })).filter((e) => e.isDirectory()).length;
  const seen = new Set<string>();
  await until('every directory scanned', () => {
    for (const p of s.heldPaths()) {
      seen.add(p);
      s.forget(Buffer.from(p, 'latin1'));
    }
    return seen.size === below;
  });
  assert.equal(s.held, 0);
  s.close();
  assert.equal(await s.take(Buffer.from(root)), null, 'closed: the walk lists on its own');
});

test('a reply that does not add up is refused (the walk then lists on its own)', () => {
  const ok = { id: 1, bytes: new Uint8Array([0x61]), offs: new Uint32Array([0, 1]), stats: new BigInt64Array(STAT_FIELDS) };
  assert.equal(new ScannedDir(ok, Buffer.from('/x')).length, 1);
  for (const bad of [
    { ...ok, offs: new Uint32Array([0, 2]) },
    { ...ok, stats: new BigInt64Array(STAT_FIELDS - 1) },
    { ...ok, offs: new Uint32Array([]) },
    { id: 1 },
  ]) {
    assert.throws(() => new ScannedDir(bad as never, Buffer.from('/x')), /malformed|undefined|length/);
  }
});

test('a backup with a parent writes the listing a walk without scan-ahead writes, with exclusions, changes, removed and new directories', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'tree');
  await tree(src);
  await fs.mkdir(join(src, 'skip-me', 'deep'), { recursive: true });
  await fs.writeFile(join(src, 'skip-me', 'deep', 'x'), 'excluded');
  const exclude = (abs: Buffer) => abs.toString('latin1').endsWith('/skip-me');
  await backup(tr.repo, { paths: [src], exclude });
  await fs.writeFile(join(src, 'd5', 'd4', 'f2'), 'changed\n');
  await fs.rm(join(src, 'd9'), { recursive: true });
  await fs.mkdir(join(src, 'new', 'sub'), { recursive: true });
  await fs.writeFile(join(src, 'new', 'sub', 'n'), 'new\n');
  const ahead = await backup(tr.repo, { paths: [src], exclude, scanAheadFrom: 0 });
  assert.deepEqual(ahead.warnings, []);
  const alone = await backup(tr.repo, { paths: [src], exclude, scanAhead: false });
  assert.deepEqual(alone.warnings, []);
  assert.deepEqual(ahead.snapshot.tree, alone.snapshot.tree, 'same listing bytes with and without scan-ahead');
  assert.equal(ahead.read.files, 2, 'the changed and the new file are read, nothing else');
  assert.equal(ahead.snapshot.stats.files, alone.snapshot.stats.files);
});

test('the thread starts only once the walk has scanned SCAN_AHEAD_FROM_ENTRIES entries itself', async (t) => {
  const root = await tempDir(t, 'scan');
  for (const d of ['a', 'b', 'c']) {
    await fs.mkdir(join(root, d));
    for (let i = 0; i < SCAN_AHEAD_FROM_ENTRIES / 2; i++) await fs.writeFile(join(root, d, `f${i}`), '');
  }
  const s = new ScanAhead();
  t.after(() => s.close());
  assert.ok((await s.take(Buffer.from(root))) instanceof ScannedDir);
  assert.ok((await s.take(Buffer.from(join(root, 'a')))) instanceof ScannedDir);
  assert.equal(s.started, false, `${SCAN_AHEAD_FROM_ENTRIES / 2 + 3} entries: not yet`);
  assert.ok((await s.take(Buffer.from(join(root, 'b')))) instanceof ScannedDir);
  assert.equal(s.started, true, 'the next directory (c) is scanned ahead');
  const c = await s.take(Buffer.from(join(root, 'c')));
  assert.ok(c instanceof ScannedDir && c.length === SCAN_AHEAD_FROM_ENTRIES / 2);
});

test('prestart: the thread starts at once and scans ahead from the first directory on (a walk known to be large)', async (t) => {
  const root = await tempDir(t, 'scan');
  for (const d of ['a', 'b']) {
    await fs.mkdir(join(root, d));
    await fs.writeFile(join(root, d, 'f'), d);
  }
  const s = new ScanAhead();
  t.after(() => s.close());
  s.prestart();
  assert.ok((await s.take(Buffer.from(root))) instanceof ScannedDir);
  assert.equal(s.started, true, 'a is requested from the thread though the walk scanned 2 entries only');
  const a = await s.take(Buffer.from(join(root, 'a')));
  assert.ok(a instanceof ScannedDir && a.length === 1 && a.name(0).toString() === 'f');
});

test('a directory of more than SCAN_STATS_MAX entries comes from the thread with its names only; each stat is then taken on demand', async (t) => {
  const root = await tempDir(t, 'scan');
  await fs.mkdir(join(root, 'big'));
  for (let i = 0; i < 5; i++) await fs.writeFile(join(root, 'big', `f${i}`), 'x'.repeat(i));
  const s = new ScanAhead(undefined, 0, 2);
  t.after(() => s.close());
  const top = await s.take(Buffer.from(root));
  assert.ok(top instanceof ScannedDir && top.hasStats, 'one entry: with stats, and big/ is scanned ahead by the thread');
  assert.equal(s.started, true);
  const big = await s.take(Buffer.from(join(root, 'big')));
  assert.ok(big instanceof ScannedDir && !big.hasStats && big.length === 5);
  for (let k = 0; k < big.length; k++) expectSame(big.stat(k), lstatSync(join(root, 'big', big.name(k).toString()), { bigint: true }), `big/${big.name(k).toString()}`);
  await fs.rm(join(root, 'big', 'f3'));
  assert.throws(() => big.stat(3), { code: 'ENOENT' }, 'a stat taken on demand throws as lstat does');
});
