/**
 * `@coffer/client/blobs` (issue 13): the relay's blob API and the profile's backup key
 * without CofferClient. It must authenticate exactly as CofferClient's backend does (the
 * profile's token; on a 401 a new sign-in with the device key), refuse what CofferClient
 * refuses, and a `coffer backup --repo coffer:` through it must load none of the vault
 * protocol while every other command still works. Against the real coffer-relay.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, test } from 'node:test';
import { BackupKey, CofferError } from '@coffer/backup';
import { CofferClient, CofferClientError } from '../src/index.js';
import { RelayBlobs, CofferClientError as BlobsClientError } from '../src/blobs.js';
import { COFFER_MAIN, RELAY_MAIN, relayBuilt, startService, type Service } from './helpers/processes.js';

/** Loopback address for the relay (COFFER_TEST_HOST, e.g. 127.0.0.31 on a shared machine). */
const HOST = process.env.COFFER_TEST_HOST || '127.0.0.1';

let dir: string;
let relay: Service;
let n = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coffer-blobs-slim-'));
  assert.ok(relayBuilt(), `coffer-relay is not built (${RELAY_MAIN}): run \`npx tsc -b\``);
  writeFileSync(join(dir, 'link.key'), randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  const config = join(dir, 'relay.json');
  writeFileSync(config, JSON.stringify({ limits: { accountCreation: { perSecond: 10, burst: 1000 }, signInByAddress: { perSecond: 10, burst: 1000 } } }));
  relay = await startService('relay', RELAY_MAIN, ['serve'], {
    COFFER_RELAY_CONFIG: config,
    COFFER_RELAY_HOST: HOST,
    COFFER_RELAY_PORT: '0',
    COFFER_RELAY_ADMIN: '0',
    COFFER_RELAY_DATA_DIR: join(dir, 'relay'),
    COFFER_RELAY_LINK_KEY_FILE: join(dir, 'link.key'),
    COFFER_RELAY_LOG_LEVEL: 'warn',
  });
});

after(async () => {
  await relay?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function newAccount(): Promise<CofferClient> {
  const c = await CofferClient.open(join(dir, `profile-${++n}`), { server: relay.url });
  await c.createAccount();
  return c;
}

test('the slim backend and CofferClient share one namespace; the key comes from the profile; the error class is the SDK\'s', async () => {
  assert.equal(BlobsClientError, CofferClientError);
  const c = await newAccount();
  await c.blobBackend().put('data/aa', [new Uint8Array([1, 2, 3])]);
  const slim = await RelayBlobs.open(c.profile.dir);
  const b = slim.backend();
  assert.equal(b.location, `coffer:${relay.url}`);
  assert.deepEqual([...(await b.get('data/aa'))], [1, 2, 3]);
  const w = await b.create('index/bb');
  await w.write([new Uint8Array([4, 5])]);
  await w.commit();
  assert.deepEqual(await c.blobBackend().list(''), [
    { name: 'data/aa', size: 3 },
    { name: 'index/bb', size: 2 },
  ]);
  assert.equal(slim.backupKey(), undefined);
  const k = BackupKey.generate();
  await c.profile.update({ backupKey: Buffer.from(k.exportBytes()).toString('hex') });
  assert.ok((await RelayBlobs.open(c.profile.dir)).backupKey()!.equals(k));
  // Another account's slim backend sees none of it.
  const other = await newAccount();
  assert.deepEqual(await (await RelayBlobs.open(other.profile.dir)).backend().list(''), []);
});

test('an expired or forged token: a new sign-in with the device key, saved; without a device key the write is refused', async () => {
  const c = await newAccount();
  const first = c.profile.state.token;
  await c.profile.update({ token: 'forged-' + randomBytes(16).toString('hex') });
  const slim = await RelayBlobs.open(c.profile.dir);
  const w = await slim.backend().create('data/cc');
  await w.write([new Uint8Array(1000).fill(7)]);
  await w.commit();
  const token = JSON.parse(await fs.readFile(join(c.profile.dir, 'profile.json'), 'utf8')).token as string;
  assert.ok(token && !token.startsWith('forged-') && token !== first, 'a fresh session token was saved');
  assert.equal((await c.blobBackend().stat('data/cc'))?.size, 1000);
  // No device key (an app-token profile whose token the relay refuses): nothing is written.
  const deviceKey = c.profile.state.deviceKey;
  await c.profile.update({ token: 'forged-' + randomBytes(16).toString('hex'), deviceKey: undefined });
  const refused = (await RelayBlobs.open(c.profile.dir)).backend();
  await assert.rejects(refused.put('data/dd', [new Uint8Array(3)]), (e: unknown) => CofferError.is(e, 'storage'));
  const w2 = await refused.create('data/ee');
  await w2.write([new Uint8Array(3)]);
  await assert.rejects(w2.commit(), (e: unknown) => CofferError.is(e, 'storage') && /credentials/.test((e as Error).message));
  await assert.rejects(refused.list(''), (e: unknown) => CofferError.is(e, 'storage'));
  await c.profile.update({ deviceKey });
  await c.login();
  assert.equal(await c.blobBackend().stat('data/dd'), null);
  assert.equal(await c.blobBackend().stat('data/ee'), null);
});

test('refuses what CofferClient refuses: no server, not logged in, plain http off this machine, bad object names', async () => {
  const empty = await RelayBlobs.open(join(dir, `profile-${++n}`));
  assert.throws(() => empty.backend(), (e: unknown) => CofferClientError.is(e, 'not-logged-in'));
  const noAccount = await RelayBlobs.open(join(dir, `profile-${++n}`), { server: relay.url });
  assert.throws(() => noAccount.backend(), (e: unknown) => CofferClientError.is(e, 'not-logged-in'));
  await assert.rejects(RelayBlobs.open(join(dir, `profile-${++n}`), { server: 'http://192.0.2.1:7440' }), (e: unknown) => CofferClientError.is(e, 'bad-config') && /clear text/.test((e as Error).message));
  await assert.rejects(RelayBlobs.open(join(dir, `profile-${++n}`), { server: 'ftp://example.com' }), (e: unknown) => CofferClientError.is(e, 'bad-config'));
  const c = await newAccount();
  await c.profile.update({ server: undefined });
  await assert.rejects((async () => (await RelayBlobs.open(c.profile.dir)).backend())(), (e: unknown) => CofferClientError.is(e, 'bad-config') && /no server/.test((e as Error).message));
  const d = await newAccount();
  const b = (await RelayBlobs.open(d.profile.dir)).backend();
  for (const bad of ['../x', 'Data/x', 'data//x', '', 'a'.repeat(201)]) {
    await assert.rejects(b.put(bad, [new Uint8Array(1)]), RangeError, bad);
    await assert.rejects(b.get(bad), RangeError, bad);
  }
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  loaded: string[];
}

/** The CLI, with a preload that lists every module of @coffer/client, @coffer/protocol and @coffer/backup it loaded. */
async function coffer(profile: string, args: string[]): Promise<Run> {
  const hook = join(dir, 'hook.mjs');
  await fs.writeFile(
    hook,
    `import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(\`
export async function resolve(spec, ctx, next) {
  const r = await next(spec, ctx);
  if (/packages\\\\/(client|protocol|backup)\\\\/dist\\\\//.test(r.url)) (await import('node:fs')).appendFileSync(process.env.LOADED_LIST, r.url + '\\\\n');
  return r;
}\`));
`,
  );
  const list = join(dir, `loaded-${++n}.txt`);
  const env: NodeJS.ProcessEnv = { ...process.env, COFFER_PROFILE: profile, COFFER_SERVER: relay.url, LOADED_LIST: list };
  for (const k of ['COFFER_KEY', 'COFFER_REPOSITORY', 'COFFER_PASSWORD', 'COFFER_ACCOUNT_PASSWORD', 'COFFER_FLEET_BUNDLE']) delete env[k];
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', hook, COFFER_MAIN, ...args], { env, maxBuffer: 1 << 24 }, async (err, stdout, stderr) => {
      const loaded = (await fs.readFile(list, 'utf8').catch(() => '')).split('\n').filter(Boolean);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, loaded });
    });
  });
}

/** A profile with a new built-in account (made by the CLI) and a key file beside it. */
async function newCliAccount(): Promise<{ profile: string; keyFile: string }> {
  const profile = join(dir, `cli-${++n}`);
  const created = await coffer(profile, ['account', 'create', '-q']);
  assert.equal(created.code, 0, created.stderr);
  const keyFile = join(dir, `key-${n}`);
  await fs.writeFile(keyFile, '42'.repeat(32), { mode: 0o600 });
  return { profile, keyFile };
}

/** What only the vault flows need: CofferClient, KeyVault, the protocol's index (HPKE, OPAQUE, messages). */
const VAULT_SIDE = /client\/dist\/src\/(coffer-client|key-vault|index)\.js$|protocol\/dist\/src\/(index|opaque|hpke|client|envelope|messages)\.js$/;

/**
 * @coffer/backup's index and what only other commands need (restore, prune, check, copy,
 * repair, and picomatch with the filters): a backup to coffer: loads none of it, as a
 * backup to a local directory does not (issue 13: ~20 modules, ~40 ms of start-up).
 */
const BACKUP_WHOLE = /backup\/dist\/src\/(index|repository\/(restore|prune|check|copy|repair|filter))\.js$/;

test('coffer backup / snapshots / restore to coffer: load no vault protocol (a backup none of @coffer/backup beyond what it needs); the other commands keep working', { timeout: 120_000 }, async () => {
  const { profile, keyFile } = await newCliAccount();
  const src = join(dir, `src-${n}`);
  await fs.mkdir(join(src, 'sub'), { recursive: true });
  await fs.writeFile(join(src, 'sub', 'note.txt'), 'hello');
  await fs.writeFile(join(src, 'big.bin'), randomBytes(3 << 20));
  const target = join(dir, `out-${n}`);
  const repo = ['--repo', 'coffer:', '--key-file', keyFile];
  for (const args of [['init', '-q', ...repo], ['backup', '-q', ...repo, src], ['snapshots', '-q', ...repo], ['restore', 'latest', '--target', target, '-q', ...repo]]) {
    const r = await coffer(profile, args);
    assert.equal(r.code, 0, `${args[0]}: ${r.stderr}`);
    assert.ok(r.loaded.some((u) => u.endsWith('client/dist/src/blobs.js')), `${args[0]} went through @coffer/client/blobs`);
    const vaultSide = r.loaded.filter((u) => VAULT_SIDE.test(u));
    assert.deepEqual(vaultSide, [], `${args[0]} loaded ${vaultSide.join(', ')}`);
    if (args[0] === 'backup') {
      const whole = r.loaded.filter((u) => BACKUP_WHOLE.test(u));
      assert.deepEqual(whole, [], `backup loaded ${whole.join(', ')}`);
    }
  }
  assert.deepEqual(await fs.readFile(join(target, basename(src), 'big.bin')), await fs.readFile(join(src, 'big.bin')));
  // The key from the profile (what `coffer vault enable` / `recover` keep): no --key-file.
  const state = JSON.parse(await fs.readFile(join(profile, 'profile.json'), 'utf8'));
  await fs.writeFile(join(profile, 'profile.json'), JSON.stringify({ ...state, backupKey: '42'.repeat(32) }), { mode: 0o600 });
  const snaps = await coffer(profile, ['snapshots', '--repo', 'coffer:', '--json']);
  assert.equal(snaps.code, 0, snaps.stderr);
  assert.equal(JSON.parse(snaps.stdout).length, 1);
  // Another command still loads the whole client and works.
  const devices = await coffer(profile, ['account', 'devices', '--json']);
  assert.equal(devices.code, 0, devices.stderr);
  assert.ok(devices.loaded.some((u) => u.endsWith('client/dist/src/coffer-client.js')));
  // Errors keep the client's exit codes: a profile never logged in (not-logged-in, 24).
  const none = await coffer(join(dir, `cli-${++n}`), ['snapshots', ...repo]);
  assert.equal(none.code, 24, none.stderr);
  assert.match(none.stderr, /^coffer: error: not logged in/m);
});

/**
 * Runs the CLI with a preload that, once the command is done (beforeExit), grows the old
 * generation by some 30 MB and reports the kinds of collections V8 ran for it: 8
 * (NODE_PERFORMANCE_GC_INCREMENTAL) only when incremental marking is on.
 */
async function gcKindsAfter(profile: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stderr: string; kinds: Record<string, number> }> {
  const probe = join(dir, 'gc-probe.mjs');
  await fs.writeFile(
    probe,
    `import { PerformanceObserver } from 'node:perf_hooks';
import { writeFileSync } from 'node:fs';
let done = false;
process.on('beforeExit', () => {
  if (done) return;
  done = true;
  const kinds = {};
  const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) kinds[e.detail.kind] = (kinds[e.detail.kind] ?? 0) + 1; });
  obs.observe({ entryTypes: ['gc'] });
  const keep = [];
  for (let i = 0; i < 400000; i++) keep.push({ a: i, b: [i, i + 1] });
  setTimeout(() => { obs.disconnect(); writeFileSync(process.env.GC_KINDS, JSON.stringify(kinds)); }, 100);
});
`,
  );
  const out = join(dir, `gc-kinds-${++n}.json`);
  const full: NodeJS.ProcessEnv = { ...process.env, COFFER_PROFILE: profile, COFFER_SERVER: relay.url, GC_KINDS: out, ...env };
  for (const k of ['COFFER_KEY', 'COFFER_REPOSITORY', 'COFFER_PASSWORD', 'COFFER_ACCOUNT_PASSWORD', 'COFFER_FLEET_BUNDLE', 'COFFER_V8_DEFAULT_HEAP']) if (!(k in env)) delete full[k];
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', probe, COFFER_MAIN, ...args], { env: full, maxBuffer: 1 << 24 }, async (err, _stdout, stderr) => {
      const kinds = JSON.parse(await fs.readFile(out, 'utf8').catch(() => '{}')) as Record<string, number>;
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stderr, kinds });
    });
  });
}

test('coffer backup to coffer: turns V8 incremental marking off; a restore, a local repository and COFFER_V8_DEFAULT_HEAP=1 keep it', { timeout: 120_000 }, async () => {
  const { profile, keyFile } = await newCliAccount();
  const src = join(dir, `gc-src-${n}`);
  await fs.mkdir(src);
  await fs.writeFile(join(src, 'a.bin'), randomBytes(100_000));
  const relayRepo = ['--repo', 'coffer:', '--key-file', keyFile];
  assert.equal((await coffer(profile, ['init', '-q', ...relayRepo])).code, 0);
  const off = await gcKindsAfter(profile, ['backup', '-q', ...relayRepo, src]);
  assert.equal(off.code, 0, off.stderr);
  assert.ok(Object.keys(off.kinds).length > 0, 'the probe saw collections');
  assert.equal(off.kinds['8'], undefined, `incremental marking ran: ${JSON.stringify(off.kinds)}`);
  // The probe does see incremental marking where it stays on.
  const kept = await gcKindsAfter(profile, ['backup', '-q', ...relayRepo, src], { COFFER_V8_DEFAULT_HEAP: '1' });
  assert.equal(kept.code, 0, kept.stderr);
  assert.ok((kept.kinds['8'] ?? 0) > 0, `no incremental marking with COFFER_V8_DEFAULT_HEAP=1: ${JSON.stringify(kept.kinds)}`);
  const restored = await gcKindsAfter(profile, ['restore', 'latest', '-q', '--target', join(dir, `gc-out-${n}`), ...relayRepo]);
  assert.equal(restored.code, 0, restored.stderr);
  assert.ok((restored.kinds['8'] ?? 0) > 0, `a restore changed V8's marking: ${JSON.stringify(restored.kinds)}`);
  const local = join(dir, `local-${n}`);
  assert.equal((await coffer(profile, ['init', '-q', '--repo', local, '--key-file', keyFile])).code, 0);
  const localRun = await gcKindsAfter(profile, ['backup', '-q', '--repo', local, '--key-file', keyFile, src]);
  assert.equal(localRun.code, 0, localRun.stderr);
  assert.ok((localRun.kinds['8'] ?? 0) > 0, `a local repository changed V8's marking: ${JSON.stringify(localRun.kinds)}`);
});
