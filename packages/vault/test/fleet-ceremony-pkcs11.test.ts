/**
 * Issue 15: the fleet key ceremony between real SoftHSM2 tokens (C_WrapKey/C_UnwrapKey).
 * Four tokens: A creates the fleet, B and C join from A (C keeps its copies exportable),
 * D joins from C. Refusals (another node, another fleet, altered packages, a re-labelled
 * key, a non-exportable source), the key attributes before and after, equal log MACs on
 * every token, a record sealed on one node opened by another, and rotation across tokens.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { INSECURE_FAST_KSF_FOR_TESTING, parseFleetKeyBundle, toHex, VaultClient, bundleToJson, type FleetKey } from '@coffer/protocol';
import { KEY_LABELS } from '../src/core/key-labels.js';
import { PlatformError } from '../src/core/platform.js';
import { openPlatform } from '../src/platform/index.js';
import { inspectKey } from '../src/platform/pkcs11/index.js';
import type { KeyAttributes, TransferKind } from '../src/platform/pkcs11/index.js';
import { loadConfig, type VaultConfig } from '../src/server/config.js';
import { activate, CeremonyError, exportFor, fleetInit, join as joinFleet, leave, nodeKey, rotate, type TransferPackage } from '../src/server/fleet-ceremony.js';
import { readFleetFile } from '../src/server/fleet.js';
import { assembleVault, type RunningVault } from '../src/server/start.js';
import { createSoftHsmToken, type SoftHsmToken } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';

const skip = softHsmSkip();
const tokens: Record<string, SoftHsmToken> = {};
if (!skip) for (const n of ['a', 'b', 'c', 'd']) tokens[n] = createSoftHsmToken({ label: `coffer-ceremony-${n}-${process.pid}` });

const K = new Uint8Array(32).fill(5);
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function pkcs11Opts(n: string) {
  const t = tokens[n]!;
  return { module: t.module, tokenLabel: t.tokenLabel, pin: t.pin };
}

async function attrs(n: string, label: string, kind: TransferKind): Promise<KeyAttributes> {
  return inspectKey(pkcs11Opts(n), label, kind);
}

async function rejectsCeremony(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof CeremonyError, `expected a CeremonyError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

describeIf('fleet key ceremony on PKCS#11 (SoftHSM2 tokens)', skip, () => {
  const root = mkdtempSync(join(tmpdir(), 'coffer-ceremony-pkcs11-'));
  const env = (n: string): Record<string, string> => ({
    COFFER_VAULT_DATA_DIR: join(root, n),
    COFFER_VAULT_STORE_PATH: join(root, 'shared.sqlite'),
    // Several nodes on one SQLite file at once: not a one-node group (spec §13).
    COFFER_VAULT_INSECURE_NO_ROLLBACK_PROTECTION_FOR_TESTING: '1',
    COFFER_VAULT_PLATFORM: 'pkcs11',
    COFFER_VAULT_PKCS11_MODULE: tokens[n]!.module,
    COFFER_VAULT_PKCS11_TOKEN_LABEL: tokens[n]!.tokenLabel,
    COFFER_VAULT_PKCS11_PIN: tokens[n]!.pin,
    COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING: '1',
    COFFER_VAULT_INSECURE_NO_LINK_AUTH_FOR_TESTING: '1',
  });
  const cfg: Record<string, VaultConfig> = {};
  let keyId = '';
  let fleetKey: FleetKey;
  const ids: Record<string, { nodeId: string; publicKey: string }> = {};
  const pkgs: Record<string, TransferPackage> = {};

  before(async () => {
    for (const n of ['a', 'b', 'c', 'd']) cfg[n] = loadConfig({ env: env(n) });
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
    for (const t of Object.values(tokens)) t.cleanup();
  });

  it('fleet init on A: the fleet keys are sensitive and exportable only there; transport keys never extractable', async () => {
    const r = await fleetInit(cfg.a!);
    fleetKey = r.bundle.keys[0]!;
    keyId = toHex(fleetKey.keyId);
    assert.equal((await parseFleetKeyBundle(bundleToJson(r.bundle))).keys[0]!.publicKey.length, 65);
    for (const [label, kind] of [[KEY_LABELS.fleetHpke, 'ecdh'], [KEY_LABELS.recordSeal, 'seal'], [KEY_LABELS.logMac, 'mac']] as const) {
      const a = await attrs('a', label, kind);
      assert.deepEqual({ extractable: a.extractable, sensitive: a.sensitive, alwaysSensitive: a.alwaysSensitive, local: a.local, private: a.private, modifiable: a.modifiable }, { extractable: true, sensitive: true, alwaysSensitive: true, local: true, private: true, modifiable: kind !== 'mac' }, label);
    }
    for (const n of ['a', 'b', 'c', 'd']) {
      ids[n] = await nodeKey(cfg[n]!);
      const t = await attrs(n, KEY_LABELS.nodeTransport, 'ecdh');
      assert.deepEqual({ extractable: t.extractable, sensitive: t.sensitive, neverExtractable: t.neverExtractable }, { extractable: false, sensitive: true, neverExtractable: true });
    }
    assert.equal(new Set(Object.values(ids).map((i) => i.nodeId)).size, 4);
  });

  it('export-for B: the package holds only wrapped keys, fresh each time, bound to B and the fleet', async () => {
    pkgs.b = await exportFor(cfg.a!, Buffer.from(ids.b!.publicKey, 'hex'));
    const again = await exportFor(cfg.a!, Buffer.from(ids.b!.publicKey, 'hex'));
    assert.equal(pkgs.b.suite, 'PKCS#11: ECDH-ES(P-256, CKD_NULL) + CKM_AES_CBC_ENCRYPT_DATA, CKM_AES_KEY_WRAP_PAD');
    assert.equal(pkgs.b.to.nodeId, ids.b!.nodeId);
    assert.deepEqual(pkgs.b.keys!.map((k) => k.label).sort(), [KEY_LABELS.fleetHpke, KEY_LABELS.logMac, KEY_LABELS.recordSeal].sort());
    assert.notEqual(pkgs.b.enc, again.enc, 'a fresh ephemeral key per package');
    for (let i = 0; i < pkgs.b.keys!.length; i++) assert.notEqual(pkgs.b.keys![i]!.wrapped, again.keys![i]!.wrapped);
    assert.equal(pkgs.b.sealed, undefined);
    const log = readFileSync(join(root, 'a', 'ceremony.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(log.map((l) => l.step), ['init', 'export-for', 'export-for']);
    assert.equal(log[1]!.to, ids.b!.nodeId);
    assert.ok(!JSON.stringify(log).includes(pkgs.b.keys![0]!.wrapped), 'the log names the package by hash only');
  });

  it('refuses a package for another node, another fleet, an altered package, a re-labelled key — leaving the token untouched', async () => {
    const text = JSON.stringify(pkgs.b);
    await rejectsCeremony(joinFleet(cfg.c!, text, keyId), /wrapped for node/);
    await rejectsCeremony(joinFleet(cfg.b!, text, '00'.repeat(16)), /refusing to join another fleet/);
    // Re-addressed to C: the identity check passes, the cryptography does not.
    const readdressed = { ...pkgs.b!, to: ids.c! };
    await rejectsCeremony(joinFleet(cfg.c!, JSON.stringify(readdressed), keyId), /does not unwrap on this token/);
    // A flipped byte in one wrapped key.
    const flipped = structuredClone(pkgs.b!);
    const w = Buffer.from(flipped.keys![1]!.wrapped, 'base64');
    w[5]! ^= 1;
    flipped.keys![1]!.wrapped = w.toString('base64');
    await rejectsCeremony(joinFleet(cfg.b!, JSON.stringify(flipped), keyId), /does not unwrap/);
    // Another fleet file (same key ID, different sealed OPAQUE setup): the context differs.
    const otherFleet = structuredClone(pkgs.b!);
    otherFleet.fleet.sealedOpaqueServerSetup = otherFleet.fleet.sealedOpaqueServerSetup.slice(0, -4) + 'AAAA';
    await rejectsCeremony(joinFleet(cfg.b!, JSON.stringify(otherFleet), keyId), /does not unwrap/);
    // A key presented under another label (the log MAC key's blob as the record key's): each
    // wrapping key is derived from its label, so it does not unwrap.
    const relabelled = structuredClone(pkgs.b!);
    const mac = relabelled.keys!.find((k) => k.label === KEY_LABELS.logMac)!;
    const seal = relabelled.keys!.find((k) => k.label === KEY_LABELS.recordSeal)!;
    [mac.wrapped, seal.wrapped] = [seal.wrapped, mac.wrapped];
    await rejectsCeremony(joinFleet(cfg.b!, JSON.stringify(relabelled), keyId), /does not unwrap/);
    // A label that is not a fleet key.
    const foreign = structuredClone(pkgs.b!);
    foreign.keys![0]!.label = 'coffer-node-transport-v1';
    await rejectsCeremony(joinFleet(cfg.b!, JSON.stringify(foreign), keyId), /not a fleet key/);
    // Nothing reached B's token.
    await assert.rejects(attrs('b', KEY_LABELS.fleetHpke, 'ecdh'), (e: unknown) => e instanceof PlatformError && e.code === 'key-missing');
    await assert.rejects(attrs('b', KEY_LABELS.logMac, 'mac'), (e: unknown) => e instanceof PlatformError && e.code === 'key-missing');
  });

  it('B and C join from A; B gets non-extractable sensitive keys, C (keep-exportable) can hand them to D', async () => {
    const rb = await joinFleet(cfg.b!, JSON.stringify(pkgs.b), keyId);
    assert.deepEqual([...rb.imported].sort(), [KEY_LABELS.fleetHpke, KEY_LABELS.logMac, KEY_LABELS.recordSeal].sort());
    for (const [label, kind] of [[KEY_LABELS.fleetHpke, 'ecdh'], [KEY_LABELS.recordSeal, 'seal'], [KEY_LABELS.logMac, 'mac']] as const) {
      const b = await attrs('b', label, kind);
      // PKCS#11 marks an unwrapped key NEVER_EXTRACTABLE false / ALWAYS_SENSITIVE false: it was outside, wrapped.
      // Seal and ECDH keys stay modifiable on the joining token too (the platform's session copy).
      assert.deepEqual(b, { label, extractable: false, sensitive: true, neverExtractable: false, alwaysSensitive: false, local: false, modifiable: kind !== 'mac', private: true });
      const a = await attrs('a', label, kind);
      assert.equal(a.extractable, true, 'the source is unchanged');
      assert.equal(a.sensitive, true);
    }
    // Joining twice is harmless (the same keys are recognised, not duplicated).
    assert.deepEqual((await joinFleet(cfg.b!, JSON.stringify(await exportFor(cfg.a!, Buffer.from(ids.b!.publicKey, 'hex'))), keyId)).imported, []);
    // B cannot export: its copies are not extractable.
    await rejectsCeremony(exportFor(cfg.b!, Buffer.from(ids.d!.publicKey, 'hex')), /not exportable/);
    // B's log MAC key is still the received, non-extractable copy.
    assert.equal((await attrs('b', KEY_LABELS.logMac, 'mac')).extractable, false);

    pkgs.c = await exportFor(cfg.a!, Buffer.from(ids.c!.publicKey, 'hex'));
    await joinFleet(cfg.c!, JSON.stringify(pkgs.c), keyId, { exportable: true });
    assert.equal((await attrs('c', KEY_LABELS.fleetHpke, 'ecdh')).extractable, true);
    assert.equal((await attrs('c', KEY_LABELS.fleetHpke, 'ecdh')).sensitive, true);
    pkgs.d = await exportFor(cfg.c!, Buffer.from(ids.d!.publicKey, 'hex'));
    await joinFleet(cfg.d!, JSON.stringify(pkgs.d), keyId);
    assert.equal((await attrs('d', KEY_LABELS.logMac, 'mac')).extractable, false);
  });

  it('every token gives the same log MAC (deterministic, same key) and the same ECDH; none reveals a key value', async () => {
    const data = enc('coffer log entry 1');
    const macs: string[] = [];
    const dhs: string[] = [];
    const peer = (await import('node:crypto')).createECDH('prime256v1');
    peer.generateKeys();
    for (const n of ['a', 'b', 'c', 'd']) {
      const p = await openPlatform(cfg[n]!.platform);
      try {
        const m1 = toHex(await p.platform.mac(KEY_LABELS.logMac, data));
        assert.equal(toHex(await p.platform.mac(KEY_LABELS.logMac, data)), m1, 'deterministic');
        assert.notEqual(toHex(await p.platform.mac(KEY_LABELS.logMac, enc('other'))), m1);
        macs.push(m1);
        dhs.push(toHex(await p.platform.ecdh(KEY_LABELS.fleetHpke, new Uint8Array(peer.getPublicKey()))));
      } finally {
        await p.close();
      }
    }
    assert.equal(new Set(macs).size, 1, 'the same MAC on all four tokens');
    assert.equal(new Set(dhs).size, 1);
    assert.equal(dhs[0], peer.computeSecret(Buffer.from(fleetKey.publicKey)).toString('hex'), 'the HPKE private key matches the pinned public key');
  });

  it('a record registered through A recovers through B and D', async () => {
    const nodes: RunningVault[] = [];
    try {
      for (const n of ['a', 'b', 'd']) nodes.push(await assembleVault(cfg[n]!, { warn: () => {} }));
      const client = (v: RunningVault): VaultClient =>
        new VaultClient({
          fleetKey,
          account: 'hsm-fleet-user',
          ksf: INSECURE_FAST_KSF_FOR_TESTING,
          transport: async (bytes) => {
            const res = await v.app.inject({ method: 'POST', url: '/v1/request', headers: { 'content-type': 'application/octet-stream', 'coffer-account': 'hsm-fleet-user' }, payload: Buffer.from(bytes) });
            if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode} ${res.body}`);
            return new Uint8Array(res.rawPayload);
          },
        });
      assert.equal((await client(nodes[0]!).register('pw', K)).outcome, 'ok');
      for (const v of nodes.slice(1)) {
        const r = await client(v).recover('pw');
        assert.ok(r.outcome === 'ok', JSON.stringify(r));
        assert.equal(toHex(r.backupKey.expose()), toHex(K));
      }
    } finally {
      for (const v of nodes) await v.close();
    }
  });

  it('rotation across tokens: rotate on A, hand the new key to B, activate on both; each opens what the other seals', async () => {
    const label = await rotate(cfg.a!);
    assert.equal(label, `${KEY_LABELS.recordSeal}-r2`);
    assert.equal((await attrs('a', label, 'seal')).extractable, true, 'a rotated key is exportable on the ceremony source');
    await rejectsCeremony(activate(cfg.b!, label), /not one of this node's record keys/);
    const pkg = await exportFor(cfg.a!, Buffer.from(ids.b!.publicKey, 'hex'));
    assert.ok(pkg.keys!.some((k) => k.label === label));
    const r = await joinFleet(cfg.b!, JSON.stringify(pkg), keyId);
    assert.deepEqual(r.imported, [label], 'only the new key is imported; the others are recognised');
    assert.deepEqual(await attrs('b', label, 'seal'), { label, extractable: false, sensitive: true, neverExtractable: false, alwaysSensitive: false, local: false, modifiable: true, private: true });
    await activate(cfg.a!, label);
    await activate(cfg.b!, label);
    assert.equal(readFleetFile(cfg.b!.fleetFile).currentRecordSealKey, label);
    assert.deepEqual(readFleetFile(cfg.b!.fleetFile).recordSealKeys, [KEY_LABELS.recordSeal, label]);
    const pa = await openPlatform(cfg.a!.platform);
    const pb = await openPlatform(cfg.b!.platform);
    try {
      const aad = enc('aad');
      const fromA = await pa.platform.seal(label, aad, enc('sealed on A'));
      assert.deepEqual(await pb.platform.unseal(label, aad, fromA), enc('sealed on A'));
      const fromB = await pb.platform.seal(label, aad, enc('sealed on B'));
      assert.deepEqual(await pa.platform.unseal(label, aad, fromB), enc('sealed on B'));
    } finally {
      await pa.close();
      await pb.close();
    }
    // C has not received r2 yet: a record sealed under it does not open there.
    const pc = await openPlatform(cfg.c!.platform);
    try {
      await assert.rejects(pc.platform.unseal(label, enc('aad'), new Uint8Array(40)), (e: unknown) => e instanceof PlatformError && e.code === 'key-missing');
    } finally {
      await pc.close();
    }
  });

  it('a package whose fleet file names another fleet key than its key ID is refused before any unwrap', async () => {
    const pkg = await exportFor(cfg.a!, Buffer.from(ids.d!.publicKey, 'hex'));
    const other = structuredClone(pkg);
    other.fleet.publicKey = ids.d!.publicKey; // some other P-256 key
    await rejectsCeremony(joinFleet(cfg.d!, JSON.stringify(other), keyId), /does not match its fleet key ID/);
  });

  it('fleet leave on PKCS#11 destroys the fleet key objects on that token only; the transport key stays', async () => {
    const removed = await leave(cfg.d!);
    assert.deepEqual([...removed].sort(), [KEY_LABELS.fleetHpke, KEY_LABELS.logMac, KEY_LABELS.recordSeal].sort());
    for (const [label, kind] of [[KEY_LABELS.fleetHpke, 'ecdh'], [KEY_LABELS.recordSeal, 'seal'], [KEY_LABELS.logMac, 'mac']] as const) {
      await assert.rejects(attrs('d', label, kind), (e: unknown) => e instanceof PlatformError && e.code === 'key-missing');
      assert.equal((await attrs('c', label, kind)).sensitive, true, 'other tokens keep theirs');
    }
    assert.equal((await attrs('d', KEY_LABELS.nodeTransport, 'ecdh')).extractable, false);
    // D can join again from C (the second ceremony token).
    const back = await joinFleet(cfg.d!, JSON.stringify(await exportFor(cfg.c!, Buffer.from(ids.d!.publicKey, 'hex'))), keyId);
    assert.equal(back.imported.length, 3);
  });
});
