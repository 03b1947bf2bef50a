/**
 * The unchanged-file path of a second backup (issue 13): the parent's listing is read
 * blob by blob beside the walk, unchanged files are taken from it without being read,
 * and the listing written is exactly what a backup that read everything writes.
 * The small-file path: the chunk workers stat each file again after reading it and
 * read its xattrs.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { backup, check, restore, type TreeEntry } from '../src/index.js';
import { xattrs } from '../src/repository/fs-meta.js';
import { newRepo, prng, tempDir } from './fixtures/trees.js';

/** 3 directories × 600 small files (more than the walk's look-ahead), names sorting differently as bytes and as text. */
async function manySmallFiles(root: string): Promise<void> {
  for (const d of ['a', 'a.b', 'a-c']) {
    await fs.mkdir(join(root, d), { recursive: true });
    for (let i = 0; i < 600; i++) await fs.writeFile(join(root, d, `f${i}${i % 7 === 0 ? '\u00e9' : ''}`), `file ${d}/${i}\n`.repeat(1 + (i % 20)));
  }
  await fs.symlink('a/f1', join(root, 'link'));
}

async function listing(repo: Awaited<ReturnType<typeof newRepo>>['repo'], snap: Parameters<typeof repo.tree>[0]): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  for await (const e of repo.tree(snap)) out.push(e);
  return out;
}

test('a second backup reads only the changed files and writes the same listing (same tree blobs) as a backup that reads everything', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'many');
  await manySmallFiles(src);
  const first = await backup(tr.repo, { paths: [src] });
  assert.equal(first.read.files, 1800);
  assert.ok(first.snapshot.tree.length > 3, 'the listing spans several tree blobs');

  await fs.writeFile(join(src, 'a.b', 'f10'), 'changed\n');
  await fs.appendFile(join(src, 'a-c', 'f599'), 'grown\n');
  await fs.writeFile(join(src, 'a', 'new'), 'new file\n');
  const second = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(second.warnings, []);
  assert.equal(second.read.files, 3, 'two changed files and a new one are read, nothing else');
  assert.equal(second.snapshot.stats.files, 1801);

  const full = await backup(tr.repo, { paths: [src], parent: 'none' });
  assert.equal(full.read.files, 1801);
  assert.deepEqual(second.snapshot.tree, full.snapshot.tree, 'same listing bytes whether files were read or taken from the parent');
  const got = await listing(tr.repo, second.snapshot);
  const f10 = got.find((e) => e.path === 'many/a.b/f10');
  assert.equal(f10?.type === 'file' && f10.size, 8);
});

test('a second backup whose parent listing is read in pieces finds every file, whatever the tree blob boundaries', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'many');
  await manySmallFiles(src);
  const first = await backup(tr.repo, { paths: [src] });
  const again = await backup(tr.repo, { paths: [src] });
  assert.equal(again.read.files, 0, 'nothing changed: nothing read');
  assert.deepEqual(again.snapshot.tree, first.snapshot.tree);
});

test('a small file\'s xattrs are read with its contents (in the chunk worker), and read again when they change', { skip: !xattrs() && '@napi-rs/xattr is not installed' }, async (t) => {
  const api = xattrs()!;
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'x');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'small'), 'tiny');
  await fs.writeFile(join(src, 'plain'), 'no attributes');
  try {
    await api.setAttribute(join(src, 'small'), 'user.one', Buffer.from([1, 0, 0xff]));
  } catch {
    t.skip('this file system does not keep user xattrs');
    return;
  }
  const first = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(first.warnings, []);
  const one = (await listing(tr.repo, first.snapshot)).find((e) => e.path === 'x/small')!;
  assert.deepEqual(one.xattrs, [{ name: 'user.one', value: Buffer.from([1, 0, 0xff]) }]);
  const plain = (await listing(tr.repo, first.snapshot)).find((e) => e.path === 'x/plain')!;
  assert.equal(plain.xattrs, undefined);

  await api.setAttribute(join(src, 'small'), 'user.two', Buffer.from('2'));
  const second = await backup(tr.repo, { paths: [src] });
  assert.equal(second.read.files, 1, 'the xattr change moved the ctime: the file is read again');
  const two = (await listing(tr.repo, second.snapshot)).find((e) => e.path === 'x/small')!;
  assert.deepEqual(two.xattrs, [
    { name: 'user.one', value: Buffer.from([1, 0, 0xff]) },
    { name: 'user.two', value: Buffer.from('2') },
  ]);
});

test('a parent whose listing cannot be read does not stop the next backup: a warning, and the files are read again', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'many');
  await manySmallFiles(src);
  await backup(tr.repo, { paths: [src] });
  // The listing's blobs and the files' blobs share the packs: remove them all.
  for (const o of await tr.backend.list('data/')) await tr.backend.delete(o.name);
  const repo = await tr.reopen();
  const warnings: string[] = [];
  repo.onWarning = (m) => warnings.push(m);
  const second = await backup(repo, { paths: [src] });
  assert.deepEqual(second.warnings, []);
  assert.equal(second.read.files, 1800, 'every file read again');
  assert.ok(warnings.some((w) => w.includes("the previous snapshot's file list can't be read")), warnings.join('\n'));
  const full = await backup(repo, { paths: [src], parent: 'none' });
  assert.deepEqual(second.snapshot.tree, full.snapshot.tree);
});

test('unchanged files are recognised from their parent line whatever their names and kinds; a change of any kind is listed anew', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'odd');
  await fs.mkdir(join(src, 'd'), { recursive: true });
  // Names JSON escapes (the path is then read by decoding the line), and one that is not UTF-8.
  const names = ['plain', 'quote"d', 'back\\slash', 'tab\there', 'ctl\u0001', 'été 日本', 'z'];
  for (const [i, n] of names.entries()) await fs.writeFile(join(src, 'd', n), `${n} ${i}\n`.repeat(i + 1));
  const bad = Buffer.concat([Buffer.from(join(src, 'd') + '/bad-'), Buffer.from([0xff, 0xfe])]);
  await fs.writeFile(bad, 'not utf-8 name\n');
  await fs.writeFile(join(src, 'linked'), 'two names\n');
  await fs.link(join(src, 'linked'), join(src, 'linked2'));
  await fs.writeFile(join(src, 'mode'), 'mode changes\n');
  await fs.writeFile(join(src, 'time'), 'time changes\n');
  const first = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(first.warnings, []);

  const again = await backup(tr.repo, { paths: [src] });
  assert.equal(again.read.files, 0, 'nothing changed: nothing read');
  assert.deepEqual(again.snapshot.tree, first.snapshot.tree, 'the same listing bytes');

  await fs.chmod(join(src, 'mode'), 0o600);
  await fs.utimes(join(src, 'time'), new Date(2001, 1, 1), new Date(2001, 1, 1));
  const second = await backup(tr.repo, { paths: [src] });
  assert.equal(second.read.files, 2, 'the two changed files (their ctimes moved) are read, nothing else');
  const full = await backup(tr.repo, { paths: [src], parent: 'none' });
  assert.deepEqual(second.snapshot.tree, full.snapshot.tree, 'same listing bytes whether files were read or taken from the parent');
  const got = await listing(tr.repo, second.snapshot);
  const mode = got.find((e) => e.path === 'odd/mode');
  assert.equal(mode?.mode, 0o600);
  const time = got.find((e) => e.path === 'odd/time');
  assert.equal(time?.mtimeNs, BigInt(new Date(2001, 1, 1).getTime()) * 1_000_000n);
  assert.equal(got.find((e) => e.path === 'odd/linked2')?.type, 'hardlink');
  assert.equal(got.filter((e) => e.type === 'file').length, names.length + 4);
});

test('a backup with many new blobs writes index objects as it goes, each after its packs are durable; the repository reads and checks whole', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'big');
  await fs.mkdir(src);
  // ~20 MiB of random data in small chunks: three packs, thousands of blobs.
  for (let i = 0; i < 20; i++) await fs.writeFile(join(src, `f${i}`), prng(100 + i, 1 << 20));
  const repo = tr.repo;
  // An index object once the committed packs' records reach 1 byte: one per committed pack.
  const first = await backup(repo, { paths: [src], indexFlushBytes: 1 });
  const packs = (await tr.backend.list('data/')).length;
  const indexes = (await tr.backend.list('index/')).length;
  assert.ok(packs >= 3, `${packs} packs`);
  assert.ok(indexes >= 2 && indexes <= packs, `${indexes} index objects for ${packs} packs`);
  const c = await check(await tr.reopen(), { readData: true });
  assert.deepEqual(c.problems, []);
  assert.equal(c.unreferencedPacks, 0, 'every pack is in an index');
  // The blobs indexed along the way deduplicate the next backup.
  const again = await backup(await tr.reopen(), { paths: [src], parent: 'none' });
  assert.equal(again.snapshot.stats.newChunks, 0);
  assert.deepEqual(again.snapshot.tree, first.snapshot.tree);
  const out = await tempDir(t, 'out');
  await restore(await tr.reopen(), { id: first.id, snapshot: first.snapshot }, { target: out });
  for (let i = 0; i < 20; i++) assert.ok((await fs.readFile(join(out, 'big', `f${i}`))).equals(prng(100 + i, 1 << 20)), `f${i}`);
  // Without the test threshold, this backup's few thousand blobs make one index object.
  const tr2 = await newRepo(t);
  await backup(tr2.repo, { paths: [src] });
  assert.equal((await tr2.backend.list('index/')).length, 1);
});

test('ignoreInode / ignoreCtime (restic\'s --ignore-inode, --ignore-ctime): a file with a new inode or ctime but the same size and mtime is not read; an xattr changed meanwhile is still stored; the dry run agrees', async (t) => {
  const { writeXattrs } = await import('../src/repository/fs-meta.js');
  const { backupDryRun } = await import('../src/index.js');
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'd');
  await fs.mkdir(src);
  for (let i = 0; i < 20; i++) await fs.writeFile(join(src, `f${i}`), `file ${i}\n`.repeat(1 + i));
  await fs.writeFile(join(src, 'large'), Buffer.alloc(3 << 20, 9));
  const first = await backup(tr.repo, { paths: [src] });
  const parent = { id: first.id, snapshot: first.snapshot };
  // A new inode (a copy with the same mtime put over it, as a FUSE or network mount shows
  // after a remount), a new ctime (chmod to the same mode), an xattr set (new ctime too),
  // and the large file copied over likewise.
  const replace = async (name: string): Promise<void> => {
    const p = join(src, name);
    await fs.copyFile(p, `${p}.tmp`);
    execFileSync('touch', ['-r', p, `${p}.tmp`]); // the mtime to the nanosecond (fs.utimes rounds it)
    await fs.rename(`${p}.tmp`, p);
  };
  await replace('f1');
  await replace('large');
  await fs.chmod(join(src, 'f2'), (await fs.stat(join(src, 'f2'))).mode & 0o7777);
  const withXattr = xattrs() !== null && (await writeXattrs(join(src, 'f3'), [{ name: 'user.tag', value: Buffer.from('blue') }]).then((f) => f.length === 0, () => false));
  // A new inode comes with a new ctime: ignoring the inode alone still reads the replaced
  // files (the CLI's --ignore-inode sets both, as restic's does).
  const all = withXattr ? 4 : 3;
  const cases: Array<[{ ignoreInode?: boolean; ignoreCtime?: boolean }, number]> = [
    [{}, all],
    [{ ignoreInode: true }, all],
    [{ ignoreCtime: true }, 2],
    [{ ignoreInode: true, ignoreCtime: true }, 0],
  ];
  for (const [flags, reads] of cases) {
    const dry = await backupDryRun(tr.repo, { paths: [src], parent, ...flags });
    assert.equal(dry.readFiles, reads, `dry run ${JSON.stringify(flags)}`);
    const r = await backup(tr.repo, { paths: [src], parent, ...flags });
    assert.equal(r.read.files, reads, JSON.stringify(flags));
    const got = await listing(tr.repo, r.snapshot);
    const f3 = got.find((e) => e.path === 'd/f3');
    if (withXattr) assert.deepEqual(f3?.type === 'file' && f3.xattrs?.map((x) => `${x.name}=${x.value.toString()}`), ['user.tag=blue'], `the xattr set is stored ${JSON.stringify(flags)}`);
    // What the snapshot records is today's inode and ctime: a backup without the flags
    // after it reads nothing.
    const next = await backup(tr.repo, { paths: [src], parent: { id: r.id, snapshot: r.snapshot } });
    assert.equal(next.read.files, 0, `after ${JSON.stringify(flags)}`);
  }
  const out = await tempDir(t, 'out');
  const last = (await tr.repo.snapshots()).at(-1)!;
  await restore(tr.repo, last, { target: out });
  assert.ok((await fs.readFile(join(out, 'd', 'large'))).equals(await fs.readFile(join(src, 'large'))));
  const c = await check(tr.repo);
  assert.equal(c.snapshots, 9);
});
