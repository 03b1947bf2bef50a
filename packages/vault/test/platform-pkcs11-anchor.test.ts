// Issue 9: the trusted anchor on a real SoftHSM2 token (private CKO_DATA objects: two
// slots written in place since issue 13; version 1 objects still read and cleared).
import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import pkcs11js from 'pkcs11js';
import { ANCHOR_MAX_BYTES } from '../src/core/platform.js';
import { openPkcs11Platform } from '../src/platform/pkcs11/index.js';
import { ANCHOR_LABEL, ANCHOR_SLOT_APPLICATION, decodeSlotLabel } from '../src/platform/pkcs11/anchor.js';
import { createSoftHsmToken, type SoftHsmToken } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';
import { rejectsWithCode } from './helpers/platform-conformance.js';

const skip = softHsmSkip();
let token: SoftHsmToken;
if (!skip) token = createSoftHsmToken();

/** Anchor objects of either version (or any data object) that a session WITHOUT login can see. */
function visibleWithoutLogin(tok: SoftHsmToken): { count: number } {
  const p = new pkcs11js.PKCS11();
  p.load(tok.module);
  p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const slot = p.C_GetSlotList(true).find((sl) => p.C_GetTokenInfo(sl).label.trim() === tok.tokenLabel)!;
    const s = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    try {
      let count = 0;
      for (const template of [[{ type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL }], [{ type: pkcs11js.CKA_APPLICATION, value: ANCHOR_SLOT_APPLICATION }], [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA }]]) {
        p.C_FindObjectsInit(s, template);
        count += p.C_FindObjects(s, 10).length;
        p.C_FindObjectsFinal(s);
      }
      return { count };
    } finally {
      p.C_CloseSession(s);
    }
  } finally {
    p.C_Finalize();
    p.close();
  }
}

/** Runs `fn` on a logged-in read-write session of its own module instance (the platform closed meanwhile). */
function onToken<T>(tok: SoftHsmToken, fn: (p: pkcs11js.PKCS11, s: Buffer) => T): T {
  const p = new pkcs11js.PKCS11();
  p.load(tok.module);
  p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const slot = p.C_GetSlotList(true).find((sl) => p.C_GetTokenInfo(sl).label.trim() === tok.tokenLabel)!;
    const s = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p.C_Login(s, pkcs11js.CKU_USER, tok.pin);
    try {
      return fn(p, s);
    } finally {
      p.C_Logout(s);
      p.C_CloseSession(s);
    }
  } finally {
    p.C_Finalize();
    p.close();
  }
}

function findAll(p: pkcs11js.PKCS11, s: Buffer, template: pkcs11js.Template): Buffer[] {
  p.C_FindObjectsInit(s, template);
  const found = p.C_FindObjects(s, 16);
  p.C_FindObjectsFinal(s);
  return found;
}

/** A session's slots (handle, generation, value), newest first. Handles are the session's module instance's own. */
function slotsOn(p: pkcs11js.PKCS11, s: Buffer): { handle: Buffer; generation: bigint | null; value: number[] | null }[] {
  const slots = findAll(p, s, [{ type: pkcs11js.CKA_APPLICATION, value: ANCHOR_SLOT_APPLICATION }]).map((handle) => {
    const d = decodeSlotLabel(p.C_GetAttributeValue(s, handle, [{ type: pkcs11js.CKA_LABEL }])[0]!.value);
    return { handle, generation: d?.generation ?? null, value: d ? [...d.value] : null };
  });
  return slots.sort((a, b) => ((b.generation ?? -1n) > (a.generation ?? -1n) ? 1 : -1));
}

/** The two slots' (generation, value), newest first, and how many version 1 objects remain. */
function anchorObjects(tok: SoftHsmToken): { slots: { generation: bigint | null; value: number[] | null }[]; v1: number } {
  return onToken(tok, (p, s) => ({
    slots: slotsOn(p, s).map(({ generation, value }) => ({ generation, value })),
    v1: findAll(p, s, [{ type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL }]).length,
  }));
}

/** A version 1 anchor object (one per generation, the value in CKA_VALUE), as written before issue 13. */
function createV1(p: pkcs11js.PKCS11, s: Buffer, generation: bigint, value: number[]): void {
  const body = Buffer.concat([Buffer.alloc(8), Buffer.from(value)]);
  body.writeBigUInt64BE(generation, 0);
  p.C_CreateObject(s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL },
    { type: pkcs11js.CKA_VALUE, value: body },
  ]);
}

describeIf('PKCS#11 anchor (coffer-anchor-v2 slots on SoftHSM2)', skip, () => {
  after(() => token?.cleanup());

  it('is null before the first write, round-trips, refuses more than 256 bytes, and survives reopening the token', async () => {
    const p1 = await openPkcs11Platform(token.options);
    assert.equal(await p1.readAnchor(), null);
    const a = Uint8Array.from({ length: ANCHOR_MAX_BYTES }, (_, i) => i & 0xff);
    await p1.writeAnchor(a);
    assert.deepEqual(await p1.readAnchor(), a);
    const b = new Uint8Array([1, 2, 3]);
    await p1.writeAnchor(b);
    b[0] = 9; // the platform kept a copy, not the caller's buffer
    assert.deepEqual(await p1.readAnchor(), new Uint8Array([1, 2, 3]));
    await rejectsWithCode(p1.writeAnchor(new Uint8Array(ANCHOR_MAX_BYTES + 1)), 'bad-argument');
    assert.deepEqual(await p1.readAnchor(), new Uint8Array([1, 2, 3]), 'a refused write changes nothing');
    await p1.writeAnchor(new Uint8Array(0));
    assert.deepEqual(await p1.readAnchor(), new Uint8Array(0), 'an empty anchor is not "no anchor"');
    await p1.writeAnchor(new Uint8Array([4, 5]));
    await p1.close();

    // A fresh module initialization (the module re-reads the token from its store).
    const p2 = await openPkcs11Platform(token.options);
    assert.deepEqual(await p2.readAnchor(), new Uint8Array([4, 5]));
    // Many writes leave one object, not a pile.
    for (let i = 0; i < 20; i++) await p2.writeAnchor(new Uint8Array([i]));
    assert.deepEqual(await p2.readAnchor(), new Uint8Array([19]));
    await p2.close();
  });

  it('is a private object: a session without the user PIN neither finds nor reads it', async () => {
    const p = await openPkcs11Platform(token.options);
    await p.writeAnchor(new Uint8Array([7, 7, 7]));
    await p.close();
    assert.equal(anchorObjects(token).slots.length, 2, 'with the PIN: both slots');
    assert.equal(visibleWithoutLogin(token).count, 0);
  });

  it('is two slots: many writes leave two objects, generations counting up, the newest and the one before (no call counts here: pkcs11-anchor-slots)', async () => {
    const p = await openPkcs11Platform(token.options);
    await p.writeAnchor(new Uint8Array([1]));
    await p.writeAnchor(new Uint8Array([2]));
    await p.close();
    const before = anchorObjects(token);
    assert.equal(before.slots.length, 2);
    const q = await openPkcs11Platform(token.options);
    for (let i = 10; i < 30; i++) await q.writeAnchor(new Uint8Array([i]));
    assert.deepEqual(await q.readAnchor(), new Uint8Array([29]));
    await q.close();
    const after = anchorObjects(token);
    assert.equal(after.slots[0]!.generation, before.slots[0]!.generation! + 20n);
    assert.deepEqual(after.slots.map((o) => o.value), [[29], [28]]);
    assert.equal(after.v1, 0);
  });

  it('a slot cut short by a crash mid-write is ignored: the read gives the other slot, and the next write goes over the damaged one', async () => {
    const p = await openPkcs11Platform(token.options);
    await p.writeAnchor(new Uint8Array([5]));
    await p.writeAnchor(new Uint8Array([6]));
    await p.close();
    // The newest slot's label torn by hand (its tail lost, as by a write cut short).
    const slots = onToken(token, (raw, s) => {
      const found = slotsOn(raw, s);
      assert.deepEqual(found[0]!.value, [6]);
      const label = raw.C_GetAttributeValue(s, found[0]!.handle, [{ type: pkcs11js.CKA_LABEL }])[0]!.value;
      raw.C_SetAttributeValue(s, found[0]!.handle, [{ type: pkcs11js.CKA_LABEL, value: label.subarray(0, label.length - 3) }]);
      return found;
    });
    const q = await openPkcs11Platform(token.options);
    try {
      assert.deepEqual(await q.readAnchor(), new Uint8Array([5]), 'the intact older slot, not the torn one');
      await q.writeAnchor(new Uint8Array([7]));
      assert.deepEqual(await q.readAnchor(), new Uint8Array([7]));
    } finally {
      await q.close();
    }
    const after = anchorObjects(token);
    assert.deepEqual(after.slots.map((o) => o.value), [[7], [5]], 'the torn slot was written over, the intact one kept');
    assert.equal(after.slots[0]!.generation, slots[1]!.generation! + 1n, 'the generation continues from the newest intact slot');
  });

  it('a token holding version 1 objects (one per generation) is read, and the first write continues their generation in a slot and removes them', async () => {
    const t = createSoftHsmToken();
    try {
      onToken(t, (raw, s) => {
        createV1(raw, s, 7n, [0xaa]);
        createV1(raw, s, 6n, [0xbb]); // a stale generation left by a crash between create and destroy
      });
      const p = await openPkcs11Platform(t.options);
      assert.deepEqual(await p.readAnchor(), new Uint8Array([0xaa]), 'the newest version 1 generation');
      await p.writeAnchor(new Uint8Array([1]));
      assert.deepEqual(await p.readAnchor(), new Uint8Array([1]));
      await p.close();
      const after = anchorObjects(t);
      assert.equal(after.v1, 0, 'the version 1 objects are gone');
      assert.deepEqual(after.slots.map((o) => [o.generation, o.value]), [[8n, [1]]]);
      // A version 1 object newer than the slots (written by an older build after a downgrade) wins.
      onToken(t, (raw, s) => createV1(raw, s, 20n, [0xcc]));
      const q = await openPkcs11Platform(t.options);
      assert.deepEqual(await q.readAnchor(), new Uint8Array([0xcc]));
      await q.writeAnchor(new Uint8Array([2]));
      await q.close();
      assert.deepEqual(anchorObjects(t).slots.map((o) => [o.generation, o.value]), [[21n, [2]], [8n, [1]]]);
    } finally {
      t.cleanup();
    }
  });

  it('is written on the anchor thread: the event loop keeps turning while the token stores it, and the write resolves only once stored', async () => {
    const p = await openPkcs11Platform(token.options);
    await p.readAnchor(); // the thread is up
    let turns = 0;
    let stop = false;
    const spin = (): void => {
      if (stop) return;
      turns++;
      setImmediate(spin);
    };
    setImmediate(spin);
    const before = turns;
    await p.writeAnchor(new Uint8Array([0x42]));
    const during = turns - before;
    stop = true;
    // The reply comes back through the event loop, after the thread's C_CreateObject:
    // loop turns ran meanwhile (with a blocking call the loop would not have turned).
    assert.ok(during > 0, `the event loop turned ${during} times during the write`);
    assert.deepEqual(await p.readAnchor(), new Uint8Array([0x42]));
    // Writes queued back to back are stored in call order; close() waits for them.
    const writes = [p.writeAnchor(new Uint8Array([1])), p.writeAnchor(new Uint8Array([2])), p.writeAnchor(new Uint8Array([3]))];
    const closed = p.close();
    await Promise.all(writes);
    await closed;
    await rejectsWithCode(p.writeAnchor(new Uint8Array([4])), 'hsm-failure');
    const q = await openPkcs11Platform(token.options);
    assert.deepEqual(await q.readAnchor(), new Uint8Array([3]));
    await q.close();
  });
});
