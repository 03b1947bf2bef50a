/**
 * File selection (filter.ts, issue 12): the pattern semantics (restic's, gitignore-like),
 * names that are not UTF-8, CACHEDIR.TAG, --exclude-if-present, --files-from lists, and
 * the same module selecting what a backup stores and what a restore writes, on a real
 * LocalBackend.
 */
import assert from 'node:assert/strict';
import { promises as fs, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import {
  CofferError,
  PatternList,
  RestoreSelection,
  backup,
  backupDryRun,
  backupExcluder,
  backupStdin,
  listedSelection,
  pathText,
  readFilesFrom,
  readPatternFile,
  restore,
  snapshotPathOf,
  type PatternRule,
  type TreeEntry,
} from '../src/index.js';
import { allPaths, dir, file, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';
import type { EntryStat } from '../src/repository/scan-ahead.js';

const b = (s: string) => Buffer.from(s, 'utf8');
const matches = (rules: Array<string | PatternRule>, path: string | Buffer, isDir = false) =>
  new PatternList(rules.map((r) => (typeof r === 'string' ? { pattern: r } : r))).test(typeof path === 'string' ? b(path) : path, isDir) === true;

test('a pattern without "/" matches any one path component', () => {
  assert.ok(matches(['*.o'], '/src/app/main.o'));
  assert.ok(matches(['node_modules'], '/src/node_modules'));
  assert.ok(!matches(['*.o'], '/src/app/main.oo'));
  // '*' stays in one component: it is the last component that is tested.
  assert.ok(!matches(['app'], '/src/app/main.c'));
  assert.ok(matches(['.*'], '/home/me/.cache'), 'dot files are matched by * patterns');
});

test('a leading "/" anchors the pattern to the absolute path; "*" stays within a component, "**" spans them', () => {
  assert.ok(matches(['/home/*/.cache'], '/home/me/.cache'));
  assert.ok(!matches(['/home/*/.cache'], '/home/me/x/.cache'));
  assert.ok(matches(['/home/**/.cache'], '/home/me/x/.cache'));
  assert.ok(!matches(['/home/me'], '/srv/home/me'), 'anchored: not at any depth');
});

test('a "/" inside a pattern matches trailing components at any depth', () => {
  assert.ok(matches(['build/*.o'], '/src/app/build/x.o'));
  assert.ok(matches(['build/*.o'], '/build/x.o'));
  assert.ok(!matches(['build/*.o'], '/src/build/sub/x.o'));
  assert.ok(matches(['build/**/*.o'], '/src/build/sub/x.o'));
});

test('"!" re-includes: the last matching pattern decides', () => {
  const rules = ['/home/*', '!/home/me'];
  assert.ok(matches(rules, '/home/other'));
  assert.ok(!matches(rules, '/home/me'));
  assert.ok(!matches(['*.log', '!keep.log'], '/x/keep.log'));
  assert.ok(matches(['!keep.log', '*.log'], '/x/keep.log'), 'order matters');
  assert.ok(matches(['\\!bang'], '/x/!bang'), '"\\!" is a literal "!"');
  assert.ok(!matches(['\\!bang'], '/x/other'), 'not a negation');
  assert.ok(!matches(['!!bang'], '/x/!bang'), '"!!x" re-includes the name "!x"');
  assert.ok(!matches(['!!bang'], '/x/other'));
  // Case-sensitive and case-insensitive patterns are separate lists (restic): '!' re-includes within its own.
  assert.ok(matches([{ pattern: '*.JPG', ignoreCase: true }, { pattern: '!a.jpg' }], '/x/a.jpg'));
  assert.ok(!matches([{ pattern: '*.JPG', ignoreCase: true }, { pattern: '!A.JPG', ignoreCase: true }], '/x/a.jpg'));
});

test('a trailing "/" restricts a pattern to directories', () => {
  assert.ok(matches(['cache/'], '/x/cache', true));
  assert.ok(!matches(['cache/'], '/x/cache', false));
});

test('case: --iexclude compares lowercased forms (Unicode too); --exclude is exact', () => {
  assert.ok(!matches(['*.JPG'], '/p/a.jpg'));
  assert.ok(matches([{ pattern: '*.JPG', ignoreCase: true }], '/p/a.jpg'));
  assert.ok(matches([{ pattern: 'ÉTÉ', ignoreCase: true }], '/p/été'));
  assert.ok(matches([{ pattern: '/HOME/*/CACHE', ignoreCase: true }], '/home/Me/Cache'));
});

test('names that are not UTF-8 are matched as Latin-1, one character per byte; UTF-8 names as UTF-8', () => {
  const latin1 = Buffer.concat([b('/d/caf'), Buffer.of(0xe9)]);
  assert.equal(pathText(latin1), '/d/café');
  assert.ok(matches(['café'], latin1));
  assert.ok(matches(['caf?'], latin1));
  assert.ok(matches(['café'], b('/d/café')), 'the UTF-8 name matches the same pattern');
  assert.ok(matches(['caf?'], b('/d/café')), '"?" is one character of a UTF-8 name, not one byte');
  // Components are decoded one by one: a UTF-8 directory above a Latin-1 name.
  const mixed = Buffer.concat([b('/été/'), Buffer.of(0xff, 0x41)]);
  assert.equal(pathText(mixed), '/été/ÿA');
  assert.ok(matches(['/été/*'], mixed));
});

test('"[abc]" is a class, as in restic: it matches one of a, b, c, not the name "[abc]" (write "\\[abc\\]" for that)', () => {
  assert.ok(matches(['[abc]'], '/d/b'));
  assert.ok(!matches(['[abc]'], '/d/[abc]'));
  assert.ok(!matches(['br[ack]et'], '/d/br[ack]et'));
  assert.ok(matches(['br[ack]et'], '/d/brket'));
  assert.ok(!matches(['/d/[abc]'], '/d/[abc]'), 'anchored too');
  assert.ok(!matches(['d/x[0-9]'], '/d/x[0-9]'), 'tail patterns too');
  assert.ok(matches(['\\[abc\\]'], '/d/[abc]'), 'escaped brackets are literal');
  assert.ok(!matches(['\\[abc\\]'], '/d/a'));
  assert.ok(matches(['x['], '/d/x['), 'an unclosed bracket is literal');
});

test('bad patterns are refused with the pattern named', () => {
  for (const p of ['', '!', '/', 'a\0b']) {
    assert.throws(() => new PatternList([{ pattern: p }]), (e) => CofferError.is(e, 'invalid-argument'), JSON.stringify(p));
  }
});

test('pattern files: comments, blank lines, CRLF and trailing spaces; a bad file names the line', async (t) => {
  const d = await tempDir(t, 'patterns');
  const f = join(d, 'excludes');
  await fs.writeFile(f, '# caches\r\n*.tmp  \r\n\r\n/home/*/.cache\n!keep.tmp\n');
  assert.deepEqual(
    (await readPatternFile(f)).map((r) => r.pattern),
    ['*.tmp', '/home/*/.cache', '!keep.tmp'],
  );
  assert.ok((await readPatternFile(f, true)).every((r) => r.ignoreCase));
  await assert.rejects(readPatternFile(join(d, 'missing')), /cannot read pattern file .*missing: no such file/);
  await fs.writeFile(join(d, 'bin'), Buffer.of(0x2a, 0xff, 0xfe, 0x0a));
  await assert.rejects(readPatternFile(join(d, 'bin')), /is not UTF-8 text/);
  await fs.writeFile(join(d, 'bad'), 'ok\n!\n');
  await assert.rejects(readPatternFile(join(d, 'bad')), /bad:2: empty pattern/);
  await assert.rejects(readPatternFile(d), /it is a directory/);
});

test('--files-from lists: lines or NUL-separated bytes', async (t) => {
  const d = await tempDir(t, 'list');
  await fs.writeFile(join(d, 'list'), '# mine\n/a/b\r\n\n  \nrel/c\n');
  assert.deepEqual((await readFilesFrom(join(d, 'list'), false)).map(String), ['/a/b', 'rel/c']);
  await fs.writeFile(join(d, 'raw'), Buffer.concat([b('/a/'), Buffer.of(0xe9), Buffer.of(0), b('/b\nc'), Buffer.of(0)]));
  const raw = await readFilesFrom(join(d, 'raw'), true);
  assert.deepEqual(raw, [Buffer.concat([b('/a/'), Buffer.of(0xe9)]), b('/b\nc')]);
  await assert.rejects(readFilesFrom(join(d, 'raw'), false), /--files-from-raw/);
  await assert.rejects(readFilesFrom(join(d, 'nope'), false), /cannot read the list of files .*: no such file/);
});

test('listed files: one root (their common directory) keeping only the listed paths, what is below them and their parents', () => {
  const sel = listedSelection([b('/h/me/docs/a.txt'), b('/h/me/pics'), b('/h/me/docs/../docs/b.txt')]);
  assert.equal(sel.root, '/h/me');
  const st = {} as BigIntStats;
  const ex = (p: string) => sel.exclude!(b(p), st);
  assert.equal(ex('/h/me'), false);
  assert.equal(ex('/h/me/docs'), false, 'a parent');
  assert.equal(ex('/h/me/docs/a.txt'), false);
  assert.equal(ex('/h/me/docs/c.txt'), true, 'a sibling not listed');
  assert.equal(ex('/h/me/pics/2020/x.jpg'), false, 'below a listed directory');
  assert.equal(ex('/h/me/other'), true);
  assert.deepEqual(listedSelection([b('/x/y')]), { root: '/x/y' }, 'one path is its own root');
  assert.equal(listedSelection([b('/x/y'), b('/x/y/z')]).exclude, undefined, 'a listed directory holding the rest');
  assert.equal(listedSelection([b('/x/a'), b('/y/b')]).root, '/');
  assert.equal(listedSelection([b('a'), b('b')], '/cwd').root, '/cwd');
  assert.throws(() => listedSelection([]), /empty/);
});

test('backup: --exclude, --exclude-caches (tag kept), --exclude-if-present, an excluded root; restore writes what was stored', async (t) => {
  const { repo } = await newRepo(t);
  const base = await tempDir(t, 'src');
  const src = join(base, 'data');
  await writeTree(
    src,
    dir({
      'a.txt': file('a'),
      'a.o': file('object'),
      'Photo.JPG': file('jpg'),
      node_modules: dir({ 'm.js': file('m') }),
      cache: dir({ 'CACHEDIR.TAG': file('Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n'), 'blob.bin': file('junk'), sub: dir({ 'x': file('x') }) }),
      fakecache: dir({ 'CACHEDIR.TAG': file('Signature: not the right one\n'), 'kept.bin': file('kept') }),
      private: dir({ '.nobackup': file(''), 'secret.txt': file('s') }),
      build: dir({ 'out.o': file('o'), 'keep.o': file('k') }),
    }),
  );
  const exclude = backupExcluder({
    exclude: [{ pattern: '*.o' }, { pattern: '!/**/build/keep.o' }, { pattern: 'node_modules' }, { pattern: '*.jpg', ignoreCase: true }],
    excludeCaches: true,
    excludeIfPresent: ['.nobackup'],
  })!;
  const r = await backup(repo, { paths: [src], exclude });
  const out = await tempDir(t, 'out');
  await restore(repo, { id: r.id, snapshot: r.snapshot } as never, { target: out });
  assert.deepEqual((await allPaths(join(out, 'data'))).sort(), [
    'a.txt',
    'build',
    'build/keep.o',
    'cache',
    'cache/CACHEDIR.TAG',
    'fakecache',
    'fakecache/CACHEDIR.TAG',
    'fakecache/kept.bin',
  ]);
  const dry = await backupDryRun(repo, { paths: [src], exclude, parent: 'none' });
  assert.equal(dry.files, r.snapshot.stats.files);
  assert.equal(dry.dirs, r.snapshot.stats.dirs);
  assert.equal(dry.bytes, r.snapshot.stats.bytes);

  // Every root excluded: nothing to store, and no empty snapshot saved.
  const before = (await repo.snapshots()).length;
  await assert.rejects(backup(repo, { paths: [join(src, 'node_modules')], exclude }), (e: unknown) => CofferError.is(e, 'nothing-read') && /every path given is excluded; no snapshot was saved/.test((e as Error).message));
  assert.equal((await repo.snapshots()).length, before);
  assert.throws(() => backupExcluder({ excludeIfPresent: ['a/b'] }), /file name/);
  assert.equal(backupExcluder({}), undefined, 'no selection: no hook');
});

test('--exclude-if-present NAME:HEADER (restic): only directories whose NAME starts with HEADER', async (t) => {
  const { repo } = await newRepo(t);
  const base = await tempDir(t, 'src');
  const src = join(base, 'data');
  await writeTree(
    src,
    dir({
      tagged: dir({ '.tag': file('magic: skip me\n'), 'x.txt': file('x') }),
      other: dir({ '.tag': file('something else\n'), 'y.txt': file('y') }),
      short: dir({ '.tag': file('mag'), 'z.txt': file('z') }),
      plain: dir({ 'w.txt': file('w') }),
    }),
  );
  const exclude = backupExcluder({ excludeIfPresent: ['.tag:magic:'] })!;
  const r = await backup(repo, { paths: [src], exclude });
  const out = await tempDir(t, 'out');
  await restore(repo, { id: r.id, snapshot: r.snapshot } as never, { target: out });
  assert.deepEqual((await allPaths(join(out, 'data'))).sort(), ['other', 'other/.tag', 'other/y.txt', 'plain', 'plain/w.txt', 'short', 'short/.tag', 'short/z.txt']);
  assert.throws(() => backupExcluder({ excludeIfPresent: [':magic'] }), /file name/);
});

test('backup --dry-run writes nothing, takes no lock, and counts what a backup would read against the parent', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, dir({ 'a.txt': file('a'), 'big.bin': file(prng(1, 50_000)) }));
  const names = async () => (await Promise.all(['snapshots', 'index', 'data', 'locks'].map((d) => fs.readdir(join(tr.dir, d)).catch(() => [])))).flat().sort();
  const before = await names();
  const d1 = await backupDryRun(tr.repo, { paths: [src] });
  assert.deepEqual(await names(), before, 'nothing written to the repository');
  assert.deepEqual([d1.files, d1.bytes, d1.readFiles, d1.readBytes, d1.parent], [2, 50_001, 2, 50_001, undefined]);
  const r = await backup(tr.repo, { paths: [src] });
  await fs.writeFile(join(src, 'new.txt'), 'new!');
  const d2 = await backupDryRun(tr.repo, { paths: [src] });
  assert.equal(d2.parent, r.id.toString('hex'));
  assert.deepEqual([d2.files, d2.readFiles, d2.readBytes], [3, 1, 4], 'only the new file would be read');
});

test('backup --one-file-system keeps a mount point as an empty directory (st_dev differs)', async (t) => {
  const { repo } = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  await writeTree(src, dir({ 'a.txt': file('a'), mnt: dir({ 'other-fs.txt': file('x') }) }));
  // A real second file system needs root (mount); pretend the mount point's device differs.
  const real = await fs.lstat(src, { bigint: true });
  const mnt = join(src, 'mnt');
  const seen: string[] = [];
  const exclude = (abs: Buffer, st: EntryStat) => {
    seen.push(abs.toString());
    if (abs.toString() === mnt) Object.defineProperty(st, 'dev', { value: real.dev + 1n });
    return false;
  };
  const r = await backup(repo, { paths: [src], exclude, oneFileSystem: true });
  const out = await tempDir(t, 'out');
  await restore(repo, { id: r.id, snapshot: r.snapshot } as never, { target: out });
  assert.deepEqual((await allPaths(join(out, 'data'))).sort(), ['a.txt', 'mnt']);
  const all = await backup(repo, { paths: [src], exclude, parent: 'none' });
  assert.equal(all.snapshot.stats.files, 2, 'without the flag the other file system is read');
});

test('restore selection: includes with their parents, excludes below, hard link to a file left out becomes a copy', async () => {
  const e = (type: TreeEntry['type'], p: string, extra: object = {}): TreeEntry =>
    ({ type, path: p, rawPath: b(p), mode: 0o644, mtimeNs: 0n, size: 1, chunks: ['aa'], inode: '', ctime: '', ...extra }) as TreeEntry;
  const entries = [
    e('dir', 'data'),
    e('file', 'data/a.txt'),
    e('dir', 'data/docs'),
    e('file', 'data/docs/one.txt'),
    e('file', 'data/docs/two.log'),
    e('dir', 'data/docs/deep'),
    e('file', 'data/docs/deep/x.txt'),
    e('hardlink', 'data/link-to-a', { link: b('data/a.txt') }),
    e('dir', 'data/empty'),
  ];
  const absOf = snapshotPathOf(['/home/me/data']);
  assert.equal(absOf(b('data/docs/one.txt')).toString(), '/home/me/data/docs/one.txt');
  const pick = async (include: string[], exclude: string[] = []) =>
    (await new RestoreSelection({ include: include.map((pattern) => ({ pattern })), exclude: exclude.map((pattern) => ({ pattern })) }).select(entries, absOf)).map((x) => `${x.type}:${x.path}`);
  assert.deepEqual(await pick(['one.txt']), ['dir:data', 'dir:data/docs', 'file:data/docs/one.txt']);
  assert.deepEqual(await pick(['/home/me/data/docs'], ['*.log', 'deep']), ['dir:data', 'dir:data/docs', 'file:data/docs/one.txt']);
  // The hard link comes back as a copy of its file, after the others (a second pass found the file's entry).
  assert.deepEqual(await pick([], ['docs', 'a.txt']), ['dir:data', 'dir:data/empty', 'file:data/link-to-a'], 'the hard link comes back as a copy of its file');
  assert.deepEqual(await pick(['nothing-matches']), []);
  assert.equal(new RestoreSelection({}).active, false);
  assert.equal(snapshotPathOf(['/'])(b('root/etc/x')).toString(), '/etc/x');
});

test('restore selection streams: the same entries as a selection over the whole listing (reference below), one pass unless a hard link needs its file', async () => {
  // The selection as it was made over the whole listing in memory: kept here as the reference.
  const reference = (sel: { include: string[]; exclude: string[] }, entries: TreeEntry[], absOf: (p: Buffer) => Buffer): TreeEntry[] => {
    const inc = new PatternList(sel.include.map((pattern) => ({ pattern })));
    const exc = new PatternList(sel.exclude.map((pattern) => ({ pattern })));
    const test1 = (list: PatternList, abs: Buffer, isDir: boolean) => list.test(abs, isDir) === true;
    const key = (b: Buffer) => b.toString('latin1');
    const parentOf = (b: Buffer) => (b.lastIndexOf(0x2f) < 0 ? undefined : b.subarray(0, b.lastIndexOf(0x2f)));
    const state = new Map<string, { excluded: boolean; included: boolean }>();
    const kept = new Set<string>();
    const files = new Map<string, TreeEntry>();
    const chosen = new Set<string>();
    for (const e of entries) {
      const parent = parentOf(e.rawPath);
      const up = (parent && state.get(key(parent))) || { excluded: false, included: false };
      const isDir = e.type === 'dir';
      const abs = absOf(e.rawPath);
      const excluded = up.excluded || test1(exc, abs, isDir);
      const included = up.included || test1(inc, abs, isDir);
      if (isDir) state.set(key(e.rawPath), { excluded, included });
      if (e.type === 'file') files.set(key(e.rawPath), e);
      if (excluded || !(sel.include.length === 0 || included)) continue;
      chosen.add(key(e.rawPath));
      for (let p = isDir ? e.rawPath : parent; p; p = parentOf(p)) kept.add(key(p));
    }
    const out: TreeEntry[] = [];
    for (const e of entries) {
      const k = key(e.rawPath);
      if (e.type === 'dir') {
        if (kept.has(k)) out.push(e);
      } else if (chosen.has(k)) {
        const f = e.type === 'hardlink' && !chosen.has(key(e.link)) ? files.get(key(e.link)) : undefined;
        out.push(f ? ({ ...f, path: e.path, rawPath: e.rawPath } as TreeEntry) : e);
      }
    }
    return out;
  };
  // A listing in walk order: directories d0..d3 two deep, files of three kinds, hard links to earlier files.
  const entries: TreeEntry[] = [];
  const e = (type: TreeEntry['type'], p: string, extra: object = {}) => entries.push({ type, path: p, rawPath: b(p), mode: 0o644, mtimeNs: 0n, size: 1, chunks: ['aa'], inode: '', ctime: '', ...extra } as TreeEntry);
  const filesSoFar: string[] = [];
  e('dir', 'r');
  for (let i = 0; i < 4; i++) {
    e('dir', `r/d${i}`);
    for (let j = 0; j < 3; j++) {
      e('dir', `r/d${i}/s${j}`);
      for (const name of ['a.txt', 'b.log', 'c.jpg']) {
        e('file', `r/d${i}/s${j}/${name}`);
        filesSoFar.push(`r/d${i}/s${j}/${name}`);
      }
      e('hardlink', `r/d${i}/s${j}/z-link`, { link: b(filesSoFar[(i * 7 + j * 5) % filesSoFar.length]!) });
    }
    e('symlink', `r/d${i}/y-sym`, { target: b('x') });
  }
  const absOf = snapshotPathOf(['/home/r']);
  const cases = [
    { include: ['*.txt'], exclude: [] },
    { include: [], exclude: ['*.txt'] },
    { include: ['s1'], exclude: ['*.log'] },
    { include: ['/home/r/d2'], exclude: ['s0'] },
    { include: [], exclude: ['d1', 'c.jpg', 'a.txt'] },
    { include: ['z-link'], exclude: [] },
    { include: ['y-sym', 'b.log'], exclude: ['d3'] },
  ];
  for (const c of cases) {
    const sel = new RestoreSelection({ include: c.include.map((pattern) => ({ pattern })), exclude: c.exclude.map((pattern) => ({ pattern })) });
    let passes = 0;
    const got: TreeEntry[] = [];
    await sel.selectEach(async (each) => {
      passes++;
      entries.forEach((x) => each(x));
    }, absOf, (x) => got.push(x));
    const show = (list: TreeEntry[]) => list.map((x) => `${x.type}:${x.path}`).sort();
    const want = reference(c, entries, absOf);
    assert.deepEqual(show(got), show(want), JSON.stringify(c));
    // Parents first: a directory taken comes before everything taken below it.
    const at = new Map(got.map((x, i) => [x.path, i]));
    got.forEach((x, i) => {
      const parent = x.path.slice(0, x.path.lastIndexOf('/'));
      if (at.has(parent)) assert.ok(at.get(parent)! < i, `${x.path} before its parent (${JSON.stringify(c)})`);
    });
    const orphanLinks = want.filter((x) => x.type === 'file' && x.path.endsWith('z-link')).length;
    assert.equal(passes, orphanLinks > 0 ? 2 : 1, JSON.stringify(c));
  }
});

test('restore --include one file of a snapshot: that file and its parents, nothing else', async (t) => {
  const { repo } = await newRepo(t);
  const src = join(await tempDir(t, 'src'), 'data');
  const nonUtf8 = Buffer.concat([b(join(src, 'sub')), b('/caf'), Buffer.of(0xe9)]);
  await writeTree(src, dir({ 'a.txt': file('a'), sub: dir({ 'b.txt': file('b'), 'c.bin': file(prng(2, 30_000)) }) }));
  await fs.writeFile(nonUtf8, 'latin-1 name');
  const r = await backup(repo, { paths: [src] });
  const rec = { id: r.id, snapshot: r.snapshot } as never;
  const out = await tempDir(t, 'out');
  const got = await restore(repo, rec, { target: out, select: new RestoreSelection({ include: [{ pattern: 'c.bin' }] }) });
  assert.equal(got.files, 1);
  assert.deepEqual((await allPaths(join(out, 'data'))).sort(), ['sub', 'sub/c.bin']);
  assert.deepEqual(await fs.readFile(join(out, 'data/sub/c.bin')), prng(2, 30_000));
  const out2 = await tempDir(t, 'out2');
  await restore(repo, rec, { target: out2, select: new RestoreSelection({ include: [{ pattern: 'café' }] }) });
  assert.equal(await fs.readFile(Buffer.concat([b(join(out2, 'data/sub')), b('/caf'), Buffer.of(0xe9)]), 'utf8'), 'latin-1 name');
});

test('backup of a stream: one file, restored byte-identical; deduplicated against the same stream again', async (t) => {
  const { repo } = await newRepo(t);
  const data = prng(7, 3 * 1024 * 1024 + 17);
  const feed = () => {
    const s = new PassThrough();
    // Odd-sized writes, as a pipe delivers them.
    (async () => {
      for (let i = 0; i < data.length; i += 65_537) s.write(data.subarray(i, i + 65_537));
      s.end();
    })();
    return s;
  };
  const r = await backupStdin(repo, { input: feed(), filename: 'dump.sql' });
  assert.deepEqual(r.snapshot.paths, ['/dump.sql']);
  assert.equal(r.snapshot.stats.bytes, data.length);
  const out = await tempDir(t, 'out');
  await restore(repo, { id: r.id, snapshot: r.snapshot } as never, { target: out });
  assert.ok((await fs.readFile(join(out, 'dump.sql'))).equals(data));
  const again = await backupStdin(repo, { input: feed(), filename: 'dump.sql' });
  // No data chunk is stored again: the same chunk list, and the only new blobs are the
  // listing's blobs that differ from the first snapshot's (the entry's mtime is the time
  // of the backup; the listing is itself chunked, ~770 chunk IDs here).
  const chunksOf = async (snap: typeof r.snapshot) => {
    for await (const e of repo.tree(snap)) if (e.type === 'file') return e.chunks;
    return undefined;
  };
  const dataChunks = await chunksOf(r.snapshot);
  assert.ok(dataChunks && dataChunks.length > 100, `${dataChunks?.length} data chunks`);
  assert.deepEqual(await chunksOf(again.snapshot), dataChunks, 'the same data chunks');
  const changedListing = again.snapshot.tree.filter((id) => !r.snapshot.tree.includes(id)).length;
  assert.ok(changedListing >= 1);
  assert.equal(again.snapshot.stats.newChunks, changedListing, `new blobs: only the ${changedListing} changed listing blob(s) of ${again.snapshot.tree.length}; stats ${JSON.stringify(again.snapshot.stats)}`);
  // A producer that fails stores no snapshot.
  const before = (await repo.snapshots()).length;
  await assert.rejects(backupStdin(repo, { input: feed(), filename: 'x', beforeCommit: () => Promise.reject(new Error('pg_dump failed')) }), /pg_dump failed/);
  assert.equal((await repo.snapshots()).length, before);
  for (const bad of ['', '.', '..', 'a/b']) await assert.rejects(backupStdin(repo, { input: feed(), filename: bad }), /plain file name/);
});
