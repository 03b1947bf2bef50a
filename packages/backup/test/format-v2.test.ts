/**
 * Format version 2 (spec §4, §7.3, §8, §10): version 1 repositories still read (a whole
 * repository written by the version 1 code is committed under spec/vectors/backup/
 * repositories/v1); version 1 repositories are not written to; padding buckets what the
 * storage server sees; readers check blobs against their IDs.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { type StorageBackend, BackupKey, CofferError, LocalBackend, ObjectKind, PadMode, Repository, backup, check, indexName, padme, paddedLength, plainLength, prune, repairIndex, restore } from '../src/index.js';
import { decodeIndex, encodeIndex } from '../src/repository/index-file.js';
import { decodePackTrailer } from '../src/repository/pack.js';
import { padBlob, unpadBlob } from '../src/repository/padding.js';
import { newRepo, tempDir } from './fixtures/trees.js';

const REPOS = fileURLToPath(new URL('../../../../spec/vectors/backup/repositories/', import.meta.url));

interface RepoVector {
  key: string;
  directory: string;
  entries: Array<{ path: string; type: string; mode?: number; mtimeMs?: number; size?: number; sha256?: string; target?: string }>;
}

async function copyDir(from: string, to: string): Promise<void> {
  await fs.cp(from, to, { recursive: true });
}

test('a repository written by format version 1 still opens, lists, checks and restores exactly', async (t) => {
  const v = JSON.parse(readFileSync(join(REPOS, 'v1.json'), 'utf8')) as RepoVector;
  // A copy: restore writes a lock, and the committed vector must stay as it is.
  const dir = join(await tempDir(t, 'v1'), 'repo');
  await copyDir(join(REPOS, v.directory), dir);
  const repo = await Repository.open(new LocalBackend(dir), BackupKey.fromBytes(Buffer.from(v.key, 'hex')));
  assert.equal(repo.config.version, 1);
  const snaps = await repo.snapshots();
  assert.equal(snaps.length, 1);
  assert.equal(snaps[0]!.snapshot.version, 1);
  const c = await check(repo, { readData: true });
  assert.deepEqual(c.problems, []);

  const target = await tempDir(t, 'dst');
  await restore(repo, snaps[0]!, { target });
  for (const e of v.entries) {
    const p = join(target, e.path);
    const st = await fs.lstat(p);
    if (e.type === 'symlink') {
      assert.ok(st.isSymbolicLink(), e.path);
      assert.equal(await fs.readlink(p), e.target);
      continue;
    }
    assert.equal(st.mode & 0o7777, e.mode, `${e.path}: mode`);
    assert.ok(Math.abs(st.mtimeMs - e.mtimeMs!) < 0.01, `${e.path}: mtime ${st.mtimeMs} for ${e.mtimeMs}`);
    if (e.type === 'file') {
      const data = await fs.readFile(p);
      assert.equal(data.length, e.size);
      assert.equal(createHash('sha256').update(data).digest('hex'), e.sha256, `${e.path}: content`);
    } else assert.ok(st.isDirectory());
  }
});

test('backup refuses to write into a version 1 repository and leaves it untouched', async (t) => {
  const v = JSON.parse(readFileSync(join(REPOS, 'v1.json'), 'utf8')) as RepoVector;
  const dir = join(await tempDir(t, 'v1'), 'repo');
  await copyDir(join(REPOS, v.directory), dir);
  const repo = await Repository.open(new LocalBackend(dir), BackupKey.fromBytes(Buffer.from(v.key, 'hex')));
  const src = await tempDir(t, 'src');
  await fs.writeFile(join(src, 'f'), 'x');
  await assert.rejects(backup(repo, { paths: [src] }), (e: unknown) => CofferError.is(e, 'unsupported-version') && /version 1/.test((e as Error).message));
  assert.equal((await repo.backend.list('snapshots/')).length, 1);
  assert.equal((await repo.backend.list('data/')).length, 1);
});

test('repair index in a version 1 repository writes a version 1 index, and the repository still checks and restores', async (t) => {
  const v = JSON.parse(readFileSync(join(REPOS, 'v1.json'), 'utf8')) as RepoVector;
  const dir = join(await tempDir(t, 'v1'), 'repo');
  await copyDir(join(REPOS, v.directory), dir);
  const repo = await Repository.open(new LocalBackend(dir), BackupKey.fromBytes(Buffer.from(v.key, 'hex')));
  const r = await repairIndex(repo, { readAll: true });
  assert.deepEqual(r.unreadablePacks, []);
  assert.equal(r.indexesReplaced, 1);
  const [idx] = await repo.backend.list('index/');
  assert.equal((await repo.readObject(idx!.name, ObjectKind.Index))[4], 1, 'index version byte');
  assert.deepEqual((await check(await Repository.open(new LocalBackend(dir), BackupKey.fromBytes(Buffer.from(v.key, 'hex'))), { readData: true })).problems, []);
  const [rec] = await repo.snapshots();
  await restore(repo, rec!, { target: await tempDir(t, 'dst') });
});

test('Padmé: never shorter, at most 12 % longer, few distinct lengths; max pads to powers of two', () => {
  assert.deepEqual([0, 1, 2, 3, 9, 1000, 1010, 1024, 1025, 524_289].map(padme), [0, 1, 2, 3, 10, 1024, 1024, 1024, 1088, 540_672]);
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 2 ** 40 }), (L) => {
      const p = padme(L);
      assert.ok(p >= L && p <= L * 1.12, `${L} → ${p}`);
      assert.equal(padme(p), p, 'padding is idempotent');
      const m = paddedLength(L, PadMode.Max);
      assert.ok(m >= L && m < 2 * L && Number.isInteger(Math.log2(m)));
    }),
  );
  const blob = padBlob(Buffer.from('payload'), PadMode.Auto);
  assert.deepEqual(unpadBlob(blob, 'x'), Buffer.from('payload'));
  const bad = Buffer.from(blob);
  bad[blob.length - 5] = 1; // a padding byte that is not zero
  assert.throws(() => unpadBlob(bad, 'x'), (e: unknown) => CofferError.is(e, 'corrupt'));
});

/** Sizes the storage server sees after backing up one incompressible file of `n` bytes. */
async function seenSizes(t: Parameters<typeof tempDir>[0], n: number, padding: PadMode): Promise<{ pack: number; index: number; snapshot: number }> {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'f');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'secret.bin'), randomBytes(n));
  await fs.utimes(join(src, 'secret.bin'), 1_700_000_000, 1_700_000_000);
  await fs.utimes(src, 1_700_000_000, 1_700_000_000);
  await backup(tr.repo, { paths: [src], padding, now: () => new Date(1_700_000_000_000) });
  const size = async (prefix: string) => (await tr.backend.list(prefix)).map((o) => o.size).reduce((a, b) => a + b, 0);
  return { pack: await size('data/'), index: await size('index/'), snapshot: await size('snapshots/') };
}

test('padding: files of 1,000 and 1,010 bytes look the same to the storage server with auto, not with off', async (t) => {
  const off = [await seenSizes(t, 1000, PadMode.Off), await seenSizes(t, 1010, PadMode.Off)];
  assert.notEqual(off[0]!.pack, off[1]!.pack, 'unpadded: the pack size tells the file size');
  const auto = [await seenSizes(t, 1000, PadMode.Auto), await seenSizes(t, 1010, PadMode.Auto)];
  assert.equal(auto[0]!.pack, auto[1]!.pack, 'padded: the same bucket');
  assert.equal(auto[0]!.index, auto[1]!.index);
  assert.equal(auto[0]!.snapshot, auto[1]!.snapshot);
  // What is stored is a Padmé length of plaintext.
  const p = plainLength(auto[0]!.pack);
  assert.equal(padme(p), p);
  const i = plainLength(auto[0]!.index);
  assert.equal(padme(i), i);
});

test('padded packs and indexes decode; their trailers and index entries agree; check --read-data is clean', async (t) => {
  const tr = await newRepo(t);
  const src = await tempDir(t, 'src');
  for (let i = 0; i < 20; i++) await fs.writeFile(join(src, `f${i}`), randomBytes(500 + i * 997));
  await fs.writeFile(join(src, 'text'), 'compressible '.repeat(5000));
  await backup(tr.repo, { paths: [src], padding: PadMode.Max });
  const idx = await tr.repo.index();
  for (const { packId } of idx.packs.values()) {
    const name = `data/${packId.toString('hex').slice(0, 2)}/${packId.toString('hex')}`;
    const plain = await tr.repo.readObject(name, ObjectKind.Pack);
    assert.equal(plain.length, 8 * 1024 * 1024, 'max: every pack is 8 MiB of plaintext');
    for (const e of decodePackTrailer(plain, name)) {
      const loc = idx.get(e.id)!;
      assert.deepEqual([loc.offset, loc.storedLength, loc.rawLength, loc.flags], [e.offset, e.storedLength, e.rawLength, e.flags]);
      assert.ok((e.flags & 2) !== 0, 'blobs are padded');
    }
  }
  assert.deepEqual((await check(tr.repo, { readData: true })).problems, []);
  const target = await tempDir(t, 'dst');
  const [rec] = await tr.repo.snapshots();
  await restore(tr.repo, rec!, { target });
  assert.equal(await fs.readFile(join(target, src.split('/').pop()!, 'text'), 'utf8'), 'compressible '.repeat(5000));
});

test('restore checks each blob against its ID: an index entry pointing at another blob of the same size is caught', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'two');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'a'), randomBytes(900));
  await fs.writeFile(join(src, 'b'), randomBytes(900));
  await backup(tr.repo, { paths: [src], padding: PadMode.Off });
  // Rewrite the index with the offsets of the two data blobs swapped (both authentic bytes).
  const [old] = await tr.backend.list('index/');
  const packs = decodeIndex(await tr.repo.readObject(old!.name, ObjectKind.Index), old!.name);
  const data = packs[0]!.blobs.filter((b) => b.type === 0 && b.storedLength === 900);
  assert.equal(data.length, 2);
  [data[0]!.offset, data[1]!.offset] = [data[1]!.offset, data[0]!.offset];
  await tr.repo.writeObject(ObjectKind.Index, encodeIndex(packs), indexName);
  await tr.backend.delete(old!.name);
  const repo = await tr.reopen();
  const [rec] = await repo.snapshots();
  const target = await tempDir(t, 'dst');
  await assert.rejects(restore(repo, rec!, { target }), (e: unknown) => CofferError.is(e, 'corrupt') && /does not match its ID/.test((e as Error).message));
  assert.deepEqual(await fs.readdir(target).then((n) => n.filter((x) => x !== 'two')), []);
});

test('the committed format-2 repository vector restores exactly: byte names, owners, xattrs, hard links, sparse file, FIFO, ns times', async (t) => {
  interface Entry { path: string; type: string; mode: number; mtimeNs: string; uid: number; gid: number; size?: number; sha256?: string; target?: string; nlink?: number; xattrs?: Array<[string, string]> }
  const v = JSON.parse(readFileSync(join(REPOS, 'v2.json'), 'utf8')) as { key: string; directory: string; snapshot: string; entries: Entry[] };
  const dir = join(await tempDir(t, 'v2'), 'repo');
  await copyDir(join(REPOS, v.directory), dir);
  const repo = await Repository.open(new LocalBackend(dir), BackupKey.fromBytes(Buffer.from(v.key, 'hex')));
  assert.equal(repo.config.version, 2);
  assert.deepEqual((await check(repo, { readData: true })).problems, []);
  const rec = await repo.findSnapshot(v.snapshot);
  assert.equal(rec.snapshot.version, 2);
  const target = await tempDir(t, 'dst');
  const res = await restore(repo, rec, { target });
  assert.deepEqual(res.warnings, []);
  const root = process.getuid?.() === 0;
  for (const e of v.entries) {
    const p = Buffer.concat([Buffer.from(target + '/'), Buffer.from(e.path, 'hex')]);
    const st = await fs.lstat(p, { bigint: true });
    const what = Buffer.from(e.path, 'hex').toString('utf8');
    assert.equal(Number(st.mode & 0o7777n), e.type === 'symlink' ? Number(st.mode & 0o7777n) : e.mode, `${what}: mode`);
    const d = st.mtimeNs - BigInt(e.mtimeNs);
    assert.ok(d > -1000n && d < 1000n, `${what}: mtime ${st.mtimeNs} for ${e.mtimeNs}`);
    if (root) assert.deepEqual([Number(st.uid), Number(st.gid)], [e.uid, e.gid], `${what}: owner`);
    if (e.type === 'file') {
      const data = await fs.readFile(p);
      assert.equal(createHash('sha256').update(data).digest('hex'), e.sha256, `${what}: content`);
      assert.equal(Number(st.nlink), e.nlink, `${what}: links`);
    }
    if (e.type === 'symlink') assert.equal((await fs.readlink(p, { encoding: 'buffer' })).toString('hex'), e.target);
    if (e.type === 'fifo') assert.ok(st.isFIFO());
  }
});

test('one damaged snapshot does not hide the others; names the spec does not define are ignored; a read-only repository still restores', async (t) => {
  const tr = await newRepo(t);
  const src = await tempDir(t, 'src');
  await fs.writeFile(join(src, 'f'), 'one');
  await backup(tr.repo, { paths: [src], now: () => new Date('2026-01-01T00:00:00Z') });
  await fs.writeFile(join(src, 'f'), 'two');
  const second = await backup(tr.repo, { paths: [src], now: () => new Date('2026-01-02T00:00:00Z') });
  // A damaged newest snapshot and a stray object whose name merely ends in an ID.
  const bad = 'snapshots/' + 'f'.repeat(64);
  await tr.backend.put(bad, [randomBytes(200)]);
  await tr.backend.put('snapshots/x' + 'e'.repeat(64), [randomBytes(10)]);
  const repo = await tr.reopen();
  const { good, bad: unreadable } = await repo.readableSnapshots();
  assert.equal(good.length, 2);
  assert.deepEqual(unreadable.map((b) => b.name), [bad]);
  assert.deepEqual((await repo.findSnapshot('latest')).id, second.id, '"latest" is the newest readable snapshot');
  const warnings: string[] = [];
  repo.onWarning = (m) => warnings.push(m);
  assert.equal((await repo.snapshots()).length, 2, 'snapshots() skips it too...');
  assert.equal(warnings.length, 1, '...with a warning');
  await assert.rejects(prune(repo), (e: unknown) => CofferError.is(e, 'needs-repair'), 'prune refuses: it cannot tell what the damaged one needs');
  await tr.backend.delete(bad);

  // Storage that refuses writes: restore reads without a lock and says so.
  const refuse = async (): Promise<never> => {
    throw new CofferError('storage', 'read-only file system');
  };
  const b = tr.backend;
  const ro: StorageBackend = { location: b.location, put: refuse, create: refuse, delete: refuse, get: (n, r) => b.get(n, r), stat: (n) => b.stat(n), list: (p) => b.list(p), sync: () => b.sync() };
  const roRepo = await Repository.open(ro, tr.key);
  const target = await tempDir(t, 'dst');
  const res = await restore(roRepo, await roRepo.findSnapshot('latest'), { target });
  assert.ok(res.warnings.some((w) => /without a lock/.test(w.message)));
  assert.equal(await fs.readFile(join(target, src.split('/').pop()!, 'f'), 'utf8'), 'two');
});
