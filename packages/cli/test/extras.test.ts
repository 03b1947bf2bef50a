/**
 * Issue 12 through the real `coffer` binary (transcripts): --compression, check
 * --read-data-subset, copy, and repositories directly on S3 (a local s3rver). Data on
 * stdout only, errors as `coffer: error: …` with their documented exit codes (tui.ts),
 * --json everywhere, progress only on a terminal.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as nodeFs from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import S3rver from 's3rver';
import { run } from '../src/main.js';
import { assertError, tempDir } from './helpers.js';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const CONFIG_HOME = await fs.mkdtemp(join(tmpdir(), 'coffer-extras-config-'));
process.on('exit', () => nodeFs.rmSync(CONFIG_HOME, { recursive: true, force: true }));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function coffer(args: string[], env: Record<string, string | undefined> = {}): Promise<Result> {
  const base: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: CONFIG_HOME };
  for (const k of ['COFFER_KEY', 'COFFER_REPOSITORY', 'COFFER_FROM_KEY', 'COFFER_FROM_REPOSITORY', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_REGION', 'AWS_DEFAULT_REGION']) delete base[k];
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...base, ...env } as NodeJS.ProcessEnv, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      assert.doesNotMatch(stderr, /\n {4}at /, `stack trace from coffer ${args.join(' ')}:\n${stderr}`);
      assert.doesNotMatch(stderr, /internal error|NodeVersionSupportWarning/, `coffer ${args.join(' ')}: ${stderr}`);
      resolve({ code, stdout, stderr });
    });
  });
}

async function digest(root: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (p: string, rel: string) => {
    const st = await fs.lstat(p);
    h.update(`${rel}\0${st.mode & 0o7777}\0${Math.floor(st.mtimeMs / 1000)}\0`);
    if (st.isDirectory()) for (const n of (await fs.readdir(p)).sort()) await walk(join(p, n), `${rel}/${n}`);
    else h.update(await fs.readFile(p));
  };
  await walk(root, '');
  return h.digest('hex');
}

/** Compressible text: words from a small vocabulary. */
function prose(bytes: number, seed: number): string {
  const words = ['coffer', 'backup', 'key', 'vault', 'snapshot', 'pack', 'index', 'tree', 'chunk', 'restore'];
  let x = seed;
  let s = '';
  while (s.length < bytes) {
    x = (x * 1103515245 + 12345) >>> 0;
    s += words[x % words.length] + ((x >> 8) % 9 === 0 ? '\n' : ' ');
  }
  return s.slice(0, bytes);
}

async function newKey(dir: string, name: string): Promise<{ file: string; digits: string }> {
  const gen = await coffer(['key', 'generate', '-q']);
  assert.equal(gen.code, 0);
  const file = join(dir, name);
  await fs.writeFile(file, gen.stdout, { mode: 0o600 });
  return { file, digits: gen.stdout.trim() };
}

async function dataBytes(repo: string): Promise<number> {
  let n = 0;
  const walk = async (d: string) => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else n += (await fs.stat(join(d, e.name))).size;
    }
  };
  await walk(join(repo, 'data'));
  return n;
}

class Capture extends Writable {
  text = '';
  columns = 100;
  constructor(readonly isTTY: boolean) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

test('coffer backup --compression off|auto|max: each restores exactly; off stores the most, max the least; init sets the default', async (t) => {
  const base = await tempDir(t, 'extras-compression');
  const key = await newKey(base, 'key');
  const src = join(base, 'src');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'log.txt'), prose(600_000, 1));
  await fs.writeFile(join(src, 'noise.bin'), randomBytes(20_000));
  const sizes: Record<string, number> = {};
  for (const mode of ['off', 'auto', 'max']) {
    const repo = join(base, `repo-${mode}`);
    const init = await coffer(['init', '--repo', repo, '--key-file', key.file, '--json', ...(mode === 'off' ? ['--compression', 'off'] : [])]);
    assert.equal(init.code, 0, init.stderr);
    assert.equal((JSON.parse(init.stdout) as { compression: string }).compression, mode === 'off' ? 'off' : 'auto');
    const b = await coffer(['backup', '--repo', repo, '--key-file', key.file, '--compression', mode, '--json', src]);
    assert.equal(b.code, 0, b.stderr);
    const id = (JSON.parse(b.stdout) as { id: string }).id;
    sizes[mode] = await dataBytes(repo);
    const out = join(base, `out-${mode}`);
    const r = await coffer(['restore', id.slice(0, 8), '--repo', repo, '--key-file', key.file, '--target', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await digest(join(out, 'src')), await digest(src), mode);
    const c = await coffer(['check', '--read-data', '--repo', repo, '--key-file', key.file]);
    assert.equal(c.code, 0, c.stderr);
  }
  assert.ok(sizes.off! > sizes.auto! && sizes.auto! > sizes.max!, JSON.stringify(sizes));
  // A repository initialised with --compression off backs up raw when the backup names no mode.
  const offRepo = join(base, 'repo-off');
  await fs.writeFile(join(src, 'second.txt'), prose(300_000, 2));
  const before = await dataBytes(offRepo);
  assert.equal((await coffer(['backup', '--repo', offRepo, '--key-file', key.file, '-q', src])).code, 0);
  assert.ok((await dataBytes(offRepo)) - before >= 300_000, 'the default off stored the new file raw');

  const env = { COFFER_REPOSITORY: join(base, 'repo-auto'), COFFER_KEY: key.digits };
  assertError(await coffer(['backup', '--compression', 'fast', src], env), 2, /--compression: 'fast' is not one of auto, off, max/);
  assertError(await coffer(['backup', '--compression', '', src], env), 2, /--compression/);
  assertError(await coffer(['init', '--repo', join(base, 'new'), '--key-file', key.file, '--compression', 'max']), 2, /--compression max is chosen per backup/);
  assertError(await coffer(['snapshots', '--compression', 'off'], env), 2, /option --compression does not apply here/);
  await assert.rejects(fs.stat(join(base, 'new')), 'a refused init makes nothing');
});

test('coffer check --read-data-subset: groups 1…m read every pack once; a damaged pack fails only its group (exit 12); bad subsets are usage errors', async (t) => {
  const base = await tempDir(t, 'extras-subset');
  const key = await newKey(base, 'key');
  const repo = join(base, 'repo');
  assert.equal((await coffer(['init', '--repo', repo, '--key-file', key.file, '-q'])).code, 0);
  const env = { COFFER_REPOSITORY: repo, COFFER_KEY: key.digits };
  const src = join(base, 'src');
  await fs.mkdir(src);
  for (let i = 0; i < 6; i++) {
    await fs.writeFile(join(src, `f${i}.bin`), randomBytes(150_000));
    assert.equal((await coffer(['backup', '-q', src], env)).code, 0);
  }
  const full = JSON.parse((await coffer(['check', '--read-data', '--json'], env)).stdout) as { packs: number; packsRead: number };
  assert.equal(full.packsRead, full.packs);
  assert.ok(full.packs >= 6);
  let sum = 0;
  for (let n = 1; n <= 3; n++) {
    const r = await coffer(['check', '--read-data-subset', `${n}/3`, '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    sum += (JSON.parse(r.stdout) as { packsRead: number }).packsRead;
  }
  assert.equal(sum, full.packs, 'over the three groups, every pack once');
  const text = await coffer(['check', '--read-data-subset', '100%'], env);
  assert.equal(text.code, 0);
  assert.match(text.stderr, new RegExp(`read ${full.packs} pack\\(s\\) of subset 100%`));
  const one = JSON.parse((await coffer(['check', '--read-data-subset', '1K', '--json'], env)).stdout) as { packsRead: number };
  assert.equal(one.packsRead, 1, 'a size smaller than any pack reads one');

  // Damage one pack in its first segment (file data; trees come later in the pack).
  const packs: string[] = [];
  for (const d of await fs.readdir(join(repo, 'data'))) for (const f of await fs.readdir(join(repo, 'data', d))) packs.push(join(repo, 'data', d, f));
  const victim = packs.sort()[2]!;
  const bytes = await fs.readFile(victim);
  bytes[200]! ^= 0x40;
  await fs.writeFile(victim, bytes);
  const group = (Buffer.from(victim.split('/').pop()!, 'hex').readUInt32BE(0) % 3) + 1;
  const victimName = victim.slice(repo.length + 1);
  const readError = new RegExp(`^coffer: error: pack ${victimName}: .*failed authentication \\(affects snapshot`, 'm');
  for (let n = 1; n <= 3; n++) {
    const r = await coffer(['check', '--read-data-subset', `${n}/3`], env);
    if (n === group) {
      assert.equal(r.code, 12, r.stderr);
      assert.match(r.stderr, readError);
    } else {
      // Another group does not read the pack's bytes (the structural check may still
      // meet the damage, when it hit the pack's tree data: then it says so, exit 12).
      assert.doesNotMatch(r.stderr, readError, `group ${n}`);
      if (r.code !== 0) assert.match(r.stderr, /^coffer: error: snapshot /m);
    }
  }

  for (const bad of ['0/3', '4/3', '1/0', 'half', '0%', '150%', '-5M', '']) {
    assertError(await coffer(['check', `--read-data-subset=${bad}`], env), 2, /--read-data-subset: .*use n\/m, x% or a size/);
  }
  assertError(await coffer(['check', '--read-data', '--read-data-subset', '1/2'], env), 2, /not both/);
});

test('coffer copy: between keys, --json, skips what was copied, env variables, restore from the copy; errors', async (t) => {
  const base = await tempDir(t, 'extras-copy');
  const k1 = await newKey(base, 'k1');
  const k2 = await newKey(base, 'k2');
  const r1 = join(base, 'r1');
  const r2 = join(base, 'r2');
  assert.equal((await coffer(['init', '--repo', r1, '--key-file', k1.file, '-q'])).code, 0);
  assert.equal((await coffer(['init', '--repo', r2, '--key-file', k2.file, '-q'])).code, 0);
  const src = join(base, 'src');
  await fs.mkdir(join(src, 'sub'), { recursive: true });
  await fs.writeFile(join(src, 'a.txt'), prose(100_000, 3));
  await fs.writeFile(join(src, 'sub', 'b.bin'), randomBytes(70_000));
  const ids: string[] = [];
  for (const tag of ['one', 'two']) {
    const b = await coffer(['backup', '--repo', r1, '--key-file', k1.file, '--tag', tag, src]);
    ids.push(b.stdout.trim());
    await fs.writeFile(join(src, `${tag}.txt`), tag);
  }

  const first = await coffer(['copy', ids[0]!.slice(0, 10), '--repo', r2, '--key-file', k2.file, '--from-repo', r1, '--from-key-file', k1.file]);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^[0-9a-f]{64}\n$/, 'stdout: the new snapshot ID');
  assert.match(first.stderr, new RegExp(`^copied snapshot ${ids[0]!.slice(0, 8)} as ${first.stdout.slice(0, 8)}: `, 'm'));

  // The rest through the environment; the one already copied is skipped.
  const rest = await coffer(['copy', '--json'], { COFFER_REPOSITORY: r2, COFFER_KEY: k2.digits, COFFER_FROM_REPOSITORY: r1, COFFER_FROM_KEY: k1.digits });
  assert.equal(rest.code, 0, rest.stderr);
  const j = JSON.parse(rest.stdout) as { copied: Array<{ source: string; id: string }>; skipped: Array<{ source: string; existing: string }>; from: string; to: string };
  assert.deepEqual(j.copied.map((c) => c.source), [ids[1]]);
  assert.deepEqual(j.skipped, [{ source: ids[0], existing: first.stdout.trim() }]);
  assert.equal(rest.stderr, '', 'nothing else with --json');
  const again = await coffer(['copy', '--repo', r2, '--key-file', k2.file, '--from-repo', r1, '--from-key-file', k1.file]);
  assert.equal(again.code, 0);
  assert.equal(again.stdout, '');
  assert.match(again.stderr, /copied 0 snapshot\(s\) .* skipped 2/);

  const snaps = JSON.parse((await coffer(['snapshots', '--json', '--repo', r2, '--key-file', k2.file])).stdout) as Array<{ id: string; tags: string[]; original: string }>;
  assert.deepEqual(snaps.map((s) => [s.tags, s.original]), [[['one'], ids[0]], [['two'], ids[1]]]);
  const out = join(base, 'out');
  assert.equal((await coffer(['restore', snaps[1]!.id, '--repo', r2, '--key-file', k2.file, '--target', out, '-q'])).code, 0);
  const want = join(base, 'want');
  assert.equal((await coffer(['restore', ids[1]!, '--repo', r1, '--key-file', k1.file, '--target', want, '-q'])).code, 0);
  assert.equal(await digest(join(out, 'src')), await digest(join(want, 'src')));
  assert.equal((await coffer(['check', '--read-data', '--repo', r2, '--key-file', k2.file, '-q'])).code, 0);

  // A source snapshot that cannot be read is skipped with a warning: the copy is incomplete, exit 3.
  const snapDir = join(r1, 'snapshots');
  await fs.appendFile(join(snapDir, (await fs.readdir(snapDir)).sort()[0]!), 'x');
  const damaged = await coffer(['copy', '--repo', r2, '--key-file', k2.file, '--from-repo', r1, '--from-key-file', k1.file]);
  assert.equal(damaged.code, 3, damaged.stderr);
  assert.match(damaged.stderr, /coffer: warning: source: skipping snapshot [0-9a-f]{8}: /);

  const dst = { COFFER_REPOSITORY: r2, COFFER_KEY: k2.digits };
  assertError(await coffer(['copy'], dst), 2, /no source repository given: use --from-repo/);
  assertError(await coffer(['copy', '--from-repo', r1], dst), 2, /no key for the source repository/);
  assertError(await coffer(['copy', '--from-repo', r1, '--from-key-file', k2.file], dst), 11, /wrong key/);
  assertError(await coffer(['copy', '--from-repo', join(base, 'nothing'), '--from-key-file', k1.file], dst), 10, /no Coffer repository/);
  assertError(await coffer(['copy', 'deadbeef', '--from-repo', r1, '--from-key-file', k1.file], dst), 1, /no snapshot deadbeef/);
  assertError(await coffer(['copy', 'zz', '--from-repo', r1, '--from-key-file', k1.file], dst), 2, /not a snapshot ID/);
  assertError(await coffer(['copy', '--from-repo', r2, '--from-key-file', k2.file], dst), 2, /same repository/);
  assertError(await coffer(['copy', '--from-repo', 'sftp:host:/x', '--from-key-file', k1.file], dst), 2, /unknown storage 'sftp:'/);
  assertError(await coffer(['copy', '--from-repo', r1, '--from-key-file', join(base, 'none')], dst), 2, /cannot read key file/);
});

test('progress: copy, check --read-data-subset and prune draw on a terminal, never with --json or when piped', async (t) => {
  const base = await tempDir(t, 'extras-progress');
  const k1 = await newKey(base, 'k1');
  const k2 = await newKey(base, 'k2');
  const r1 = join(base, 'r1');
  const r2 = join(base, 'r2');
  await coffer(['init', '--repo', r1, '--key-file', k1.file, '-q']);
  await coffer(['init', '--repo', r2, '--key-file', k2.file, '-q']);
  const src = join(base, 'src');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'big.bin'), randomBytes(3_000_000));
  await coffer(['backup', '--repo', r1, '--key-file', k1.file, '-q', src]);
  for (const [tty, extra, wantBar] of [
    [true, [], true],
    [true, ['--json'], false],
    [false, [], false],
  ] as const) {
    const dst = join(base, `dst-${tty}-${extra.length}`);
    await coffer(['init', '--repo', dst, '--key-file', k2.file, '-q']);
    for (const args of [
      ['copy', '--repo', dst, '--key-file', k2.file, '--from-repo', r1, '--from-key-file', k1.file],
      ['check', '--repo', dst, '--key-file', k2.file, '--read-data-subset', '100%'],
      ['prune', '--repo', dst, '--key-file', k2.file],
    ]) {
      const out = new Capture(false);
      const err = new Capture(tty);
      const code = await run([...args, ...extra], { stdout: out, stderr: err, env: { ...process.env, XDG_CONFIG_HOME: CONFIG_HOME } });
      assert.equal(code, 0, err.text);
      assert.equal(err.text.includes('\r'), wantBar, `${args[0]} tty=${tty} ${extra.join(' ')}: ${JSON.stringify(err.text.slice(0, 200))}`);
      assert.doesNotMatch(out.text, /\r/);
    }
  }
});

test('repositories directly on S3 (s3:http://127.0.0.1…): every repository command, copy both ways, and clear errors', async (t) => {
  const base = await tempDir(t, 'extras-s3');
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(base, 's3rver') });
  const { port } = (await server.run()) as unknown as { port: number };
  let running = true;
  const stop = async () => {
    if (running) await server.close();
    running = false;
  };
  t.after(stop);
  const key = await newKey(base, 'key');
  const repo = `s3:http://127.0.0.1:${port}/coffer-bucket/laptop/home`;
  const env = { COFFER_REPOSITORY: repo, COFFER_KEY: key.digits, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
  const init = await coffer(['init', '--json'], env);
  assert.equal(init.code, 0, init.stderr);
  assert.equal((JSON.parse(init.stdout) as { repository: string }).repository, repo);
  assertError(await coffer(['init'], env), 1, /already a repository/);

  const src = join(base, 'src');
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'a.txt'), prose(200_000, 5));
  await fs.writeFile(join(src, 'b.bin'), randomBytes(100_000));
  const b1 = await coffer(['backup', '--compression', 'max', src], env);
  assert.equal(b1.code, 0, b1.stderr);
  await fs.writeFile(join(src, 'c.txt'), 'third');
  const b2 = await coffer(['backup', '--json', src], env);
  assert.equal(b2.code, 0, b2.stderr);
  const list = JSON.parse((await coffer(['snapshots', '--json'], env)).stdout) as Array<{ id: string }>;
  assert.equal(list.length, 2);
  const out = join(base, 'out');
  const r = await coffer(['restore', 'latest', '--target', out], env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await digest(join(out, 'src')), await digest(src));
  for (const args of [['check', '--read-data'], ['check', '--read-data-subset', '1/2'], ['repair', 'index'], ['repair', 'snapshots', '--dry-run'], ['unlock'], ['prune', '--dry-run']]) {
    const c = await coffer([...args, '--json'], env);
    assert.equal(c.code, 0, `${args.join(' ')}: ${c.stderr}`);
    JSON.parse(c.stdout);
  }
  const f = await coffer(['forget', list[0]!.id, '--prune', '--json'], env);
  assert.equal(f.code, 0, f.stderr);
  assert.deepEqual((JSON.parse(f.stdout) as { removed: string[] }).removed, [list[0]!.id]);
  assert.equal((await coffer(['check', '--read-data', '-q'], env)).code, 0);

  // Copy from S3 to a local directory under another key, and back into a second prefix.
  const k2 = await newKey(base, 'k2');
  const local = join(base, 'local');
  await coffer(['init', '--repo', local, '--key-file', k2.file, '-q']);
  const toLocal = await coffer(['copy', '--repo', local, '--key-file', k2.file, '--from-repo', repo, '--from-key-file', key.file, '-q'], env);
  assert.equal(toLocal.code, 0, toLocal.stderr);
  const repo2 = `s3:http://127.0.0.1:${port}/coffer-bucket/laptop/copy`;
  await coffer(['init', '--repo', repo2, '-q'], env);
  const back = await coffer(['copy', '--repo', repo2, '--from-repo', local, '--from-key-file', k2.file, '--json'], env);
  assert.equal(back.code, 0, back.stderr);
  assert.equal((JSON.parse(back.stdout) as { copied: unknown[] }).copied.length, 1);
  const out2 = join(base, 'out2');
  assert.equal((await coffer(['restore', 'latest', '--repo', repo2, '--target', out2, '-q'], env)).code, 0);
  assert.equal(await digest(join(out2, 'src')), await digest(src));

  // Garbage and failures: usage (2), storage (14).
  assertError(await coffer(['snapshots', '--repo', 's3:http://127.0.0.1:1/'], env), 2, /no bucket .*expected s3:https:\/\/host/);
  assertError(await coffer(['snapshots', '--repo', 's3:ftp://h/b'], env), 2, /scheme ftp:/);
  assertError(await coffer(['init', '--repo', 's3:bucket/x'], env), 2, /'bucket' is not a host name/);
  assertError(await coffer(['snapshots', '--repo', 's3:https://k:s@h/bucket'], env), 2, /credentials do not go in the URL/);
  assertError(await coffer(['snapshots', '--repo', 's3:http://s3.example.com/bucket'], env), 2, /plain http:\/\/ to another machine.*--insecure/);
  assertError(await coffer(['snapshots'], { ...env, AWS_SECRET_ACCESS_KEY: undefined }), 2, /AWS_SECRET_ACCESS_KEY is not set/);
  assertError(await coffer(['snapshots', '--repo', `s3:http://127.0.0.1:${port}/no-such-bucket`], env), 14, /bucket no-such-bucket does not exist/);
  assertError(await coffer(['snapshots', '--repo', `s3:http://127.0.0.1:${port}/coffer-bucket/empty`], env), 10, /no Coffer repository at s3:/);
  for (const other of ['gs://bucket/x', 'b2:bucket:path', 'sftp:host:/srv', 'rest:http://h/', 'azure:c:/p']) {
    assertError(await coffer(['snapshots', '--repo', other], env), 2, /unknown storage '[a-z0-9]+:'/);
  }
  await stop();
  assertError(await coffer(['snapshots'], env), 14, /cannot reach http:\/\/127\.0\.0\.1:\d+|failed/);
});
