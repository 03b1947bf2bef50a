// The software platform: shared Platform conformance, plus its own key-file rules.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openSoftwarePlatform, provisionSoftwareKeys } from '../src/platform/software.js';
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

describe('software key file', () => {
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
