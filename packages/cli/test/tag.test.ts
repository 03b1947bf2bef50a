/**
 * `coffer tag` (as restic's): --add, --remove, --set on snapshots given by ID or chosen by
 * --tag/--host/--path; each changed snapshot is written again under a new ID with
 * `original` set, the old one deleted, nothing else changed (its files restore the same),
 * and this device's rollback tripwire does not take the old IDs for a rollback. Also the
 * listing's restic options that go with tags: `snapshots --latest N` and `--group-by`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { assertError, tempDir, type CliResult } from './helpers.js';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

function coffer(args: string[], env: Record<string, string>): Promise<CliResult> {
  const base = { ...process.env };
  delete base.COFFER_KEY;
  delete base.COFFER_REPOSITORY;
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...base, ...env }, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      assert.doesNotMatch(stderr, /\n {4}at |internal error/, `coffer ${args.join(' ')}:\n${stderr}`);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

interface Snap {
  id: string;
  tags: string[];
  hostname: string;
  time: string;
  tree: unknown;
  original?: string;
  stats: { files: number };
}

async function setup(t: TestContext): Promise<{ base: string; src: string; env: Record<string, string>; list: () => Promise<Snap[]> }> {
  const base = await tempDir(t, 'tag-base');
  const gen = await coffer(['key', 'generate', '-q'], {});
  const env = { COFFER_REPOSITORY: join(base, 'repo'), COFFER_KEY: gen.stdout.trim(), XDG_CONFIG_HOME: join(base, 'config') };
  assert.equal((await coffer(['init', '-q'], env)).code, 0);
  const src = join(base, 'src');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'a.txt'), 'hello\n');
  const list = async (): Promise<Snap[]> => {
    const r = await coffer(['snapshots', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Snap[];
  };
  return { base, src, env, list };
}

test('tag --add/--remove/--set by ID: a new snapshot with the new tags (same time, host, files; original set), the old one gone, no rollback warning', async (t) => {
  const s = await setup(t);
  const b1 = await coffer(['backup', '-q', '--tag', 'daily', s.src], s.env);
  const b2 = await coffer(['backup', '-q', '--tag', 'daily,keep', '--host', 'other', s.src], s.env);
  const [id1, id2] = [b1.stdout.trim(), b2.stdout.trim()];
  const before = await s.list();

  const add = await coffer(['tag', id1.slice(0, 8), '--add', 'important,x', '--add', 'daily'], s.env);
  assert.equal(add.code, 0, add.stderr);
  const newId = add.stdout.trim();
  assert.match(newId, /^[0-9a-f]{64}$/);
  assert.doesNotMatch(add.stderr, /warning/, 'the old ID is not taken for a rollback');
  let now = await s.list();
  assert.deepEqual(now.map((x) => x.id).sort(), [newId, id2].sort(), 'the old snapshot is gone');
  const tagged = now.find((x) => x.id === newId)!;
  const old = before.find((x) => x.id === id1)!;
  assert.deepEqual(tagged.tags, ['daily', 'important', 'x']);
  assert.equal(tagged.original, id1);
  for (const k of ['time', 'hostname', 'tree', 'stats'] as const) assert.deepEqual(tagged[k], old[k], k);

  // --remove, then --set; `original` stays the first snapshot's.
  const rm = await coffer(['tag', newId, '--remove', 'x,daily'], s.env);
  assert.equal(rm.code, 0, rm.stderr);
  const id3 = rm.stdout.trim();
  const set = await coffer(['tag', id3, '--set', 'monthly'], s.env);
  assert.equal(set.code, 0, set.stderr);
  const id4 = set.stdout.trim();
  now = await s.list();
  const last = now.find((x) => x.id === id4)!;
  assert.deepEqual(last.tags, ['monthly']);
  assert.equal(last.original, id1);
  // Unchanged: nothing written, no new ID.
  const same = await coffer(['tag', id4, '--add', 'monthly', '--json'], s.env);
  assert.equal(same.code, 0, same.stderr);
  assert.deepEqual(JSON.parse(same.stdout), { changed: [], unchanged: 1 });
  // --set "" removes every tag.
  const none = await coffer(['tag', id4, '--set', ''], s.env);
  assert.equal(none.code, 0, none.stderr);
  assert.deepEqual((await s.list()).find((x) => x.id === none.stdout.trim())!.tags, []);
  // The files restore as before; check is clean; a later command warns about nothing.
  const out = join(s.base, 'out');
  const r = await coffer(['restore', none.stdout.trim().slice(0, 8), '--target', out, '-q'], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await fs.readFile(join(out, 'src', 'a.txt'), 'utf8'), 'hello\n');
  const c = await coffer(['check'], s.env);
  assert.equal(c.code, 0, c.stderr);
  assert.doesNotMatch((await coffer(['snapshots'], s.env)).stderr, /warning/);
});

test('tag with no ID: every snapshot the filters let through (as restic); --json', async (t) => {
  const s = await setup(t);
  for (const host of ['laptop', 'laptop', 'desktop']) assert.equal((await coffer(['backup', '-q', '--host', host, s.src], s.env)).code, 0);
  const r = await coffer(['tag', '--host', 'laptop', '--add', 'mine', '--json'], s.env);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { changed: Array<{ from: string; to: string; tags: string[] }>; unchanged: number };
  assert.equal(j.changed.length, 2);
  const now = await s.list();
  assert.deepEqual(now.filter((x) => x.tags.includes('mine')).map((x) => x.hostname), ['laptop', 'laptop']);
  assert.deepEqual(now.filter((x) => !x.tags.includes('mine')).map((x) => x.hostname), ['desktop']);
  // `latest` is the newest of those the filters let through (as restic).
  const latestA = await coffer(['tag', 'latest', '--host', 'desktop', '--add', 'newest-desktop', '--json'], s.env);
  assert.equal(latestA.code, 0, latestA.stderr);
  const changedA = (JSON.parse(latestA.stdout) as { changed: Array<{ to: string }> }).changed;
  assert.equal((await s.list()).find((x) => x.id === changedA[0]!.to)?.hostname, 'desktop');
  const none = await coffer(['tag', '--host', 'nosuch', '--add', 'x'], s.env);
  assert.equal(none.code, 0, none.stderr);
  assert.match(none.stderr, /no snapshot matches \(of 3\)/);
});

test('tag: garbage is refused and changes nothing', async (t) => {
  const s = await setup(t);
  const id = (await coffer(['backup', '-q', '--tag', 'a', s.src], s.env)).stdout.trim();
  const cases: Array<[string[], number, RegExp]> = [
    [['tag', id], 2, /say what to change: --add T, --remove T or --set T/],
    [['tag', id, '--set', 'x', '--add', 'y'], 2, /--set replaces every tag: give it alone/],
    [['tag', id, '--add', ''], 2, /--add names no tag/],
    [['tag', id, '--remove', ' , '], 2, /--remove names no tag/],
    [['tag', 'zz', '--add', 'x'], 2, /'zz' is not a snapshot ID/],
    [['tag', 'abcdef12', '--add', 'x'], 1, /no snapshot abcdef12/],
    [['tag', id, '--add', 'x', '--keep-last', '1'], 2, /option --keep-last does not apply here/],
    [['tag', id, '--host', 'other', '--add', 'x'], 1, /snapshot [0-9a-f]+ does not match \(host other\)/],
    [['tag', 'latest', '--host', 'other', '--add', 'x'], 1, /no snapshot in .* matches \(host other\)/],
  ];
  for (const [args, code, msg] of cases) assertError(await coffer(args, s.env), code, msg);
  const now = await s.list();
  assert.deepEqual(
    now.map((x) => [x.id, x.tags]),
    [[id, ['a']]],
  );
});

test('snapshots --latest N (the newest N of each host and paths) and --group-by (as restic, JSON group_key); garbage refused', async (t) => {
  const s = await setup(t);
  const other = join(s.base, 'other');
  await fs.mkdir(other);
  const made: Record<string, string[]> = {};
  for (const [host, path, tag] of [['a', s.src, 'x'], ['a', s.src, 'y'], ['a', other, 'x'], ['b', s.src, 'x'], ['a', s.src, 'x']] as const) {
    const b = await coffer(['backup', '-q', '--host', host, '--tag', tag, path], s.env);
    assert.equal(b.code, 0, b.stderr);
    (made[`${host} ${path}`] ??= []).push(b.stdout.trim());
  }
  const ids = async (args: string[]): Promise<string[]> => {
    const r = await coffer(['snapshots', '--json', ...args], s.env);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as Snap[]).map((x) => x.id);
  };
  const latest1 = await ids(['--latest', '1']);
  assert.deepEqual(latest1.sort(), [made[`a ${s.src}`]!.at(-1)!, made[`a ${other}`]![0]!, made[`b ${s.src}`]![0]!].sort());
  assert.equal((await ids(['--latest', '2'])).length, 4);
  assert.deepEqual(await ids(['--latest', '1', '--host', 'a', '--path', s.src]), [made[`a ${s.src}`]!.at(-1)!]);
  const grouped = await coffer(['snapshots', '--json', '--group-by', 'host'], s.env);
  const g = JSON.parse(grouped.stdout) as Array<{ group_key: { hostname: string; paths: unknown; tags: unknown }; snapshots: Snap[] }>;
  assert.deepEqual(g.map((x) => [x.group_key, x.snapshots.length]), [[{ hostname: 'a', paths: null, tags: null }, 4], [{ hostname: 'b', paths: null, tags: null }, 1]]);
  const text = await coffer(['snapshots', '--group-by', 'host,tags', '--latest', '1'], s.env);
  assert.equal(text.code, 0, text.stderr);
  // Groups in the order of their oldest snapshot listed.
  assert.deepEqual(text.stdout.split('\n').filter((l) => l.startsWith('snapshots for')).sort(), ['snapshots for (host [a], tags [x]):', 'snapshots for (host [a], tags [y]):', 'snapshots for (host [b], tags [x]):']);
  for (const [args, msg] of [
    [['--latest', '0'], /--latest takes a whole number of snapshots, 1 or more, not '0'/],
    [['--latest', 'x'], /--latest takes a whole number/],
    [['--latest=-2'], /--latest takes a whole number/],
    [['--group-by', 'colour'], /--group-by: unknown field 'colour'/],
  ] as Array<[string[], RegExp]>) assertError(await coffer(['snapshots', ...args], s.env), 2, msg);
});
