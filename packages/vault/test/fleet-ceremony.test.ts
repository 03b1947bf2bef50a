/**
 * The fleet key ceremony through the real `coffer-vault fleet …` commands (software
 * platform): a node that joined opens what the first node sealed and serves the same
 * bundle; rotation (old records still open, new ones sealed under the new key); retiring
 * a node; and every refusal (another fleet, another node, a tampered package, a PKCS#11 package).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSECURE_FAST_KSF_FOR_TESTING, VaultClient, type FleetKey } from '@coffer/protocol';
import { loadConfig } from '../src/server/config.js';
import { assembleVault, type RunningVault } from '../src/server/start.js';
import { bundleKey, runVaultCli } from './helpers/child-vault.js';

const K = new Uint8Array(32).fill(3);

function client(vault: RunningVault, fleetKey: FleetKey, account: string): VaultClient {
  return new VaultClient({
    fleetKey,
    account,
    ksf: INSECURE_FAST_KSF_FOR_TESTING,
    transport: async (bytes) => {
      const res = await vault.app.inject({ method: 'POST', url: '/v1/request', headers: { 'content-type': 'application/octet-stream', 'coffer-account': account }, payload: Buffer.from(bytes) });
      if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode} ${res.body}`);
      return new Uint8Array(res.rawPayload);
    },
  });
}

describe('fleet key ceremony (software platform)', () => {
  const root = mkdtempSync(join(tmpdir(), 'coffer-ceremony-'));
  const envOf = (n: string): Record<string, string> => ({ COFFER_VAULT_DATA_DIR: join(root, n), COFFER_VAULT_STORE_PATH: join(root, 'shared.sqlite'), COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1', COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1', /* two nodes, one SQLite file, in turn: not a one-node group (spec §13) */ COFFER_VAULT_INSECURE_NO_ROLLBACK_PROTECTION_FOR_TESTING: '1' });
  const open = (n: string): Promise<RunningVault> => assembleVault(loadConfig({ env: envOf(n) }), { warn: () => {} });
  const cli = (n: string, ...args: string[]) => runVaultCli(args, envOf(n));

  it('init, node-key, export-for, join: the joined node serves the same bundle and opens what the first sealed', async (t) => {
    t.after(() => rmSync(root, { recursive: true, force: true }));
    const init = cli('a', 'fleet', 'init');
    assert.equal(init.status, 0, init.stderr);
    const keyId = (JSON.parse(init.stdout) as { keys: { keyId: string }[] }).keys[0]!.keyId;
    assert.equal(cli('a', 'fleet', 'init').status, 1, 'init twice is refused');

    const node = cli('b', 'fleet', 'node-key');
    assert.equal(node.status, 0, node.stderr);
    writeFileSync(join(root, 'b.node'), node.stdout);
    const pkg = cli('a', 'fleet', 'export-for', join(root, 'b.node'));
    assert.equal(pkg.status, 0, pkg.stderr);
    writeFileSync(join(root, 'b.pkg'), pkg.stdout);
    // The package carries no key in the clear.
    const aKeys = JSON.parse(readFileSync(join(root, 'a', 'software-keys.json'), 'utf8')) as { keys: Record<string, { key?: string; privateKey?: string }> };
    for (const k of Object.values(aKeys.keys)) assert.ok(!pkg.stdout.includes((k.key ?? k.privateKey)!));

    // Refusals: another fleet's ID, a node it was not wrapped for, a flipped byte.
    assert.match(cli('b', 'fleet', 'join', join(root, 'b.pkg'), '--fleet-key-id', '0123456789abcdef').stderr, /refusing to join another fleet/);
    assert.match(cli('c', 'fleet', 'join', join(root, 'b.pkg'), '--fleet-key-id', keyId).stderr, /wrapped for node/);
    const tampered = JSON.parse(pkg.stdout) as { sealed: string };
    const bytes = Buffer.from(tampered.sealed, 'base64');
    bytes[20]! ^= 1;
    writeFileSync(join(root, 'bad.pkg'), JSON.stringify({ ...tampered, sealed: bytes.toString('base64') }));
    assert.match(cli('b', 'fleet', 'join', join(root, 'bad.pkg'), '--fleet-key-id', keyId).stderr, /does not open for this node/);

    const joined = cli('b', 'fleet', 'join', join(root, 'b.pkg'), '--fleet-key-id', keyId);
    assert.equal(joined.status, 0, joined.stderr);
    assert.deepEqual(await bundleKey(envOf('b')), await bundleKey(envOf('a')));

    const fleetKey = await bundleKey(envOf('a'));
    const a = await open('a');
    assert.equal((await client(a, fleetKey, 'alice').register('pw', K)).outcome, 'ok');
    await a.close();
    const b = await open('b');
    const r = await client(b, fleetKey, 'alice').recover('pw');
    assert.equal(r.outcome, 'ok');
    await b.close();

    // Rotation: staged on a, handed to b, activated on b only. b seals new records under
    // the new key; a (still on the old current key) opens them; old records still open.
    const rotated = cli('a', 'fleet', 'rotate');
    assert.equal(rotated.status, 0, rotated.stderr);
    const label = rotated.stdout.trim();
    assert.equal(label, 'coffer-record-seal-v1-r2');
    assert.match(cli('b', 'fleet', 'activate', label).stderr, /not one of this node's record keys/);
    writeFileSync(join(root, 'b2.pkg'), cli('a', 'fleet', 'export-for', join(root, 'b.node')).stdout);
    assert.equal(cli('b', 'fleet', 'join', join(root, 'b2.pkg'), '--fleet-key-id', keyId).status, 0);
    assert.equal(cli('b', 'fleet', 'activate', label).status, 0);
    const b2 = await open('b');
    assert.equal((await client(b2, fleetKey, 'bob').register('pw2', K)).outcome, 'ok');
    assert.equal((await client(b2, fleetKey, 'alice').recover('pw')).outcome, 'ok', 'an old record opens after rotation');
    const sealedUnderNew = (await b2.store.get('bob'))!.value;
    await b2.close();
    const { openSoftwarePlatform } = await import('../src/platform/software.js');
    const { unsealRecord } = await import('../src/core/record.js');
    const pa = openSoftwarePlatform(join(root, 'a', 'software-keys.json'));
    await assert.rejects(unsealRecord(pa, 'bob', sealedUnderNew, { current: 'coffer-record-seal-v1', all: ['coffer-record-seal-v1'] }), /failed authentication/, 'bob is sealed under the new key, not the old');
    await pa.close();
    const a2 = await open('a');
    assert.equal((await client(a2, fleetKey, 'bob').recover('pw2')).outcome, 'ok', 'a node that holds the new key opens records sealed under it');
    await a2.close();

    // Retiring b: its fleet keys are gone, it can no longer start as a fleet member.
    const left = cli('b', 'fleet', 'leave');
    assert.equal(left.status, 0, left.stderr);
    const bKeys = JSON.parse(readFileSync(join(root, 'b', 'software-keys.json'), 'utf8')) as { keys: Record<string, unknown> };
    assert.deepEqual(Object.keys(bKeys.keys), ['coffer-node-transport-v1']);
    assert.equal(cli('b', 'bundle').status, 1);
  });

  it('a software node refuses a package made by a PKCS#11 token (a fleet is all-software or all-PKCS#11)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coffer-ceremony-mixed-'));
    try {
      const env = { COFFER_VAULT_DATA_DIR: join(dir, 'n') };
      const keyId = '00112233445566778899aabbccddeeff';
      const pkg = { version: 1, kind: 'coffer-fleet-transfer', suite: 'PKCS#11: ECDH-ES(P-256, CKD_NULL) + CKM_AES_CBC_ENCRYPT_DATA, CKM_AES_KEY_WRAP_PAD', fleetKeyId: keyId, to: {}, enc: '', keys: [], fleet: { version: 1, suite: 'DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM', keyId } };
      writeFileSync(join(dir, 'p.json'), JSON.stringify(pkg));
      const r = runVaultCli(['fleet', 'join', join(dir, 'p.json'), '--fleet-key-id', keyId], env);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /made by a PKCS#11 token/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
