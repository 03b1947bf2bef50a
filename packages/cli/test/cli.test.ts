/**
 * The `coffer` command as a person or a script sees it (STYLE.md: CLI tests are
 * transcripts): the real binary, spawned, on real temporary directories. Data on stdout
 * only; every error on stderr as `coffer: error: …` with its documented exit code and
 * never a stack trace.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as nodeFs from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../src/main.js';
import { assertError, tempDir } from './helpers.js';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const KEY_RE = /^[0-9a-f]{4}([- ][0-9a-f]{4}){15}$/i;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The tests' own config directory: what the CLI remembers per device (seen snapshots) stays out of ~/.config. */
const CONFIG_HOME = await fs.mkdtemp(join(tmpdir(), 'coffer-cli-config-'));
process.on('exit', () => nodeFs.rmSync(CONFIG_HOME, { recursive: true, force: true }));

function coffer(args: string[], env: Record<string, string | undefined> = {}): Promise<Result> {
  const base: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: CONFIG_HOME };
  delete base.COFFER_KEY;
  delete base.COFFER_REPOSITORY;
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...base, ...env } as NodeJS.ProcessEnv, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      // No command ever prints a stack trace, whatever happens.
      assert.doesNotMatch(stderr, /\n {4}at /, `stack trace from coffer ${args.join(' ')}:\n${stderr}`);
      assert.doesNotMatch(stderr, /internal error/, `coffer ${args.join(' ')}: ${stderr}`);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Asserts an error transcript: exit code, nothing on stdout, one `coffer: error:` line. */

async function digest(root: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (p: string, rel: string) => {
    const st = await fs.lstat(p);
    // A symlink's own mode and time are not restored (they can't be set portably).
    if (st.isSymbolicLink()) h.update(`${rel}\0link\0`);
    else h.update(`${rel}\0${st.mode & 0o7777}\0${Math.floor(st.mtimeMs / 1000)}\0`);
    if (st.isDirectory()) for (const n of (await fs.readdir(p)).sort()) await walk(join(p, n), `${rel}/${n}`);
    else if (st.isSymbolicLink()) h.update(await fs.readlink(p));
    else h.update(await fs.readFile(p));
  };
  await walk(root, '');
  return h.digest('hex');
}

interface Setup {
  repo: string;
  keyFile: string;
  src: string;
  env: Record<string, string>;
}

/** A repository made with --key-file, and a small source folder. */
async function setup(t: TestContext): Promise<Setup> {
  const base = await tempDir(t, 'cli-base');
  const repo = join(base, 'repo');
  const keyFile = join(base, 'key.txt');
  const gen = await coffer(['key', 'generate', '-q']);
  assert.equal(gen.code, 0);
  await fs.writeFile(keyFile, gen.stdout, { mode: 0o600 });
  const init = await coffer(['init', '--repo', repo, '--key-file', keyFile]);
  assert.equal(init.code, 0, init.stderr);
  assert.equal(init.stdout, '', 'init with a key prints no data');
  assert.match(init.stderr, /^created repository /);
  const src = join(base, 'docs');
  await fs.mkdir(join(src, 'sub', 'empty'), { recursive: true });
  await fs.writeFile(join(src, 'a.txt'), 'hello\n');
  await fs.writeFile(join(src, 'sub', 'b.bin'), Buffer.alloc(300_000, 7));
  await fs.chmod(join(src, 'a.txt'), 0o600);
  await fs.symlink('a.txt', join(src, 'link'));
  return { repo, keyFile, src, env: { COFFER_REPOSITORY: repo, COFFER_KEY: gen.stdout.trim(), XDG_CONFIG_HOME: CONFIG_HOME } };
}

test('coffer init without a key prints exactly one key on stdout and warnings on stderr', async (t) => {
  const repo = join(await tempDir(t, 'cli-init'), 'repo');
  const r = await coffer(['init', '--repo', repo]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.equal(lines.length, 2, 'one line');
  assert.equal(lines[1], '');
  assert.match(lines[0]!, KEY_RE);
  assert.equal(lines[0]!.replace(/[^0-9a-f]/gi, '').length, 64);
  assert.match(r.stderr, /^coffer: warning: .*shown only this once/m);
  assert.doesNotMatch(r.stderr, new RegExp(lines[0]!.slice(0, 9)), 'the key is not repeated on stderr');
  // The key it printed opens the repository (in any case, without its spaces).
  const sloppy = lines[0]!.toUpperCase().replace(/ /g, '');
  const s = await coffer(['snapshots', '--repo', repo], { COFFER_KEY: sloppy });
  assert.equal(s.code, 0, s.stderr);
  assert.equal(s.stdout, '');
  // A second init at the same place is refused.
  assertError(await coffer(['init', '--repo', repo]), 1, /already a repository/);
});

test('backup → snapshots → restore latest is byte-identical; restore refuses to overwrite without --overwrite', async (t) => {
  const s = await setup(t);
  const b = await coffer(['backup', s.src], s.env);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout, /^[0-9a-f]{64}\n$/, 'backup prints the snapshot ID');
  const id = b.stdout.trim();
  assert.match(b.stderr, /^snapshot [0-9a-f]{8} saved: 2 files, 3 dirs/m);
  assert.doesNotMatch(b.stderr, /\r/, 'no progress bar when stderr is not a terminal');

  const list = await coffer(['snapshots', '--key-file', s.keyFile, '--repo', s.repo]);
  assert.equal(list.code, 0);
  assert.match(list.stdout, new RegExp(`^${id.slice(0, 8)} .* ${s.src}$`, 'm'));
  const json = JSON.parse((await coffer(['snapshots', '--json'], s.env)).stdout) as Array<{ id: string; paths: string[] }>;
  assert.deepEqual(json.map((x) => [x.id, x.paths]), [[id, [s.src]]]);

  const target = join(await tempDir(t, 'cli-dst'), 'out');
  const r = await coffer(['restore', 'latest', '--target', target], s.env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '');
  assert.equal(await digest(join(target, 'docs')), await digest(s.src));

  const again = await coffer(['restore', id.slice(0, 10), '--target', target], s.env);
  assertError(again, 1, /--overwrite/);
  await fs.writeFile(join(target, 'docs', 'a.txt'), 'changed');
  const over = await coffer(['restore', id, '--target', target, '--overwrite'], s.env);
  assert.equal(over.code, 0, over.stderr);
  assert.equal(await digest(join(target, 'docs')), await digest(s.src));
});

test('errors: one `coffer: error:` line on stderr and the documented exit code', async (t) => {
  const s = await setup(t);
  const empty = await tempDir(t, 'cli-empty');
  const junk = join(empty, 'junk.key');
  await fs.writeFile(junk, Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 10, 13, 0x1b]));
  const other = (await coffer(['key', 'generate', '-q'])).stdout.trim();
  const cases: Array<[string, string[], Record<string, string>, number, RegExp]> = [
    ['invalid key text', ['snapshots'], { ...s.env, COFFER_KEY: 'not a key' }, 11, /COFFER_KEY: .*valid key/i],
    ['a key of 63 digits', ['snapshots'], { ...s.env, COFFER_KEY: 'a'.repeat(63) }, 11, /COFFER_KEY/],
    ['a key of 65 digits', ['snapshots'], { ...s.env, COFFER_KEY: 'a'.repeat(65) }, 11, /COFFER_KEY/],
    ['a key file of binary junk', ['snapshots', '--key-file', junk, '--repo', s.repo], {}, 11, /key file .*junk\.key/],
    ['an empty key file', ['snapshots', '--key-file', '/dev/null', '--repo', s.repo], {}, 11, /key file/],
    ['a missing key file', ['snapshots', '--key-file', join(empty, 'nope'), '--repo', s.repo], {}, 2, /cannot read key file .*no such file/],
    ['the wrong key', ['snapshots'], { ...s.env, COFFER_KEY: other }, 11, /wrong key/],
    ['no repository there', ['snapshots', '--repo', empty], { COFFER_KEY: other }, 10, /no Coffer repository at /],
    ['a repository dir that does not exist', ['check', '--repo', join(empty, 'x', 'y')], { COFFER_KEY: other }, 10, /no Coffer repository/],
    ['no repository given', ['snapshots'], { COFFER_KEY: other }, 2, /--repo/],
    ['no key given', ['snapshots', '--repo', s.repo], {}, 2, /--key-file/],
    ['a source path that does not exist', ['backup', join(empty, 'missing')], s.env, 1, /missing: no such file or directory/],
    ['unknown command', ['frobnicate'], s.env, 2, /unknown command 'frobnicate'/],
    ['unknown option', ['snapshots', '--frob'], s.env, 2, /unknown option '--frob'/],
    ['an option of another command', ['snapshots', '--target', 'x'], s.env, 2, /--target does not apply/],
    ['restore without --target', ['restore', 'latest'], s.env, 2, /--target DIR is required/],
    ['restore without a snapshot', ['restore', '--target', empty], s.env, 2, /snapshot ID/],
    ['a snapshot ID not found', ['restore', 'deadbeef', '--target', empty], s.env, 1, /no snapshot deadbeef/],
    ['no snapshots yet', ['restore', 'latest', '--target', empty], s.env, 1, /no snapshots yet/],
    ['a snapshot ID that is not hex', ['restore', 'zz;rm', '--target', empty], s.env, 2, /not a snapshot ID/],
    ['backup without paths', ['backup'], s.env, 2, /give the paths/],
    ['a bad --keep-last', ['forget', '--keep-last', 'many'], s.env, 2, /whole number/],
    ['forget without a policy', ['forget'], s.env, 2, /no retention policy/],
    ['a remote repository URL', ['snapshots', '--repo', 's3://bucket/x'], { COFFER_KEY: other }, 2, /s3:\/\/bucket names no endpoint \(expected s3:https:\/\/host/],
    ['key with an unknown subcommand', ['key', 'rotate'], {}, 2, /key generate/],
    ['repair packs without a pack', ['repair', 'packs'], s.env, 2, /name the damaged packs/],
    ['repair packs with a name that is no pack ID', ['repair', 'packs', '../../etc'], s.env, 2, /not a pack ID/],
    ['repair packs of a pack no index lists', ['repair', 'packs', 'ab'.repeat(32)], s.env, 1, /is in no index/],
    ['repair packs with an option', ['repair', 'packs', 'ab'.repeat(32), '--forget'], s.env, 2, /takes no options/],
    ['prune --max-unused garbage', ['prune', '--max-unused', '5x'], s.env, 2, /--max-unused takes a percentage \(5%\), a size \(500M\) or 'unlimited', not '5x'/],
    ['prune --max-unused over 100%', ['prune', '--max-unused', '101%'], s.env, 2, /--max-unused takes a percentage/],
    ['prune --max-repack-size 0', ['prune', '--max-repack-size', '0'], s.env, 2, /--max-repack-size takes a size above 0/],
    ['forget --max-unused without --prune', ['forget', '--keep-last', '1', '--max-unused', '5%'], s.env, 2, /--max-unused and --max-repack-size go with --prune/],
    // `vault packs ID` ran repair packs (a line copied into the vault case).
    ['vault packs', ['vault', 'packs', 'ab'.repeat(32)], s.env, 2, /vault: use `coffer vault enable/],
  ];
  for (const [what, args, env, code, msg] of cases) {
    await t.test(what, async () => assertError(await coffer(args, env), code, msg));
  }
  // No command at all: the usage on stderr, exit 2.
  const none = await coffer([]);
  assert.equal(none.code, 2);
  assert.equal(none.stdout, '');
  assert.match(none.stderr, /^usage: coffer/);
  const help = await coffer(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: coffer/);
});

test('an unreadable source file: exit 3, a warning naming it, and the snapshot is still saved', async (t) => {
  if (process.platform !== 'linux') return t.skip('needs /proc/self/mem (a file whose read fails with EIO even for root)');
  const s = await setup(t);
  // Tests run as root, which reads any chmod-000 file; /proc/self/mem fails with EIO at offset 0 for everyone.
  const r = await coffer(['backup', s.src, '/proc/self/mem'], s.env);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stdout, /^[0-9a-f]{64}\n$/);
  assert.match(r.stderr, /^coffer: warning: \/proc\/self\/mem: cannot read: I\/O error$/m);
  assert.match(r.stderr, /1 item\(s\) could not be read/);
  const list = JSON.parse((await coffer(['snapshots', '--json'], s.env)).stdout) as Array<{ id: string }>;
  assert.deepEqual(list.map((x) => x.id), [r.stdout.trim()]);
  const target = await tempDir(t, 'cli-dst');
  assert.equal((await coffer(['restore', 'latest', '--target', target, '-q'], s.env)).code, 0);
  assert.equal(await digest(join(target, 'docs')), await digest(s.src));

  if (process.getuid?.() !== 0) {
    // Not root: a chmod-000 file is unreadable too.
    await fs.writeFile(join(s.src, 'secret'), 'x');
    await fs.chmod(join(s.src, 'secret'), 0);
    const r2 = await coffer(['backup', s.src], s.env);
    assert.equal(r2.code, 3);
    assert.match(r2.stderr, /secret: cannot read: permission denied/);
  }
});

test('check on a damaged repository exits 12 and names the snapshot', async (t) => {
  const s = await setup(t);
  const id = (await coffer(['backup', '-q', s.src], s.env)).stdout.trim();
  assert.equal((await coffer(['check', '--read-data'], s.env)).code, 0);
  const packsDir = join(s.repo, 'data');
  const [sub] = await fs.readdir(packsDir);
  const [pack] = await fs.readdir(join(packsDir, sub!));
  const p = join(packsDir, sub!, pack!);
  const bytes = await fs.readFile(p);
  bytes[bytes.length >> 1]! ^= 0x40;
  await fs.writeFile(p, bytes);
  const c = await coffer(['check', '--read-data'], s.env);
  assert.equal(c.code, 12);
  assert.match(c.stderr, new RegExp(`^coffer: error: pack data/.*affects snapshot ${id.slice(0, 8)}`, 'm'));
  assert.match(c.stderr, /: \d problem\(s\)$/m);
  const cj = await coffer(['check', '--read-data', '--json'], s.env);
  assert.equal(cj.code, 12);
  const parsed = JSON.parse(cj.stdout) as { problems: Array<{ snapshots: string[] }> };
  assert.deepEqual(parsed.problems[0]!.snapshots, [id]);
  const target = await tempDir(t, 'cli-dst');
  const r = await coffer(['restore', 'latest', '--target', target], s.env);
  assertError(r, 12, /corrupt/);
  assert.deepEqual((await fs.readdir(target, { recursive: true })).filter((n) => String(n).includes('.coffer-restore-')), []);
});

test('--json output of every data command is one valid JSON document; -q leaves only data', async (t) => {
  const s = await setup(t);
  const base = await tempDir(t, 'cli-json');
  const json = async (args: string[], env = s.env, code = 0) => {
    const r = await coffer([...args, '--json'], env);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout.split('\n').length, 2, `${args.join(' ')}: one line`);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };
  const init = await json(['init', '--repo', join(base, 'r2')], {});
  assert.match(String(init.key), KEY_RE);
  assert.ok(typeof init.keyId === 'string');
  const b1 = await json(['backup', s.src]);
  assert.match(String(b1.id), /^[0-9a-f]{64}$/);
  assert.equal(b1.files, 2);
  await fs.writeFile(join(s.src, 'c.txt'), 'more');
  const b2 = await json(['backup', s.src, '--tag', 'x']);
  assert.ok(Array.isArray(await json(['snapshots'])));
  const rest = await json(['restore', String(b2.id), '--target', join(base, 'out')]);
  assert.equal(rest.files, 3);
  const verified = await json(['restore', String(b2.id), '--target', join(base, 'out-verified'), '--verify']);
  assert.equal((verified.verified as { files: number }).files, 3);
  assert.deepEqual((await json(['check', '--read-data'])).problems, []);
  const fg = await json(['forget', '--keep-last', '1', '--dry-run']);
  assert.deepEqual(fg.removed, [b1.id]);
  assert.equal(fg.dryRun, true);
  const fp = await json(['forget', '--keep-last', '1', '--prune']);
  assert.deepEqual(fp.removed, [b1.id]);
  assert.ok(typeof (fp.prune as { packsDeleted: number }).packsDeleted === 'number');
  assert.ok(typeof (await json(['prune'])).bytesFreed === 'number');
  assert.equal((await json(['prune', '--max-unused', 'unlimited', '--max-repack-size', '1G'])).packsRepacked, 0);
  assert.equal((await json(['unlock'])).removed, 0);
  assert.match(String((await json(['key', 'generate'], {})).key), KEY_RE);
  assert.equal((await json(['key', 'show'])).key, (await json(['key', 'show', '--key-file', s.keyFile], {})).key);

  // -q: the snapshot ID alone on stdout, nothing at all on stderr.
  const q = await coffer(['backup', '-q', s.src], s.env);
  assert.equal(q.code, 0);
  assert.match(q.stdout, /^[0-9a-f]{64}\n$/);
  assert.equal(q.stderr, '');
  const rq = await coffer(['restore', 'latest', '-q', '--target', join(base, 'out2')], s.env);
  assert.deepEqual([rq.code, rq.stdout, rq.stderr], [0, '', '']);
  const cq = await coffer(['check', '-q'], s.env);
  assert.deepEqual([cq.code, cq.stdout, cq.stderr], [0, '', '']);
});

class Capture extends Writable {
  text = '';
  constructor(readonly isTTY: boolean) {
    super();
  }
  columns = 80;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

test('a progress bar is drawn on a terminal\'s stderr, and never with --json or when piped', async (t) => {
  const s = await setup(t);
  await fs.writeFile(join(s.src, 'big.bin'), Buffer.alloc(2_000_000, 3));
  for (const [tty, extra, wantBar] of [
    [true, [], true],
    [true, ['--json'], false],
    [true, ['-q'], false],
    [false, [], false],
  ] as const) {
    const out = new Capture(false);
    const err = new Capture(tty);
    const code = await run(['backup', s.src, ...extra], { stdout: out, stderr: err, env: s.env });
    assert.equal(code, 0, err.text);
    assert.equal(err.text.includes('\r'), wantBar, `tty=${tty} ${extra.join(' ')}: ${JSON.stringify(err.text.slice(0, 200))}`);
    if (wantBar) assert.match(err.text, /files .*\/s/);
    assert.doesNotMatch(out.text, /\r/);
  }
});

test('a key file other users can read works, with a warning to chmod it', async (t) => {
  const s = await setup(t);
  await fs.chmod(s.keyFile, 0o644);
  const r = await coffer(['snapshots', '--repo', s.repo, '--key-file', s.keyFile]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^coffer: warning: key file .* can be read by other users \(mode 644\).*chmod 600/m);
  await fs.chmod(s.keyFile, 0o600);
  const quiet = await coffer(['snapshots', '--repo', s.repo, '--key-file', s.keyFile]);
  assert.doesNotMatch(quiet.stderr, /warning/);
});
