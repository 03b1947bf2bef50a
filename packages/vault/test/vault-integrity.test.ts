// Records at rest are bound to their account, format version and fleet (spec §7):
// tampered, moved and foreign records are refused and never rewritten.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { toHex } from '@coffer/protocol';
import { KEY_K, startHarness, type Harness } from './helpers/vault-harness.js';
import { freshKe1, raw } from './helpers/raw-requests.js';

async function overwrite(h: Harness, account: string, value: Uint8Array): Promise<void> {
  const cur = await h.vault.store.get(account);
  const r = await h.vault.store.compareAndPut(account, value, cur?.version ?? null);
  assert.ok(r.ok);
}

async function refusedWithoutChange(h: Harness, account: string): Promise<void> {
  const before = toHex((await h.stored(account))!);
  for (const req of [{ op: 'status', proof: null } as const, { op: 'login-start', timestampMs: Date.now(), ke1: (await freshKe1('pw')).ke1 } as const, { op: 'delete', timestampMs: Date.now(), proof: null } as const]) {
    const res = await (await raw(h, account, req)).send();
    assert.equal(res.status, 500, req.op);
    assert.equal(JSON.parse(res.bytes.toString()).error.code, 'record-integrity');
  }
  assert.equal(toHex((await h.stored(account))!), before, 'the stored record is untouched');
}

describe('sealed records at rest', () => {
  let h: Harness;
  let other: Harness;
  before(async () => {
    h = await startHarness();
    other = await startHarness();
  });
  after(async () => {
    await h.close();
    await other.close();
  });

  it('a record with any byte flipped is refused', async () => {
    await h.client('t1').register('pw', KEY_K);
    const good = (await h.stored('t1'))!;
    for (const i of [0, 1, 13, Math.floor(good.length / 2), good.length - 1]) {
      const bad = good.slice();
      bad[i]! ^= 0x01;
      await overwrite(h, 't1', bad);
      await refusedWithoutChange(h, 't1');
    }
    await overwrite(h, 't1', good);
    assert.equal((await h.client('t1').recover('pw')).outcome, 'ok');
  });

  it('a truncated or empty record is refused', async () => {
    const good = (await h.stored('t1'))!;
    for (const bad of [good.subarray(0, good.length - 1), good.subarray(0, 20), new Uint8Array(0)]) {
      await overwrite(h, 't1', bad);
      await refusedWithoutChange(h, 't1');
    }
    await overwrite(h, 't1', good);
  });

  it("a record moved to another account is refused for that account", async () => {
    await h.client('victim').register('victim-pw', KEY_K);
    await h.client('mallory').register('mallory-pw', new Uint8Array(32));
    await overwrite(h, 'mallory', (await h.stored('victim'))!);
    await refusedWithoutChange(h, 'mallory');
  });

  it("a record sealed by another fleet is refused", async () => {
    await other.client('t2').register('pw', KEY_K);
    await h.client('t2').register('pw', KEY_K);
    await overwrite(h, 't2', (await other.stored('t2'))!);
    await refusedWithoutChange(h, 't2');
  });

  it('a request sealed to another fleet key is refused before any record is read', async () => {
    await h.client('t3').register('pw', KEY_K);
    const before = toHex((await h.stored('t3'))!);
    const res = await (await raw(h, 't3', { op: 'delete', timestampMs: Date.now(), proof: null }, other.vault.fleet.fleetKey)).send();
    assert.equal(res.status, 400);
    assert.equal(JSON.parse(res.bytes.toString()).error.code, 'unknown-fleet-key');
    assert.equal(toHex((await h.stored('t3'))!), before);
  });
});
