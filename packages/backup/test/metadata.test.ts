/**
 * File metadata through backup → restore (format version 2, spec §9.2–§9.4; issue 10):
 * names as bytes, owners and setuid, xattrs, hard links, sparse files, symlink and
 * nanosecond times, FIFOs, sockets and devices; and restore safety: symlinks in the
 * target are never followed, files changing during backup are reported, and a restore
 * deeper than PATH_MAX works.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants as fsc, promises as fs, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { backup, restore, type TreeEntry } from '../src/index.js';
import { writeXattrs, writeXattrsSync, xattrs } from '../src/repository/fs-meta.js';
import { newRepo, tempDir } from './fixtures/trees.js';

const isRoot = process.getuid?.() === 0;
const b = (s: string) => Buffer.from(s, 'utf8');
const cat = (...parts: Array<string | Buffer>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? b(p) : p)));

async function entries(repo: Awaited<ReturnType<typeof newRepo>>['repo'], snap: Parameters<typeof restore>[1]['snapshot']): Promise<Map<string, TreeEntry>> {
  const out = new Map<string, TreeEntry>();
  for await (const e of repo.tree(snap)) out.set(e.rawPath.toString('latin1'), e);
  return out;
}

test('names are bytes: a Latin-1 name and a name holding U+FFFD each restore with their own content', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'names');
  await fs.mkdir(src);
  const latin1 = cat(src, '/caf', Buffer.from([0xe9])); // "café" in Latin-1: not UTF-8
  const fffd = cat(src, '/caf\uFFFD'); // what a lossy decoder would turn the first name into
  const dirLatin1 = cat(src, '/d', Buffer.from([0xff, 0xfe]));
  await fs.writeFile(latin1, 'latin-1 file');
  await fs.writeFile(fffd, 'replacement-character file');
  await fs.mkdir(dirLatin1);
  await fs.writeFile(cat(dirLatin1, '/inner'), 'inside a non-UTF-8 directory');
  // Larger than a small file: chunked on a worker, which gets its path as bytes.
  const large = Buffer.alloc(700_000);
  for (let i = 0; i < large.length; i++) large[i] = (i * 2654435761) >>> 24;
  await fs.writeFile(cat(dirLatin1, '/large', Buffer.from([0xe9])), large);
  await fs.symlink(cat('caf', Buffer.from([0xe9])), cat(src, '/link'));

  const r = await backup(tr.repo, { paths: [src] });
  assert.equal(r.snapshot.stats.files, 4);
  const got = await entries(tr.repo, r.snapshot);
  assert.ok(got.has(cat('names/caf', Buffer.from([0xe9])).toString('latin1')), 'the Latin-1 name is in the listing as bytes');

  const target = await tempDir(t, 'dst');
  const [rec] = await tr.repo.snapshots();
  await restore(tr.repo, rec!, { target });
  const out = cat(target, '/names');
  assert.equal(await fs.readFile(cat(out, '/caf', Buffer.from([0xe9])), 'utf8'), 'latin-1 file');
  assert.equal(await fs.readFile(cat(out, '/caf\uFFFD'), 'utf8'), 'replacement-character file');
  assert.equal(await fs.readFile(cat(out, '/d', Buffer.from([0xff, 0xfe]), '/inner'), 'utf8'), 'inside a non-UTF-8 directory');
  assert.ok((await fs.readFile(cat(out, '/d', Buffer.from([0xff, 0xfe]), '/large', Buffer.from([0xe9])))).equals(large), 'a large file under bytes names');
  assert.deepEqual(await fs.readlink(cat(out, '/link'), { encoding: 'buffer' }), cat('caf', Buffer.from([0xe9])));
  const names = (await fs.readdir(out, { encoding: 'buffer' })).map((n) => n.toString('hex')).sort();
  assert.deepEqual(names, [cat('caf', Buffer.from([0xe9])), b('caf\uFFFD'), cat('d', Buffer.from([0xff, 0xfe])), b('link')].map((n) => n.toString('hex')).sort());
});

test('owners: uid/gid and names are stored; as root they are restored with setuid kept; without owners setuid/setgid are dropped', { skip: !isRoot && 'needs root to chown' }, async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'own');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'suid'), '#!/bin/sh\n');
  await fs.chown(join(src, 'suid'), 1234, 5678);
  await fs.chmod(join(src, 'suid'), 0o6755); // chmod after chown: chown clears setuid
  await fs.writeFile(join(src, 'plain'), 'x');
  await fs.chown(join(src, 'plain'), 4321, 8765);
  await fs.symlink('plain', join(src, 'link'));
  await fs.lchown(join(src, 'link'), 1111, 2222);
  await fs.chown(src, 42, 43);

  const r = await backup(tr.repo, { paths: [src] });
  const got = await entries(tr.repo, r.snapshot);
  const suid = got.get('own/suid')!;
  assert.deepEqual({ uid: suid.owner?.uid, gid: suid.owner?.gid, mode: suid.mode }, { uid: 1234, gid: 5678, mode: 0o6755 });
  assert.equal(got.get('own')!.owner?.uid, 42);
  assert.equal(got.get('own/plain')!.owner?.uid, 4321);

  const [rec] = await tr.repo.snapshots();
  const asRoot = await tempDir(t, 'dst');
  const res = await restore(tr.repo, rec!, { target: asRoot });
  assert.deepEqual(res.warnings, []);
  const st = await fs.stat(join(asRoot, 'own/suid'));
  assert.deepEqual({ uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 }, { uid: 1234, gid: 5678, mode: 0o6755 });
  const pl = await fs.stat(join(asRoot, 'own/plain'));
  assert.deepEqual([pl.uid, pl.gid], [4321, 8765]);
  const ln = await fs.lstat(join(asRoot, 'own/link'));
  assert.deepEqual([ln.uid, ln.gid], [1111, 2222]);
  const dir = await fs.stat(join(asRoot, 'own'));
  assert.deepEqual([dir.uid, dir.gid], [42, 43]);

  // As a user who can't restore owners: the file is the restorer's, and not setuid.
  const noOwners = await tempDir(t, 'dst');
  const res2 = await restore(tr.repo, rec!, { target: noOwners, owners: false });
  const st2 = await fs.stat(join(noOwners, 'own/suid'));
  assert.equal(st2.uid, process.getuid!());
  assert.equal(st2.mode & 0o7777, 0o0755, 'setuid and setgid dropped');
  assert.ok(res2.warnings.some((w) => w.path.endsWith('own/suid') && /setuid/.test(w.message)), 'and the user is told');
});

test('extended attributes (user.*) on files, directories; ACLs when the file system keeps them', { skip: !xattrs() && '@napi-rs/xattr is not installed' }, async (t) => {
  const api = xattrs()!;
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'x');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'f'), 'data');
  try {
    await api.setAttribute(join(src, 'f'), 'user.comment', Buffer.from([0, 1, 2, 0xff]));
  } catch {
    t.skip('this file system does not keep user xattrs');
    return;
  }
  await api.setAttribute(join(src, 'f'), 'user.empty', Buffer.alloc(0));
  await api.setAttribute(src, 'user.dir', Buffer.from('on a directory'));
  // A minimal POSIX ACL (version 2 header + user::rw-, group::r--, other::r--, mask, user 1000 rw-).
  const acl = Buffer.alloc(4 + 8 * 5);
  acl.writeUInt32LE(2, 0);
  const aclEntries: Array<[number, number, number]> = [[0x01, 6, 0xffffffff], [0x02, 6, 1000], [0x04, 4, 0xffffffff], [0x10, 6, 0xffffffff], [0x20, 4, 0xffffffff]];
  aclEntries.forEach(([tag, perm, id], i) => {
    acl.writeUInt16LE(tag, 4 + i * 8);
    acl.writeUInt16LE(perm, 6 + i * 8);
    acl.writeUInt32LE(id, 8 + i * 8);
  });
  const aclKept = await api.setAttribute(join(src, 'f'), 'system.posix_acl_access', acl).then(() => true, () => false);

  const r = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(r.warnings, []);
  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  const res = await restore(tr.repo, rec!, { target });
  assert.deepEqual(res.warnings, []);
  assert.deepEqual(await api.getAttribute(join(target, 'x/f'), 'user.comment'), Buffer.from([0, 1, 2, 0xff]));
  assert.deepEqual(await api.getAttribute(join(target, 'x/f'), 'user.empty'), Buffer.alloc(0));
  assert.deepEqual(await api.getAttribute(join(target, 'x'), 'user.dir'), Buffer.from('on a directory'));
  if (aclKept) {
    const back = await api.getAttribute(join(target, 'x/f'), 'system.posix_acl_access');
    assert.ok(back && back.length === acl.length, 'the ACL came back');
  }
});

test('one extended attribute that cannot be set does not stop the others: each failure is returned by name (async and sync paths)', { skip: !xattrs() && '@napi-rs/xattr is not installed' }, async (t) => {
  const api = xattrs()!;
  const dir = await tempDir(t, 'xattr-fail');
  // A name without a namespace (as macOS writes them: com.apple.quarantine) cannot be set
  // on Linux; the attributes around it can.
  const list = [
    { name: 'user.first', value: Buffer.from('1') },
    { name: 'com.apple.quarantine', value: Buffer.from('q') },
    { name: 'user.last', value: Buffer.from('2') },
  ];
  for (const sync of [false, true]) {
    const f = join(dir, sync ? 'sync' : 'async');
    await fs.writeFile(f, 'x');
    const failed = sync ? writeXattrsSync(f, list) : await writeXattrs(f, list);
    assert.deepEqual(failed.map((x) => x.name), ['com.apple.quarantine']);
    assert.deepEqual(Buffer.from(api.getAttributeSync(f, 'user.first')!), Buffer.from('1'));
    assert.deepEqual(Buffer.from(api.getAttributeSync(f, 'user.last')!), Buffer.from('2'), 'the attribute after the failed one is set too');
  }
});

test('times after 2262 (beyond 2^63 ns) are stored exactly, not seen as a change, by the first backup, an unchanged one and one with scan-ahead; restored within 2 µs', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  await fs.mkdir(src);
  const f = join(src, 'future');
  await fs.writeFile(f, 'f\n');
  execFileSync('touch', ['-d', '2300-01-01 12:00:00.987654321', f]);
  const want = (await fs.lstat(f, { bigint: true })).mtimeNs;
  assert.ok(want > 2n ** 63n, 'the file system keeps the time');
  // First backup (the small-file path's stat after the read), unchanged (the parent's
  // line), unchanged with the scan-ahead thread (its packed stats).
  for (const opts of [{}, {}, { scanAheadFrom: 0 }]) {
    const r = await backup(await tr.reopen(), { paths: [src], ...opts });
    assert.deepEqual(r.warnings, [], JSON.stringify(opts));
    const out = await tempDir(t, 'out');
    await restore(await tr.reopen(), { id: r.id, snapshot: r.snapshot }, { target: out });
    const got = (await fs.lstat(join(out, 'data', 'future'), { bigint: true })).mtimeNs;
    const diff = got > want ? got - want : want - got;
    assert.ok(diff <= 2000n, `restored ${got}, stored ${want}: ${diff} ns apart`);
  }
});

test('hard links keep their link count; sparse files keep their holes; symlink and nanosecond mtimes come back', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'm');
  await fs.mkdir(join(src, 'sub'), { recursive: true });
  await fs.writeFile(join(src, 'a'), 'shared content');
  await fs.link(join(src, 'a'), join(src, 'sub/b'));
  await fs.link(join(src, 'a'), join(src, 'z'));
  // 20 MiB with 4 KiB of data in the middle.
  const fh = await fs.open(join(src, 'sparse'), 'w');
  await fh.write(Buffer.alloc(4096, 7), 0, 4096, 10 * 1024 * 1024);
  await fh.truncate(20 * 1024 * 1024);
  await fh.close();
  const sparseSt = await fs.stat(join(src, 'sparse'));
  await fs.symlink('a', join(src, 'link'));
  // Times with nanoseconds (coreutils touch sets them exactly), and one before 1970.
  execFileSync('touch', ['-h', '-d', '@1700000000.123456789', join(src, 'link')]);
  execFileSync('touch', ['-d', '@1600000000.987654321', join(src, 'a')]);
  execFileSync('touch', ['-d', '1959-06-01T00:00:00.5Z', join(src, 'sub')]);

  const r = await backup(tr.repo, { paths: [src] });
  const got = await entries(tr.repo, r.snapshot);
  assert.equal(got.get('m/a')!.mtimeNs, 1_600_000_000_987_654_321n, 'nanoseconds are stored exactly');
  assert.equal(got.get('m/link')!.mtimeNs, 1_700_000_000_123_456_789n);
  assert.equal(got.get('m/sub')!.mtimeNs, BigInt(Date.parse('1959-06-01T00:00:00.5Z')) * 1_000_000n);
  assert.equal(got.get('m/sub/b')!.type, 'hardlink');
  assert.equal(got.get('m/z')!.type, 'hardlink');
  assert.equal((got.get('m/sparse') as { sparse?: boolean }).sparse, sparseSt.blocks * 512 < sparseSt.size ? true : undefined);

  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, rec!, { target });
  const out = join(target, 'm');
  const [sa, sb, sz] = await Promise.all([fs.stat(join(out, 'a')), fs.stat(join(out, 'sub/b')), fs.stat(join(out, 'z'))]);
  assert.equal(sa.nlink, 3, 'link count preserved');
  assert.equal(sa.ino, sb.ino);
  assert.equal(sa.ino, sz.ino);
  assert.equal(await fs.readFile(join(out, 'sub/b'), 'utf8'), 'shared content');

  const sp = await fs.stat(join(out, 'sparse'));
  assert.equal(sp.size, 20 * 1024 * 1024);
  if (sparseSt.blocks * 512 < sparseSt.size) assert.ok(sp.blocks * 512 <= 64 * 1024, `sparse file restored using ${sp.blocks * 512} bytes of disk`);
  const data = await fs.readFile(join(out, 'sparse'));
  assert.equal(data.subarray(10 * 1024 * 1024, 10 * 1024 * 1024 + 4096).every((x) => x === 7), true);

  // Node sets times through a double of seconds that libuv cuts to whole microseconds:
  // exact to the microsecond (the stored value truncated toward zero), never off by one.
  const close = (a: bigint, want: bigint) => assert.equal(a, (want / 1000n) * 1000n, `${a} vs ${want}`);
  close((await fs.lstat(join(out, 'link'), { bigint: true })).mtimeNs, 1_700_000_000_123_456_789n);
  close((await fs.stat(join(out, 'a'), { bigint: true })).mtimeNs, 1_600_000_000_987_654_321n);
  close((await fs.stat(join(out, 'sub'), { bigint: true })).mtimeNs, BigInt(Date.parse('1959-06-01T00:00:00.5Z')) * 1_000_000n);
});

test('restored times are exact to the microsecond for any nanoseconds, before and after 1970', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'times');
  await fs.mkdir(src);
  // 400 files, each with its own time (seconds and nanoseconds from a fixed LCG), one
  // shell for all the touches. About one in twenty came back a microsecond off before.
  let x = 12345n;
  const names: string[] = [];
  const lines: string[] = [];
  for (let i = 0; i < 400; i++) {
    x = (x * 6364136223846793005n + 1442695040888963407n) % 2n ** 64n;
    const sec = Number(x >> 33n) % 4_000_000_000 - 1_000_000_000;
    const nsec = Number(x & 0x3fffffffn) % 1_000_000_000;
    names.push(`f${i}`);
    await fs.writeFile(join(src, `f${i}`), '');
    lines.push(`touch -d @${sec < 0 ? '-' : ''}${Math.abs(sec)}.${String(nsec).padStart(9, '0')} f${i}`);
  }
  execFileSync('bash', ['-c', lines.join('\n')], { cwd: src });
  const stored = new Map<string, bigint>();
  for (const name of names) stored.set(name, (await fs.stat(join(src, name), { bigint: true })).mtimeNs);
  await backup(tr.repo, { paths: [src] });
  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, rec!, { target });
  let off = 0;
  for (const [name, ns] of stored) {
    const got = (await fs.stat(join(target, 'times', name), { bigint: true })).mtimeNs;
    if (got !== (ns / 1000n) * 1000n) off++;
  }
  assert.equal(off, 0, `${off} of ${stored.size} files came back with another microsecond`);
  assert.ok([...stored.values()].some((ns) => ns < 0n) && [...stored.values()].filter((ns) => ns % 1000n !== 0n).length > 300, 'times before 1970 and sub-microsecond parts were tried');
});

test('a sparse file with small islands of data at odd offsets restores with holes around every island', async (t) => {
  // Chunks rarely start or end on a 4 KiB block: after an island that ends mid-block,
  // every all-zero chunk sits across block boundaries. Its zero edge pieces must not be
  // written (they were, and a 16 MiB file with 4 KiB of data took 2 MiB on disk).
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'islands');
  await fs.mkdir(src);
  const fh = await fs.open(join(src, 'sparse'), 'w');
  const islands = 32;
  for (let i = 0; i < islands; i++) await fh.write(Buffer.alloc(100 + i * 37, i + 1), 0, 100 + i * 37, i * 512 * 1024 + 777 + i * 1013);
  await fh.truncate(islands * 512 * 1024);
  await fh.close();
  const st = await fs.stat(join(src, 'sparse'));
  if (st.blocks * 512 >= st.size) return t.skip('the file system does not keep holes');
  await backup(tr.repo, { paths: [src] });
  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, rec!, { target });
  const out = join(target, 'islands/sparse');
  assert.deepEqual(await fs.readFile(out), await fs.readFile(join(src, 'sparse')), 'the same bytes');
  const got = await fs.stat(out);
  // Each island spans at most two blocks.
  assert.ok(got.blocks * 512 <= islands * 2 * 4096, `restored using ${got.blocks * 512} bytes of disk for ${islands} islands (source: ${st.blocks * 512})`);
});

test('FIFOs and device nodes are restored (devices as root); sockets are recorded and skipped with a warning', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 's');
  await fs.mkdir(src);
  execFileSync('mkfifo', ['-m', '640', join(src, 'fifo')]);
  if (isRoot) execFileSync('mknod', ['-m', '620', join(src, 'null'), 'c', '1', '3']);
  const server = createServer();
  await new Promise<void>((r) => server.listen(join(src, 'sock'), r));
  t.after(() => server.close());

  const r = await backup(tr.repo, { paths: [src] });
  assert.deepEqual(r.warnings, []);
  const got = await entries(tr.repo, r.snapshot);
  assert.equal(got.get('s/fifo')!.type, 'fifo');
  assert.equal(got.get('s/sock')!.type, 'socket');
  if (isRoot) assert.deepEqual([got.get('s/null')!.type, (got.get('s/null') as { major?: number }).major, (got.get('s/null') as { minor?: number }).minor], ['chardev', 1, 3]);

  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  const res = await restore(tr.repo, rec!, { target });
  assert.deepEqual(res.warnings.filter((w) => !w.path.endsWith('s/sock')), []);
  const fifo = await fs.lstat(join(target, 's/fifo'));
  assert.ok(fifo.isFIFO());
  assert.equal(fifo.mode & 0o7777, 0o640);
  if (isRoot) {
    const dev = await fs.lstat(join(target, 's/null'));
    assert.ok(dev.isCharacterDevice());
    assert.equal(dev.rdev, (await fs.stat('/dev/null')).rdev);
  }
  assert.equal(existsSync(join(target, 's/sock')), false);
  assert.deepEqual(res.warnings.map((w) => w.path.endsWith('s/sock')), [true]);
});

test('restore never follows a symlink in the target: a symlinked directory does not let files land outside', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  await fs.mkdir(join(src, 'inner'), { recursive: true });
  await fs.writeFile(join(src, 'inner/secret.txt'), 'restored data');
  await backup(tr.repo, { paths: [src] });
  const [rec] = await tr.repo.snapshots();

  const target = await tempDir(t, 'dst');
  const outside = await tempDir(t, 'outside');
  await fs.mkdir(join(target, 'data'));
  await fs.symlink(outside, join(target, 'data/inner'));
  await assert.rejects(restore(tr.repo, rec!, { target, overwrite: true }), (e: Error) => /symlink/.test(e.message));
  assert.deepEqual(await fs.readdir(outside), [], 'nothing was written through the symlink');

  // A symlink where a file goes is replaced, not written through.
  await fs.unlink(join(target, 'data/inner'));
  await fs.mkdir(join(target, 'data/inner'));
  await fs.symlink(join(outside, 'victim'), join(target, 'data/inner/secret.txt'));
  await restore(tr.repo, rec!, { target, overwrite: true });
  assert.equal(existsSync(join(outside, 'victim')), false);
  assert.equal(await fs.readFile(join(target, 'data/inner/secret.txt'), 'utf8'), 'restored data');
  assert.ok((await fs.lstat(join(target, 'data/inner/secret.txt'))).isFile());
});

test('a file that changes while it is backed up is read again, and reported if it keeps changing', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'c');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'busy.db'), Buffer.alloc(300_000, 1));
  await fs.writeFile(join(src, 'once.db'), Buffer.alloc(300_000, 2));
  let onceChanged = false;
  const r = await backup(tr.repo, {
    paths: [src],
    afterFileRead: async (p) => {
      const name = p.toString('utf8');
      if (name.endsWith('busy.db')) await fs.appendFile(p, 'more');
      if (name.endsWith('once.db') && !onceChanged) {
        onceChanged = true;
        await fs.writeFile(p, Buffer.alloc(300_000, 3));
        await fs.utimes(p, new Date(1_000_000), new Date(1_000_000));
      }
    },
  });
  assert.deepEqual(r.warnings.map((w) => [w.path.endsWith('busy.db'), /changed while/.test(w.message)]), [[true, true]]);
  const [rec] = await tr.repo.snapshots();
  const target = await tempDir(t, 'dst');
  await restore(tr.repo, rec!, { target });
  // once.db was read again after its change: the stored copy is the new one, whole.
  assert.deepEqual(await fs.readFile(join(target, 'c/once.db')), Buffer.alloc(300_000, 3));
});

test('restoring into a target whose paths exceed PATH_MAX works (directory handles, not long paths)', async (t) => {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'src');
  // A source tree 3,900 bytes deep: fine to back up from a short base path.
  const seg = 'd'.repeat(250);
  let rel = 'deep';
  for (let i = 0; i < 15; i++) rel += `/${seg}`;
  await fs.mkdir(join(base, rel), { recursive: true });
  await fs.writeFile(join(base, rel, 'leaf.txt'), 'at the bottom');
  await backup(tr.repo, { paths: [join(base, 'deep')] });
  const [rec] = await tr.repo.snapshots();

  // A target 400 bytes long: target + tree is over 4,096 bytes.
  // fs.rm cannot remove a tree deeper than PATH_MAX; rm(1) can (it works with openat).
  const dst = await tempDir(undefined, 'dst');
  t.after(() => execFileSync('rm', ['-rf', dst]));
  const target = join(dst, 't'.repeat(200), 'u'.repeat(200));
  const res = await restore(tr.repo, rec!, { target });
  assert.equal(res.files, 1);
  assert.ok(join(target, rel, 'leaf.txt').length > 4096);
  // Read it back relative to a directory deep inside (the absolute path is too long).
  const fd = await fs.open(join(target, 'deep', seg, seg, seg, seg, seg, seg, seg), fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    const rest = Array(8).fill(seg).join('/');
    assert.equal(await fs.readFile(`/proc/self/fd/${fd.fd}/${rest}/leaf.txt`, 'utf8'), 'at the bottom');
  } finally {
    await fd.close();
  }
});

test('a tree 1,900 directories deep backs up and restores (the walk does not overflow the stack)', async (t) => {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'src');
  const rel = ['chain', ...Array(1900).fill('d')].join('/'); // ~3,800 bytes: under PATH_MAX from a short base
  await fs.mkdir(join(base, rel), { recursive: true });
  await fs.writeFile(join(base, rel, 'leaf.txt'), 'at the bottom');
  const res = await backup(tr.repo, { paths: [join(base, 'chain')] });
  assert.deepEqual(res.warnings, []);
  assert.equal(res.snapshot.stats.dirs, 1901);
  const [rec] = await tr.repo.snapshots();
  const dst = await tempDir(undefined, 'dst');
  t.after(() => execFileSync('rm', ['-rf', dst]));
  const out = await restore(tr.repo, rec!, { target: dst });
  assert.equal(out.files, 1);
  assert.equal(await fs.readFile(join(dst, rel, 'leaf.txt'), 'utf8'), 'at the bottom');
});

test('owner names follow each entry\'s own uid and gid when neighbours share one of them (the walk reuses the previous owner only when both match)', { skip: !isRoot && 'needs root to chown' }, async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'mix');
  await fs.mkdir(src);
  const passwd = await fs.readFile('/etc/passwd', 'utf8');
  const groupFile = await fs.readFile('/etc/group', 'utf8');
  const nameOf = (text: string, id: number) => text.split('\n').map((l) => l.split(':')).find((f) => f.length >= 3 && Number(f[2]) === id)?.[0];
  // Names sort in this order: each owner differs from the one before in uid, gid, both or neither.
  const owners: Array<[number, number]> = [[0, 0], [0, 1], [1, 1], [1, 0], [1, 0], [2, 0], [0, 0], [54321, 0], [0, 54321]];
  for (let i = 0; i < owners.length; i++) {
    const p = join(src, `f${i}`);
    await fs.writeFile(p, `file ${i}`);
    await fs.chown(p, owners[i]![0], owners[i]![1]);
  }
  const r = await backup(tr.repo, { paths: [src] });
  const got = await entries(tr.repo, r.snapshot);
  for (let i = 0; i < owners.length; i++) {
    const [uid, gid] = owners[i]!;
    const want: Record<string, unknown> = { uid, gid };
    const user = nameOf(passwd, uid);
    const group = nameOf(groupFile, gid);
    if (user !== undefined) want.user = user;
    if (group !== undefined) want.group = group;
    assert.deepEqual(got.get(`mix/f${i}`)!.owner, want, `f${i}`);
  }
});
