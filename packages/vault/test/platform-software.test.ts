// The software platform: shared Platform conformance, plus its own key-file rules.
import assert from 'node:assert/strict';
import { createECDH } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { exportSoftwareKeys, importSoftwareKeys, openSoftwarePlatform, p256ScalarHex, provisionSoftwareKeys } from '../src/platform/software.js';
import { platformConformance, rejectsWithCode } from './helpers/platform-conformance.js';
import { PlatformError } from '../src/core/platform.js';

const KEYS = { seal: 'test-seal-v1', otherSeal: 'test-seal-other-v1', mac: 'test-mac-v1', ecdh: 'test-fleet-ecdh-v1', missing: 'no-such-key' };

platformConformance('software', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-sw-'));
  const file = join(dir, 'keys.json');
  provisionSoftwareKeys(file, { seal: [KEYS.seal, KEYS.otherSeal], mac: [KEYS.mac], ecdh: [KEYS.ecdh] });
  const platform = openSoftwarePlatform(file);
  return { platform, keys: KEYS, close: async () => { await platform.close(); rmSync(dir, { recursive: true, force: true }); } };
});

/** A real P-256 key whose scalar starts with a zero byte: node:crypto returns it 31 bytes long. */
function shortScalarKey(): { short: Buffer; publicKey: string } {
  for (;;) {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const short = ecdh.getPrivateKey();
    if (short.length < 32) return { short, publicKey: ecdh.getPublicKey('hex', 'uncompressed') };
  }
}

describe('software key file', () => {
  it('a P-256 scalar with leading zero bytes is kept at 32 bytes: written, read back, exported and imported by another node', async () => {
    const { short, publicKey } = shortScalarKey();
    assert.equal(p256ScalarHex(short).length, 64);
    assert.equal(p256ScalarHex(short), '00'.repeat(32 - short.length) + short.toString('hex'));
    assert.throws(() => p256ScalarHex('0'.repeat(66)), PlatformError);
    assert.throws(() => p256ScalarHex('xyz'), PlatformError);
    const dir = mkdtempSync(join(tmpdir(), 'coffer-sw-'));
    try {
      // A key file as versions before the fix wrote it: the short hex.
      const file = join(dir, 'keys.json');
      writeFileSync(file, JSON.stringify({ version: 1, warning: 'test', keys: { fleet: { type: 'p256', privateKey: short.toString('hex'), publicKey } } }), { mode: 0o600 });
      const platform = openSoftwarePlatform(file);
      const peer = createECDH('prime256v1');
      peer.generateKeys();
      assert.deepEqual(Buffer.from(await platform.ecdh('fleet', new Uint8Array(peer.getPublicKey()))), peer.computeSecret(Buffer.from(publicKey, 'hex')));
      await platform.close();
      const exported = exportSoftwareKeys(file, ['fleet']) as Record<string, { privateKey: string }>;
      assert.equal(exported.fleet!.privateKey.length, 64);
      // The joining node takes both the padded form and a package from an unfixed node.
      assert.deepEqual(importSoftwareKeys(join(dir, 'other.json'), exported), ['fleet']);
      assert.deepEqual(importSoftwareKeys(join(dir, 'third.json'), { fleet: { type: 'p256', privateKey: short.toString('hex'), publicKey } }), ['fleet']);
      assert.deepEqual(importSoftwareKeys(join(dir, 'other.json'), { fleet: { type: 'p256', privateKey: short.toString('hex'), publicKey } }), []);
      assert.equal((JSON.parse(readFileSync(join(dir, 'third.json'), 'utf8')) as { keys: { fleet: { privateKey: string } } }).keys.fleet.privateKey.length, 64);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('every generated P-256 key is stored as 64 hex digits (over 1,000 keys, a short scalar is near certain)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coffer-sw-'));
    try {
      const file = join(dir, 'keys.json');
      const labels = Array.from({ length: 1200 }, (_, i) => `k${i}`);
      provisionSoftwareKeys(file, { ecdh: labels });
      const keys = (JSON.parse(readFileSync(file, 'utf8')) as { keys: Record<string, { privateKey: string }> }).keys;
      for (const label of labels) assert.match(keys[label]!.privateKey, /^[0-9a-f]{64}$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is created with mode 0600 and never overwrites existing keys', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coffer-sw-'));
    const file = join(dir, 'sub', 'keys.json');
    assert.deepEqual(provisionSoftwareKeys(file, { seal: ['a'], ecdh: ['b'] }), ['a', 'b']);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const first = readFileSync(file, 'utf8');
    assert.deepEqual(provisionSoftwareKeys(file, { seal: ['a'], ecdh: ['b'] }), []);
    assert.equal(readFileSync(file, 'utf8'), first);
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a key file others can read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coffer-sw-'));
    const file = join(dir, 'keys.json');
    provisionSoftwareKeys(file, { seal: ['a'] });
    chmodSync(file, 0o644);
    assert.throws(() => openSoftwarePlatform(file), (e: unknown) => e instanceof PlatformError && /0600/.test(e.message));
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports a missing key file as token-missing and a missing key as key-missing', async () => {
    assert.throws(() => openSoftwarePlatform('/nonexistent/coffer/keys.json'), (e: unknown) => e instanceof PlatformError && e.code === 'token-missing');
    const dir = mkdtempSync(join(tmpdir(), 'coffer-sw-'));
    const file = join(dir, 'keys.json');
    provisionSoftwareKeys(file, { seal: ['a'] });
    const p = openSoftwarePlatform(file);
    await rejectsWithCode(p.ecdh('a', new Uint8Array(65)), 'key-missing');
    await rejectsWithCode(p.seal('zzz', new Uint8Array(0), new Uint8Array(0)), 'key-missing');
    rmSync(dir, { recursive: true, force: true });
  });
});
