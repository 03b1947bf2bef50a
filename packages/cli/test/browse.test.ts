/**
 * Browsing and choosing snapshots through the real `coffer` binary (issue 12), as
 * transcripts: `ls`, `find`, `diff`, `dump`, `stats`, `restore SNAPSHOT:PATH`, the
 * `--tag/--host/--path` filters on `snapshots`, `forget`, `restore latest` and `ls
 * latest`, and `forget`'s policies. Data on stdout only; errors as one `coffer: error:`
 * line with the documented exit code.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as nodeFs from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BackupKey, LocalBackend, ObjectKind, Repository, sealObject, snapshotName, type Snapshot } from '@coffer/backup';
import { run } from '../src/main.js';
import { assertError, tempDir } from './helpers.js';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const CONFIG_HOME = await fs.mkdtemp(join(tmpdir(), 'coffer-browse-config-'));
process.on('exit', () => nodeFs.rmSync(CONFIG_HOME, { recursive: true, force: true }));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
  raw: Buffer;
}

/** The real binary in its own process: exit codes, pipes, binary stdout. */
function spawned(args: string[], env: Record<string, string>): Promise<Result> {
  const base: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: CONFIG_HOME };
  delete base.COFFER_KEY;
  delete base.COFFER_REPOSITORY;
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...base, ...env }, maxBuffer: 1 << 26, encoding: 'buffer' }, (err, stdout, stderrBuf) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve(checked(args, { code, stdout: stdout.toString(), stderr: stderrBuf.toString(), raw: stdout }));
    });
  });
}

function checked(args: string[], r: Result): Result {
  assert.doesNotMatch(r.stderr, /\n {4}at /, `stack trace from coffer ${args.join(' ')}:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /internal error/, `coffer ${args.join(' ')}: ${r.stderr}`);
  return r;
}

class Capture extends Writable {
  readonly parts: Buffer[] = [];
  constructor(readonly isTTY: boolean) {
    super();
  }
  get raw(): Buffer {
    return Buffer.concat(this.parts);
  }
  get text(): string {
    return this.raw.toString();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.parts.push(Buffer.from(chunk));
    cb();
  }
}

/**
 * The same CLI entry point (main.ts's run) in this process, with its own stdout and
 * stderr: most transcripts run this way, as the machine is shared and a node start-up
 * costs a second or two under load. `spawned` covers the process boundary.
 */
async function coffer(args: string[], env: Record<string, string>, tty = false, errTty = false): Promise<Result> {
  const out = new Capture(tty);
  const err = new Capture(errTty);
  const code = await run(args, { stdout: out, stderr: err, env: { PATH: process.env.PATH ?? '', XDG_CONFIG_HOME: CONFIG_HOME, ...env } });
  return checked(args, { code, stdout: out.text, stderr: err.text, raw: out.raw });
}

const BAD_NAME = Buffer.from([0x62, 0xe9, 0x2e, 0x74]); // "bé.t" in Latin-1: not UTF-8

interface Setup {
  base: string;
  repo: string;
  src: string;
  key: string;
  env: Record<string, string>;
  /** The two snapshots `coffer backup` made, oldest first. */
  ids: string[];
}

/**
 * A repository with two backups of `home/` (tags `daily`, then `weekly,keep`): the
 * second changes a.txt, removes deep/, adds new.txt.
 */
async function setup(t: TestContext | undefined): Promise<Setup> {
  const base = t ? await tempDir(t, 'browse-base') : await fs.mkdtemp(join(tmpdir(), 'coffer-browse-shared-'));
  if (!t) process.on('exit', () => nodeFs.rmSync(base, { recursive: true, force: true }));
  const repo = join(base, 'repo');
  const key = BackupKey.generate().toDigits();
  const env = { COFFER_REPOSITORY: repo, COFFER_KEY: key };
  assert.equal((await coffer(['init', '-q'], env)).code, 0);
  const src = join(base, 'home');
  await fs.mkdir(join(src, 'docs', 'deep'), { recursive: true });
  await fs.writeFile(join(src, 'notes.txt'), 'my notes\n');
  await fs.writeFile(join(src, 'docs', 'a.txt'), 'aaa');
  await fs.writeFile(join(src, 'docs', 'deep', 'x.md'), '# x');
  await fs.writeFile(Buffer.concat([Buffer.from(`${src}/docs/`), BAD_NAME]), 'latin-1 name');
  await fs.symlink('notes.txt', join(src, 'link'));
  const b1 = await coffer(['backup', '-q', src, '--tag', 'daily'], env);
  assert.equal(b1.code, 0, b1.stderr);
  await fs.writeFile(join(src, 'docs', 'a.txt'), 'changed!');
  await fs.rm(join(src, 'docs', 'deep'), { recursive: true });
  await fs.writeFile(join(src, 'new.txt'), 'new');
  const b2 = await coffer(['backup', '-q', src, '--tag', 'weekly', '--tag', 'keep'], env);
  assert.equal(b2.code, 0, b2.stderr);
  return { base, repo, src, key, env, ids: [b1.stdout.trim(), b2.stdout.trim()] };
}

let sharedSetup: Promise<Setup> | undefined;
/** One repository for the tests that only read it. */
function shared(): Promise<Setup> {
  sharedSetup ??= setup(undefined);
  return sharedSetup;
}

/** Adds a copy of snapshot `from` as another host's (or another time's) snapshot, with a chosen ID. */
async function addSnapshot(s: Setup, from: string, over: Partial<Snapshot>, id?: Buffer): Promise<string> {
  const repo = await Repository.open(new LocalBackend(s.repo), BackupKey.parse(s.key));
  const ref = await repo.findSnapshot(from);
  const snapshot = { ...ref.snapshot, ...over };
  const newId = id ?? randomBytes(32);
  await repo.backend.put(snapshotName(newId), [sealObject(repo.keys.objectMaster, { kind: ObjectKind.Snapshot, id: newId }, Buffer.from(JSON.stringify(snapshot)))]);
  return newId.toString('hex');
}

test('coffer ls: paths, -l, a directory and its children, --recursive, --json with the exact bytes of a non-UTF-8 name', async () => {
  const s = await shared();
  const all = await spawned(['ls', 'latest'], s.env);
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stderr, /^snapshot [0-9a-f]{8} of .*home at .*:\n$/);
  assert.deepEqual(all.stdout.split('\n'), [
    `${s.src}/`,
    `${s.src}/docs/`,
    `${s.src}/docs/a.txt`,
    `${s.src}/docs/b\\xe9.t`,
    `${s.src}/link`,
    `${s.src}/new.txt`,
    `${s.src}/notes.txt`,
    '',
  ]);
  const first = await coffer(['ls', s.ids[0]!.slice(0, 8), `${s.src}/docs`], s.env);
  assert.deepEqual(first.stdout.split('\n'), [`${s.src}/docs/`, `${s.src}/docs/a.txt`, `${s.src}/docs/b\\xe9.t`, `${s.src}/docs/deep/`, '']);
  const rec = await coffer(['ls', `${s.ids[0]!.slice(0, 8)}:${s.src}/docs`, '--recursive', '-q'], s.env);
  assert.ok(rec.stdout.includes(`${s.src}/docs/deep/x.md\n`));
  assert.equal(rec.stderr, '');

  const long = await coffer(['ls', 'latest', '-l', `${s.src}/notes.txt`, `${s.src}/link`], s.env);
  assert.match(long.stdout, /^-rw-r--r-- +\S+ +\S+ +9 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*\/home\/notes\.txt\n/);
  assert.match(long.stdout, /\nlrwxrwxrwx .* \/.*\/home\/link -> notes\.txt\n$/);

  const json = await coffer(['ls', 'latest', '--json', `${s.src}/docs`], s.env);
  const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const bad = lines.find((l) => l.name === 'b\\xe9.t')!;
  assert.equal(Buffer.from(bad.path64 as string, 'base64').subarray(-4).toString('hex'), BAD_NAME.toString('hex'));
  assert.deepEqual([bad.type, bad.size, bad.permissions], ['file', 12, '-rw-r--r--']);
  assert.equal(lines[0]!.type, 'dir');
  assert.equal(json.stderr, '');
  // The escaped name, given back, names the same file.
  const back = await coffer(['dump', 'latest', `${s.src}/docs/b\\xe9.t`], s.env);
  assert.equal(back.stdout, 'latin-1 name');
});

test('coffer ls -l / --json and find -l: a hard link names its file by the absolute path, which given back to dump names that file', async (t) => {
  const base = await tempDir(t, 'browse-hl');
  const env = { COFFER_REPOSITORY: join(base, 'repo'), COFFER_KEY: BackupKey.generate().toDigits() };
  assert.equal((await coffer(['init', '-q'], env)).code, 0);
  const src = join(base, 'home');
  await fs.mkdir(join(src, 'b'), { recursive: true });
  await fs.writeFile(join(src, 'a.txt'), 'shared');
  await fs.link(join(src, 'a.txt'), join(src, 'b', 'same.txt'));
  assert.equal((await coffer(['backup', '-q', src], env)).code, 0);
  const long = await coffer(['ls', 'latest', '-l', `${src}/b`], env);
  assert.match(long.stdout, new RegExp(` ${src}/b/same\\.txt \\(hard link to ${src}/a\\.txt\\)\n$`));
  const json = await coffer(['ls', 'latest', '--json', `${src}/b`], env);
  const link = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.type === 'hardlink')!;
  assert.equal(link.link, `${src}/a.txt`);
  const found = await coffer(['find', 'same.txt', '-l'], env);
  assert.ok(found.stdout.includes(`(hard link to ${src}/a.txt)`), found.stdout);
  const back = await coffer(['dump', 'latest', link.link as string], env);
  assert.equal(back.code, 0, back.stderr);
  assert.equal(back.stdout, 'shared');
});

test('coffer ls errors: no snapshot argument, unknown ID, ambiguous prefix, a path not in the snapshot, an unknown host', async (t) => {
  const s = await setup(t);
  const prefix = Buffer.from('abcd00' + '00'.repeat(29), 'hex');
  await addSnapshot(s, 'latest', { time: '2020-01-01T00:00:00.000Z' }, prefix);
  await addSnapshot(s, 'latest', { time: '2020-01-02T00:00:00.000Z' }, Buffer.from('abcd11' + '00'.repeat(29), 'hex'));
  assertError(await coffer(['ls'], s.env), 2, /ls: give a snapshot ID/);
  assertError(await coffer(['ls', 'ffff0000'], s.env), 1, /no snapshot ffff0000 in /);
  assertError(await spawned(['ls', 'abcd'], s.env), 2, /snapshot ID abcd is ambiguous: give more digits/);
  assertError(await coffer(['ls', 'not-an-id'], s.env), 2, /'not-an-id' is not a snapshot ID/);
  assertError(await coffer(['ls', 'latest', '/etc/passwd'], s.env), 1, /\/etc\/passwd is not in this snapshot \(it holds .*home\)/);
  assertError(await coffer(['ls', 'latest', `${s.src}/nope`], s.env), 1, /home\/nope is not in snapshot [0-9a-f]{8}$/);
  assertError(await coffer(['ls', 'latest', '--host', 'elsewhere'], s.env), 1, /no snapshot in .* matches \(host elsewhere\)/);
  assertError(await coffer(['ls', 'latest', '--keep-last', '1'], s.env), 2, /ls: option --keep-last does not apply here/);
  const help = await coffer(['ls', '--help'], s.env);
  assert.match(help.stdout, /coffer ls ID\|latest \[PATH…\] \[-l\] \[--recursive\]/);
  assert.doesNotMatch(help.stdout, /coffer forget/);
});

test('coffer find: which snapshots hold a pattern; -i; --snapshot; a pattern with / on whole paths; --newest; --json', async () => {
  const s = await shared();
  const r = await coffer(['find', 'x.md'], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `Found matching entries in snapshot ${s.ids[0]!.slice(0, 8)} of ${s.src} at ${r.stdout.split(' at ')[1]!.split('\n')[0]}\n${s.src}/docs/deep/x.md\n\n`);
  assert.match(r.stderr, /1 of 2 snapshot\(s\) hold matching paths/);
  assert.equal((await coffer(['find', 'X.MD'], s.env)).stdout, '', 'case matters');
  assert.match((await coffer(['find', '-i', 'X.MD'], s.env)).stdout, /deep\/x\.md/);
  const only = await coffer(['find', '*.txt', '--snapshot', s.ids[1]!.slice(0, 8), '--json'], s.env);
  const hits = JSON.parse(only.stdout) as Array<{ snapshot: string; matches: Array<{ path: string }> }>;
  assert.deepEqual(hits.map((h) => h.snapshot), [s.ids[1]]);
  assert.deepEqual(hits[0]!.matches.map((m) => m.path.slice(s.src.length)), ['/docs/a.txt', '/new.txt', '/notes.txt']);
  const whole = await coffer(['find', `${s.src}/*.txt`, '--tag', 'daily'], s.env);
  assert.deepEqual(whole.stdout.split('\n').slice(1, -2), [`${s.src}/notes.txt`]);
  assert.equal((await coffer(['find', '*', '--newest', '2000-01-01', '-q'], s.env)).stdout, '', 'nothing that old');
  assertError(await coffer(['find', '*', '--oldest', 'yesterday'], s.env), 2, /--oldest: 'yesterday' is not a time/);
  assertError(await coffer(['find', '[abc'], s.env), 2, /pattern '\[abc': '\[' without '\]'/);
  assertError(await coffer(['find'], s.env), 2, /find: give a pattern/);
});

test('coffer diff: + - M U lines and totals, like restic; --json', async () => {
  const s = await shared();
  const r = await spawned(['diff', s.ids[0]!.slice(0, 8), 'latest'], s.env);
  assert.equal(r.code, 0, r.stderr);
  const [changes, summary] = r.stdout.split('\n\n');
  assert.deepEqual(changes!.split('\n').filter((l) => !l.startsWith('U')), [
    `M    ${s.src}/docs/a.txt`,
    `-    ${s.src}/docs/deep/`,
    `-    ${s.src}/docs/deep/x.md`,
    `+    ${s.src}/new.txt`,
  ]);
  assert.match(summary!, /^Added: +1 files, 0 dirs, 0 others, 3 B\nRemoved: +1 files, 1 dirs, 0 others, 3 B\nChanged: +1 modified/);
  assert.match(summary!, /Data: +2 blobs added \(11 B\), 2 blobs removed \(6 B\)/);
  const j = JSON.parse((await coffer(['diff', s.ids[0]!, s.ids[1]!, '--json'], s.env)).stdout) as { changes: Array<{ change: string; path: string }>; bytesAdded: number; modified: number };
  assert.equal(j.modified, 1);
  assert.equal(j.bytesAdded, 11);
  assert.ok(j.changes.some((c) => c.change === '+' && c.path === `${s.src}/new.txt`));
  assertError(await coffer(['diff', 'latest'], s.env), 2, /diff: give two snapshots/);
  assertError(await coffer(['diff', 'latest', 'deadbeef'], s.env), 1, /no snapshot deadbeef/);
});

test('coffer dump: a file to stdout byte for byte; a directory as tar that the system tar extracts; errors', async (t) => {
  const s = await setup(t);
  const big = Buffer.alloc(3_000_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7919) >>> 8;
  await fs.writeFile(join(s.src, 'big.bin'), big);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  const file = await spawned(['dump', 'latest', `${s.src}/big.bin`], s.env);
  assert.equal(file.code, 0, file.stderr);
  assert.ok(file.raw.equals(big), 'the same bytes');
  assert.match(file.stderr, /dumped a file: 2\.9 MiB/);
  const tar = await spawned(['dump', `latest:${s.src}/docs`, '--json'], s.env);
  assert.equal(tar.code, 0, tar.stderr);
  assert.deepEqual(JSON.parse(tar.stderr), { snapshot: JSON.parse(tar.stderr).snapshot, format: 'tar', entries: 3, bytes: 20 });
  const out = await tempDir(t, 'browse-untar');
  execFileSync('tar', ['-xf', '-', '-C', out], { input: tar.raw, stdio: ['pipe', 'ignore', 'ignore'] });
  assert.equal(await fs.readFile(join(out, 'docs', 'a.txt'), 'utf8'), 'changed!');
  assert.equal(await fs.readFile(Buffer.concat([Buffer.from(`${out}/docs/`), BAD_NAME]), 'utf8'), 'latin-1 name');
  // The whole snapshot: names are the absolute paths without the leading /.
  const whole = await coffer(['dump', 'latest', '/', '--archive', 'tar'], s.env);
  const names = execFileSync('tar', ['-tf', '-'], { input: whole.raw }).toString();
  assert.ok(names.includes(`${s.src.slice(1)}/notes.txt\n`), names);
  assertError(await coffer(['dump', 'latest', `${s.src}/nope`], s.env), 1, /home\/nope is not in snapshot/);
  assertError(await coffer(['dump', 'latest'], s.env), 2, /dump: give a snapshot and a path/);
  assertError(await coffer(['dump', 'latest', `${s.src}/notes.txt`, '--archive', 'rar'], s.env), 2, /--archive rar is not supported \(tar or zip\)/);
  // --archive zip (restic's): a zip of the part; python's zipfile checks every CRC.
  const zip = await spawned(['dump', `latest:${s.src}/docs`, '--archive', 'zip', '--json'], s.env);
  assert.equal(zip.code, 0, zip.stderr);
  assert.equal(JSON.parse(zip.stderr).format, 'zip');
  const listed = execFileSync('python3', ['-c', 'import sys, io, zipfile; z = zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read())); assert z.testzip() is None; print(sorted(i.filename for i in z.infolist() if not i.filename.endswith("/"))[0]); print(z.read("docs/a.txt").decode())'], { input: zip.raw }).toString();
  assert.equal(listed, 'docs/a.txt\nchanged!\n');
});

test('coffer dump refuses to write a tar stream to a terminal (a file is fine)', async () => {
  const s = await shared();
  assertError(await coffer(['dump', 'latest', s.src], s.env, true), 2, /^coffer: error: dump: this is a directory, written as a tar stream: redirect it/);
  assertError(await coffer(['dump', 'latest', s.src, '--archive', 'zip'], s.env, true), 2, /^coffer: error: dump: a zip archive is binary: redirect it to a file/);
  const file = await coffer(['dump', 'latest', `${s.src}/notes.txt`], s.env, true);
  assert.deepEqual([file.code, file.stdout], [0, 'my notes\n']);
});

test('coffer stats: restore-size and raw-data, text and --json, over chosen snapshots', async () => {
  const s = await shared();
  const r = await coffer(['stats', 'latest'], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Stats in restore-size mode:\n +Snapshots processed: +1\n +Total file count: +4\n +Directories: +2\n +Other entries: +1\n +Total size: +32 B\n$/);
  const all = JSON.parse((await coffer(['stats', '--json'], s.env)).stdout) as Record<string, number>;
  assert.deepEqual([all.snapshots, all.files], [2, 8]);
  const raw = JSON.parse((await coffer(['stats', '--mode', 'raw-data', '--json', '--tag', 'daily'], s.env)).stdout) as Record<string, number>;
  assert.equal(raw.snapshots, 1);
  assert.equal(raw.missingBlobs, 0);
  assert.ok(raw.blobs! >= 5 && raw.rawBytes! > 0 && raw.storedBytes! > 0);
  assert.match((await coffer(['stats', '--mode', 'raw-data'], s.env)).stdout, /Total uncompressed size:/);
  assertError(await coffer(['stats', '--mode', 'everything'], s.env), 2, /stats: unknown --mode 'everything'/);
  // Progress on a terminal's stderr only, never with --json.
  assert.match((await coffer(['stats'], s.env, false, true)).stderr, /\rscanning snapshots: 2\/2/);
  assert.equal((await coffer(['stats', '--json'], s.env, false, true)).stderr, '');
  assert.match((await coffer(['find', 'zzz'], s.env, false, true)).stderr, /\rscanning snapshots: 1\/2\rscanning snapshots: 2\/2/);
});

test('coffer restore SNAPSHOT:PATH: one file (latest:…/notes.txt), a directory contents, filters on latest', async () => {
  const s = await shared();
  const one = join(s.base, 'one');
  const r = await spawned(['restore', `latest:${s.src}/notes.txt`, '--target', one], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await fs.readdir(one), ['notes.txt']);
  assert.equal(await fs.readFile(join(one, 'notes.txt'), 'utf8'), 'my notes\n');
  // Without the leading / too, as restic users type it.
  const two = join(s.base, 'two');
  assert.equal((await coffer(['restore', `latest:${s.src.slice(1)}/notes.txt`, '--target', two, '-q'], s.env)).code, 0);
  assert.deepEqual(await fs.readdir(two), ['notes.txt']);
  // The first snapshot's docs/ (by ID, and as --tag daily's latest).
  const docs = join(s.base, 'docs');
  const d = await coffer(['restore', `latest:${s.src}/docs`, '--tag', 'daily', '--target', docs, '--json'], s.env);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(JSON.parse(d.stdout).snapshot, s.ids[0]);
  assert.deepEqual((await fs.readdir(docs)).sort(), ['a.txt', 'b\ufffd.t', 'deep']);
  assert.equal(await fs.readFile(join(docs, 'a.txt'), 'utf8'), 'aaa');
  assert.equal(await fs.readFile(join(docs, 'deep', 'x.md'), 'utf8'), '# x');
  // Refuses to overwrite, like a whole restore.
  assertError(await coffer(['restore', `latest:${s.src}/notes.txt`, '--target', one], s.env), 1, /restore would overwrite existing files/);
  const none = join(s.base, 'none');
  assertError(await coffer(['restore', `latest:${s.src}/nope.txt`, '--target', none], s.env), 1, /home\/nope\.txt is not in snapshot/);
  assert.equal(nodeFs.existsSync(join(none, 'nope.txt')), false);
  assertError(await coffer(['restore', 'latest', '--tag', 'nope', '--target', none], s.env), 1, /no snapshot in .* matches \(tags nope\)/);
});

test('filters: snapshots --tag a,b (both) / repeated (either) / --host / --path', async (t) => {
  const s = await setup(t);
  await addSnapshot(s, 'latest', { hostname: 'server', time: '2021-01-01T00:00:00.000Z', tags: [] });
  const ids = async (...args: string[]) => (JSON.parse((await coffer(['snapshots', '--json', ...args], s.env)).stdout) as Array<{ id: string; hostname: string }>).map((x) => x.id);
  assert.equal((await ids()).length, 3);
  assert.deepEqual(await ids('--tag', 'weekly,keep'), [s.ids[1]]);
  assert.deepEqual(await ids('--tag', 'weekly,daily'), []);
  assert.deepEqual(await ids('--tag', 'weekly', '--tag', 'daily'), s.ids);
  assert.equal((await ids('--host', 'server')).length, 1);
  assert.equal((await ids('--path', `${s.src}/`)).length, 3);
  assert.deepEqual(await ids('--path', '/elsewhere'), []);
  const text = await coffer(['snapshots', '--tag', 'keep'], s.env);
  assert.match(text.stdout, /\[weekly,keep\]\n$/);
  const none = await coffer(['snapshots', '--host', 'nobody'], s.env);
  assert.deepEqual([none.code, none.stdout, none.stderr], [0, '', 'no snapshot matches (of 3)\n']);
  // ls latest with --host picks that host's newest.
  const ls = await coffer(['ls', 'latest', '--host', 'server', '--json', s.src], s.env);
  assert.notEqual(JSON.parse(ls.stdout.split('\n')[0]!).snapshot, s.ids[1]);
});

test('coffer forget: --keep-within, --keep-tag, --group-by, filters, --dry-run shows what goes and why; bad durations', async (t) => {
  const s = await setup(t);
  // Older snapshots of the same paths from this host, and one from another host.
  const host = (JSON.parse((await coffer(['snapshots', '--json'], s.env)).stdout) as Array<{ hostname: string }>)[0]!.hostname;
  const now = Date.now();
  const old1 = await addSnapshot(s, s.ids[0]!, { time: new Date(now - 40 * 86_400_000).toISOString(), tags: [] });
  const old2 = await addSnapshot(s, s.ids[0]!, { time: new Date(now - 400 * 86_400_000).toISOString(), tags: ['keep'] });
  const other = await addSnapshot(s, s.ids[0]!, { time: new Date(now - 500 * 86_400_000).toISOString(), hostname: `not-${host}`, tags: [] });

  const dry = await spawned(['forget', '--keep-within', '30d', '--dry-run'], s.env);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stderr, /host .*: keeping 2, would remove 2\n/);
  assert.match(dry.stderr, /host not-.*: keeping 1, would remove 0\n/, 'another host is its own group: its newest is within 30d of itself');
  assert.match(dry.stderr, new RegExp(`would remove snapshot ${old1.slice(0, 8)}`));
  assert.match(dry.stderr, new RegExp(`would remove snapshot ${old2.slice(0, 8)}`));
  assert.match(dry.stderr, /keep +[0-9a-f]{8} \(.*\): within 30d/);
  assert.equal((JSON.parse((await coffer(['snapshots', '--json'], s.env)).stdout) as unknown[]).length, 5, 'dry run removed nothing');

  const j = JSON.parse((await coffer(['forget', '--keep-within', '30d', '--keep-tag', 'keep', '--json'], s.env)).stdout) as {
    removed: string[];
    groups: Array<{ host: string; keep: Array<{ id: string; reasons: string[] }> }>;
  };
  assert.deepEqual(j.removed, [old1]);
  const mine = j.groups.find((g) => g.host === host)!;
  assert.deepEqual(mine.keep.find((k) => k.id === old2)!.reasons, ['has tag keep']);
  assert.deepEqual(mine.keep.find((k) => k.id === s.ids[1])!.reasons, ['within 30d', 'has tag keep']);

  // One group for everything: keep-last 1 keeps the newest of all; --host limits what is considered.
  const g = JSON.parse((await coffer(['forget', '--keep-last', '1', '--group-by', '', '--host', `not-${host}`, '--dry-run', '--json'], s.env)).stdout) as { removed: string[]; groups: unknown[] };
  assert.deepEqual([g.removed, g.groups.length], [[], 1]);
  const byTags = JSON.parse((await coffer(['forget', '--keep-last', '1', '--group-by', 'host,paths,tags', '--dry-run', '--json'], s.env)).stdout) as { removed: string[] };
  assert.deepEqual(byTags.removed, [], 'each tag set is its own group of one');

  assertError(await coffer(['forget', '--keep-within', '1w'], s.env), 2, /--keep-within: '1w' is not a duration: use numbers with units y, m, d, h/);
  assertError(await coffer(['forget', '--keep-within-daily', 'forever'], s.env), 2, /--keep-within-daily: 'forever' is not a duration/);
  assertError(await coffer(['forget', '--keep-last', '1', '--group-by', 'colour'], s.env), 2, /--group-by: unknown field 'colour'/);
  assertError(await coffer(['forget', other.slice(0, 8), '--keep-last', '1'], s.env), 2, /forget: give snapshot IDs or a policy \(--keep-last\), not both/);
  assertError(await coffer(['forget', '--tag', 'daily'], s.env), 2, /no retention policy given/);
  assert.equal((JSON.parse((await coffer(['snapshots', '--json'], s.env)).stdout) as unknown[]).length, 4, 'the refused commands removed nothing');
});
