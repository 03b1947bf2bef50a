/**
 * The SDK against real processes: coffer-vault (software platform, SQLite, fast test KSF)
 * behind the real coffer-relay (built-in accounts and app tokens, the fleet bundle it
 * serves, its limits raised only where these tests make many accounts from one address):
 * every flow, every typed error, the profile on disk, and the blob backend under the
 * backup engine. No stand-in relay: every behaviour tested here is the real relay's.
 */
import assert from 'node:assert/strict';
import { promises as fs, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { createServer } from 'node:net';
import { BackupKey, CofferError, Repository, backup, restore } from '@coffer/backup';
import { createECDH } from 'node:crypto';
import { INSECURE_FAST_KSF_FOR_TESTING, bundleToJson, fleetKeyFromPublicKey } from '@coffer/protocol';
import { CofferClient, CofferClientError, RETRY_SAFE, UntrustedFleetBundleError, passwordWeakness, type CofferClientOptions } from '../src/index.js';
import { RELAY_MAIN, appTokenIssuer, relayBuilt, startService, startVault, type Service } from './helpers/processes.js';

const PASSWORD = 'correct horse battery staple';
const NEW_PASSWORD = 'Tr0ubadour&3-elephants';

let dir: string;
let vault: Service & { bundle: string };
let relay: Service;
const issuer = appTokenIssuer();
let n = 0;
/** Every CofferClientError these tests saw, for the retry-safety check at the end. */
const seen = new Map<string, boolean>();

/** A loopback port nothing listens on (bound, then closed): connections are refused. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A real coffer-relay in front of `vaultUrl`, with its own data directory. */
async function startRelay(name: string, vaultUrl: string, extra: Record<string, string> = {}): Promise<Service> {
  assert.ok(relayBuilt(), `coffer-relay is not built (${RELAY_MAIN}): run \`npx tsc -b\``);
  const jwks = join(dir, 'jwks.json');
  await fs.writeFile(jwks, JSON.stringify({ keys: [issuer.jwk] }));
  const bundleFile = join(dir, 'fleet-bundle.json');
  await fs.writeFile(bundleFile, vault.bundle);
  // These tests create some 30 accounts from 127.0.0.1: the default of 10 per address
  // (then one a minute) is the relay doing its job, not what is tested here.
  const config = join(dir, `${name}.json`);
  await fs.writeFile(config, JSON.stringify({ limits: { accountCreation: { perSecond: 10, burst: 1000 }, signInByAddress: { perSecond: 10, burst: 1000 } } }));
  return startService(name, RELAY_MAIN, ['serve'], {
    COFFER_RELAY_CONFIG: config,
    COFFER_RELAY_HOST: '127.0.0.1',
    COFFER_RELAY_PORT: '0',
    COFFER_RELAY_DATA_DIR: join(dir, name),
    COFFER_RELAY_VAULT_NODES: vaultUrl,
    COFFER_RELAY_LINK_KEY_FILE: join(dir, 'link.key'),
    COFFER_RELAY_JWT_JWKS_FILE: jwks,
    COFFER_RELAY_JWT_ISSUER: 'coffer-test-app',
    COFFER_RELAY_JWT_AUDIENCE: 'coffer-relay',
    COFFER_RELAY_FLEET_BUNDLE_FILE: bundleFile,
    COFFER_RELAY_LOG_LEVEL: 'warn',
    ...extra,
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coffer-client-test-'));
  vault = await startVault(dir, { COFFER_VAULT_GUESS_LIMIT: '5' });
  relay = await startRelay('relay', vault.url);
});

after(async () => {
  await relay?.stop();
  await vault?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function device(options: CofferClientOptions = {}): Promise<CofferClient> {
  return CofferClient.open(join(dir, `profile-${++n}`), { server: relay.url, fleetBundle: vault.bundle, ksf: INSECURE_FAST_KSF_FOR_TESTING, ...options });
}

/** A new built-in account on a new device. */
async function newAccount(): Promise<CofferClient> {
  const c = await device();
  await c.createAccount();
  return c;
}

async function rejectsWith(p: Promise<unknown>, code: string, check: (e: CofferClientError) => void = () => {}): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(CofferClientError.is(e), `expected CofferClientError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.ok(e.is(code as never));
    seen.set(e.code, e.retrySafe);
    check(e);
    return true;
  });
}

describe('password rules', () => {
  test('refuse short, repeated, sequential, one-class and common passwords, with the reason', () => {
    assert.match(passwordWeakness('short1!')!, /at least 10 characters/);
    assert.match(passwordWeakness('aaaaaaaaaaaa')!, /repeated/);
    assert.match(passwordWeakness('1234567890')!, /sequence/);
    assert.match(passwordWeakness('abcdefghijk')!, /sequence/);
    assert.match(passwordWeakness('onlylowercase')!, /two kinds/);
    assert.match(passwordWeakness('Password123!')!, /common/);
    assert.match(passwordWeakness('my-coffer-pass1')!, /name of this program/);
  });
  test('accept a long passphrase of plain words and a short mixed password', () => {
    assert.equal(passwordWeakness('correct horse battery staple'), null);
    assert.equal(passwordWeakness('lowercaselongenough'), null);
    assert.equal(passwordWeakness('Tr0ub4dor&3'), null);
  });
});

describe('accounts and sessions', () => {
  test('account create makes a device key and a session; the profile file is 0600 and holds no password', async () => {
    const c = await newAccount();
    assert.match(c.account, /^local:[a-z0-9]{26}$/);
    const st = await fs.stat(c.profile.path);
    assert.equal(st.mode & 0o777, 0o600);
    await c.enablePassword(PASSWORD);
    const text = await fs.readFile(c.profile.path, 'utf8');
    assert.ok(!text.includes(PASSWORD));
    assert.ok(!inspect(c).includes('PRIVATE KEY') && !inspect(c.profile).includes('PRIVATE KEY'));
  });

  test('a session token the relay no longer accepts is renewed with the device key', async () => {
    const c = await newAccount();
    await c.profile.update({ token: 'forged' });
    const s = await c.status();
    assert.equal(s.vault?.state, 'not-registered');
    assert.notEqual(c.profile.state.token, 'forged');
  });

  test('a forged app token: invalid-credentials, not retry safe', async () => {
    const c = await device();
    await c.useAppToken(issuer.token('mallory').replace(/.{4}$/, 'AAAA'));
    await rejectsWith(c.status(), 'invalid-credentials', (e) => assert.equal(e.retrySafe, false));
  });

  test('not logged in: not-logged-in', async () => {
    const c = await device();
    await rejectsWith(c.enablePassword(PASSWORD), 'not-logged-in');
  });
});

describe('password mode', () => {
  test('enable, then a new device (same app account) recovers the same K with the password', async () => {
    const sub = `alice-${n}`;
    const a = await device();
    await a.useAppToken(issuer.token(sub));
    const k = await a.enablePassword(PASSWORD);
    const s = await a.status();
    assert.equal(s.mode, 'password');
    assert.deepEqual(s.vault, { state: 'active', guessesRemaining: 5, guessLimit: 5, ksf: INSECURE_FAST_KSF_FOR_TESTING });
    const b = await device();
    await b.useAppToken(issuer.token(sub));
    const recovered = await b.recover(PASSWORD);
    assert.ok(recovered.equals(k));
    assert.ok(b.backupKey()!.equals(k));
  });

  test('a bundle fetched from the relay is pinned as unverified: recover and status use it, enable and change-password refuse it', async () => {
    const c = await CofferClient.open(join(dir, `profile-${++n}`), { server: relay.url, ksf: INSECURE_FAST_KSF_FOR_TESTING });
    await c.createAccount();
    await assert.rejects(c.enablePassword(PASSWORD), (e: unknown) => {
      assert.ok(e instanceof UntrustedFleetBundleError);
      assert.equal(e.code, 'bad-config');
      assert.match(e.message, /--fleet-bundle/);
      assert.match(e.message, /COFFER_FLEET_BUNDLE/);
      assert.match(e.message, /coffer-vault bundle/);
      return true;
    });
    assert.equal(c.profile.state.fleetBundle, vault.bundle);
    assert.equal(c.profile.state.fleetBundleSource, 'fetched-unverified');
    assert.equal(c.fleetBundleTrusted, false);
    assert.equal((await c.status()).vault?.state, 'not-registered');
    await rejectsWith(c.changePassword(PASSWORD, NEW_PASSWORD), 'bad-config');
    // The same bundle, configured, upgrades the pin.
    const trusted = await CofferClient.open(c.profile.dir, { server: relay.url, fleetBundle: vault.bundle + '\n', ksf: INSECURE_FAST_KSF_FOR_TESTING });
    await trusted.enablePassword(PASSWORD);
    assert.equal(trusted.profile.state.fleetBundleSource, 'configured');
  });

  test('recover refuses a bundle fetched from the relay (the relay could play the vault) and works with a configured one', async () => {
    const sub = `fetched-${n}`;
    const a = await device();
    await a.useAppToken(issuer.token(sub));
    const k = await a.enablePassword(PASSWORD);
    const b = await CofferClient.open(join(dir, `profile-${++n}`), { server: relay.url });
    await b.useAppToken(issuer.token(sub));
    await assert.rejects(b.recover(PASSWORD), (e) => e instanceof UntrustedFleetBundleError);
    assert.equal(b.profile.state.fleetBundleSource, 'fetched-unverified');
    assert.equal(b.backupKey(), undefined, 'nothing was recovered');
    const c = await CofferClient.open(join(dir, `profile-${++n}`), { server: relay.url, fleetBundle: vault.bundle });
    await c.useAppToken(issuer.token(sub));
    assert.ok((await c.recover(PASSWORD)).equals(k));
  });

  test('a configured bundle that differs from the pinned one is refused', async () => {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const fake = bundleToJson({ version: 1, suite: JSON.parse(vault.bundle).suite as never, keys: [await fleetKeyFromPublicKey(new Uint8Array(ecdh.getPublicKey()))] });
    const c = await newAccount(); // pinned: vault.bundle, configured
    for (const pinnedBy of ['configured', 'fetched']) {
      const dirOf = pinnedBy === 'configured' ? c.profile.dir : join(dir, `profile-${++n}`);
      if (pinnedBy === 'fetched') await (await CofferClient.open(dirOf, { server: relay.url })).fleetKey();
      else await c.fleetKey();
      const other = await CofferClient.open(dirOf, { server: relay.url, fleetBundle: fake });
      await rejectsWith(other.fleetKey(), 'bad-config', (e) => assert.match(e.message, /differs from the one pinned/));
    }
  });

  test('wrong guesses count down with guessesRemaining; the right password resets the count', async () => {
    const c = await newAccount();
    await c.enablePassword(PASSWORD, { guessLimit: 4 });
    await rejectsWith(c.recover('wrong password 1'), 'wrong-password', (e) => {
      assert.equal(e.guessesRemaining, 3);
      assert.equal(e.retrySafe, true);
    });
    await rejectsWith(c.recover('wrong password 2'), 'wrong-password', (e) => assert.equal(e.guessesRemaining, 2));
    assert.equal((await c.status()).vault?.state, 'active');
    await c.recover(PASSWORD);
    const s = await c.status();
    assert.equal(s.vault?.state === 'active' && s.vault.guessesRemaining, 4);
  });

  test('the guess limit erases the key: locked, then the right password fails too', async () => {
    const c = await newAccount();
    await c.enablePassword(PASSWORD, { guessLimit: 2 });
    await rejectsWith(c.recover('wrong password 1'), 'wrong-password', (e) => assert.equal(e.guessesRemaining, 1));
    await rejectsWith(c.recover('wrong password 2'), 'locked');
    await rejectsWith(c.recover(PASSWORD), 'locked', (e) => assert.equal(e.retrySafe, false));
    assert.deepEqual((await c.status()).vault, { state: 'locked' });
  });

  test('enabling twice: already-registered', async () => {
    const c = await newAccount();
    await c.enablePassword(PASSWORD);
    await rejectsWith(c.enablePassword(NEW_PASSWORD), 'already-registered');
  });

  test('a weak password is refused before anything is sent', async () => {
    const c = await newAccount();
    await rejectsWith(c.enablePassword('password1'), 'weak-password', (e) => assert.match(e.reason!, /at least 10/));
    assert.equal((await c.status()).vault?.state, 'not-registered');
  });

  test('change password: the old one stops working, the new one recovers the same K; a weak new one costs no guess', async () => {
    const c = await newAccount();
    const k = await c.enablePassword(PASSWORD);
    await rejectsWith(c.changePassword(PASSWORD, 'weakweak'), 'weak-password');
    assert.equal(((await c.status()).vault as { guessesRemaining: number }).guessesRemaining, 5);
    await c.changePassword(PASSWORD, NEW_PASSWORD);
    await rejectsWith(c.recover(PASSWORD), 'wrong-password');
    assert.ok((await c.recover(NEW_PASSWORD)).equals(k));
    await rejectsWith(c.changePassword('not the password', 'Another-good-pass9'), 'wrong-password');
  });

  test('disable erases the record (K stays on the device); recovering then fails', async () => {
    const c = await newAccount();
    await c.enablePassword(PASSWORD);
    await c.disable();
    const s = await c.status();
    assert.equal(s.mode, 'off');
    assert.equal(s.hasBackupKey, true);
    assert.deepEqual(s.vault, { state: 'not-registered' });
    await rejectsWith(c.recover(PASSWORD), 'not-registered');
    await rejectsWith(c.disable(), 'not-registered');
  });

  test('switching to key mode shows K as 64 digits and erases the vault record; back to password mode keeps K', async () => {
    const c = await newAccount();
    const k = await c.enablePassword(PASSWORD);
    const digits = await c.enableKey();
    assert.ok(BackupKey.parse(digits).equals(k));
    assert.equal((await c.status()).mode, 'key');
    assert.deepEqual((await c.status()).vault, { state: 'not-registered' });
    const again = await c.enablePassword(NEW_PASSWORD);
    assert.ok(again.equals(k));
    assert.ok((await c.recover(NEW_PASSWORD)).equals(k));
  });
});

describe('unavailable', () => {
  test('an unreachable relay: unavailable, retry safe', async () => {
    const c = await CofferClient.open(join(dir, `profile-${++n}`), { server: `http://127.0.0.1:${await closedPort()}`, fleetBundle: vault.bundle, timeoutMs: 5000 });
    await rejectsWith(c.createAccount(), 'unavailable', (e) => assert.equal(e.retrySafe, true));
  });

  test('a vault that is down behind a working relay: unavailable', async () => {
    const dead = await startRelay('relay-no-vault', `http://127.0.0.1:${await closedPort()}`);
    try {
      const c = await CofferClient.open(join(dir, `profile-${++n}`), { server: dead.url, fleetBundle: vault.bundle });
      await c.createAccount();
      await rejectsWith(c.enablePassword(PASSWORD), 'unavailable', (e) => assert.equal(e.retrySafe, true));
    } finally {
      await dead.stop();
    }
  });
});

describe('blob backend', () => {
  test('put, ranged get, stat, list, delete; immutable; missing objects are missing-object', async () => {
    const c = await newAccount();
    const b = c.blobBackend();
    await b.put('data/ab/cd', [new Uint8Array([1, 2]), new Uint8Array([3, 4, 5])]);
    assert.deepEqual([...(await b.get('data/ab/cd'))], [1, 2, 3, 4, 5]);
    assert.deepEqual([...(await b.get('data/ab/cd', { offset: 1, length: 3 }))], [2, 3, 4]);
    assert.deepEqual(await b.stat('data/ab/cd'), { name: 'data/ab/cd', size: 5 });
    assert.equal(await b.stat('data/ab/ef'), null);
    await assert.rejects(b.put('data/ab/cd', [new Uint8Array(1)]), (e: unknown) => CofferError.is(e, 'storage') && /immutable/.test((e as Error).message));
    const w = await b.create('index/ff');
    await w.write([new Uint8Array([9])]);
    await w.write([new Uint8Array([8, 7])]);
    await w.commit();
    assert.deepEqual(await b.list(''), [
      { name: 'data/ab/cd', size: 5 },
      { name: 'index/ff', size: 3 },
    ]);
    assert.deepEqual(await b.list('index/'), [{ name: 'index/ff', size: 3 }]);
    await b.delete('index/ff');
    await b.delete('index/ff');
    await assert.rejects(b.get('index/ff'), (e: unknown) => CofferError.is(e, 'missing-object'));
    // Another account sees nothing of it.
    const other = await newAccount();
    assert.deepEqual(await other.blobBackend().list(''), []);
  });

  test('an unreachable relay is a storage error naming the object', async () => {
    const c = await newAccount();
    await c.profile.update({ server: `http://127.0.0.1:${await closedPort()}` });
    const fresh = await CofferClient.open(c.profile.dir, { timeoutMs: 3000 });
    await assert.rejects(fresh.blobBackend().get('config'), (e: unknown) => CofferError.is(e, 'storage') && /config/.test((e as Error).message));
  });

  test('a repository on the relay: backup and restore byte-identical', async () => {
    const c = await newAccount();
    const k = await c.enablePassword(PASSWORD);
    const src = join(dir, `src-${n}`);
    await fs.mkdir(join(src, 'sub'), { recursive: true });
    const big = Buffer.alloc(3 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) >>> 3;
    await fs.writeFile(join(src, 'big.bin'), big);
    await fs.writeFile(join(src, 'sub', 'note.txt'), 'hello');
    const repo = await Repository.init(c.blobBackend(), k);
    await backup(repo, { paths: [src] });
    const again = await Repository.open(c.blobBackend(), k);
    const [snap] = await again.snapshots();
    const target = join(dir, `restore-${n}`);
    await restore(again, snap!, { target });
    const found = join(target, `src-${n}`);
    assert.deepEqual(await fs.readFile(join(found, 'big.bin')), big);
    assert.equal(await fs.readFile(join(found, 'sub', 'note.txt'), 'utf8'), 'hello');
  });
});

describe('retry safety', () => {
  // Runs last: every typed error the flows above produced through the real relay and vault.
  test('each error the client raised says whether retrying is safe, as RETRY_SAFE lists', () => {
    for (const code of ['wrong-password', 'locked', 'unavailable', 'invalid-credentials', 'not-registered', 'already-registered', 'weak-password', 'bad-config', 'not-logged-in']) {
      assert.ok(seen.has(code), `no test produced ${code}`);
    }
    for (const [code, safe] of seen) assert.equal(safe, RETRY_SAFE[code as keyof typeof RETRY_SAFE], code);
    // The ones a client loop relies on: a wrong guess and an outage may be retried, a
    // locked record or bad credentials never.
    assert.deepEqual([seen.get('wrong-password'), seen.get('unavailable'), seen.get('locked'), seen.get('invalid-credentials')], [true, true, false, false]);
  });
});
