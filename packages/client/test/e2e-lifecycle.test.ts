/**
 * The whole password-protected backup lifecycle with real processes — coffer-vault,
 * coffer-relay (the real one: `npm test` builds it, and a missing build is a failure,
 * never a silent fallback to a stand-in), and the real `coffer` binary for every step — followed by the blindness test
 * over everything recorded meanwhile (TESTING.md, "Front end"):
 *
 *   device A: login → vault enable → init + backup to the relay
 *   "lose the device" → device B (a new profile): login → vault recover → restore
 *   byte-identical → change password → wrong guesses count down → disable
 *
 * and the newcomer flow with a built-in account (no app login): account create with an
 * account password → vault enable → backup → delete the profile → a new profile logs in
 * with the account ID and account password → vault recover → restore byte-identical.
 *
 * Two recording TCP proxies sit on the relay's two links (clients→relay, relay→vault);
 * the relay's stdout/stderr and its data directory are kept. The blindness test then
 * asserts that no password, K, OPAQUE export key or session key appears in any of it,
 * raw or as hex/base64/base64url.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { COFFER_MAIN, RELAY_MAIN, appTokenIssuer, relayBuilt, startService, startVault, type Service } from './helpers/processes.js';
import { findSecret, startRecordingProxy, type RecordingProxy } from './helpers/recording-proxy.js';

const PASSWORD = 'blue-Giraffe-sings-at-9';
/** The built-in account's account password (the relay sees it by design; the vault never does). */
const ACCOUNT_PASSWORD = 'orange Kettle hums 77 times';
/** The built-in account's backup (vault) password. */
const BUILTIN_PASSWORD = 'violet-Otter-naps-at-3';
const NEW_PASSWORD = 'seven Quiet lanterns 42';

let dir: string;
let vault: Service & { bundle: string };
let relay: { url: string; output: () => { stdout: Buffer; stderr: Buffer }; stop: () => Promise<void>; dataDir: string };
let clientSide: RecordingProxy;
let vaultSide: RecordingProxy;
const issuer = appTokenIssuer();
const files: Record<string, string> = {};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coffer-e2e-'));
  vault = await startVault(dir);
  vaultSide = await startRecordingProxy(vault.url);
  const jwks = join(dir, 'jwks.json');
  await fs.writeFile(jwks, JSON.stringify({ keys: [issuer.jwk] }));
  assert.ok(relayBuilt(), `coffer-relay is not built (${RELAY_MAIN}): run \`npx tsc -b\` (npm test builds it)`);
  const dataDir = join(dir, 'relay');
  const s = await startService('coffer-relay', RELAY_MAIN, ['serve'], {
    COFFER_RELAY_HOST: '127.0.0.1',
    COFFER_RELAY_PORT: '0',
    COFFER_RELAY_DATA_DIR: dataDir,
    COFFER_RELAY_VAULT_NODES: vaultSide.url,
    COFFER_RELAY_LINK_KEY_FILE: join(dir, 'link.key'),
    COFFER_RELAY_JWT_JWKS_FILE: jwks,
    COFFER_RELAY_JWT_ISSUER: 'coffer-test-app',
    COFFER_RELAY_JWT_AUDIENCE: 'coffer-relay',
    COFFER_RELAY_LOG_LEVEL: 'debug',
  });
  relay = { url: s.url, output: s.output, stop: () => s.stop(), dataDir };
  clientSide = await startRecordingProxy(relay.url);
  files.bundle = join(dir, 'fleet.json');
  await fs.writeFile(files.bundle, vault.bundle);
  for (const [name, text] of Object.entries({ acctPw: ACCOUNT_PASSWORD, builtinPw: BUILTIN_PASSWORD, pw: PASSWORD, newPw: NEW_PASSWORD, wrong: 'not-my-password-1', tokA: issuer.token('alice'), tokB: issuer.token('alice') })) {
    files[name] = join(dir, `${name}.txt`);
    await fs.writeFile(files[name]!, text + '\n', { mode: 0o600 });
  }
  files.secrets = join(dir, 'secrets.jsonl');
});

after(async () => {
  await clientSide?.close();
  await relay?.stop();
  await vaultSide?.close();
  await vault?.stop();
  rmSync(dir, { recursive: true, force: true });
});

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function coffer(profile: string, args: string[]): Promise<Result> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    COFFER_PROFILE: join(dir, profile),
    COFFER_SERVER: clientSide.url,
    COFFER_FLEET_BUNDLE: files.bundle,
    COFFER_INSECURE_FAST_KSF_FOR_TESTING: '1',
    COFFER_INSECURE_DUMP_SECRETS_FOR_TESTING: files.secrets,
  };
  for (const k of ['COFFER_KEY', 'COFFER_REPOSITORY', 'COFFER_PASSWORD', 'COFFER_NEW_PASSWORD', 'COFFER_TOKEN', 'COFFER_ACCOUNT_PASSWORD']) delete env[k];
  return new Promise((resolve) => {
    execFile(process.execPath, [COFFER_MAIN, ...args], { env, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

async function ok(profile: string, args: string[]): Promise<Result> {
  const r = await coffer(profile, args);
  assert.equal(r.code, 0, `coffer ${args.join(' ')} → ${r.code}\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /internal error|\n {4}at /);
  return r;
}

async function fails(profile: string, args: string[], code: number, message: RegExp): Promise<Result> {
  const r = await coffer(profile, args);
  assert.equal(r.code, code, `coffer ${args.join(' ')}: expected exit ${code}, got ${r.code}\n${r.stderr}`);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^coffer: (warning|error): /m);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /internal error|\n {4}at /);
  return r;
}

async function treeDigest(root: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (p: string, rel: string): Promise<void> => {
    const st = await fs.lstat(p);
    if (st.isDirectory()) {
      h.update(`d ${rel} ${st.mode & 0o777}\n`);
      for (const e of (await fs.readdir(p)).sort()) await walk(join(p, e), `${rel}/${e}`);
    } else h.update(`f ${rel} ${st.mode & 0o777} `).update(await fs.readFile(p)).update('\n');
  };
  await walk(root, '');
  return h.digest('hex');
}

const keys: Buffer[] = [];

test('lifecycle: enable, back up, lose the device, recover with the password, restore byte-identical, change password, count down, disable', { timeout: 180_000 }, async () => {
  // Device A: the app's login names the account; enable password backups; back up.
  await ok('device-a', ['login', '--token-file', files.tokA!]);
  const enabled = JSON.parse((await ok('device-a', ['vault', 'enable', '--password-file', files.pw!, '--guess-limit', '5', '--json'])).stdout);
  assert.equal(enabled.mode, 'password');
  const profileA = JSON.parse(await fs.readFile(join(dir, 'device-a', 'profile.json'), 'utf8'));
  keys.push(Buffer.from(profileA.backupKey, 'hex'));
  const src = join(dir, 'photos');
  await fs.mkdir(join(src, 'album'), { recursive: true });
  const big = Buffer.alloc(5 << 20);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  await fs.writeFile(join(src, 'album', 'big.raw'), big);
  await fs.writeFile(join(src, 'notes.txt'), 'the quick brown fox\n');
  await fs.writeFile(join(src, 'empty'), '');
  await ok('device-a', ['init', '--repo', 'coffer:']);
  await ok('device-a', ['backup', '--repo', 'coffer:', src, '-q']);

  // "Lose the device": device B is a new profile with only the relay, the account and the password.
  await fails('device-b', ['vault', 'recover', '--password-file', files.pw!], 24, /not logged in/);
  await ok('device-b', ['login', '--token-file', files.tokB!]);
  await fails('device-b', ['snapshots', '--repo', 'coffer:'], 2, /no key given/);
  await ok('device-b', ['vault', 'recover', '--password-file', files.pw!]);
  const profileB = JSON.parse(await fs.readFile(join(dir, 'device-b', 'profile.json'), 'utf8'));
  assert.equal(profileB.backupKey, profileA.backupKey, 'device B recovered the same K');
  const snaps = JSON.parse((await ok('device-b', ['snapshots', '--repo', 'coffer:', '--json'])).stdout);
  assert.equal(snaps.length, 1);
  const target = join(dir, 'restored');
  await ok('device-b', ['restore', 'latest', '--repo', 'coffer:', '--target', target, '-q']);
  assert.equal(await treeDigest(join(target, 'photos')), await treeDigest(src), 'restore is byte-identical');

  // Change the password on device B; the old one is now a wrong guess.
  await ok('device-b', ['vault', 'change-password', '--password-file', files.pw!, '--new-password-file', files.newPw!]);
  await fails('device-b', ['vault', 'recover', '--password-file', files.pw!], 20, /wrong password: 4 guesses left/);
  await fails('device-b', ['vault', 'recover', '--password-file', files.wrong!], 20, /wrong password: 3 guesses left/);
  const st1 = JSON.parse((await ok('device-b', ['vault', 'status', '--json'])).stdout);
  assert.equal(st1.vault.guessesRemaining, 3);
  assert.equal(st1.vault.guessLimit, 5);
  // Device A (still logged in) recovers with the new password, which resets the count.
  await ok('device-a', ['vault', 'recover', '--password-file', files.newPw!]);
  assert.equal(JSON.parse((await ok('device-a', ['vault', 'status', '--json'])).stdout).vault.guessesRemaining, 5);

  // Disable: the record is gone; recovering is no longer possible.
  await ok('device-b', ['vault', 'disable']);
  const st2 = JSON.parse((await ok('device-b', ['vault', 'status', '--json'])).stdout);
  assert.deepEqual(st2.vault, { state: 'not-registered' });
  assert.equal(st2.mode, 'off');
  const gone = await coffer('device-a', ['vault', 'recover', '--password-file', files.newPw!]);
  assert.ok(gone.code === 23 || gone.code === 20, `recover after disable: ${gone.code} ${gone.stderr}`);
});

test('newcomer, built-in account: account create (account password), enable, back up, lose the device, log in on a new profile with the account password, recover, restore byte-identical', { timeout: 180_000 }, async () => {
  // Device A: a built-in account with an account password; the ID is the one line on stdout.
  const created = await ok('nc-a', ['account', 'create', '--account-password-file', files.acctPw!]);
  const account = created.stdout.trim();
  assert.match(account, /^local:[a-z0-9]{26}$/);
  assert.match(created.stderr, /keep the account ID/);
  await ok('nc-a', ['login']); // the device key still signs in
  assert.deepEqual(JSON.parse((await ok('nc-a', ['vault', 'status', '--json'])).stdout).vault, { state: 'not-registered' });
  // The backup password must differ from the account password: refused on the device, before the vault or relay sees it.
  await fails('nc-a', ['vault', 'enable', '--password-file', files.acctPw!], 2, /must differ from your account password/);
  await ok('nc-a', ['vault', 'enable', '--password-file', files.builtinPw!]);
  const profileA = JSON.parse(await fs.readFile(join(dir, 'nc-a', 'profile.json'), 'utf8'));
  keys.push(Buffer.from(profileA.backupKey, 'hex'));
  const src = join(dir, 'documents');
  await fs.mkdir(join(src, 'taxes'), { recursive: true });
  await fs.writeFile(join(src, 'taxes', '2024.pdf'), Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) & 0xff)));
  await fs.writeFile(join(src, 'todo.md'), '- back up\n- lose the phone\n- restore\n');
  await ok('nc-a', ['init', '--repo', 'coffer:']);
  await ok('nc-a', ['backup', '--repo', 'coffer:', src, '-q']);

  // Lose the device: its whole profile (device key, session, K) is gone.
  await fs.rm(join(dir, 'nc-a'), { recursive: true, force: true });

  // Device B: only the relay URL (COFFER_SERVER), the account ID and the account password.
  await fails('nc-b', ['login', '--account', account, '--account-password-file', files.wrong!], 24, /refused the account password/);
  await ok('nc-b', ['login', '--account', account, '--account-password-file', files.acctPw!]);
  const profileB = JSON.parse(await fs.readFile(join(dir, 'nc-b', 'profile.json'), 'utf8'));
  assert.equal(profileB.account, account);
  assert.ok(profileB.deviceKey, 'device B registered its own device key');
  await ok('nc-b', ['login']); // … so later logins use the key, not the password
  await ok('nc-b', ['vault', 'recover', '--password-file', files.builtinPw!]);
  assert.equal(JSON.parse(await fs.readFile(join(dir, 'nc-b', 'profile.json'), 'utf8')).backupKey, profileA.backupKey, 'device B recovered the same K');
  const target = join(dir, 'nc-restored');
  await ok('nc-b', ['restore', 'latest', '--repo', 'coffer:', '--target', target, '-q']);
  assert.equal(await treeDigest(join(target, 'documents')), await treeDigest(src), 'restore is byte-identical');
  // Changing the backup password to the account password is refused on device B too.
  await fails('nc-b', ['vault', 'change-password', '--password-file', files.builtinPw!, '--new-password-file', files.acctPw!], 2, /must differ from your account password/);
});

test('blindness: no password, K, export key or session key in anything the relay sent, received, logged or stored', { timeout: 120_000 }, async () => {
  const dumped = (await fs.readFile(files.secrets!, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { exportKey: string; sessionKey: string | null });
  const exportKeys = [...new Set(dumped.map((d) => d.exportKey))].map((h) => Buffer.from(h, 'hex'));
  const sessionKeys = [...new Set(dumped.map((d) => d.sessionKey).filter((s): s is string => s !== null))].map((h) => Buffer.from(h, 'hex'));
  // One export key per registration (enable, change password): a recovery re-derives it.
  assert.ok(exportKeys.length >= 2, `export keys seen: ${exportKeys.length}`);
  assert.ok(sessionKeys.length >= 3, `session keys seen: ${sessionKeys.length}`);
  assert.equal(keys.length, 2);
  const secrets: Array<[string, Uint8Array]> = [
    ['password', Buffer.from(PASSWORD)],
    ['new password', Buffer.from(NEW_PASSWORD)],
    ['built-in account backup password', Buffer.from(BUILTIN_PASSWORD)],
    ...keys.flatMap((k, i): Array<[string, Uint8Array]> => [
      [`K ${i}`, k],
      [`K ${i} as 64 digits`, Buffer.from(k.toString('hex').replace(/(.{4})(?=.)/g, '$1 '))],
    ]),
    ...exportKeys.map((k, i): [string, Uint8Array] => [`export key ${i}`, k]),
    ...sessionKeys.map((k, i): [string, Uint8Array] => [`session key ${i}`, k]),
  ];

  const out = relay.output();
  const stored: Buffer[] = [];
  if (relay.dataDir) {
    // A file or directory the relay removes meanwhile (an upload's temporary file, a
    // directory it emptied) is skipped, not an error: what is gone stores nothing. The
    // data directory itself must be there.
    const gone = (e: unknown) => {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    };
    const walk = async (p: string): Promise<void> => {
      const list = fs.readdir(p, { withFileTypes: true });
      for (const e of await (p === relay.dataDir ? list : list.catch((err) => (gone(err), [])))) {
        if (e.isDirectory()) await walk(join(p, e.name));
        else stored.push(await fs.readFile(join(p, e.name)).catch((err) => (gone(err), Buffer.alloc(0))));
      }
    };
    await walk(relay.dataDir);
  }
  const places: Array<[string, Buffer]> = [
    ['clients → relay', Buffer.concat(clientSide.toUpstream)],
    ['relay → clients', Buffer.concat(clientSide.fromUpstream)],
    ['relay → vault', Buffer.concat(vaultSide.toUpstream)],
    ['vault → relay', Buffer.concat(vaultSide.fromUpstream)],
    ['relay stdout', out.stdout],
    ['relay stderr', out.stderr],
    ['relay data directory', Buffer.concat(stored)],
  ];
  // The recording saw the run: the sealed vault traffic and the backup's bytes went through.
  assert.ok(places[0]![1].length > 5 << 20, 'the backup crossed the client link');
  assert.ok(places[2]![1].includes(Buffer.from('POST /v1/request')), 'vault requests crossed the vault link');
  assert.ok(places[0]![1].includes(Buffer.from('PUT /v1/blobs/config')));
  assert.ok(out.stdout.length > 0, 'the relay logged');
  // And the search itself finds a secret planted in each form.
  assert.deepEqual(findSecret(Buffer.from(`x"${Buffer.concat([Buffer.from([7]), keys[0]!]).toString('base64url')}"`), keys[0]!).length > 0, true);

  const leaks: string[] = [];
  for (const [what, secret] of secrets) {
    for (const [where, bytes] of places) {
      const forms = findSecret(bytes, secret);
      if (forms.length > 0) leaks.push(`${what} in ${where} (${forms.join(', ')})`);
    }
  }
  // The account password is the relay's own login secret: clients send it to the relay by
  // design (account create, password login), and the relay stores only its scrypt
  // verifier. It must appear nowhere else: not on the vault link, not in the relay's
  // answers, logs or data directory.
  assert.ok(findSecret(places[0]![1], Buffer.from(ACCOUNT_PASSWORD)).length > 0, 'the account password did cross the client link (the search works)');
  for (const [where, bytes] of places.slice(1)) {
    const forms = findSecret(bytes, Buffer.from(ACCOUNT_PASSWORD));
    if (forms.length > 0) leaks.push(`account password in ${where} (${forms.join(', ')})`);
  }
  assert.deepEqual(leaks, [], `secrets leaked:\n${leaks.join('\n')}`);
  process.stderr.write(`# blindness: ${secrets.length} secrets × ${places.length} places, ${places.reduce((n, [, b]) => n + b.length, 0)} bytes searched, relay: coffer-relay\n`);
});

test('disable on a device without the backup key needs the backup password (a recovery first); a wrong one deletes nothing', { timeout: 180_000 }, async () => {
  for (const [name, text] of Object.entries({ tokDa: issuer.token('dora'), tokDb: issuer.token('dora') })) {
    files[name] = join(dir, `${name}.txt`);
    await fs.writeFile(files[name]!, text + '\n', { mode: 0o600 });
  }
  await ok('dis-a', ['login', '--token-file', files.tokDa!]);
  await ok('dis-a', ['vault', 'enable', '--password-file', files.pw!]);
  await ok('dis-b', ['login', '--token-file', files.tokDb!]);
  // dis-b holds no K: its disable recovers first; a wrong password is a counted guess and deletes nothing.
  await fails('dis-b', ['vault', 'disable', '--password-file', files.wrong!], 20, /wrong password/);
  assert.equal(JSON.parse((await ok('dis-a', ['vault', 'status', '--json'])).stdout).vault.state, 'active');
  await ok('dis-b', ['vault', 'disable', '--password-file', files.pw!]);
  assert.deepEqual(JSON.parse((await ok('dis-a', ['vault', 'status', '--json'])).stdout).vault, { state: 'not-registered' });
});
