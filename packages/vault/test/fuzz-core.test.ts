// The vault's own decoders under random and mutated bytes: request opening, stored
// records. Clean typed results only, and the stored record never changes.
// Bounded here; `node scripts/fuzz-vault.mjs` runs longer (COFFER_FUZZ_RUNS).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { DecodeError, DEFAULT_KSF, encodeRequestBody, pad, sealRequest } from '@coffer/protocol';
import { VaultCore } from '../src/core/vault-core.js';
import { DEFAULT_POLICY } from '../src/core/config.js';
import { decodeRecord, encodePaddedRecord, encodeRecord, padRecord, RecordIntegrityError, sealRecord, type AccountRecord } from '../src/core/record.js';
import { openSoftwarePlatform, provisionSoftwareKeys, type SoftwarePlatform } from '../src/platform/software.js';
import { VAULT_KEYS } from '../src/platform/index.js';
import { ensureFleetFile, type LoadedFleet } from '../src/server/fleet.js';

const RUNS = Number(process.env.COFFER_FUZZ_RUNS ?? 1000);

function mutate(seed: Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc.tuple(fc.nat(), fc.nat(255), fc.integer({ min: 0, max: 2 }), fc.uint8Array({ maxLength: 40 })).map(([at, v, how, extra]) => {
    const s = seed.slice();
    const i = s.length ? at % s.length : 0;
    if (how === 0 && s.length) s[i] = v;
    if (how === 1) return s.subarray(0, i);
    if (how === 2) return new Uint8Array([...s, ...extra]);
    return s;
  });
}

describe('fuzz: vault core decoders', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-fuzz-'));
  let platform: SoftwarePlatform;
  let fleet: LoadedFleet;
  let core: VaultCore;
  const active: AccountRecord = {
    state: 'active', guessLimit: 10, guessesUsed: 2, ksf: DEFAULT_KSF, registrationRecord: new Uint8Array(192).fill(1), registrationId: new Uint8Array(32).fill(8), ownerTokenHash: new Uint8Array(32).fill(9), registeredAt: 13, registerStarts: [11, 12], wrappedKey: new Uint8Array(60).fill(2),
    pendingLogin: { nonce: new Uint8Array(16), expiresAt: 5, serverLoginState: new Uint8Array(128).fill(3) }, pendingRegistration: null,
    changeGrant: { nonce: new Uint8Array(16).fill(4), expiresAt: 6 }, seenLogins: [{ digest: new Uint8Array(16).fill(5), expiresAt: 7 }],
  };
  before(async () => {
    provisionSoftwareKeys(join(dir, 'k.json'), VAULT_KEYS);
    platform = openSoftwarePlatform(join(dir, 'k.json'));
    fleet = (await ensureFleetFile(platform, join(dir, 'fleet.json'))).fleet;
    core = await VaultCore.create(platform, DEFAULT_POLICY, fleet.fleetKey, fleet.opaqueSetup);
  });
  after(async () => {
    await platform.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('decodeRecord: DecodeError or a record, nothing else', () => {
    const seeds = [encodeRecord(active), encodeRecord({ state: 'erased', erasedAt: 1, registerStarts: [3] }), encodeRecord({ state: 'pending-registration', registration: { nonce: new Uint8Array(16), expiresAt: 9, registrationId: new Uint8Array(32).fill(6) }, registerStarts: [] })];
    for (const s of seeds) assert.deepEqual(decodeRecord(s), decodeRecord(encodeRecord(decodeRecord(s))));
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 800 }), ...seeds.map(mutate)), (b) => {
      try {
        decodeRecord(b);
      } catch (err) {
        if (!(err instanceof DecodeError)) throw err;
      }
    }), { numRuns: RUNS });
  });

  it('encodePaddedRecord writes exactly padRecord(encodeRecord(record)), and refuses a record past the padded size', () => {
    const big: AccountRecord = { ...active, registerStarts: Array.from({ length: 64 }, (_, i) => i), seenLogins: Array.from({ length: 64 }, (_, i) => ({ digest: new Uint8Array(16).fill(i), expiresAt: i })) };
    const records: AccountRecord[] = [active, big, { state: 'erased', erasedAt: 1, registerStarts: [3] }, { state: 'pending-registration', registration: null, registerStarts: [] }];
    for (const r of records) assert.deepEqual(encodePaddedRecord(r), padRecord(encodeRecord(r)));
    const tooBig: AccountRecord = { ...big, wrappedKey: new Uint8Array(3072) };
    assert.throws(() => encodePaddedRecord(tooBig), RangeError);
    assert.throws(() => padRecord(encodeRecord(tooBig)), RangeError);
  });

  it('open: random and mutated requests are refused with a code or opened, never thrown', async () => {
    const seed = (await sealRequest(fleet.fleetKey, 'fuzz', 'status', pad(encodeRequestBody({ op: 'status', proof: null })))).bytes;
    await fc.assert(fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 700 }), mutate(seed)), fc.constantFrom('fuzz', 'other', '', 'bad account'), async (b, account) => {
      const r = await core.open(account, b);
      if (r.kind === 'opened') assert.equal(account, 'fuzz');
    }), { numRuns: Math.ceil(RUNS / 4) });
  });

  it('decide: a mutated stored record is a RecordIntegrityError and yields no write', async () => {
    const stored = await sealRecord(platform, 'fuzz', active);
    const seed = (await sealRequest(fleet.fleetKey, 'fuzz', 'status', pad(encodeRequestBody({ op: 'status', proof: null })))).bytes;
    await fc.assert(fc.asyncProperty(mutate(stored), async (b) => {
      const opened = await core.open('fuzz', seed);
      assert.equal(opened.kind, 'opened');
      if (opened.kind !== 'opened') return;
      try {
        await core.decide(opened.request, b);
        assert.deepEqual(b, stored, 'only the untouched record decides');
      } catch (err) {
        assert.ok(err instanceof RecordIntegrityError, String(err));
      }
    }), { numRuns: Math.ceil(RUNS / 4) });
  });
});
