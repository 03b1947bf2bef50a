/**
 * Ctrl-C (SIGINT) or SIGTERM in the middle of a command: the process releases its
 * repository lock (another machine's prune would wait for its expiry, up to 30 minutes)
 * and a restore removes its partial data (its staging directory) before it exits 130 /
 * 143; the repository stays sound and the next command succeeds.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers.js';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

function env(base: string, key: string): NodeJS.ProcessEnv {
  const e = { ...process.env, COFFER_REPOSITORY: join(base, 'repo'), COFFER_KEY: key, XDG_CONFIG_HOME: join(base, 'config') };
  return e;
}

const run = (args: string[], e: NodeJS.ProcessEnv) => execFileSync(process.execPath, [BIN, ...args], { env: e, encoding: 'utf8' });

/** Starts `coffer args`, sends `signal` once `ready()` holds, and returns its exit code and stderr. */
async function interrupt(args: string[], e: NodeJS.ProcessEnv, signal: 'SIGINT' | 'SIGTERM', ready: () => Promise<boolean>): Promise<{ code: number | null; stderr: string; signalled: boolean }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: e, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = once(child, 'exit');
  let signalled = false;
  for (const end = Date.now() + 60_000; child.exitCode === null && Date.now() < end; await new Promise((r) => setTimeout(r, 5))) {
    if (await ready()) {
      signalled = child.kill(signal);
      break;
    }
  }
  const [code] = (await exited) as [number | null];
  return { code, stderr, signalled };
}

const locks = async (repo: string) => (await fs.readdir(join(repo, 'locks')).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));

test('interrupted backup and restore: the lock is released, the restore\'s partial data removed, exit 130/143; the repository checks clean and the next backup succeeds', { timeout: 180_000 }, async (t) => {
  const base = await tempDir(t, 'interrupt');
  const e = env(base, run(['key', 'generate', '-q'], { ...process.env, XDG_CONFIG_HOME: join(base, 'config') }).trim());
  run(['init', '-q'], e);
  const src = join(base, 'src');
  await fs.mkdir(src);
  // Enough incompressible data that neither command is over before the signal.
  for (let i = 0; i < 4; i++) execFileSync('sh', ['-c', `head -c ${64 << 20} /dev/urandom > ${join(src, `big${i}`)}`]);
  const repo = join(base, 'repo');

  const b = await interrupt(['backup', '-q', src], e, 'SIGINT', async () => (await locks(repo)).length > 0);
  assert.ok(b.signalled, 'the backup was still running when its lock appeared');
  assert.equal(b.code, 130, b.stderr);
  assert.match(b.stderr, /interrupted \(SIGINT\): cleaning up/);
  assert.deepEqual(await locks(repo), [], 'its lock was released');

  run(['backup', '-q', src], e);
  const target = join(base, 'out');
  await fs.mkdir(target);
  const staging = async () => (await fs.readdir(target)).some((n) => n.startsWith('.coffer-restore-'));
  const r = await interrupt(['restore', 'latest', '--target', target], e, 'SIGTERM', staging);
  assert.ok(r.signalled, 'the restore was still running when its staging directory appeared');
  assert.equal(r.code, 143, r.stderr);
  // Nothing that failed because the clean-up removed it under the restore (ENOENT) is reported as an error.
  assert.doesNotMatch(r.stderr.slice(r.stderr.indexOf('cleaning up')), /error|ENOENT/, r.stderr);
  assert.deepEqual(await fs.readdir(target), [], 'no partial data left in the target');
  assert.deepEqual(await locks(repo), [], 'its lock was released');

  run(['check', '-q'], e);
  run(['backup', '-q', src], e);
  run(['restore', 'latest', '--target', target, '-q'], e);
  assert.equal((await fs.stat(join(target, 'src', 'big3'))).size, 64 << 20);
});
