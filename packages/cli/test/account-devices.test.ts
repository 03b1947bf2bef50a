/**
 * Issue 11 from the CLI: `coffer account devices` / `coffer account revoke`, password
 * files others can read are warned about, and plain http:// off loopback is refused
 * without --insecure. Against the real coffer-relay binary (no vault needed).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { promises as fs, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const RELAY = fileURLToPath(new URL('../../../relay/dist/src/main.js', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function coffer(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      assert.doesNotMatch(stderr, /\n {4}at /, `stack trace from coffer ${args.join(' ')}:\n${stderr}`);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

async function relay(t: TestContext, dir: string): Promise<string> {
  await fs.writeFile(join(dir, 'link.key'), 'cd'.repeat(32) + '\n', { mode: 0o600 });
  const child = spawn(process.execPath, [RELAY, 'serve'], {
    env: { ...process.env, COFFER_RELAY_DATA_DIR: join(dir, 'relay'), COFFER_RELAY_PORT: '0', COFFER_RELAY_ADMIN: '0', COFFER_RELAY_LINK_KEY_FILE: join(dir, 'link.key'), COFFER_RELAY_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.after(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      err += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (c) => reject(new Error(`relay exited ${c}: ${err}`)));
  });
}

test('coffer account devices / revoke; a world-readable password file is warned about', { skip: !existsSync(RELAY) && 'coffer-relay is not built' }, async (t) => {
  const dir = await fs.mkdtemp(join(tmpdir(), 'coffer-cli-devices-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const url = await relay(t, dir);
  const pwFile = join(dir, 'account-pw');
  await fs.writeFile(pwFile, 'Correct-Horse-Battery-Staple-42\n', { mode: 0o644 });
  await fs.chmod(pwFile, 0o644);
  const p1 = ['--profile', join(dir, 'p1') + '/'];
  const p2 = ['--profile', join(dir, 'p2') + '/'];
  const created = await coffer(['account', 'create', '--server', url, '--account-password-file', pwFile, ...p1]);
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stderr, /warning: password file .* can be read by other users \(mode 644\)/);
  const account = created.stdout.trim();
  await fs.chmod(pwFile, 0o600);
  // A second device signs in with the password and gets its own key.
  const second = await coffer(['login', '--server', url, '--account', account, '--account-password-file', pwFile, ...p2]);
  assert.equal(second.code, 0, second.stderr);
  assert.doesNotMatch(second.stderr, /can be read by other users/);
  const listed = await coffer(['account', 'devices', '--json', ...p1]);
  assert.equal(listed.code, 0, listed.stderr);
  const devices = (JSON.parse(listed.stdout) as { devices: { publicKey: string; current: boolean }[] }).devices;
  assert.equal(devices.length, 2);
  const other = devices.find((d) => !d.current)!;
  const own = devices.find((d) => d.current)!;
  // Keys are base64url: one in 32 starts with '-'. After `--` any key is taken; before it,
  // such a key is a clear usage error that shows the `--` form.
  assert.equal((await coffer(['account', 'revoke', ...p1, '--', own.publicKey.slice(0, 8)])).code !== 0, true, 'not its own key');
  const dashed = await coffer(['account', 'revoke', '-zAbc123', ...p1]);
  assert.equal(dashed.code, 2);
  assert.match(dashed.stderr, /unknown option '-z' in '-zAbc123' \(an argument that starts with '-' goes after '--', as in: coffer account revoke --profile \S+ -- -zAbc123\)/);
  const revoked = await coffer(['account', 'revoke', ...p1, '--', other.publicKey.slice(0, 10)]);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stderr, /removed device key/);
  // The revoked device can no longer sign in with its key.
  const again = await coffer(['login', ...p2]);
  assert.notEqual(again.code, 0);
  const ended = await coffer(['account', 'revoke', '--sessions', '--json', ...p1]);
  assert.equal(ended.code, 0, ended.stderr);
  assert.equal(typeof (JSON.parse(ended.stdout) as { revokedSessions: number }).revokedSessions, 'number');
  assert.equal(JSON.parse((await coffer(['account', 'devices', '--json', ...p1])).stdout).devices.length, 1);
});

test('plain http:// to another machine is refused without --insecure', async (t) => {
  const dir = await fs.mkdtemp(join(tmpdir(), 'coffer-cli-insecure-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const r = await coffer(['account', 'create', '--server', 'http://relay.invalid:7440', '--profile', join(dir, 'p') + '/'], { COFFER_ACCOUNT_PASSWORD: '' });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /clear text.*https:\/\//);
  const forced = await coffer(['account', 'create', '--insecure', '--server', 'http://relay.invalid:7440', '--profile', join(dir, 'q') + '/']);
  assert.match(forced.stderr, /warning: --insecure/);
  assert.doesNotMatch(forced.stderr, /clear text.*use https/);
});
