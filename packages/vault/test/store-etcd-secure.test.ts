// Issue 8 §4 and §5 on a real etcd (one member on 127.0.0.1) with mutual TLS and RBAC:
// the store is refused without a client certificate, with another CA's certificate or
// with a wrong password, and works with them; an unauthenticated client cannot write
// the vault's keys; tokens are renewed when etcd drops them; after an erasure the
// store compacts etcd's history past it, so the old record cannot be read back at an
// older revision. Also the sweep index (§3) on etcd, through a whole vault.
import { after, before, it } from 'node:test';
import { describeIf, etcdSkip } from './helpers/requirements.js';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, parseRequest, VaultClient } from '@coffer/protocol';
import { EtcdRecordStore, type EtcdStoreOptions } from '../src/store/etcd.js';
import { StoreError } from '../src/store/store.js';
import { etcdPost, etcdTlsArgs, makeEtcdPki, setupEtcdAuth, type EtcdPki } from './helpers/etcd-secure.js';
import { KEY_K, testConfig } from './helpers/vault-harness.js';
import { assembleVault } from '../src/server/start.js';
import { loadConfig } from '../src/server/config.js';
import { unsealRecord } from '../src/core/record.js';
import { ACCOUNT_HEADER } from '../src/server/app.js';

const HOST = '127.0.0.1';
const CLIENT_PORT = 24690;
const PEER_PORT = 24691;
const URL_ = `https://${HOST}:${CLIENT_PORT}`;
const PREFIX = 'coffer/vault/';
const VAULT_USER = 'coffer-vault';
const VAULT_PASSWORD = 'vault-pw-for-tests';
const TOKEN_TTL_S = 2;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describeIf('etcd store with mTLS and RBAC (real etcd)', etcdSkip(), () => {
  let dir: string;
  let pki: EtcdPki;
  let etcd: ChildProcess | null = null;
  const stores: EtcdRecordStore[] = [];

  function store(o: Partial<EtcdStoreOptions> & { noCert?: boolean; rogue?: boolean; password?: string | null } = {}): EtcdRecordStore {
    const cert = o.rogue ? pki.rogueCertFile : pki.vaultCertFile;
    const key = o.rogue ? pki.rogueKeyFile : pki.vaultKeyFile;
    const s = new EtcdRecordStore({
      endpoints: [URL_],
      timeoutMs: 3000,
      tls: { ca: readFileSync(pki.caFile), ...(o.noCert ? {} : { cert: readFileSync(cert), key: readFileSync(key) }) },
      ...(o.password === null ? {} : { auth: { user: VAULT_USER, password: o.password ?? VAULT_PASSWORD } }),
      ...(o.compactIntervalMs !== undefined ? { compactIntervalMs: o.compactIntervalMs } : {}),
      ...(o.endpoints ? { endpoints: o.endpoints } : {}),
    });
    stores.push(s);
    return s;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'coffer-etcd-secure-'));
    pki = makeEtcdPki(dir, [HOST]);
    const log = openSync(join(dir, 'etcd.log'), 'a');
    const peer = `https://${HOST}:${PEER_PORT}`;
    etcd = spawn('etcd', [
      '--name', 'm1', '--data-dir', join(dir, 'etcd'),
      '--listen-client-urls', URL_, '--advertise-client-urls', URL_,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `m1=${peer}`,
      '--auth-token-ttl', String(TOKEN_TTL_S),
      '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'warn',
      ...etcdTlsArgs(pki, HOST),
    ], { stdio: ['ignore', log, log] });
    closeSync(log);
    const admin = { ca: pki.caFile, cert: pki.adminCertFile, key: pki.adminKeyFile };
    for (const end = Date.now() + 60_000; ; ) {
      try {
        if ((await etcdPost(URL_, '/v3/kv/range', { key: b64('x') }, admin)).status === 200) break;
      } catch {
        /* not up yet */
      }
      if (Date.now() > end) throw new Error(`etcd did not start: ${readFileSync(join(dir, 'etcd.log'), 'utf8').slice(-2000)}`);
      await sleep(100);
    }
    await setupEtcdAuth(URL_, pki, { rootPassword: 'root-pw-for-tests', vaultUser: VAULT_USER, vaultPassword: VAULT_PASSWORD }, PREFIX);
  });

  after(async () => {
    for (const s of stores) await s.close().catch(() => {});
    if (etcd && etcd.exitCode === null && etcd.signalCode === null) {
      etcd.kill('SIGKILL');
      await once(etcd, 'exit');
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('with the client certificate and the password, the store works', async () => {
    const s = store();
    const v1 = await s.compareAndPut('alice', bytes('one'), null);
    assert.ok(v1.ok);
    assert.deepEqual((await s.get('alice'))?.value, bytes('one'));
    await s.scheduleSweep('alice', 1000);
    assert.deepEqual(await s.dueSweeps(2000, 10), [{ account: 'alice', atMs: 1000 }]);
    await s.clearSweep({ account: 'alice', atMs: 1000 });
    assert.deepEqual(await s.dueSweeps(2000, 10), []);
  });

  it('is refused without a client certificate, with another CA\'s certificate, with a wrong password, and over plain http', async () => {
    await assert.rejects(store({ noCert: true }).get('alice'), (e: Error) => e instanceof StoreError && /certificate/i.test(e.message));
    await assert.rejects(store({ rogue: true }).get('alice'), (e: Error) => e instanceof StoreError && /certificate/i.test(e.message));
    await assert.rejects(store({ password: 'wrong password' }).get('alice'), (e: Error) => e instanceof StoreError && /authentication failed/.test(e.message));
    await assert.rejects(store({ password: 'wrong password' }).compareAndPut('alice', bytes('reset'), null), StoreError);
    await assert.rejects(store({ password: null }).compareAndPut('mallory', bytes('x'), null), (e: Error) => e instanceof StoreError && /permission denied/.test(e.message));
    await assert.rejects(store({ endpoints: [`http://${HOST}:${CLIENT_PORT}`], password: null }).get('alice'), StoreError);
    assert.equal((await store().get('mallory')), null, 'nothing was written');
  });

  it('an unauthenticated client (even with a valid certificate) cannot write or roll back the vault\'s keys', async () => {
    const s = store();
    const v1 = await s.compareAndPut('bob', bytes('guesses: 0'), null);
    assert.ok(v1.ok);
    const v2 = await s.compareAndPut('bob', bytes('guesses: 9'), v1.version);
    assert.ok(v2.ok);
    const vaultCert = { ca: pki.caFile, cert: pki.vaultCertFile, key: pki.vaultKeyFile };
    const key = b64(`${PREFIX}records/bob`);
    // The attack: read revision N-k and write it back (10 fresh guesses).
    const old = await etcdPost(URL_, '/v3/kv/range', { key, revision: v1.version }, vaultCert);
    assert.equal(old.status, 403, JSON.stringify(old.json));
    for (const [path, body] of [
      ['/v3/kv/put', { key, value: b64('guesses: 0') }],
      ['/v3/kv/deleterange', { key }],
      ['/v3/kv/txn', { success: [{ request_put: { key, value: b64('guesses: 0') } }] }],
      ['/v3/kv/put', { key: b64(`${PREFIX}sweeps/000000000000001/bob`), value: '' }],
    ] as const) {
      const r = await etcdPost(URL_, path, body, vaultCert);
      assert.equal(r.status, 403, `${path}: ${JSON.stringify(r.json)}`);
      assert.match(String(r.json.message), /permission denied/);
    }
    // A token for the vault user does not reach outside the vault's prefix either.
    const token = String((await etcdPost(URL_, '/v3/auth/authenticate', { name: VAULT_USER, password: VAULT_PASSWORD }, vaultCert)).json.token);
    assert.equal((await etcdPost(URL_, '/v3/kv/put', { key: b64('other-app/x'), value: b64('x') }, vaultCert, token)).status, 403);
    assert.equal((await etcdPost(URL_, '/v3/auth/user/add', { name: 'eve', password: 'x' }, vaultCert, token)).status, 403);
    assert.deepEqual((await s.get('bob'))?.value, bytes('guesses: 9'));
  });

  it('logs in again when etcd drops the token (expired)', async () => {
    const s = store();
    assert.ok((await s.compareAndPut('carol', bytes('1'), null)).ok);
    await sleep(TOKEN_TTL_S * 1000 + 1500);
    const cur = await s.get('carol');
    assert.deepEqual(cur?.value, bytes('1'));
    await sleep(TOKEN_TTL_S * 1000 + 1500);
    assert.ok((await s.compareAndPut('carol', bytes('2'), cur!.version)).ok, 'a write after expiry works too');
  });

  it('after an erasure, etcd history is compacted past it: the old record cannot be read at its revision', async (t) => {
    const s = store({ compactIntervalMs: 2000 });
    const v1 = await s.compareAndPut('dave', bytes('sealed record with wrapped key'), null);
    assert.ok(v1.ok);
    const v2 = await s.compareAndPut('dave', bytes('tombstone'), v1.version, { erasure: true });
    assert.ok(v2.ok);
    const started = Date.now();
    await s.compacted();
    const first = Date.now() - started;
    const token = String((await etcdPost(URL_, '/v3/auth/authenticate', { name: VAULT_USER, password: VAULT_PASSWORD }, { ca: pki.caFile, cert: pki.vaultCertFile, key: pki.vaultKeyFile })).json.token);
    const read = await etcdPost(URL_, '/v3/kv/range', { key: b64(`${PREFIX}records/dave`), revision: v1.version }, { ca: pki.caFile, cert: pki.vaultCertFile, key: pki.vaultKeyFile }, token);
    assert.equal(read.status, 400);
    assert.match(String(read.json.message), /compacted/);
    // A second erasure within the interval waits for it (batched), but no longer.
    const w1 = await s.compareAndPut('erin', bytes('sealed'), null);
    assert.ok(w1.ok);
    const w2 = await s.compareAndPut('erin', bytes('tombstone'), w1.version, { erasure: true });
    assert.ok(w2.ok);
    const again = Date.now();
    await s.compacted();
    const second = Date.now() - again;
    t.diagnostic(`compaction after an erasure: ${first} ms (first), ${second} ms (within the 2000 ms interval)`);
    assert.ok(first < 1000, `first compaction took ${first} ms`);
    assert.ok(second <= 2000 + 1000, `batched compaction took ${second} ms`);
    const read2 = await etcdPost(URL_, '/v3/kv/range', { key: b64(`${PREFIX}records/erin`), revision: w1.version }, { ca: pki.caFile, cert: pki.vaultCertFile, key: pki.vaultKeyFile }, token);
    assert.match(String(read2.json.message), /compacted/);
  });

  it('a whole vault on this etcd (config files, env): the sweeper erases an abandoned exhausted record and its history is compacted', async () => {
    const vdir = mkdtempSync(join(tmpdir(), 'coffer-etcd-vault-'));
    const pwFile = join(vdir, 'etcd.password');
    writeFileSync(pwFile, `${VAULT_PASSWORD}\n`, { mode: 0o600 });
    const env = {
      COFFER_VAULT_DATA_DIR: vdir,
      COFFER_VAULT_STORE: 'etcd',
      COFFER_VAULT_ETCD_ENDPOINTS: URL_,
      COFFER_VAULT_ETCD_CA_FILE: pki.caFile,
      COFFER_VAULT_ETCD_CERT_FILE: pki.vaultCertFile,
      COFFER_VAULT_ETCD_KEY_FILE: pki.vaultKeyFile,
      COFFER_VAULT_ETCD_USER: VAULT_USER,
      COFFER_VAULT_ETCD_PASSWORD_FILE: pwFile,
      COFFER_VAULT_ETCD_COMPACT_INTERVAL_MS: '0',
      // Its own prefix (inside the role's): the store tests above left records with no
      // rollback-protection log under PREFIX, which a protected vault rightly refuses.
      COFFER_VAULT_ETCD_PREFIX: `${PREFIX}whole-vault/`,
    };
    const loaded = loadConfig({ env });
    assert.equal(loaded.store?.kind === 'etcd' && loaded.store.password, VAULT_PASSWORD);
    // One vault on this etcd: a one-node rollback-protection group (spec §13.4).
    const vault = await assembleVault({ ...testConfig(vdir, { policy: { loginTtlMs: 1000, guessLimit: 2 } }), store: loaded.store!, groupSize: 1 }, { createIfMissing: true, warn: () => {} });
    try {
      const account = 'local:victim';
      const post = async (b: Uint8Array, dropFinish: boolean): Promise<Uint8Array> => {
        if (dropFinish && parseRequest(b).op === 'login-finish') throw new Error('never sent');
        const res = await vault.app.inject({ method: 'POST', url: '/v1/request', headers: { 'content-type': 'application/octet-stream', [ACCOUNT_HEADER]: account }, payload: Buffer.from(b) });
        assert.equal(res.statusCode, 200, res.body);
        return new Uint8Array(res.rawPayload);
      };
      const client = (dropFinish: boolean) => new VaultClient({ fleetKey: vault.fleet.fleetKey, account, ksf: INSECURE_FAST_KSF_FOR_TESTING, transport: (b) => post(b, dropFinish) });
      assert.equal((await client(false).register('correct horse battery', KEY_K)).outcome, 'ok');
      const live = await vault.store.get(account);
      for (let i = 0; i < 2; i++) await assert.rejects(client(true).recover(`guess ${i}`), /never sent/);
      const exhausted = await vault.store.get(account);
      // Polled: the erasure and the compaction after it are the point here (vault-sweep.test
      // bounds the sweeper's timing); 15 s for a loaded machine with etcd over TLS.
      const end = Date.now() + 15_000;
      for (;;) {
        const cur = await vault.store.get(account);
        if (cur && (await unsealRecord(vault.platform.platform, account, cur.value)).state === 'erased') break;
        if (Date.now() > end) assert.fail('not erased within the login lifetime + 14 s');
        await sleep(100);
      }
      await (vault.store as EtcdRecordStore).compacted();
      const vaultCert = { ca: pki.caFile, cert: pki.vaultCertFile, key: pki.vaultKeyFile };
      const token = String((await etcdPost(URL_, '/v3/auth/authenticate', { name: VAULT_USER, password: VAULT_PASSWORD }, vaultCert)).json.token);
      for (const old of [live!, exhausted!]) {
        const r = await etcdPost(URL_, '/v3/kv/range', { key: b64(`${PREFIX}whole-vault/records/${account}`), revision: old.version }, vaultCert, token);
        assert.match(String(r.json.message), /compacted/, `revision ${old.version}`);
      }
      assert.deepEqual(await vault.store.dueSweeps(Date.now() + 3_600_000, 10), []);
    } finally {
      await vault.close();
      rmSync(vdir, { recursive: true, force: true });
    }
  });
}, { timeout: 120_000 });
