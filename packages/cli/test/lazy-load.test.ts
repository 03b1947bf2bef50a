/**
 * Issue 13: a backup or a restore loads only what it uses. The relay client (with
 * @coffer/protocol and OPAQUE's WASM, about 16 MiB resident) is loaded by the commands
 * that reach the relay or the vault, never by key-mode commands; the CLI's copy of the
 * profile location (profile-dir.ts) stays what @coffer/client computes.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as nodeFs from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { profileDir } from '@coffer/client';
import { profileDirOf } from '../src/profile-dir.js';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const HOME = await fs.mkdtemp(join(tmpdir(), 'coffer-lazy-'));
process.on('exit', () => nodeFs.rmSync(HOME, { recursive: true, force: true }));

/**
 * Runs the CLI with a preload that reports, at exit, whether any module of
 * @coffer/client or @coffer/protocol was loaded (ESM loader hook on resolve).
 */
function cofferLoads(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stderr: string; loaded: string[] }> {
  const hook = join(HOME, 'hook.mjs');
  const out = join(HOME, `loaded-${Math.random().toString(36).slice(2)}.txt`);
  return new Promise((done) => {
    execFile(process.execPath, ['--import', hook, BIN, ...args], { env: { HOME, PATH: process.env.PATH ?? '', MEM5_LOADED: out, ...env } }, (err, _o, stderr) => {
      const loaded = nodeFs.existsSync(out) ? nodeFs.readFileSync(out, 'utf8').split('\n').filter(Boolean) : [];
      done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr, loaded });
    });
  });
}

test.before(async () => {
  await fs.writeFile(
    join(HOME, 'hook.mjs'),
    `import { register } from 'node:module';
import { appendFileSync } from 'node:fs';
register('data:text/javascript,' + encodeURIComponent(\`
export async function resolve(spec, ctx, next) {
  const r = await next(spec, ctx);
  if (/packages\\\\/(client|protocol)\\\\/dist\\\\//.test(r.url)) (await import('node:fs')).appendFileSync(process.env.MEM5_LOADED, r.url + '\\\\n');
  return r;
}\`));
`,
  );
});

test('backup, restore, snapshots and check do not load the relay client', async () => {
  const repo = join(HOME, 'repo');
  const data = join(HOME, 'data');
  await fs.mkdir(data);
  await fs.writeFile(join(data, 'a.txt'), 'hello');
  const keyFile = join(HOME, 'key');
  await fs.writeFile(keyFile, '42'.repeat(32), { mode: 0o600 });
  const common = ['--repo', repo, '--key-file', keyFile, '-q'];
  for (const args of [['init', ...common], ['backup', ...common, data], ['snapshots', ...common], ['restore', 'latest', '--target', join(HOME, 'out'), ...common], ['check', ...common], ['--help']]) {
    const r = await cofferLoads(args);
    assert.equal(r.code, 0, `${args[0]}: ${r.stderr}`);
    assert.deepEqual(r.loaded, [], `${args[0]} loaded ${r.loaded.join(', ')}`);
  }
  assert.equal(await fs.readFile(join(HOME, 'out', 'data', 'a.txt'), 'utf8'), 'hello');
});

test('a relay command loads the client, and its errors keep their exit codes', async () => {
  // A profile never logged in: the client's own error (CofferClientError 'not-logged-in'), exit 24.
  const r = await cofferLoads(['vault', 'recover', '--profile', join(HOME, 'profile') + '/']);
  assert.ok(r.loaded.some((u) => u.includes('/client/dist/')), 'the client was loaded');
  assert.equal(r.code, 24, r.stderr);
  assert.match(r.stderr, /^coffer: error: not logged in/);
});

test('profileDirOf is @coffer/client profileDir', () => {
  const envs: NodeJS.ProcessEnv[] = [{ HOME: '/home/u' }, { HOME: '/home/u', XDG_CONFIG_HOME: '/x/cfg' }, { HOME: '/home/u', COFFER_PROFILE: 'work' }, { HOME: '/h', COFFER_PROFILE: './rel/p' }];
  const givens = [undefined, '', 'default', 'a-b_C9', '/abs/dir', 'rel/dir', '.hidden', 'x'.repeat(64), 'x'.repeat(65), 'bad name', 'é'];
  for (const env of envs) {
    for (const given of givens) {
      let want: string | Error;
      let got: string | Error;
      try {
        want = profileDir(given, env);
      } catch (e) {
        want = e as Error;
      }
      try {
        got = profileDirOf(given, env);
      } catch (e) {
        got = e as Error;
      }
      if (want instanceof Error) {
        assert.ok(got instanceof Error, `${String(given)}: client refuses, CLI gave ${String(got)}`);
        assert.equal(got.message, want.message);
      } else assert.equal(got, want, `${String(given)} with ${JSON.stringify(env)}`);
    }
  }
});

/**
 * Issue 13: each command loads only the engine modules it runs (the command modules import
 * @coffer/backup's subpaths, not its barrel). Runs the CLI with a loader hook that writes
 * every @coffer/backup module it loads (path under dist/src) to a file.
 */
async function engineLoads(args: string[]): Promise<{ code: number; stderr: string; stdout: string; loaded: string[] }> {
  const hook = join(HOME, 'engine-hook.mjs');
  if (!nodeFs.existsSync(hook)) {
    await fs.writeFile(
      hook,
      `import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(\`
export async function load(url, ctx, next) {
  const m = /packages\\\\/backup\\\\/dist\\\\/src\\\\/(.*)$/.exec(url);
  if (m) (await import('node:fs')).appendFileSync(process.env.ENGINE_LOADED, m[1] + '\\\\n');
  return next(url, ctx);
}\`));
`,
    );
  }
  const out = join(HOME, `engine-${Math.random().toString(36).slice(2)}.txt`);
  return new Promise((done) => {
    execFile(process.execPath, ['--import', hook, BIN, ...args], { env: { HOME, PATH: process.env.PATH ?? '', ENGINE_LOADED: out } }, (err, stdout, stderr) => {
      const loaded = nodeFs.existsSync(out) ? nodeFs.readFileSync(out, 'utf8').split('\n').filter(Boolean) : [];
      done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr, loaded });
    });
  });
}

test('a backup loads no restore, browse, prune or check module; a restore no backup module; --help none but errors', async () => {
  const dir = join(HOME, 'engine');
  const repo = join(dir, 'repo');
  const data = join(dir, 'data');
  await fs.mkdir(data, { recursive: true });
  await fs.writeFile(join(data, 'f'), 'abc');
  const keyFile = join(dir, 'key');
  await fs.writeFile(keyFile, '17'.repeat(32), { mode: 0o600 });
  const common = ['--repo', repo, '--key-file', keyFile, '-q'];
  assert.equal((await engineLoads(['init', ...common])).code, 0);

  const b = await engineLoads(['backup', ...common, data]);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout, /^[0-9a-f]{64}\n$/);
  assert.ok(b.loaded.includes('repository/backup.js'), `the probe sees the engine: ${b.loaded.join(', ')}`);
  for (const m of ['index.js', 'repository/restore.js', 'repository/browse.js', 'repository/prune.js', 'repository/check.js', 'repository/forget.js', 'repository/repair.js', 'repository/copy.js', 'repository/filter.js', 'storage/s3.js']) {
    assert.ok(!b.loaded.includes(m), `backup loaded ${m}`);
  }

  const r = await engineLoads(['restore', 'latest', '--target', join(dir, 'out'), ...common]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await fs.readFile(join(dir, 'out', 'data', 'f'), 'utf8'), 'abc');
  assert.ok(r.loaded.includes('repository/restore.js'), `the probe sees the engine: ${r.loaded.join(', ')}`);
  for (const m of ['index.js', 'repository/backup.js', 'repository/prune.js', 'repository/check.js', 'repository/forget.js', 'repository/repair.js', 'storage/s3.js']) {
    assert.ok(!r.loaded.includes(m), `restore loaded ${m}`);
  }

  const s = await engineLoads(['snapshots', ...common]);
  assert.equal(s.code, 0, s.stderr);
  for (const m of ['index.js', 'repository/backup.js', 'repository/restore.js', 'repository/browse.js', 'repository/prune.js', 'repository/check.js']) {
    assert.ok(!s.loaded.includes(m), `snapshots loaded ${m}`);
  }

  for (const args of [['--help'], ['--version'], ['backup', '--help']]) {
    const h = await engineLoads(args);
    assert.equal(h.code, 0, h.stderr);
    assert.deepEqual(h.loaded, ['errors.js'], `${args.join(' ')} loaded ${h.loaded.join(', ')}`);
  }
});

test("@coffer/backup's subpaths are the barrel's modules (one class each: instanceof holds either way)", async () => {
  const barrel = await import('@coffer/backup');
  assert.equal((await import('@coffer/backup/errors')).CofferError, barrel.CofferError);
  assert.equal((await import('@coffer/backup/repository')).Repository, barrel.Repository);
  assert.equal((await import('@coffer/backup/backup')).backup, barrel.backup);
  assert.equal((await import('@coffer/backup/restore')).restore, barrel.restore);
  assert.equal((await import('@coffer/backup/key')).BackupKey, barrel.BackupKey);
});
