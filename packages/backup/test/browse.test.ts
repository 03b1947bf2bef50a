/**
 * Browsing snapshots (issue 12): paths as people know them, parts of a snapshot
 * (ls, dump, restore SNAPSHOT:PATH), find, diff, stats, snapshot filters and the
 * retention policy (keep-within, keep-tag, group-by), on real repositories in temporary
 * directories, with property tests of the policy.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, type Writable } from 'node:stream';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import {
  BackupKey,
  CofferError,
  LocalBackend,
  Repository,
  RestoreSelection,
  SnapshotPaths,
  SubtreePicker,
  applyPolicy,
  blobReaderLimits,
  backup,
  compareListingOrder,
  compileGlob,
  diffSnapshots,
  dumpSnapshot,
  escapePath,
  findInSnapshots,
  findSnapshotFiltered,
  isEmptyPolicy,
  listSnapshot,
  matchesFilter,
  parseDuration,
  parseGroupBy,
  parseTagList,
  restore,
  snapshotStats,
  splitSnapshotRef,
  subtractDuration,
  unescapePath,
  type Duration,
  type Snapshot,
  type SnapshotRecord,
  type TreeEntry,
} from '../src/index.js';
import { damageSmallerOfTwoPacks, dir, file, link, newRepo, prng, tempDir, writeTree } from './fixtures/trees.js';

const T0 = 1_700_000_000_000;

function snap(over: Partial<Snapshot> = {}): Snapshot {
  return { version: 2, time: '2024-01-01T00:00:00.000Z', hostname: 'h', username: 'u', paths: ['/p'], tags: [], tree: [], stats: { files: 0, dirs: 0, bytes: 0, addedBytes: 0, newChunks: 0 }, ...over };
}

// --- paths --------------------------------------------------------------------------

test('escapePath shows non-UTF-8 bytes, control characters and backslashes escaped, and unescapePath gives the same bytes back', () => {
  assert.equal(escapePath(Buffer.from('/home/me/über.txt')), '/home/me/über.txt');
  assert.equal(escapePath(Buffer.from([0x61, 0xff, 0x62])), 'a\\xffb');
  assert.equal(escapePath(Buffer.from('a\nb\\c')), 'a\\x0ab\\\\c');
  assert.equal(escapePath(Buffer.from([0xc3])), '\\xc3', 'a cut-off sequence');
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
      const b = Buffer.from(bytes);
      const shown = escapePath(b);
      assert.ok(![...shown].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f), 'no control characters reach the terminal');
      assert.deepEqual(unescapePath(shown), b);
    }),
  );
});

test('SubtreePicker remembers nothing outside the part: a hard link into it from outside is resolved by a second pass, taken only when there is one', async () => {
  const m = new SnapshotPaths(snap({ paths: ['/home/me'] }));
  const e = (type: TreeEntry['type'], p: string, extra: object = {}): TreeEntry =>
    ({ type, path: p, rawPath: Buffer.from(p), mode: 0o644, mtimeNs: 0n, size: 3, chunks: [p.length % 2 ? 'aa' : 'bb'], inode: '', ctime: '', ...extra }) as TreeEntry;
  const listing = [e('dir', 'me'), e('file', 'me/out.txt'), e('dir', 'me/part'), e('file', 'me/part/in.txt'), e('hardlink', 'me/part/link', { link: Buffer.from('me/out.txt') }), e('hardlink', 'me/part/inner', { link: Buffer.from('me/part/in.txt') })];
  const run = async (path: string, entries: TreeEntry[]) => {
    const picker = new SubtreePicker(m.select(Buffer.from(path)), { keepName: false });
    const got: string[] = [];
    for (const x of entries) {
      const p = picker.pick(x);
      if (p) got.push(`${p.type}:${p.path}`);
    }
    let passes = 0;
    await picker.resolveOrphans(async (each) => {
      passes++;
      entries.forEach((x) => each(x));
    }, (x) => got.push(`${x.type}:${x.path}:${x.type === 'file' ? x.chunks.join() : ''}`));
    return { got, passes };
  };
  // The link to out.txt (outside the part) comes last, as a copy of out.txt; the link inside stays a link.
  assert.deepEqual(await run('/home/me/part', listing), { got: ['file:in.txt', 'hardlink:inner', 'file:link:bb'], passes: 1 });
  assert.deepEqual(await run('/home/me/part', listing.filter((x) => x.path !== 'me/part/link')), { got: ['file:in.txt', 'hardlink:inner'], passes: 0 });
  // A link to a file the listing does not have: corrupt, named.
  await assert.rejects(run('/home/me/part', listing.filter((x) => x.path !== 'me/out.txt')), (err: unknown) => CofferError.is(err, 'corrupt') && /link: hard link to no earlier file/.test((err as Error).message));
});

test('SnapshotPaths: listing paths are shown absolute, and absolute paths name listing paths (the most specific source wins)', () => {
  const m = new SnapshotPaths(snap({ paths: ['/home/me', '/etc'] }));
  assert.equal(m.absolute(Buffer.from('me/notes.txt')).toString(), '/home/me/notes.txt');
  assert.equal(m.absolute(Buffer.from('me')).toString(), '/home/me');
  assert.equal(m.absolute(Buffer.from('etc/hosts')).toString(), '/etc/hosts');
  assert.equal(m.select(Buffer.from('/home/me/notes.txt')).entry?.toString(), 'me/notes.txt');
  assert.equal(m.select(Buffer.from('home/me/notes.txt/')).entry?.toString(), 'me/notes.txt', 'leading / optional, trailing / ignored');
  assert.equal(m.select(Buffer.from('/home/./me')).entry?.toString(), 'me');
  assert.deepEqual(m.select(Buffer.from('/home')).roots?.map(String), ['me'], 'a directory above a source path selects its roots');
  assert.deepEqual(m.select(Buffer.from('/')).roots?.map(String), ['me', 'etc']);
  assert.throws(() => m.select(Buffer.from('/var/log')), (e: unknown) => CofferError.is(e, 'not-found') && /not in this snapshot.*\/home\/me/.test((e as Error).message));
  assert.throws(() => m.select(Buffer.from('/home/me/../x')), (e: unknown) => CofferError.is(e, 'invalid-argument'));
  const nested = new SnapshotPaths(snap({ paths: ['/a', '/a/b'] }));
  assert.equal(nested.select(Buffer.from('/a/b/x')).entry?.toString(), 'b/x');
  const root = new SnapshotPaths(snap({ paths: ['/'] }));
  assert.equal(root.select(Buffer.from('/etc/hosts')).entry?.toString(), 'root/etc/hosts');
  assert.equal(root.absolute(Buffer.from('root/etc/hosts')).toString(), '/etc/hosts');
});

test('SNAPSHOT:PATH splits only after latest or a hex ID', () => {
  assert.deepEqual(splitSnapshotRef('latest:/home/me/a.txt'), { ref: 'latest', path: '/home/me/a.txt' });
  assert.deepEqual(splitSnapshotRef('1a2b3c4d:home/x:y'), { ref: '1a2b3c4d', path: 'home/x:y' });
  assert.deepEqual(splitSnapshotRef('1a2b3c4d'), { ref: '1a2b3c4d' });
  assert.deepEqual(splitSnapshotRef('nothex:/x'), { ref: 'nothex:/x' });
});

test('globs: * and ? stay within a name, ** crosses /, classes, -i', () => {
  assert.ok(compileGlob('*.txt', false).test('notes.txt'));
  assert.ok(!compileGlob('*.txt', false).test('a/notes.txt'));
  assert.ok(compileGlob('home/**/*.txt', false).test('home/me/deep/notes.txt'));
  assert.ok(compileGlob('n?tes.[tx]xt', false).test('notes.txt'));
  assert.ok(!compileGlob('[!n]otes.txt', false).test('notes.txt'));
  assert.ok(compileGlob('NOTES.*', true).test('notes.txt'));
  assert.ok(!compileGlob('NOTES.*', false).test('notes.txt'));
  assert.ok(compileGlob('a+b(1).txt', false).test('a+b(1).txt'), 'regular expression characters are literal');
  assert.throws(() => compileGlob('[abc', false), (e: unknown) => CofferError.is(e, 'invalid-argument'));
});

// --- filters ----------------------------------------------------------------------

test('filters: --tag a,b needs both, repeated --tag either, hosts any, paths all', () => {
  const s = snap({ tags: ['a', 'b'], hostname: 'laptop', paths: ['/home/me', '/etc'] });
  assert.ok(matchesFilter(s, {}));
  assert.ok(matchesFilter(s, { tags: [parseTagList('a,b')] }));
  assert.ok(!matchesFilter(s, { tags: [parseTagList('a,c')] }));
  assert.ok(matchesFilter(s, { tags: [['c'], ['b']] }), 'either set');
  assert.ok(!matchesFilter(snap({ tags: ['x'] }), { tags: [[]] }), "'' matches only untagged snapshots");
  assert.ok(matchesFilter(snap(), { tags: [[]] }));
  assert.ok(matchesFilter(s, { hosts: ['server', 'laptop'] }));
  assert.ok(!matchesFilter(s, { hosts: ['server'] }));
  assert.ok(matchesFilter(s, { paths: ['/home/me/'] }));
  assert.ok(matchesFilter(s, { paths: ['/etc', '/home/me'] }));
  assert.ok(!matchesFilter(s, { paths: ['/home/me', '/var'] }));
});

// --- retention policy ---------------------------------------------------------------

function rec(time: string, over: Partial<Snapshot> = {}, n = 0): SnapshotRecord {
  const id = Buffer.alloc(32);
  id.write(`${time}|${over.hostname ?? 'h'}|${n}`.slice(0, 32));
  return { id, snapshot: snap({ time, ...over }) };
}
const times = (rs: SnapshotRecord[]) => rs.map((r) => r.snapshot.time).sort();

test('durations: restic syntax, calendar arithmetic, clear errors', () => {
  assert.deepEqual(parseDuration('1y2m3d4h'), { years: 1, months: 2, days: 3, hours: 4 });
  assert.deepEqual(parseDuration('30d'), { years: 0, months: 0, days: 30, hours: 0 });
  for (const bad of ['', '1', 'd', '1w', '1d1d', '-1d', '1.5d', '1 d', '99999999999d']) {
    assert.throws(() => parseDuration(bad), (e: unknown) => CofferError.is(e, 'invalid-argument') && /not a duration/.test((e as Error).message), bad);
  }
  const t = new Date('2024-03-31T12:00:00.000Z');
  assert.equal(subtractDuration(t, parseDuration('1m')).toISOString(), '2024-03-02T12:00:00.000Z', 'Feb 31 rolls over as Go AddDate does');
  assert.equal(subtractDuration(t, parseDuration('1y2d5h')).toISOString(), '2023-03-29T07:00:00.000Z');
});

test('keep-within counts back from the group newest snapshot, not from now; keep-within-daily keeps one a day within it', () => {
  const all: SnapshotRecord[] = [];
  for (let d = 1; d <= 10; d++) for (const h of ['06', '18']) all.push(rec(`2020-01-${String(d).padStart(2, '0')}T${h}:00:00.000Z`));
  const within = applyPolicy(all, { within: parseDuration('2d') });
  // Newest is 01-10 18:00; strictly after 01-08 18:00.
  assert.deepEqual(times(within.keep), ['2020-01-09T06:00:00.000Z', '2020-01-09T18:00:00.000Z', '2020-01-10T06:00:00.000Z', '2020-01-10T18:00:00.000Z']);
  assert.deepEqual(within.groups[0]!.keep[0]!.reasons, ['within 2d']);
  const daily = applyPolicy(all, { withinDaily: parseDuration('3d') });
  assert.deepEqual(times(daily.keep), ['2020-01-08T18:00:00.000Z', '2020-01-09T18:00:00.000Z', '2020-01-10T18:00:00.000Z']);
  // Exactly 12 h before the newest is not within 12h (strictly after, as restic).
  assert.deepEqual(times(applyPolicy(all, { within: parseDuration('12h') }).keep), ['2020-01-10T18:00:00.000Z']);
  const both = applyPolicy(all, { last: 1, within: parseDuration('13h') });
  assert.deepEqual(both.keep.map((k) => both.groups[0]!.keep.find((g) => g.snapshot === k)!.reasons), [['within 13h'], ['last snapshot', 'within 13h']]);
});

test('keep-within counts back from the newest snapshot that is not in the future (a wrong clock), as restic', () => {
  const now = Date.parse('2020-01-11T00:00:00.000Z');
  const all: SnapshotRecord[] = [];
  for (let d = 1; d <= 10; d++) all.push(rec(`2020-01-${String(d).padStart(2, '0')}T06:00:00.000Z`));
  const future = rec('2021-06-01T00:00:00.000Z');
  all.push(future);
  // Newest in the past is 01-10 06:00: strictly after 01-08 06:00; the future one is kept too.
  assert.deepEqual(times(applyPolicy(all, { within: parseDuration('2d') }, undefined, now).keep), ['2020-01-09T06:00:00.000Z', '2020-01-10T06:00:00.000Z', '2021-06-01T00:00:00.000Z']);
  assert.deepEqual(times(applyPolicy(all, { withinDaily: parseDuration('3d') }, undefined, now).keep), ['2020-01-08T06:00:00.000Z', '2020-01-09T06:00:00.000Z', '2020-01-10T06:00:00.000Z', '2021-06-01T00:00:00.000Z']);
  // Only future snapshots: none is the newest, every one is within.
  const later = [future, rec('2021-07-01T00:00:00.000Z')];
  assert.equal(applyPolicy(later, { within: parseDuration('1d') }, undefined, now).remove.length, 0);
  // Counting rules still count future snapshots, newest first.
  assert.deepEqual(times(applyPolicy(all, { last: 2 }, undefined, now).keep), ['2020-01-10T06:00:00.000Z', '2021-06-01T00:00:00.000Z']);
});

test('keep-tag keeps tagged snapshots whatever their age; group-by host,paths,tags and no grouping', () => {
  const all = [
    rec('2020-01-01T00:00:00.000Z', { tags: ['keep', 'x'] }),
    rec('2020-02-01T00:00:00.000Z', { tags: ['x'] }),
    rec('2020-03-01T00:00:00.000Z'),
    rec('2020-03-02T00:00:00.000Z', { hostname: 'other' }),
  ];
  const tagged = applyPolicy(all, { tags: [['keep']], last: 1 });
  assert.deepEqual(times(tagged.keep), ['2020-01-01T00:00:00.000Z', '2020-03-01T00:00:00.000Z', '2020-03-02T00:00:00.000Z']);
  // A tag set needs all its tags: here none has both, so this policy alone keeps nothing
  // and is refused (a typo must not remove every snapshot); beside a count rule, only
  // that rule keeps.
  assert.throws(() => applyPolicy(all, { tags: [['keep', 'nope']] }), (e: unknown) => CofferError.is(e, 'invalid-argument') && /keeps no snapshot/.test((e as Error).message), 'a tag set needs all its tags');
  assert.deepEqual(times(applyPolicy(all, { tags: [['keep', 'nope']], last: 1 }).keep), ['2020-03-01T00:00:00.000Z', '2020-03-02T00:00:00.000Z'], 'a tag set needs all its tags');
  assert.equal(applyPolicy(all, { last: 1 }).groups.length, 2, 'default: host and paths');
  assert.equal(applyPolicy(all, { last: 1 }, parseGroupBy('host,paths,tags')).groups.length, 4);
  const none = applyPolicy(all, { last: 1 }, parseGroupBy(''));
  assert.equal(none.groups.length, 1);
  assert.deepEqual(times(none.keep), ['2020-03-02T00:00:00.000Z']);
  assert.throws(() => parseGroupBy('host,colour'), (e: unknown) => CofferError.is(e, 'invalid-argument'));
  assert.throws(() => applyPolicy(all, { tags: [] }), (e: unknown) => CofferError.is(e, 'invalid-argument'), 'an empty tag list is no policy');
  assert.throws(() => applyPolicy(all, { tags: [[]] }), (e: unknown) => CofferError.is(e, 'invalid-argument'));
});

const arbSnapshots = fc
  .array(
    fc.record({
      t: fc.integer({ min: Date.UTC(2020, 0, 1), max: Date.UTC(2023, 0, 1) }),
      host: fc.constantFrom('a', 'b'),
      path: fc.constantFrom('/p', '/q'),
      tag: fc.constantFrom<string | undefined>(undefined, 'keep', 'other'),
    }),
    { minLength: 1, maxLength: 40 },
  )
  .map((xs) => xs.map((x, i) => rec(new Date(x.t).toISOString(), { hostname: x.host, paths: [x.path], tags: x.tag ? [x.tag] : [] }, i)));

const arbPolicy = fc.record(
  {
    last: fc.nat(5),
    daily: fc.nat(5),
    monthly: fc.nat(3),
    within: fc.record({ years: fc.constant(0), months: fc.nat(2), days: fc.nat(40), hours: fc.nat(30) }),
    withinWeekly: fc.record({ years: fc.nat(1), months: fc.nat(2), days: fc.nat(10), hours: fc.constant(0) }),
    tags: fc.constant(null).map(() => [['keep']]),
  },
  { requiredKeys: [] },
);

test('policy properties: keep and remove split the snapshots; each rule keeps exactly what it says, per group; never another group', () => {
  fc.assert(
    fc.property(arbSnapshots, arbPolicy, fc.constantFrom('host,paths', 'host', ''), (all, policy, by) => {
      fc.pre(!isEmptyPolicy(policy));
      const groupBy = parseGroupBy(by);
      const zero = (d: Duration | undefined) => !d || (d.years === 0 && d.months === 0 && d.days === 0 && d.hours === 0);
      const countRule = (policy.last ?? 0) > 0 || (policy.daily ?? 0) > 0 || (policy.monthly ?? 0) > 0 || !zero(policy.within) || !zero(policy.withinWeekly);
      let r: ReturnType<typeof applyPolicy>;
      try {
        r = applyPolicy(all, policy, groupBy);
      } catch (e) {
        // Refused only when no rule keeps a snapshot: no count or duration rule, and no snapshot with the tag.
        assert.ok(CofferError.is(e, 'invalid-argument') && /keeps no snapshot/.test((e as Error).message), String(e));
        assert.ok(!countRule && !all.some((s) => s.snapshot.tags.includes('keep')), 'refused, though a rule keeps a snapshot');
        return;
      }
      assert.ok(r.keep.length > 0, 'a policy that keeps nothing is refused, never applied');
      assert.equal(r.keep.length + r.remove.length, all.length);
      assert.ok(r.keep.every((s) => !r.remove.includes(s)));
      const key = (s: SnapshotRecord) => `${groupBy.host ? s.snapshot.hostname : ''}|${groupBy.paths ? s.snapshot.paths.join() : ''}`;
      for (const g of r.groups) {
        const members = [...g.keep.map((k) => k.snapshot), ...g.remove];
        assert.equal(new Set(members.map(key)).size, 1, 'a group is one host/paths');
        const newestFirst = [...members].sort((a, b) => Date.parse(b.snapshot.time) - Date.parse(a.snapshot.time) || Buffer.compare(b.id, a.id));
        const kept = new Set(g.keep.map((k) => k.snapshot));
        // keep-last N: the N newest of the group.
        for (const s of newestFirst.slice(0, policy.last ?? 0)) assert.ok(kept.has(s));
        // keep-within D: exactly those after newest − D are kept for that reason.
        if (policy.within) {
          const since = subtractDuration(new Date(newestFirst[0]!.snapshot.time), policy.within).getTime();
          for (const k of g.keep) assert.equal(k.reasons.some((x) => x.startsWith('within ')), Date.parse(k.snapshot.snapshot.time) > since);
          for (const s of g.remove) assert.ok(Date.parse(s.snapshot.time) <= since);
        }
        // keep-tag: every tagged snapshot stays.
        for (const s of members) if (s.snapshot.tags.includes('keep') && policy.tags) assert.ok(kept.has(s));
        // keep-daily N: at most N kept for it, and they are on distinct days.
        const days = g.keep.filter((k) => k.reasons.includes('daily snapshot')).map((k) => k.snapshot.snapshot.time.slice(0, 10));
        assert.ok(days.length <= (policy.daily ?? 0));
        assert.equal(new Set(days).size, days.length);
        // A removed snapshot matched no rule.
        for (const s of g.remove) assert.ok(!(policy.tags && s.snapshot.tags.includes('keep')));
      }
    }),
    { numRuns: 300 },
  );
});

// --- on a real repository ------------------------------------------------------------

async function fixture(t: Parameters<typeof newRepo>[0]) {
  const tr = await newRepo(t);
  const base = await tempDir(t, 'browse-src');
  const src = join(base, 'home');
  await writeTree(
    src,
    dir(
      {
        'notes.txt': file('my notes\n', 0o600, T0),
        docs: dir({ 'a.txt': file('aaa', 0o644, T0 + 1000), 'big.bin': file(prng(7, 100_000), 0o644, T0 + 2), deep: dir({ 'x.md': file('# x', 0o644, T0 + 3) }) }, 0o755, T0 + 4),
        'link': link('notes.txt'),
      },
      0o755,
      T0 + 5,
    ),
  );
  // A hard link whose first name is outside docs/, and a name that is not UTF-8.
  await fs.link(join(src, 'notes.txt'), join(src, 'docs', 'notes-link'));
  await fs.writeFile(Buffer.concat([Buffer.from(join(src, 'docs') + '/'), Buffer.from([0x62, 0xe9, 0x2e, 0x74])]), 'latin-1 name');
  const first = await backup(tr.repo, { paths: [src], tags: ['daily'], now: () => new Date('2024-05-01T10:00:00Z') });
  return { ...tr, src, first };
}

async function collect(repo: Repository, rec: SnapshotRecord, path: string | undefined, recursive: boolean): Promise<string[]> {
  const out: string[] = [];
  for await (const l of listSnapshot(repo, rec, path === undefined ? undefined : Buffer.from(path), { recursive })) out.push(escapePath(l.path));
  return out;
}

test('ls: the whole snapshot by absolute paths; a directory with its children, or all below with recursive; a missing path is an error', async (t) => {
  const { repo, src, first } = await fixture(t);
  const rec = { id: first.id, snapshot: first.snapshot };
  const all = await collect(repo, rec, undefined, true);
  assert.equal(all[0], src);
  assert.ok(all.includes(`${src}/docs/b\\xe9.t`), 'non-UTF-8 name escaped');
  assert.ok(all.includes(`${src}/docs/deep/x.md`));
  assert.deepEqual(await collect(repo, rec, `${src}/docs`, false), [
    `${src}/docs`,
    `${src}/docs/a.txt`,
    `${src}/docs/big.bin`,
    `${src}/docs/b\\xe9.t`,
    `${src}/docs/deep`,
    `${src}/docs/notes-link`,
  ]);
  assert.ok((await collect(repo, rec, `${src}/docs`, true)).includes(`${src}/docs/deep/x.md`));
  assert.deepEqual(await collect(repo, rec, `${src}/notes.txt`, false), [`${src}/notes.txt`]);
  await assert.rejects(collect(repo, rec, `${src}/nope`, false), (e: unknown) => CofferError.is(e, 'not-found') && /nope is not in snapshot/.test((e as Error).message));
});

test('restore SNAPSHOT:PATH: one file into the target, a directory contents, a hard link to a file outside becomes a copy; a missing path restores nothing', async (t) => {
  const { repo, src, first } = await fixture(t);
  const rec = { id: first.id, snapshot: first.snapshot };
  const sel = (p: string) => new SnapshotPaths(rec.snapshot).select(Buffer.from(p));
  const one = await tempDir(t, 'one');
  const r1 = await restore(repo, rec, { target: one, subtree: sel(`${src}/notes.txt`) });
  assert.equal(r1.files, 1);
  assert.deepEqual(await fs.readdir(one), ['notes.txt']);
  assert.equal(await fs.readFile(join(one, 'notes.txt'), 'utf8'), 'my notes\n');
  assert.equal((await fs.stat(join(one, 'notes.txt'))).mode & 0o777, 0o600);

  const docs = await tempDir(t, 'docs');
  await restore(repo, rec, { target: docs, subtree: sel(`${src}/docs`) });
  assert.deepEqual((await fs.readdir(docs)).sort(), ['a.txt', 'b\ufffd.t', 'big.bin', 'deep', 'notes-link'].sort());
  assert.equal(await fs.readFile(join(docs, 'notes-link'), 'utf8'), 'my notes\n', 'the hard link came back as a copy of its file');
  assert.deepEqual(await fs.readFile(join(docs, 'big.bin')), prng(7, 100_000));
  assert.equal(await fs.readFile(join(docs, 'deep', 'x.md'), 'utf8'), '# x');

  const none = await tempDir(t, 'none');
  await assert.rejects(restore(repo, rec, { target: none, subtree: sel(`${src}/docs/nope`) }), (e: unknown) => CofferError.is(e, 'not-found'));
  assert.deepEqual(await fs.readdir(none), []);
});

test('a part holding two names of a file left out: the first comes back as a copy, the other as a hard link to it (restore SNAPSHOT:PATH, restore --include, dump)', async (t) => {
  const { repo } = await newRepo(t);
  const src = join(await tempDir(t, 'links-src'), 'home');
  await writeTree(src, dir({ a: dir({ 'x.txt': file('one file, three names\n', 0o640, T0) }), b: dir({}) }));
  await fs.link(join(src, 'a', 'x.txt'), join(src, 'b', 'l1'));
  await fs.link(join(src, 'a', 'x.txt'), join(src, 'b', 'l2'));
  const snap = await backup(repo, { paths: [src] });
  const rec = { id: snap.id, snapshot: snap.snapshot };
  const check = async (d: string, what: string) => {
    const [s1, s2] = [await fs.stat(join(d, 'l1')), await fs.stat(join(d, 'l2'))];
    assert.equal(await fs.readFile(join(d, 'l1'), 'utf8'), 'one file, three names\n', what);
    assert.equal(s1.ino, s2.ino, `${what}: l1 and l2 are one file`);
    assert.equal(s1.nlink, 2, `${what}: and not linked to anything else`);
  };
  const part = await tempDir(t, 'links-part');
  await restore(repo, rec, { target: part, subtree: new SnapshotPaths(rec.snapshot).select(Buffer.from(join(src, 'b'))) });
  await check(part, 'restore SNAPSHOT:PATH');
  const included = await tempDir(t, 'links-include');
  await restore(repo, rec, { target: included, select: new RestoreSelection({ include: [{ pattern: join(src, 'b') }] }) });
  await check(join(included, 'home', 'b'), 'restore --include');
  const tarBytes = await drain((o) => dumpSnapshot(repo, rec, Buffer.from(join(src, 'b')), o));
  const untar = await tempDir(t, 'links-untar');
  execFileSync('tar', ['-xf', '-', '-C', untar], { input: tarBytes, stdio: ['pipe', 'ignore', 'ignore'] });
  await check(join(untar, 'b'), 'dump');
});

async function drain(run: (out: Writable) => Promise<unknown>): Promise<Buffer> {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  out.on('data', (b: Buffer) => parts.push(b));
  await run(out);
  out.end();
  return Buffer.concat(parts);
}

test('dump: a file byte for byte; a directory as a tar that the system tar extracts exactly (non-UTF-8 names, links)', async (t) => {
  const { repo, src, first } = await fixture(t);
  const rec = { id: first.id, snapshot: first.snapshot };
  assert.deepEqual(await drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${src}/docs/big.bin`), o)), prng(7, 100_000));
  const tarBytes = await drain((o) => dumpSnapshot(repo, rec, Buffer.from(src), o));
  assert.equal(tarBytes.length % 512, 0);
  const out = await tempDir(t, 'untar');
  execFileSync('tar', ['-xf', '-', '-C', out], { input: tarBytes, stdio: ['pipe', 'ignore', 'ignore'] });
  assert.equal(await fs.readFile(join(out, 'home', 'notes.txt'), 'utf8'), 'my notes\n');
  assert.equal(await fs.readlink(join(out, 'home', 'link')), 'notes.txt');
  assert.equal((await fs.stat(join(out, 'home', 'docs', 'notes-link'))).ino, (await fs.stat(join(out, 'home', 'notes.txt'))).ino, 'hard link kept');
  const names = await fs.readdir(Buffer.from(join(out, 'home', 'docs')), { encoding: 'buffer' });
  assert.ok(names.some((n) => n.equals(Buffer.from([0x62, 0xe9, 0x2e, 0x74]))), 'the exact name bytes');
  assert.equal(Math.floor((await fs.stat(join(out, 'home', 'docs', 'a.txt'))).mtimeMs), T0 + 1000);
  // A directory below: names start with its own name; --archive tar for a file too.
  const sub = await drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${src}/docs/deep`), o));
  const listing = execFileSync('tar', ['-tf', '-'], { input: sub }).toString().split('\n').filter(Boolean);
  assert.deepEqual(listing, ['deep/', 'deep/x.md']);
  // A part holding a hard link to a file outside it: the link comes as a copy of that
  // file (last in the tar); and the link alone, as a file.
  const docsTar = await drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${src}/docs`), o));
  const docsOut = await tempDir(t, 'untar-docs');
  execFileSync('tar', ['-xf', '-', '-C', docsOut], { input: docsTar, stdio: ['pipe', 'ignore', 'ignore'] });
  assert.equal(await fs.readFile(join(docsOut, 'docs', 'notes-link'), 'utf8'), 'my notes\n', 'the hard link out of the part is a copy of its file');
  assert.equal(await fs.readFile(join(docsOut, 'docs', 'deep', 'x.md'), 'utf8'), '# x');
  assert.equal((await drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${src}/docs/notes-link`), o))).toString(), 'my notes\n');
  const asTar = await drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${src}/notes.txt`), o, { archive: 'tar' }));
  assert.deepEqual(execFileSync('tar', ['-tf', '-'], { input: asTar }).toString(), 'notes.txt\n');
  await assert.rejects(drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${src}/gone`), o)), (e: unknown) => CofferError.is(e, 'not-found'));
});

/** What Python's zipfile (a reader independent of ours) makes of a zip: every entry, its CRC checked. */
function readZip(bytes: Buffer): { bad: string | null; entries: Array<{ name: string; mode: number; size: number; sha: string; mtime: number[]; zip64: boolean }> } {
  const script = [
    'import sys, zipfile, io, json, hashlib',
    'z = zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read()))',
    'bad = z.testzip()',
    'out = []',
    'for i in z.infolist():',
    "    raw = i.filename.encode('utf-8' if i.flag_bits & 0x800 else 'cp437')",
    "    out.append({'name': raw.hex(), 'mode': i.external_attr >> 16, 'size': i.file_size, 'sha': hashlib.sha256(z.read(i)).hexdigest(), 'mtime': list(i.date_time), 'zip64': i.extract_version >= 45})",
    "print(json.dumps({'bad': bad, 'entries': out}))",
  ].join('\n');
  const r = JSON.parse(execFileSync('python3', ['-c', script], { input: bytes }).toString()) as ReturnType<typeof readZip>;
  for (const e of r.entries) e.name = Buffer.from(e.name, 'hex').toString('latin1');
  return r;
}

test('dump --archive zip: a zip that an independent reader takes whole (CRCs, modes, symlinks, non-UTF-8 names), hard links as copies, FIFOs left out and counted; zip64 fields read back', async (t) => {
  const { repo, src } = await fixture(t);
  await fs.mkdir(join(src, 'docs', 'empty-dir'));
  spawnSync('mkfifo', [join(src, 'pipe')]);
  // A third name of notes.txt: in the docs/ part, two names of a file outside it.
  await fs.link(join(src, 'notes.txt'), join(src, 'docs', 'deep', 'notes-link2'));
  // Over the size deflated in one call (ZipWriter's WHOLE_FROM, 1 MiB): streamed.
  const large = prng(9, 3 << 20);
  await fs.writeFile(join(src, 'docs', 'large.bin'), large);
  const snap = await backup(repo, { paths: [src] });
  const rec = { id: snap.id, snapshot: snap.snapshot };
  const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
  const results: Array<Awaited<ReturnType<typeof dumpSnapshot>>> = [];
  const bytes = await drain(async (o) => results.push(await dumpSnapshot(repo, rec, Buffer.from(src), o, { archive: 'zip' })));
  const z = readZip(bytes);
  assert.equal(z.bad, null, 'every CRC checks');
  const byName = new Map(z.entries.map((e) => [e.name, e]));
  assert.deepEqual(results[0]!.format, 'zip');
  assert.equal(results[0]!.skipped, 1, 'the FIFO');
  assert.equal(byName.get('home/notes.txt')?.sha, sha('my notes\n'));
  assert.equal(byName.get('home/notes.txt')?.mode, 0o100600);
  assert.equal(byName.get('home/docs/big.bin')?.sha, sha(prng(7, 100_000)));
  assert.equal(byName.get('home/docs/large.bin')?.sha, sha(large));
  assert.equal(byName.get('home/docs/notes-link')?.sha, sha('my notes\n'), 'a hard link is a copy');
  assert.equal(byName.get('home/link')?.mode, 0o120777);
  assert.equal(byName.get('home/link')?.sha, sha('notes.txt'), 'a symlink holds its target');
  assert.equal(byName.get('home/docs/')?.mode, 0o40755);
  assert.ok(byName.has('home/docs/empty-dir/'));
  assert.ok(byName.has(Buffer.from('home/docs/b\xe9.t', 'latin1').toString('latin1')), 'the exact name bytes');
  assert.ok(!byName.has('home/pipe'));
  assert.deepEqual(byName.get('home/docs/a.txt')?.mtime, [...new Date(T0 + 1000).toISOString().match(/\d+/g)!.slice(0, 6).map(Number)].map((v, i) => (i === 5 ? v - (v % 2) : v)), 'DOS time (UTC, even seconds)');
  // The same with every entry in zip64 form (a file of 4 GiB or more, an offset past 4 GiB).
  const z64 = readZip(await drain((o) => dumpSnapshot(repo, rec, Buffer.from(src), o, { archive: 'zip', zip64From: 0 })));
  assert.equal(z64.bad, null);
  assert.ok(z64.entries.filter((e) => e.mode >> 12 === 0o10).every((e) => e.zip64));
  assert.deepEqual(z64.entries.map((e) => [e.name, e.sha]), z.entries.map((e) => [e.name, e.sha]));
  assert.equal(byName.get('home/docs/deep/notes-link2')?.sha, sha('my notes\n'));
  // The docs/ part: both names of the file outside it are copies (zip has no hard links).
  const docs = readZip(await drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${src}/docs`), o, { archive: 'zip' })));
  assert.equal(docs.bad, null);
  const docsBy = new Map(docs.entries.map((e) => [e.name, e]));
  assert.equal(docsBy.get('docs/notes-link')?.sha, sha('my notes\n'));
  assert.equal(docsBy.get('docs/deep/notes-link2')?.sha, sha('my notes\n'));
  assert.equal(docsBy.get('docs/big.bin')?.sha, sha(prng(7, 100_000)));
  assert.ok(![...docsBy.keys()].some((n) => n.startsWith('home/')), 'only the part');
  // A single file asked for as zip: an archive of one entry.
  const one = readZip(await drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${src}/notes.txt`), o, { archive: 'zip' })));
  assert.deepEqual(one.entries.map((e) => e.name), ['notes.txt']);
});

test('dump reads each pack segment once and packs held open are closed: the same tar when every pack and segment is forgotten at once; a damaged pack or a missing one stops it, named', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'dump-packs'), 'd');
  // Two backups, two packs: small files side by side in each, named so that the listing
  // goes from one pack to the other at every file (the even ones first, then the odd
  // ones), and one file of many chunks.
  const name = (i: number) => `f${String(i).padStart(2, '0')}`;
  await writeTree(src, dir({ big: file(prng(3, 60_000)), ...Object.fromEntries(Array.from({ length: 30 }, (_, i) => [name(2 * i), file(`small ${i}`.repeat(i + 1))])) }));
  await backup(tr.repo, { paths: [src], now: () => new Date('2024-01-01T00:00:00Z') });
  for (let i = 0; i < 30; i++) await fs.writeFile(join(src, name(2 * i + 1)), `later ${i}`.repeat(50));
  const b = await backup(tr.repo, { paths: [src], now: () => new Date('2024-01-02T00:00:00Z') });
  const rec = { id: b.id, snapshot: b.snapshot };
  const fds = async () => (await fs.readdir('/proc/self/fd')).length;
  const before = await fds();
  const tar = await drain((o) => dumpSnapshot(tr.repo, rec, Buffer.from(src), o));
  const saved = { ...blobReaderLimits };
  try {
    Object.assign(blobReaderLimits, { packs: 1, segments: 1 });
    assert.ok(tar.equals(await drain((o) => dumpSnapshot(tr.repo, rec, Buffer.from(src), o))), 'reads in flight on a pack already forgotten still complete');
  } finally {
    Object.assign(blobReaderLimits, saved);
  }
  assert.equal(await fds(), before, 'every pack held open was closed');
  const out = await tempDir(t, 'untar');
  execFileSync('tar', ['-xf', '-', '-C', out], { input: tar });
  assert.deepEqual(await fs.readFile(join(out, 'd', 'big')), prng(3, 60_000));
  assert.equal(await fs.readFile(join(out, 'd', name(59)), 'utf8'), 'later 29'.repeat(50));

  await damageSmallerOfTwoPacks(tr);
  await assert.rejects(drain((o) => dumpSnapshot(tr.repo, rec, Buffer.from(src), o)), (e: unknown) => CofferError.is(e, 'corrupt') && /data\/.* is corrupt: it failed authentication/.test((e as Error).message));
  assert.equal(await fds(), before, 'closed after a failure too');
  const packs = await tr.backend.list('data/');
  await tr.backend.delete(packs[0]!.name);
  await assert.rejects(drain((o) => dumpSnapshot(tr.repo, rec, Buffer.from(src), o)), (e: unknown) => CofferError.is(e, 'missing-object') || CofferError.is(e, 'corrupt'));
});

test('tar: names over 100 bytes and times before 1970 go through pax headers', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'long'), 'd');
  const long = `${'n'.repeat(120)}.txt`;
  await writeTree(src, dir({ [long]: file('long', 0o644, -86_400_000), ['ü'.repeat(60)]: file('u') }));
  const b = await backup(tr.repo, { paths: [src] });
  const tarBytes = await drain((o) => dumpSnapshot(tr.repo, { id: b.id, snapshot: b.snapshot }, Buffer.from(src), o));
  const out = await tempDir(t, 'long-out');
  execFileSync('tar', ['-xf', '-', '-C', out], { input: tarBytes, stdio: ['pipe', 'ignore', 'ignore'] });
  assert.equal(await fs.readFile(join(out, 'd', long), 'utf8'), 'long');
  assert.equal((await fs.stat(join(out, 'd', long))).mtimeMs, -86_400_000);
  assert.equal(await fs.readFile(join(out, 'd', 'ü'.repeat(60)), 'utf8'), 'u');
});

test('find, diff and stats across snapshots; latest with filters', async (t) => {
  const { repo, src, first } = await fixture(t);
  await fs.writeFile(join(src, 'docs', 'a.txt'), 'changed!');
  await fs.utimes(join(src, 'docs', 'a.txt'), new Date(T0 + 1000), new Date(T0 + 1000));
  await fs.rm(join(src, 'docs', 'deep'), { recursive: true });
  await fs.writeFile(join(src, 'new.txt'), 'new');
  // Half a millisecond after T0: after --newest T0, as restic compares (to the nanosecond).
  await fs.utimes(join(src, 'new.txt'), (T0 + 0.5) / 1000, (T0 + 0.5) / 1000);
  await fs.chmod(join(src, 'notes.txt'), 0o640);
  const second = await backup(repo, { paths: [src], tags: ['weekly'], now: () => new Date('2024-05-02T10:00:00Z') });
  const a = { id: first.id, snapshot: first.snapshot };
  const b = { id: second.id, snapshot: second.snapshot };

  const hits = await findInSnapshots(repo, [a, b], { patterns: ['X.MD'], ignoreCase: true });
  assert.deepEqual(hits.map((h) => h.snapshot.id), [a.id]);
  assert.equal(hits[0]!.matches[0]!.path.toString(), `${src}/docs/deep/x.md`);
  assert.equal((await findInSnapshots(repo, [a, b], { patterns: ['X.MD'] })).length, 0, 'case matters without -i');
  // Handed over one by one, none kept: the same matches in the same order.
  const kept = await findInSnapshots(repo, [a, b], { patterns: ['*'] });
  const streamed: string[] = [];
  const counted = await findInSnapshots(repo, [a, b], { patterns: ['*'] }, undefined, (rec, m) => streamed.push(`${rec.id.toString('hex')} ${m.path.toString('latin1')}`));
  assert.deepEqual(streamed, kept.flatMap((h) => h.matches.map((m) => `${h.snapshot.id.toString('hex')} ${m.path.toString('latin1')}`)));
  assert.deepEqual(counted.map((h) => [h.matches.length, h.count]), kept.map((h) => [0, h.matches.length]));
  assert.equal((await findInSnapshots(repo, [a, b], { patterns: [`${src.slice(1)}/*.txt`] }))[1]!.matches.length, 2, 'a pattern with / matches whole paths');
  const old = await findInSnapshots(repo, [a, b], { patterns: ['*.txt'], newest: T0 });
  assert.deepEqual(old.flatMap((h) => h.matches.map((m) => m.path.toString().slice(src.length))), ['/notes.txt', '/notes.txt'], 'only notes.txt (mtime T0) in each');
  const after = await findInSnapshots(repo, [b], { patterns: ['*.txt'], oldest: T0 + 1, newest: T0 + 1 });
  assert.deepEqual(after.flatMap((h) => h.matches.map((m) => m.path.toString().slice(src.length))), [], 'new.txt (T0 + 0.5 ms) is before --oldest T0 + 1 ms');

  const d = await diffSnapshots(repo, a, b);
  const line = (kind: string) => d.changes.filter((c) => c.kind === kind).map((c) => c.path.toString().slice(src.length));
  assert.deepEqual(line('+'), ['/new.txt']);
  assert.deepEqual(line('-'), ['/docs/deep', '/docs/deep/x.md']);
  assert.deepEqual(line('M'), ['/docs/a.txt']);
  assert.ok(line('U').includes('/docs/notes-link'), 'a hard link whose file only changed its mode');
  assert.ok(line('U').includes('/notes.txt'), 'a mode change is metadata only');
  assert.equal(d.added.files, 1);
  assert.equal(d.removed.files, 1);
  assert.equal(d.removed.dirs, 1);
  assert.equal(d.bytesAdded, 'changed!'.length + 'new'.length);
  assert.equal(d.bytesRemoved, 'aaa'.length + '# x'.length);

  const size = await snapshotStats(repo, [b], 'restore-size');
  assert.equal(size.files, b.snapshot.stats.files);
  assert.equal(size.bytes, b.snapshot.stats.bytes);
  const raw = await snapshotStats(repo, [a, b], 'raw-data');
  assert.equal(raw.missingBlobs, 0);
  assert.ok(raw.rawBytes! >= 100_000 && raw.storedBytes! > 0);

  assert.deepEqual((await findSnapshotFiltered(repo, 'latest', { tags: [['daily']] })).id, a.id);
  assert.deepEqual((await findSnapshotFiltered(repo, 'latest')).id, b.id);
  await assert.rejects(findSnapshotFiltered(repo, 'latest', { hosts: ['elsewhere'] }), (e: unknown) => CofferError.is(e, 'not-found') && /host elsewhere/.test((e as Error).message));
  await assert.rejects(findSnapshotFiltered(repo, a.id.toString('hex').slice(0, 8), { tags: [['weekly']] }), (e: unknown) => CofferError.is(e, 'not-found'));
});

test('stats files-by-contents and blobs-per-file (restic\'s): files counted once per distinct content across snapshots, and the distinct content blobs they need', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'stats-src'), 'd');
  const big = prng(11, 200_000);
  // Three files with the same bytes, one other, one empty; a second snapshot adds a copy and a new file.
  await writeTree(src, dir({ 'a.bin': file(big), 'b.bin': file(big), sub: dir({ 'c.bin': file(big) }), 'other.txt': file('other\n'), 'empty': file('') }));
  const s1 = await backup(tr.repo, { paths: [src] });
  await fs.writeFile(join(src, 'copy-of-other.txt'), 'other\n');
  await fs.writeFile(join(src, 'new.txt'), 'new\n');
  const s2 = await backup(tr.repo, { paths: [src] });
  const recs = [s1, s2].map((r) => ({ id: r.id, snapshot: r.snapshot }));
  const byContents = await snapshotStats(tr.repo, recs, 'files-by-contents');
  assert.deepEqual(byContents, { mode: 'files-by-contents', snapshots: 2, files: 4, bytes: big.length + 6 + 0 + 4 }, 'big, other, empty, new');
  const perFile = await snapshotStats(tr.repo, recs, 'blobs-per-file');
  const index = await tr.repo.index();
  const contentBlobs = new Set<string>();
  for (const r of recs) for await (const e of tr.repo.tree(r.snapshot)) if (e.type === 'file') for (const c of e.chunks) contentBlobs.add(c);
  let raw = 0;
  for (const c of contentBlobs) raw += index.get(Buffer.from(c, 'hex'))!.rawLength;
  assert.deepEqual(perFile, { mode: 'blobs-per-file', snapshots: 2, files: 4, blobs: contentBlobs.size, rawBytes: raw, missingBlobs: 0 });
  assert.equal(raw, big.length + 6 + 4, 'each distinct blob once');
  const restoreSize = await snapshotStats(tr.repo, recs, 'restore-size');
  assert.equal(restoreSize.files, 5 + 7);
  await assert.rejects(snapshotStats(tr.repo, recs, 'files' as never), /unknown stats mode 'files' \(use restore-size, files-by-contents, blobs-per-file, raw-data\)/);
});

test('diff: a hard link is modified when the file it shares changed content', async (t) => {
  const tr = await newRepo(t);
  const src = join(await tempDir(t, 'hl'), 'd');
  await writeTree(src, dir({ f: file('one') }));
  await fs.link(join(src, 'f'), join(src, 'h'));
  const a = await backup(tr.repo, { paths: [src], now: () => new Date('2024-01-01T00:00:00Z') });
  await fs.writeFile(join(src, 'f'), 'two!'); // the same inode: both names change
  const b = await backup(tr.repo, { paths: [src], now: () => new Date('2024-01-02T00:00:00Z') });
  const d = await diffSnapshots(tr.repo, { id: a.id, snapshot: a.snapshot }, { id: b.id, snapshot: b.snapshot });
  assert.deepEqual(
    d.changes.filter((c) => c.kind !== 'U').map((c) => `${c.kind} ${c.path.toString().slice(src.length)}`),
    ['M /f', 'M /h'],
  );
});

/**
 * The whole-listing comparison diff made before it walked the listings side by side
 * (issue 13): both snapshots into maps by absolute path, every path compared. The
 * reference for the test below; its order is the listing order of absolute paths.
 */
async function diffByMaps(repo: Repository, a: SnapshotRecord, b: SnapshotRecord): Promise<string[]> {
  const load = async (rec: SnapshotRecord) => {
    const paths = new SnapshotPaths(rec.snapshot);
    const m = new Map<string, TreeEntry>();
    for await (const e of repo.tree(rec.snapshot)) {
      const key = paths.absolute(e.rawPath).toString('latin1');
      if (!m.has(key)) m.set(key, e); // nested roots: a path's first sighting holds its content
    }
    return m;
  };
  const [ma, mb] = [await load(a), await load(b)];
  const content = (m: Map<string, TreeEntry>, rec: SnapshotRecord, e: TreeEntry): string => {
    if (e.type === 'hardlink') {
      const f = m.get(new SnapshotPaths(rec.snapshot).absolute(e.link).toString('latin1'));
      return `link ${e.link.toString('latin1')} ${f && f.type !== 'hardlink' ? content(m, rec, f) : ''}`;
    }
    if (e.type === 'file') return `${e.size} ${e.chunks.join()}`;
    return e.type === 'symlink' ? e.target.toString('latin1') : '';
  };
  const meta = (e: TreeEntry) => `${e.mode} ${e.mtimeNs} ${e.owner?.uid} ${e.owner?.gid} ${(e.xattrs ?? []).map((x) => `${x.name}=${x.value.toString('hex')}`).join()}`;
  const keys = [...new Set([...ma.keys(), ...mb.keys()])].map((k) => Buffer.from(k, 'latin1')).sort(compareListingOrder);
  const out: string[] = [];
  for (const key of keys) {
    const [x, y] = [ma.get(key.toString('latin1')), mb.get(key.toString('latin1'))];
    const kind = !y ? '-' : !x ? '+' : x.type !== y.type ? 'T' : content(ma, a, x) !== content(mb, b, y) ? 'M' : meta(x) !== meta(y) ? 'U' : '';
    if (kind) out.push(`${kind} ${escapePath(key)}`);
  }
  return out;
}

test('diff walks both listings side by side and finds what comparing whole listings finds: one root, roots in and out of name order, nested roots, other roots', async (t) => {
  const tr = await newRepo(t);
  const src = await tempDir(t, 'diff-walk');
  // Names whose byte order is not the listing order (`a/…` before `a.txt`), a name that is not UTF-8.
  const make = async (v: number) => {
    await fs.rm(src, { recursive: true, force: true });
    for (const d of ['p/a', 'q', 'm/z', 'n/a/x']) await fs.mkdir(join(src, d), { recursive: true });
    await fs.writeFile(join(src, 'p/a/in'), `in ${v === 0 ? 'same' : 'changed'}`);
    await fs.writeFile(join(src, 'p/a.txt'), 'same');
    await fs.writeFile(join(src, 'p/a-'), 'same');
    await fs.writeFile(Buffer.from(`${src}/p/\xff${v}`, 'latin1'), 'not utf-8');
    await fs.writeFile(join(src, 'p/shared'), v === 0 ? 'one' : 'two');
    await fs.link(join(src, 'p/shared'), join(src, 'p/zz-link'));
    if (v === 0) await fs.writeFile(join(src, 'q/becomes-dir'), 'file');
    else await fs.mkdir(join(src, 'q/becomes-dir'));
    await fs.writeFile(join(src, 'q/mode'), 'same');
    await fs.chmod(join(src, 'q/mode'), v === 0 ? 0o644 : 0o600);
    await fs.writeFile(join(src, `m/z/only${v}`), 'x');
    await fs.writeFile(join(src, 'n/a/x/f'), `n ${v}`);
    for (const f of ['p/a/in', 'p/a.txt', 'p/a-', 'q/mode', 'n/a/x/f']) await fs.utimes(join(src, f), 1_700_000_000, 1_700_000_000);
  };
  // [case, A's paths, B's paths, whether B's listing is walked as it is read (else sorted in memory)]
  const cases: Array<[string, string[], string[], boolean]> = [
    ['one root', ['p'], ['p'], true],
    ['two roots in name order', ['p', 'q'], ['p', 'q'], true],
    ['roots out of name order (z for /m/z, a for /n/a)', ['m/z', 'n/a'], ['m/z', 'n/a'], false],
    ['nested roots', ['.', 'p'], ['.', 'p'], false],
    ['other roots', ['p'], ['p', 'q'], true],
  ];
  let day = 1;
  for (const [name, pa, pb, walked] of cases) {
    const at = () => new Date(Date.UTC(2024, 0, day++));
    await make(0);
    const a = await backup(tr.repo, { paths: pa.map((p) => join(src, p)), now: at });
    await make(1);
    const b = await backup(tr.repo, { paths: pb.map((p) => join(src, p)), now: at });
    const [ra, rb] = [{ id: a.id, snapshot: a.snapshot }, { id: b.id, snapshot: b.snapshot }];
    assert.equal(new SnapshotPaths(b.snapshot).rootsInOrder(), walked, name);
    const streamed: string[] = [];
    const d = await diffSnapshots(tr.repo, ra, rb, (c) => streamed.push(`${c.kind} ${escapePath(c.path)}`));
    assert.deepEqual(d.changes, [], `${name}: with a callback, no change is kept`);
    assert.deepEqual(streamed, await diffByMaps(tr.repo, ra, rb), name);
    assert.deepEqual((await diffSnapshots(tr.repo, ra, rb)).changes.map((c) => `${c.kind} ${escapePath(c.path)}`), streamed, `${name}: collected as streamed`);
    if (pa.includes('p')) assert.ok(streamed.includes(`M ${src}/p/zz-link`), `${name}: the hard link to a file whose content changed (it comes after that file)`);
  }
});

test('a format version 1 repository (spec vectors) lists, dumps and restores part of its snapshot', async (t) => {
  const vectors = fileURLToPath(new URL('../../../../spec/vectors/backup/repositories/', import.meta.url));
  const v = JSON.parse(await fs.readFile(join(vectors, 'v1.json'), 'utf8')) as { key: string };
  const copy = join(await tempDir(t, 'v1'), 'repo');
  await fs.cp(join(vectors, 'v1'), copy, { recursive: true });
  const repo = await Repository.open(new LocalBackend(copy), BackupKey.parse(v.key));
  const rec = await findSnapshotFiltered(repo, 'latest');
  assert.equal(rec.snapshot.version, 1);
  const root = rec.snapshot.paths[0]!;
  const listed = await collect(repo, rec, undefined, true);
  assert.ok(listed.includes(`${root}/hello.txt`), listed.join('\n'));
  const hello = await drain((o) => dumpSnapshot(repo, rec, Buffer.from(`${root}/hello.txt`), o));
  assert.equal(hello.length, 14);
  const out = await tempDir(t, 'v1-out');
  const r = await restore(repo, rec, { target: out, subtree: new SnapshotPaths(rec.snapshot).select(Buffer.from(`${root}/docs/deeper`)) });
  assert.equal(r.files, 2);
  assert.deepEqual((await fs.readdir(out)).sort(), ['random.bin', 'zeros.bin']);
});
