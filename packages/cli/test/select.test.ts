/**
 * Choosing what is stored and what comes back (issue 12), as transcripts of the real
 * `coffer` binary on real temporary directories: backup --exclude/--iexclude/
 * --exclude-file/--iexclude-file/--exclude-caches/--exclude-if-present/--one-file-system/
 * --files-from/--files-from-raw/--dry-run, backup --stdin/--stdin-from-command, and
 * restore --include/--exclude/--iinclude/--iexclude. Garbage gets one clear error line
 * and its documented exit code.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as nodeFs from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { assertError, tempDir } from './helpers.js';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const CONFIG_HOME = await fs.mkdtemp(join(tmpdir(), 'coffer-select-config-'));
process.on('exit', () => nodeFs.rmSync(CONFIG_HOME, { recursive: true, force: true }));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function coffer(args: string[], env: Record<string, string>, stdin?: Buffer): Promise<Result> {
  const base: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: CONFIG_HOME };
  delete base.COFFER_KEY;
  delete base.COFFER_REPOSITORY;
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args], { env: { ...base, ...env }, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      assert.doesNotMatch(stderr, /\n {4}at |internal error/, `coffer ${args.join(' ')}:\n${stderr}`);
      resolve({ code, stdout, stderr });
    });
    if (stdin) child.stdin!.end(stdin);
    else child.stdin!.end();
  });
}

/** Every path below `root`, relative, sorted. */
async function listing(root: string | Buffer): Promise<string[]> {
  const out: string[] = [];
  const walk = async (abs: Buffer, rel: string) => {
    for (const n of await fs.readdir(abs, { encoding: 'buffer' })) {
      const r = rel ? `${rel}/${n.toString('latin1')}` : n.toString('latin1');
      out.push(r);
      const c = Buffer.concat([abs, Buffer.from('/'), n]);
      if ((await fs.lstat(c)).isDirectory()) await walk(c, r);
    }
  };
  await walk(Buffer.from(root), '');
  return out.sort();
}

interface Setup {
  base: string;
  repo: string;
  src: string;
  env: Record<string, string>;
}

async function setup(t: TestContext): Promise<Setup> {
  const base = await tempDir(t, 'select-base');
  const repo = join(base, 'repo');
  const gen = await coffer(['key', 'generate', '-q'], {});
  const env = { COFFER_REPOSITORY: repo, COFFER_KEY: gen.stdout.trim() };
  assert.equal((await coffer(['init', '-q'], env)).code, 0);
  const src = join(base, 'src');
  const w = async (p: string, data: string | Buffer = p) => {
    await fs.mkdir(join(src, p, '..'), { recursive: true });
    await fs.writeFile(join(src, p), data);
  };
  await w('notes.txt');
  await w('Photo.JPG');
  await w('photo2.jpg');
  await w('app/main.o');
  await w('app/main.c');
  await w('app/node_modules/dep/index.js');
  await w('cache/CACHEDIR.TAG', 'Signature: 8a477f597d28d172789f06886806bc55\n');
  await w('cache/blob');
  await w('private/.nobackup', '');
  await w('private/diary.txt');
  return { base, repo, src, env };
}

/** Backs up with `flags`, restores the latest snapshot, returns what came back under src/. */
async function storedWith(t: TestContext, s: Setup, flags: string[]): Promise<string[]> {
  const b = await coffer(['backup', s.src, ...flags], s.env);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout, /^[0-9a-f]{64}\n$/);
  const out = await tempDir(t, 'select-out');
  const r = await coffer(['restore', 'latest', '--target', out, '-q'], s.env);
  assert.equal(r.code, 0, r.stderr);
  return listing(join(out, 'src'));
}

test('backup --exclude and --iexclude: restic patterns, "!" re-includes', async (t) => {
  const s = await setup(t);
  const got = await storedWith(t, s, ['--exclude', '*.o', '--exclude', 'node_modules', '--iexclude', '*.JPG', '--exclude', `${s.src}/cache`, '--iexclude', '!PHOTO2.jpg', '--exclude', '!Photo.JPG']);
  // Case-sensitive and case-insensitive patterns are two lists (as in restic): '!' works within its own.
  assert.deepEqual(got, ['app', 'app/main.c', 'notes.txt', 'photo2.jpg', 'private', 'private/.nobackup', 'private/diary.txt']);
});

test('backup --exclude-file and --iexclude-file: one pattern a line, comments ignored', async (t) => {
  const s = await setup(t);
  await fs.writeFile(join(s.base, 'ex'), '# build output\n*.o\n\napp/node_modules\n');
  await fs.writeFile(join(s.base, 'iex'), 'PRIVATE\n*.jpg\n');
  const got = await storedWith(t, s, ['--exclude-file', join(s.base, 'ex'), '--iexclude-file', join(s.base, 'iex')]);
  assert.deepEqual(got, ['app', 'app/main.c', 'cache', 'cache/CACHEDIR.TAG', 'cache/blob', 'notes.txt']);
});

test('backup --exclude-caches keeps the tag file only; --exclude-if-present leaves the directory out', async (t) => {
  const s = await setup(t);
  const got = await storedWith(t, s, ['--exclude-caches', '--exclude-if-present', '.nobackup']);
  assert.ok(got.includes('cache/CACHEDIR.TAG'));
  assert.ok(!got.includes('cache/blob'));
  assert.ok(!got.some((p) => p.startsWith('private')), got.join(' '));
  assert.ok(got.includes('app/node_modules/dep/index.js'));
});

test('backup --one-file-system: a mount point below the source is stored empty', async (t) => {
  const s = await setup(t);
  const mnt = join(s.src, 'mnt');
  await fs.mkdir(mnt);
  // A real tmpfs in a private mount namespace (root only; skipped elsewhere).
  const probe = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none ${mnt}`]);
  if (probe.status !== 0) return t.skip('needs unshare -m and mount (root)');
  const script = (flags: string) =>
    `mount -t tmpfs none ${mnt} && echo other-fs > ${mnt}/f && ${process.execPath} ${BIN} backup ${s.src} -q ${flags}`;
  const run = (flags: string) => spawnSync('unshare', ['-m', 'sh', '-c', script(flags)], { env: { ...process.env, ...s.env, XDG_CONFIG_HOME: CONFIG_HOME }, encoding: 'utf8' });
  const one = run('--one-file-system');
  assert.equal(one.status, 0, one.stderr);
  const out = await tempDir(t, 'select-out');
  assert.equal((await coffer(['restore', one.stdout.trim(), '--target', out, '-q'], s.env)).code, 0);
  const got = await listing(join(out, 'src'));
  assert.ok(got.includes('mnt') && !got.includes('mnt/f'), got.join(' '));
  const all = run('');
  assert.equal(all.status, 0, all.stderr);
  const out2 = await tempDir(t, 'select-out2');
  assert.equal((await coffer(['restore', all.stdout.trim(), '--target', out2, '-q'], s.env)).code, 0);
  assert.ok((await listing(join(out2, 'src'))).includes('mnt/f'), 'without the flag the tmpfs is read');
});

test('backup --files-from: the listed paths under their common directory; --files-from-raw: names that are not UTF-8', async (t) => {
  const s = await setup(t);
  const latin1 = Buffer.concat([Buffer.from(join(s.src, 'app') + '/caf'), Buffer.of(0xe9)]);
  await fs.writeFile(latin1, 'latin-1');
  await fs.writeFile(join(s.base, 'list'), `# what to keep\n${s.src}/notes.txt\n${s.src}/app/main.c\n${s.src}/cache\n`);
  const b = await coffer(['backup', '--files-from', join(s.base, 'list'), '-q', '--json'], s.env);
  assert.equal(b.code, 0, b.stderr);
  const out = await tempDir(t, 'select-out');
  assert.equal((await coffer(['restore', 'latest', '--target', out, '-q'], s.env)).code, 0);
  assert.deepEqual(await listing(join(out, 'src')), ['app', 'app/main.c', 'cache', 'cache/CACHEDIR.TAG', 'cache/blob', 'notes.txt']);

  await fs.writeFile(join(s.base, 'raw'), Buffer.concat([latin1, Buffer.of(0), Buffer.from(`${s.src}/Photo.JPG`), Buffer.of(0)]));
  const r = await coffer(['backup', '--files-from-raw', join(s.base, 'raw'), '-q'], s.env);
  assert.equal(r.code, 0, r.stderr);
  const out2 = await tempDir(t, 'select-out2');
  assert.equal((await coffer(['restore', r.stdout.trim(), '--target', out2, '-q'], s.env)).code, 0);
  assert.deepEqual(await listing(join(out2, 'src')), ['Photo.JPG', 'app', 'app/caf\xe9']);
});

test('backup --dry-run: says what would be stored, writes nothing', async (t) => {
  const s = await setup(t);
  const names = async () => (await Promise.all(['snapshots', 'index', 'data', 'locks'].map((d) => listing(join(s.repo, d)).catch(() => [])))).flat();
  const before = await names();
  const r = await coffer(['backup', s.src, '--dry-run', '--exclude', 'node_modules', '--exclude-caches'], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '', 'no snapshot ID: none was saved');
  assert.match(r.stderr, /would read new file src\/notes\.txt \(\d+ B\)/);
  assert.doesNotMatch(r.stderr, /node_modules|cache\/blob/);
  assert.match(r.stderr, /dry run: would store 8 files, 4 dirs, .*nothing was written/);
  const j = await coffer(['backup', s.src, '--dry-run', '--json'], s.env);
  assert.equal(j.code, 0, j.stderr);
  const d = JSON.parse(j.stdout) as { dryRun: boolean; files: number; readFiles: number };
  assert.deepEqual([d.dryRun, d.files, d.readFiles], [true, 10, 10]);
  assert.deepEqual(await names(), before, 'the repository is unchanged');
});

test('backup --stdin --stdin-filename: a few MB piped in, restored byte-identical; --json', async (t) => {
  const s = await setup(t);
  const data = randomBytes(3 * 1024 * 1024 + 5);
  const b = await coffer(['backup', '--stdin', '--stdin-filename', 'dump.sql', '--json', '--tag', 'db'], s.env, data);
  assert.equal(b.code, 0, b.stderr);
  const j = JSON.parse(b.stdout) as { id: string; files: number; bytes: number };
  assert.deepEqual([j.files, j.bytes], [1, data.length]);
  const out = await tempDir(t, 'select-out');
  const r = await coffer(['restore', j.id, '--target', out, '-q'], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.ok((await fs.readFile(join(out, 'dump.sql'))).equals(data));
  assert.deepEqual(await listing(out), ['dump.sql']);
});

test('backup --stdin-from-command: the command\'s output; a failing command saves no snapshot (exit 1)', async (t) => {
  const s = await setup(t);
  const ok = await coffer(['backup', '--stdin-from-command', '--stdin-filename', 'ls.txt', '--', 'sh', '-c', 'printf "from a command"'], s.env);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /saved: ls\.txt, 14 B from sh/);
  const out = await tempDir(t, 'select-out');
  assert.equal((await coffer(['restore', ok.stdout.trim(), '--target', out, '-q'], s.env)).code, 0);
  assert.equal(await fs.readFile(join(out, 'ls.txt'), 'utf8'), 'from a command');
  const fail = await coffer(['backup', '--stdin-from-command', '--', 'sh', '-c', 'echo partial; exit 7'], s.env);
  assertError(fail, 1, /sh failed \(exit code 7\): no snapshot was saved/);
  const missing = await coffer(['backup', '--stdin-from-command', '--', 'no-such-command-coffer'], s.env);
  assertError(missing, 1, /cannot run no-such-command-coffer: no such command/);
  const snaps = await coffer(['snapshots', '--json'], s.env);
  assert.equal((JSON.parse(snaps.stdout) as unknown[]).length, 1, 'only the good one');
});

test('backup --stdin refuses a terminal on standard input', async (t) => {
  const s = await setup(t);
  // `script` gives the command a pseudo-terminal as stdin.
  const cmd = `${process.execPath} ${BIN} backup --stdin`;
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, ...s.env, XDG_CONFIG_HOME: CONFIG_HOME }, encoding: 'utf8', input: '' });
  if (r.error) return t.skip('needs script(1)');
  assert.equal(r.status, 2, r.stdout);
  assert.match(r.stdout, /coffer: error: backup: --stdin reads standard input, which is a terminal: pipe the data in/);
});

test('backup --stdin refuses a directory on standard input (node reads one as empty: an empty snapshot, exit 0)', async (t) => {
  const s = await setup(t);
  const dir = nodeFs.openSync(s.src, 'r');
  t.after(() => nodeFs.closeSync(dir));
  const r = spawnSync(process.execPath, [BIN, 'backup', '--stdin'], { env: { ...process.env, ...s.env, XDG_CONFIG_HOME: CONFIG_HOME }, encoding: 'utf8', stdio: [dir, 'pipe', 'pipe'] });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /coffer: error: backup: --stdin reads standard input, which is a directory/);
  assert.equal(r.stdout, '');
  const snaps = await coffer(['snapshots', '--json'], s.env);
  assert.deepEqual(JSON.parse(snaps.stdout), []);
});

test('restore --include one file: that file and its parents only', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', s.src, '-q'], s.env)).code, 0);
  const out = await tempDir(t, 'select-out');
  const r = await coffer(['restore', 'latest', '--target', out, '--include', 'index.js', '--json'], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { files: number }).files, 1);
  assert.deepEqual(await listing(out), ['src', 'src/app', 'src/app/node_modules', 'src/app/node_modules/dep', 'src/app/node_modules/dep/index.js']);
  assert.equal(await fs.readFile(join(out, 'src/app/node_modules/dep/index.js'), 'utf8'), 'app/node_modules/dep/index.js');
});

test('restore --include a directory with --exclude inside it; --iinclude/--iexclude; anchored to the backed-up path', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', s.src, '-q'], s.env)).code, 0);
  const out = await tempDir(t, 'select-out');
  const r = await coffer(['restore', 'latest', '--target', out, '-q', '--include', `${s.src}/app`, '--exclude', 'node_modules', '--iinclude', '*.jpg', '--iexclude', 'PHOTO2.JPG'], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await listing(join(out, 'src')), ['Photo.JPG', 'app', 'app/main.c', 'app/main.o']);
  const none = await coffer(['restore', 'latest', '--target', join(out, 'none'), '--include', 'nothing-like-this'], s.env);
  assertError(none, 1, /nothing in snapshot [0-9a-f]{8} matches the --include\/--exclude patterns/);
});

test('backup --exclude-larger-than SIZE (restic): regular files larger than SIZE are left out, the rest kept; --dry-run agrees; a second backup drops a file that grew', async (t) => {
  const s = await setup(t);
  await fs.writeFile(join(s.src, 'exactly-1k.bin'), Buffer.alloc(1024, 1));
  await fs.writeFile(join(s.src, 'over-1k.bin'), Buffer.alloc(1025, 2));
  await fs.writeFile(join(s.src, 'app', 'big.iso'), Buffer.alloc(3 << 20, 3));
  await fs.writeFile(join(s.src, 'empty'), '');
  // A symlink whose target path is longer than the limit: its size is the path's length, not data.
  await fs.symlink(`${'x'.repeat(1500)}`, join(s.src, 'long-link'));
  const dry = await coffer(['backup', s.src, '--exclude-larger-than', '1K', '--dry-run', '--json'], s.env);
  assert.equal(dry.code, 0, dry.stderr);
  const d = JSON.parse(dry.stdout) as { files: number };
  const got = await storedWith(t, s, ['--exclude-larger-than', '1k']);
  assert.ok(got.includes('exactly-1k.bin'), 'a file of exactly SIZE is kept (larger than, as restic)');
  assert.ok(got.includes('empty') && got.includes('notes.txt') && got.includes('long-link'));
  assert.ok(!got.includes('over-1k.bin') && !got.includes('app/big.iso'), got.join(' '));
  assert.ok(got.includes('app') && got.includes('app/main.c'), 'directories are never left out for their size');
  assert.equal(d.files, got.filter((p) => !['app', 'app/node_modules', 'app/node_modules/dep', 'cache', 'private', 'long-link'].includes(p)).length, 'the dry run counts the same files');
  // Units: 1.5M keeps the 3 MiB file out, 4MiB lets it in; 1025 (bytes) keeps over-1k.bin.
  assert.ok(!(await storedWith(t, s, ['--exclude-larger-than', '1.5M'])).includes('app/big.iso'));
  const all = await storedWith(t, s, ['--exclude-larger-than', '4MiB']);
  assert.ok(all.includes('app/big.iso') && all.includes('over-1k.bin'));
  assert.ok((await storedWith(t, s, ['--exclude-larger-than', '1025'])).includes('over-1k.bin'));
  // A file that grows past the limit is left out of the next backup (its parent had it).
  await fs.writeFile(join(s.src, 'notes.txt'), Buffer.alloc(5000, 4));
  assert.ok(!(await storedWith(t, s, ['--exclude-larger-than', '4K'])).includes('notes.txt'));
});

test('backup --ignore-inode / --ignore-ctime (restic): a file put back with a new inode, same size and mtime, is read again only without --ignore-inode', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  const p = join(s.src, 'notes.txt');
  await fs.copyFile(p, `${p}.tmp`);
  execFileSync('touch', ['-r', p, `${p}.tmp`]);
  await fs.rename(`${p}.tmp`, p);
  const reads = async (flags: string[]): Promise<number> => {
    const r = await coffer(['backup', s.src, '--dry-run', '--json', ...flags], s.env);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { readFiles: number }).readFiles;
  };
  assert.equal(await reads([]), 1);
  assert.equal(await reads(['--ignore-ctime']), 1, 'the inode changed');
  assert.equal(await reads(['--ignore-inode']), 0, '--ignore-inode ignores the ctime too (as restic)');
  const b = await coffer(['backup', s.src, '--ignore-inode', '--json'], s.env);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(await reads([]), 0, 'the snapshot records the inode and ctime the file has now');
});

test('garbage: bad pattern files, unreadable lists, bad names, flags that do not mix', async (t) => {
  const s = await setup(t);
  await fs.writeFile(join(s.base, 'bin'), Buffer.of(0xff, 0xfe, 0x2a, 0x0a));
  await fs.writeFile(join(s.base, 'bad'), '*.o\n!\n');
  const cases: Array<[string[], number, RegExp]> = [
    [['backup', s.src, '--exclude-file', join(s.base, 'missing')], 2, /cannot read pattern file .*missing: no such file/],
    [['backup', s.src, '--exclude-file', join(s.base, 'bin')], 2, /pattern file .*bin is not UTF-8 text/],
    [['backup', s.src, '--iexclude-file', join(s.base, 'bad')], 2, /bad:2: empty pattern '!'/],
    [['backup', s.src, '--exclude', ''], 2, /empty pattern/],
    [['backup', s.src, '--exclude-if-present', 'a/b'], 2, /--exclude-if-present takes a file name/],
    [['backup', s.src, '--exclude-larger-than', 'big'], 2, /--exclude-larger-than takes a size such as 500M or 2G .*not 'big'/],
    [['backup', s.src, '--exclude-larger-than=-1'], 2, /--exclude-larger-than takes a size/],
    [['backup', s.src, '--exclude-larger-than', '5Q'], 2, /--exclude-larger-than takes a size/],
    [['backup', s.src, '--exclude-larger-than', ''], 2, /--exclude-larger-than takes a size/],
    [['backup', s.src, '--exclude-larger-than', '99999999999999T'], 2, /--exclude-larger-than takes a size/],
    [['backup', s.src, '--exclude-larger-than', '0'], 2, /--exclude-larger-than 0 would leave out every file/],
    [['backup', '--stdin', '--exclude-larger-than', '1M'], 2, /--exclude-larger-than does not apply to a backup of standard input/],
    [['backup', '--stdin', '--ignore-inode'], 2, /--ignore-inode does not apply to a backup of standard input/],
    [['restore', 'latest', '--target', s.base, '--ignore-ctime'], 2, /option --ignore-ctime does not apply here/],
    [['backup', '--files-from', join(s.base, 'missing')], 2, /cannot read the list of files .*missing: no such file/],
    [['backup', '--files-from', s.base], 2, /it is a directory/],
    [['backup', '--files-from', join(s.base, 'bin')], 2, /not UTF-8 text: for names that are not UTF-8 use --files-from-raw/],
    [['backup', '--stdin', '--stdin-filename', 'a/b'], 2, /--stdin-filename must be a plain file name/],
    [['backup', '--stdin', s.src], 2, /--stdin takes no paths/],
    [['backup', '--stdin', '--exclude', 'x'], 2, /--exclude does not apply to a backup of standard input/],
    [['backup', s.src, '--stdin-filename', 'x'], 2, /--stdin-filename goes with --stdin/],
    [['backup', '--stdin-from-command'], 2, /needs the command/],
    [['restore', 'latest', '--target', s.base, '--include', '!'], 2, /empty pattern/],
    [['restore', 'latest', '--target', s.base, '--exclude-caches'], 2, /option --exclude-caches does not apply here/],
  ];
  for (const [args, code, msg] of cases) assertError(await coffer(args, s.env), code, msg);
  await fs.writeFile(join(s.base, 'gone'), `${s.src}/notes.txt\n${s.src}/not-there\n`);
  assertError(await coffer(['backup', '--files-from', join(s.base, 'gone')], s.env), 1, /not-there \(listed in .*gone\): no such file or directory/);
  const snaps = await coffer(['snapshots', '--json'], s.env);
  assert.deepEqual(JSON.parse(snaps.stdout), [], 'no snapshot was made by any of them');
});

test('coffer backup --help lists the selection flags', async () => {
  const r = await coffer(['backup', '--help'], {});
  assert.equal(r.code, 0);
  for (const f of ['--exclude P', '--iexclude-file F', '--exclude-caches', '--exclude-larger-than SIZE', '--ignore-inode', '--ignore-ctime', '--one-file-system', '--files-from-raw', '--dry-run', '--stdin-filename', '--stdin-from-command']) assert.ok(r.stdout.includes(f), f);
  const rr = await coffer(['restore', '--help'], {});
  for (const f of ['--include P', '--iinclude P', '--iexclude P']) assert.ok(rr.stdout.includes(f), f);
});

test('backup --force reads every file again; --parent SNAPSHOT compares with that snapshot; garbage is a usage error', async (t) => {
  const s = await setup(t);
  type Saved = { id: string; files: number; read: { files: number } };
  const save = async (...args: string[]) => {
    const r = await coffer(['backup', s.src, '--json', ...args], s.env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Saved;
  };
  const first = await save();
  assert.equal(first.read.files, first.files, 'a first backup reads every file');
  assert.equal((await save()).read.files, 0, 'unchanged: nothing read (the latest snapshot is the parent)');
  const forced = await save('--force');
  assert.equal(forced.read.files, first.files, '--force reads every file again');
  const dry = JSON.parse((await coffer(['backup', s.src, '--dry-run', '--json', '--force'], s.env)).stdout) as { readFiles: number; parent?: string };
  assert.deepEqual([dry.readFiles, dry.parent], [first.files, undefined]);

  // Another set of paths (src and extra): no snapshot of that set, so no parent of its own;
  // --parent names src's first snapshot, whose files (same names, same inodes) are not read.
  const extra = join(s.base, 'extra');
  await fs.mkdir(extra);
  await fs.writeFile(join(extra, 'new.txt'), 'new\n');
  const both = async (...args: string[]) => {
    const r = await coffer(['backup', s.src, extra, '--json', ...args], s.env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Saved;
  };
  assert.equal((await both()).read.files, first.files + 1, 'no parent for a new set of paths: every file read');
  assert.equal((await both('--parent', first.id.slice(0, 10))).read.files, 1, 'with --parent (an ID prefix) only the file the parent lacks is read');
  assert.equal((await both('--parent', 'latest')).read.files, 0, '--parent latest: the newest snapshot (the one just made) is the parent');
  // A copy of src (other inodes and ctimes) with src's snapshot as parent: nothing is taken on trust.
  const copy = join(s.base, 'copy', 'src');
  await fs.cp(s.src, copy, { recursive: true, preserveTimestamps: true });
  const crossed = JSON.parse((await coffer(['backup', copy, '--json', '--parent', first.id], s.env)).stdout) as Saved;
  assert.equal(crossed.read.files, first.files, 'a file whose inode or ctime differs from the parent\'s is read');
  const dryParent = JSON.parse((await coffer(['backup', s.src, extra, '--dry-run', '--json', '--parent', first.id], s.env)).stdout) as { readFiles: number; parent?: string };
  assert.deepEqual([dryParent.readFiles, dryParent.parent], [1, first.id]);

  assertError(await coffer(['backup', s.src, '--force', '--parent', first.id], s.env), 2, /--force .* --parent|give one of them/);
  assertError(await coffer(['backup', s.src, '--parent', 'ffffffffff'], s.env), 1, /no snapshot ffffffffff/);
  assertError(await coffer(['backup', s.src, '--parent', 'not hex!'], s.env), 2, /snapshot|ID/i);
  assertError(await coffer(['backup', '--stdin', '--force'], s.env), 2, /--stdin/);
});

test('backup --host NAME --time T (restic): the snapshot says that host and time, and that host\'s latest backup is the parent; bad values are usage errors', async (t) => {
  const s = await setup(t);
  const first = await coffer(['backup', s.src, '-q', '--host', 'laptop', '--time', '2025-03-04 05:06:07'], s.env);
  assert.equal(first.code, 0, first.stderr);
  const snaps = JSON.parse((await coffer(['snapshots', '--json', '--host', 'laptop'], s.env)).stdout) as Array<{ hostname: string; time: string }>;
  assert.equal(snaps.length, 1);
  assert.equal(snaps[0]!.hostname, 'laptop');
  assert.equal(snaps[0]!.time, '2025-03-04T05:06:07.000Z');
  // The same host: the first is the parent (nothing is read again). Another host: none.
  const again = await coffer(['backup', s.src, '--dry-run', '--json', '--host', 'laptop'], s.env);
  assert.equal((JSON.parse(again.stdout) as { readFiles: number }).readFiles, 0);
  const other = await coffer(['backup', s.src, '--dry-run', '--json'], s.env);
  assert.ok((JSON.parse(other.stdout) as { readFiles: number }).readFiles > 0, 'this machine has no backup of these paths yet');
  const piped = await coffer(['backup', '--stdin', '--stdin-filename', 'x.txt', '--host', 'db1', '--time', '2024-12-31T23:00:00Z', '-q'], s.env, Buffer.from('data'));
  assert.equal(piped.code, 0, piped.stderr);
  const db = JSON.parse((await coffer(['snapshots', '--json', '--host', 'db1'], s.env)).stdout) as Array<{ time: string }>;
  assert.deepEqual(db.map((x) => x.time), ['2024-12-31T23:00:00.000Z']);
  assertError(await coffer(['backup', s.src, '--host', ''], s.env), 2, /--host: "" is not a host name/);
  assertError(await coffer(['backup', s.src, '--host', 'a', '--host', 'b'], s.env), 2, /--host takes one name/);
  assertError(await coffer(['backup', s.src, '--host', 'a\nb'], s.env), 2, /is not a host name/);
  assertError(await coffer(['backup', s.src, '--time', 'yesterday'], s.env), 2, /--time: 'yesterday' is not a time/);
  assertError(await coffer(['backup', s.src, '--time', '2025-02-30'], s.env), 2, /--time: '2025-02-30' is not a time/);
  assert.equal((JSON.parse((await coffer(['snapshots', '--json'], s.env)).stdout) as unknown[]).length, 2, 'no snapshot from a refused command');
});

test('backup --stdin-from-command: SIGTERM to coffer alone ends the command too (it was left running)', async (t) => {
  const s = await setup(t);
  const pidFile = join(s.base, 'child.pid');
  const child = spawn(process.execPath, [BIN, 'backup', '-q', '--stdin-from-command', '--', 'sh', '-c', `echo $$ > ${pidFile}; exec sleep 60`], {
    env: { ...process.env, ...s.env, XDG_CONFIG_HOME: CONFIG_HOME },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let pid = 0;
  for (const end = Date.now() + 20_000; pid === 0 && Date.now() < end; await new Promise((r) => setTimeout(r, 20))) {
    pid = Number((await fs.readFile(pidFile, 'utf8').catch(() => '')).trim()) || 0;
  }
  assert.ok(pid > 0, 'the command started');
  child.kill('SIGTERM');
  assert.equal(await exited, 143, stderr);
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (const end = Date.now() + 5_000; alive() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
  if (alive()) process.kill(pid, 'SIGKILL');
  assert.equal(alive(), false, 'the command was left running');
  assert.deepEqual(JSON.parse((await coffer(['snapshots', '--json'], s.env)).stdout), [], 'no snapshot');
});
