/**
 * The data-safety behaviour of issue 10 as a person sees it, through the real binary:
 * descriptor limits, repositories with a bad object in them, lost indexes and repair,
 * lock-free reads, unknown storage schemes, and the rollback tripwire.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers.js';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs coffer with `ulimit -n` set first when `nofile` is given. */
function coffer(args: string[], env: Record<string, string>, opts: { nofile?: number; cwd?: string } = {}): Promise<Result> {
  const base = { ...process.env };
  delete base.COFFER_KEY;
  delete base.COFFER_REPOSITORY;
  const [file, argv] =
    opts.nofile === undefined
      ? [process.execPath, [BIN, ...args]]
      : ['bash', ['-c', `ulimit -n ${opts.nofile} && exec "$0" "$@"`, process.execPath, BIN, ...args]];
  return new Promise((resolve) => {
    execFile(file, argv, { env: { ...base, ...env }, cwd: opts.cwd, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      assert.doesNotMatch(stderr, /\n {4}at |internal error/, `coffer ${args.join(' ')}:\n${stderr}`);
      resolve({ code, stdout, stderr });
    });
  });
}

async function digest(root: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (p: string, rel: string) => {
    const st = await fs.lstat(p);
    h.update(`${rel}\0${st.isDirectory() ? 'd' : st.mode & 0o7777}\0`);
    if (st.isDirectory()) for (const n of (await fs.readdir(p)).sort()) await walk(join(p, n), `${rel}/${n}`);
    else h.update(await fs.readFile(p));
  };
  await walk(root, '');
  return h.digest('hex');
}

interface Setup {
  base: string;
  repo: string;
  src: string;
  env: Record<string, string>;
}

/** A repository (its own config dir, so the rollback state is the test's) and a source folder. */
async function setup(t: TestContext, files: Record<string, string> = { 'a.txt': 'hello\n', 'b.txt': 'world\n' }): Promise<Setup> {
  const base = await tempDir(t, 'safety-base');
  const repo = join(base, 'repo');
  const gen = await coffer(['key', 'generate', '-q'], {});
  const env = { COFFER_REPOSITORY: repo, COFFER_KEY: gen.stdout.trim(), XDG_CONFIG_HOME: join(base, 'config') };
  assert.equal((await coffer(['init', '-q'], env)).code, 0);
  const src = join(base, 'src');
  await fs.mkdir(src);
  for (const [name, text] of Object.entries(files)) await fs.writeFile(join(src, name), text);
  return { base, repo, src, env };
}

async function names(root: string, under: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const e of await fs.readdir(join(root, rel), { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(`${rel}/${e.name}`);
      else if (!e.name.startsWith('.')) out.push(`${rel}/${e.name}`);
    }
  };
  await walk(under);
  return out.sort();
}

const FD_FILES = Number(process.env.COFFER_TEST_FD_FILES ?? 3000);

test(`ulimit -n 256: backup, restore, check and prune of ${FD_FILES} small files`, async (t) => {
  const files: Record<string, string> = {};
  const s = await setup(t, files);
  // Many files in few directories: a restore used to keep one descriptor per file open.
  for (let d = 0; d < 6; d++) {
    await fs.mkdir(join(s.src, `dir${d}`));
    const writes: Array<Promise<void>> = [];
    for (let i = d; i < FD_FILES; i += 6) writes.push(fs.writeFile(join(s.src, `dir${d}`, `f${i}.txt`), `file ${i}\n`.repeat(1 + (i % 50))));
    await Promise.all(writes);
  }
  const started = Date.now();
  const b = await coffer(['backup', '-q', s.src], s.env, { nofile: 256 });
  assert.equal(b.code, 0, b.stderr);
  const target = join(s.base, 'out');
  const r = await coffer(['restore', 'latest', '-q', '--target', target], s.env, { nofile: 256 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await digest(join(target, 'src')), await digest(s.src));
  // --overwrite rewrites every file through the same bounded path.
  const o = await coffer(['restore', 'latest', '-q', '--overwrite', '--target', target], s.env, { nofile: 256 });
  assert.equal(o.code, 0, o.stderr);
  const c = await coffer(['check', '-q', '--read-data'], s.env, { nofile: 256 });
  assert.equal(c.code, 0, c.stderr);
  const p = await coffer(['prune', '-q'], s.env, { nofile: 256 });
  assert.equal(p.code, 0, p.stderr);
  t.diagnostic(`${FD_FILES} files under ulimit -n 256: ${((Date.now() - started) / 1000).toFixed(1)} s for backup, 2 restores, check, prune`);
});

test('--repo with an unknown scheme: prefix is refused and makes no directory', async (t) => {
  const cwd = await tempDir(t, 'safety-cwd');
  for (const repo of ['sftp:host:/backups', 'gs:bucket/x', 'rclone:remote:x']) {
    const r = await coffer(['init', '--repo', repo], {}, { cwd });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^coffer: error: repository '.*': unknown storage '[a-z0-9]+:'/);
  }
  assert.deepEqual(await fs.readdir(cwd), [], 'nothing made in the working directory');
  // The way out for a directory named with a colon.
  const ok = await coffer(['init', '-q', '--repo', './sftp:host:'], {}, { cwd });
  assert.equal(ok.code, 0, ok.stderr);
});

test('every snapshot unreadable: snapshots says so and exits 12, not "no snapshots yet" with exit 0', async (t) => {
  const s = await setup(t);
  const ids: string[] = [];
  for (let i = 0; i < 2; i++) {
    const b = await coffer(['backup', '-q', s.src], s.env);
    assert.equal(b.code, 0, b.stderr);
    ids.push(b.stdout.trim());
  }
  for (const id of ids) {
    const file = join(s.repo, 'snapshots', id);
    const bytes = await fs.readFile(file);
    bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0x55;
    await fs.chmod(file, 0o600).catch(() => {});
    await fs.writeFile(file, bytes);
  }
  const list = await coffer(['snapshots'], s.env);
  assert.equal(list.code, 12, list.stderr);
  assert.doesNotMatch(list.stderr, /no snapshots yet/);
  assert.match(list.stderr, /no snapshot can be read: 2 could not be/);
  for (const id of ids) assert.match(list.stderr, new RegExp(`warning: skipping snapshot ${id.slice(0, 8)}: `));
  const json = await coffer(['snapshots', '--json'], s.env);
  assert.equal(json.code, 12, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), []);
  // One readable again (forget the first): listed, the other warned about, exit 0.
  assert.equal((await coffer(['forget', ids[0]!.slice(0, 12)], s.env)).code, 0);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  const some = await coffer(['snapshots'], s.env);
  assert.equal(some.code, 0, some.stderr);
  assert.match(some.stderr, new RegExp(`warning: skipping snapshot ${ids[1]!.slice(0, 8)}: `));
});

test('a foreign snapshot (same key, sibling repository) is skipped with a warning; forget ID removes it without decrypting', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  // A sibling repository with the same key, and one of its snapshots copied in.
  const sibling = join(s.base, 'sibling');
  assert.equal((await coffer(['init', '-q', '--repo', sibling], s.env)).code, 0);
  const sb = await coffer(['backup', '-q', '--repo', sibling, s.src], s.env);
  const foreign = sb.stdout.trim();
  await fs.copyFile(join(sibling, 'snapshots', foreign), join(s.repo, 'snapshots', foreign));

  const list = await coffer(['snapshots', '--json'], s.env);
  assert.equal(list.code, 0, list.stderr);
  assert.equal((JSON.parse(list.stdout) as unknown[]).length, 1);
  assert.match(list.stderr, new RegExp(`^coffer: warning: skipping snapshot ${foreign.slice(0, 8)}: .*(failed authentication|wrong key)`, 'm'));
  const b = await coffer(['backup', '-q', s.src], s.env);
  assert.equal(b.code, 0, b.stderr);
  const r = await coffer(['restore', 'latest', '-q', '--target', join(s.base, 'out')], s.env);
  assert.equal(r.code, 0, r.stderr);
  // Prune refuses to guess what an unreadable snapshot needs, and says what to do.
  const p = await coffer(['prune'], s.env);
  assert.equal(p.code, 12);
  assert.match(p.stderr, new RegExp(`coffer forget ${foreign.slice(0, 8)}`));
  const f = await coffer(['forget', foreign.slice(0, 12)], s.env);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stderr, new RegExp(`removed snapshot ${foreign.slice(0, 8)}`));
  const again = await coffer(['snapshots'], s.env);
  assert.doesNotMatch(again.stderr, /warning/);
  assert.equal((await coffer(['prune', '-q'], s.env)).code, 0);
});

test('one flipped byte in an index: backup and restore go on with a warning, prune refuses, repair index fixes it', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  const [idx] = await names(s.repo, 'index');
  const path = join(s.repo, idx!);
  const bytes = await fs.readFile(path);
  bytes[bytes.length - 20]! ^= 1;
  await fs.writeFile(path, bytes);

  const b = await coffer(['backup', '-q', s.src], s.env);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, /coffer: warning: skipping index\/[0-9a-f]+ .*repair index/);
  const r = await coffer(['restore', 'latest', '-q', '--target', join(s.base, 'out')], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await digest(join(s.base, 'out', 'src')), await digest(s.src));
  const before = await names(s.repo, 'data');
  const p = await coffer(['prune'], s.env);
  assert.equal(p.code, 12);
  assert.match(p.stderr, /^coffer: error: prune refused, nothing was deleted: .*repair index/);
  assert.deepEqual(await names(s.repo, 'data'), before);
  const c = await coffer(['check'], s.env);
  assert.equal(c.code, 12);
  assert.match(c.stderr, /repair index/);
  assert.doesNotMatch(c.stderr, /coffer prune/);

  const rep = await coffer(['repair', 'index'], s.env);
  assert.equal(rep.code, 0, rep.stderr);
  assert.match(rep.stderr, /^indexed \d+ blobs in \d+ packs/m);
  assert.equal((await coffer(['check', '-q', '--read-data'], s.env)).code, 0);
  assert.equal((await coffer(['prune', '-q'], s.env)).code, 0);
});

test('a lost pack: check names the snapshot, prune refuses, repair snapshots rewrites it without the lost file', async (t) => {
  const s = await setup(t, { 'keep.txt': 'kept\n' });
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  const packsBefore = await names(s.repo, 'data');
  // Larger than a pack (8 MiB), so its first pack holds only its data, not the file list.
  await fs.writeFile(join(s.src, 'lost.bin'), randomBytes(9 << 20));
  const id = (await coffer(['backup', '-q', s.src], s.env)).stdout.trim();
  const newPacks = (await names(s.repo, 'data')).filter((p) => !packsBefore.includes(p));
  assert.equal(newPacks.length, 2);
  const sizes = await Promise.all(newPacks.map(async (p) => (await fs.stat(join(s.repo, p))).size));
  await fs.rm(join(s.repo, newPacks[sizes[0]! > sizes[1]! ? 0 : 1]!));

  const c = await coffer(['check'], s.env);
  assert.equal(c.code, 12);
  assert.match(c.stderr, new RegExp(`affects snapshot ${id.slice(0, 8)}`));
  const p = await coffer(['prune'], s.env);
  assert.equal(p.code, 12);
  assert.match(p.stderr, /prune refused, nothing was deleted/);

  const dry = await coffer(['repair', 'snapshots', '--dry-run'], s.env);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stderr, new RegExp(`snapshot ${id.slice(0, 8)}: would be rewritten without 1 file.*lost\\.bin`));
  const rep = await coffer(['repair', 'snapshots', '--forget'], s.env);
  assert.equal(rep.code, 0, rep.stderr);
  assert.match(rep.stderr, new RegExp(`snapshot ${id.slice(0, 8)}: rewritten as [0-9a-f]{8} without 1 file.*; the original was removed`));
  assert.equal((await coffer(['check', '-q', '--read-data'], s.env)).code, 0);
  assert.equal((await coffer(['prune', '-q'], s.env)).code, 0);
  const out = join(s.base, 'out');
  assert.equal((await coffer(['restore', 'latest', '-q', '--target', out], s.env)).code, 0);
  assert.deepEqual((await fs.readdir(join(out, 'src'))).sort(), ['keep.txt']);
});

test('--no-lock: restore and check read a repository where no lock can be taken; restore also does so by itself, with a warning', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  // No room for a lock: locks/ is a file, so writing a lock fails like a full disk does.
  await fs.rm(join(s.repo, 'locks'), { recursive: true, force: true });
  await fs.writeFile(join(s.repo, 'locks'), '');
  // Without --no-lock, restore reads without a lock by itself, and says so.
  const auto = join(s.base, 'auto');
  const unlocked = await coffer(['restore', 'latest', '--target', auto], s.env);
  assert.equal(unlocked.code, 0, unlocked.stderr);
  assert.match(unlocked.stderr, /^coffer: warning: .*reading without a lock \(the repository can't be written/m);
  assert.doesNotMatch(unlocked.stderr, /not restored exactly/);
  assert.equal(await digest(join(auto, 'src')), await digest(s.src));
  // Asked for: no warning.
  const out = join(s.base, 'out');
  const r = await coffer(['restore', 'latest', '-q', '--no-lock', '--target', out], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /without a lock/);
  assert.equal(await digest(join(out, 'src')), await digest(s.src));
  assert.equal((await coffer(['check', '-q', '--no-lock'], s.env)).code, 0);
  assert.equal((await coffer(['check'], s.env)).code, 14);
});

test('rollback tripwire: snapshots this device saw that vanish (the newest, after a rollback) are warned about once; its own forgets are not', async (t) => {
  const s = await setup(t);
  const first = (await coffer(['backup', '-q', s.src], s.env)).stdout.trim();
  await fs.writeFile(join(s.src, 'c.txt'), 'more\n');
  const second = (await coffer(['backup', '-q', s.src], s.env)).stdout.trim();
  const quiet = await coffer(['snapshots'], s.env);
  assert.doesNotMatch(quiet.stderr, /warning/);
  // The storage is rolled back: the newest snapshot disappears.
  const saved = await fs.readFile(join(s.repo, 'snapshots', second));
  await fs.rm(join(s.repo, 'snapshots', second));
  const out = join(s.base, 'out');
  const r = await coffer(['restore', 'latest', '-q', '--target', out], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`^coffer: warning: 1 snapshot\\(s\\) this device saw .* are gone \\(${second.slice(0, 8)} of .*rolled back`, 'm'));
  assert.doesNotMatch((await coffer(['snapshots'], s.env)).stderr, /warning/, 'warned once');
  // A forget on this device is not a rollback.
  await fs.writeFile(join(s.repo, 'snapshots', second), saved);
  assert.equal((await coffer(['snapshots', '-q'], s.env)).code, 0);
  const f = await coffer(['forget', '-q', first], s.env);
  assert.equal(f.code, 0, f.stderr);
  assert.doesNotMatch(f.stderr + (await coffer(['snapshots'], s.env)).stderr, /warning/);
});

test('a user\'s slips are refused, nothing lost: forget with 0-valued or unmatched rules, backup "", --tag a,b is two tags, a restore target that is a file', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', '-q', s.src, '--tag', 'daily,important'], s.env)).code, 0);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  const count = async () => JSON.parse((await coffer(['snapshots', '--json'], s.env)).stdout).length as number;
  // --tag a,b: two tags, each found by the filters (a stored "a,b" matched nothing).
  const tagged = JSON.parse((await coffer(['snapshots', '--json', '--tag', 'important'], s.env)).stdout) as Array<{ tags: string[] }>;
  assert.equal(tagged.length, 1);
  assert.deepEqual(tagged[0]!.tags, ['daily', 'important']);
  // Rules of 0 are no rules (as restic reads them): refused, like an empty policy.
  for (const zero of [['--keep-last', '0'], ['--keep-daily', '0'], ['--keep-within', '0d'], ['--keep-within-daily', '0h']]) {
    const r = await coffer(['forget', ...zero, '--prune'], s.env);
    assert.equal(r.code, 2, `forget ${zero.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /refusing to remove everything/);
  }
  // A tag rule that keeps nothing (a typo) is refused; spelled right, it keeps its snapshot.
  const typo = await coffer(['forget', '--keep-tag', 'importnat'], s.env);
  assert.equal(typo.code, 2, typo.stderr);
  assert.match(typo.stderr, /keeps no snapshot \(no snapshot has importnat\)/);
  assert.equal(await count(), 2, 'nothing was removed');
  assert.equal((await coffer(['forget', '-q', '--keep-tag', 'important'], s.env)).code, 0);
  assert.equal(await count(), 1, 'the tagged one kept');
  // An empty path (an unset variable) is not the current directory.
  const empty = await coffer(['backup', '-q', ''], s.env, { cwd: s.base });
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /an empty path was given/);
  assert.equal(await count(), 1);
  // A restore target that is a file, or lies under one: one clear line, exit 2, the file untouched.
  const afile = join(s.base, 'afile');
  await fs.writeFile(afile, 'mine\n');
  for (const target of [afile, join(afile, 'sub')]) {
    const r = await coffer(['restore', 'latest', '--target', target], s.env);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^coffer: error: restore target .*afile.*: a file is (there|in its path), not a directory/m);
  }
  assert.equal(await fs.readFile(afile, 'utf8'), 'mine\n');
  // A --target or --repo whose bytes are not UTF-8 reaches coffer as U+FFFD: refused, not a
  // directory of another name made. (Through a shell: a JS string cannot hold such bytes.)
  const base = { ...process.env, ...s.env };
  for (const args of [['restore', 'latest', '--target', 'PATH'], ['init', '--repo', 'PATH']]) {
    const r = spawnSync('bash', ['-c', `cd "$1" && shift && p=$(printf 'dir-\\xff') && exec "$@" "\${p}"`, 'bash', s.base, process.execPath, BIN, ...args.slice(0, -1)], { env: base, encoding: 'utf8' });
    assert.equal(r.status, 2, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, /not UTF-8/);
  }
  assert.deepEqual((await fs.readdir(s.base)).filter((n) => n.startsWith('dir-')), [], 'no directory made under another name');
  // So does a pattern (--exclude, --include, find's): it matched nothing, silently (an
  // --exclude of a name that is not UTF-8 excluded nothing).
  for (const args of [['backup', '--dry-run', '.', '--exclude', 'P'], ['restore', 'latest', '--target', join(s.base, 'pt'), '--include', 'P'], ['find', 'P']]) {
    const r = spawnSync('bash', ['-c', `cd "$1" && shift && p=$(printf 'dir-\\xff') && exec "$@" "\${p}"`, 'bash', s.base, process.execPath, BIN, ...args.slice(0, -1)], { env: base, encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /pattern holds bytes that are not UTF-8.*Latin-1/);
  }
});

test('a failed system call no command explained is one line naming the call and path (exit 14), its stack only with COFFER_DEBUG=1; other errors stay internal', async () => {
  const { errorLine, ExitCode } = await import('../src/tui.js');
  const e = await fs.mkdir('/proc/coffer-test-cannot-make-this').catch((err: unknown) => err as NodeJS.ErrnoException);
  assert.ok(e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === 'string');
  const r = errorLine(e);
  assert.equal(r.code, ExitCode.Storage);
  assert.match(r.line, /^E[A-Z]+: .*, mkdir '\/proc\/coffer-test-cannot-make-this'$/);
  assert.doesNotMatch(r.line, /\n|internal error/);
  process.env.COFFER_DEBUG = '1';
  try {
    const d = errorLine(e);
    assert.equal(d.code, ExitCode.Failure);
    assert.match(d.line, /^internal error: .*\n {4}at /s);
  } finally {
    delete process.env.COFFER_DEBUG;
  }
  // A bug (no system call) keeps its stack: it is not the user's environment.
  assert.match(errorLine(new TypeError('x is undefined')).line, /^internal error: TypeError: x is undefined\n {4}at /);
});

test('a backup that can read none of its paths saves no snapshot (exit 1, no lock left); one path readable of two still saves one (exit 3)', async (t) => {
  const base = await tempDir(t, 'unreadable');
  const key = join(base, 'key');
  await fs.writeFile(key, randomBytes(32).toString('hex'), { mode: 0o600 });
  await fs.writeFile(join(base, 'secret'), 'nobody may read this', { mode: 0o000 });
  await fs.writeFile(join(base, 'open'), 'anyone');
  // Root reads any file: run as root without the capabilities that let it (a user's view).
  const run = (...args: string[]) => {
    const argv = [BIN, ...args, '--key-file', key, '--repo', join(base, 'repo')];
    const env = { ...process.env, COFFER_KEY: '', COFFER_REPOSITORY: '', XDG_CONFIG_HOME: join(base, 'config') };
    return process.getuid?.() === 0
      ? spawnSync('setpriv', ['--bounding-set=-dac_override,-dac_read_search', process.execPath, ...argv], { encoding: 'utf8', env })
      : spawnSync(process.execPath, argv, { encoding: 'utf8', env });
  };
  const init = run('init', '-q');
  assert.equal(init.status, 0, init.error?.message ?? init.stderr);
  const none = run('backup', '-q', join(base, 'secret'));
  assert.equal(none.status, 1, none.stderr);
  assert.match(none.stderr, /nothing was backed up: .*secret: cannot read: permission denied; no snapshot was saved/);
  assert.deepEqual(JSON.parse(run('snapshots', '--json').stdout), []);
  assert.deepEqual(await fs.readdir(join(base, 'repo', 'locks')), [], 'its lock was released');
  const some = run('backup', '-q', join(base, 'secret'), join(base, 'open'));
  assert.equal(some.status, 3, some.stderr);
  assert.equal(JSON.parse(run('snapshots', '--json').stdout).length, 1);
});

test('standard output that fails (a full disk: /dev/full) is one error line and exit 14, never a stack trace or exit 0', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', s.src, '-q'], s.env)).code, 0);
  const full = await fs.open('/dev/full', 'w');
  t.after(() => full.close());
  const base = { ...process.env, ...s.env };
  delete base.COFFER_DEBUG;
  for (const args of [['snapshots'], ['ls', 'latest'], ['dump', 'latest', join(s.src, 'a.txt')], ['key', 'generate']]) {
    const r = spawnSync(process.execPath, [BIN, ...args], { env: base, stdio: ['ignore', full.fd, 'pipe'], encoding: 'utf8' });
    assert.equal(r.status, 14, `coffer ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /coffer: error: writing to standard output failed: no space left on device\n/, `coffer ${args.join(' ')}`);
    assert.doesNotMatch(r.stderr, /\n {4}at |internal error/, `coffer ${args.join(' ')}: ${r.stderr}`);
  }
  assert.deepEqual(await fs.readdir(join(s.repo, 'locks')), []);
});

test('packs in no index: check says prune refuses once they are older than the lock expiry (it said prune "leaves them alone"), and prune does', async (t) => {
  const s = await setup(t);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  // The index lost: its packs are in no index, and old.
  for (const n of await names(s.repo, 'index')) await fs.rm(join(s.repo, n));
  const old = new Date(Date.now() - 2 * 3600_000);
  for (const n of await names(s.repo, 'data')) await fs.utimes(join(s.repo, n), old, old);
  const c = await coffer(['check'], s.env);
  assert.match(c.stderr, /pack\(s\) are in no index: .*`coffer repair index` indexes them \(until then prune leaves them alone while they are younger than 30 minutes, and refuses to run once one is older/);
  const p = await coffer(['prune'], s.env);
  assert.equal(p.code, 12);
  assert.match(p.stderr, /prune refused, nothing was deleted/);
});

test('a repository or restore target to be made on a read-only file system says so (Node\'s recursive mkdir said "no such file or directory")', async (t) => {
  if (process.getuid?.() !== 0 || spawnSync('unshare', ['-m', 'true']).status !== 0) return t.skip('needs root and unshare -m');
  const s = await setup(t);
  assert.equal((await coffer(['backup', '-q', s.src], s.env)).code, 0);
  const ro = join(s.base, 'ro');
  await fs.mkdir(ro);
  // In a mount namespace of its own: a read-only bind mount that goes with the process.
  const inRo = (args: string[]) =>
    spawnSync('unshare', ['-m', 'sh', '-c', 'mount --bind -o ro "$1" "$1" && shift && exec "$@"', 'sh', ro, process.execPath, BIN, ...args], { env: { ...process.env, ...s.env }, encoding: 'utf8' });
  const gen = await coffer(['key', 'generate', '-q'], {});
  const keyFile = join(s.base, 'other.key');
  await fs.writeFile(keyFile, gen.stdout, { mode: 0o600 });
  const init = inRo(['init', '--repo', join(ro, 'new', 'repo'), '--key-file', keyFile]);
  assert.equal(init.status, 14, init.stderr);
  assert.match(init.stderr, /read-only file system/);
  assert.doesNotMatch(init.stderr, /ENOENT|no such file/);
  const r = inRo(['restore', 'latest', '--target', join(ro, 'sub', 'dir')]);
  assert.equal(r.status, 14, r.stderr);
  assert.match(r.stderr, /restore target .*: read-only file system/);
  assert.doesNotMatch(r.stderr, /ENOENT|no such file/);
});
