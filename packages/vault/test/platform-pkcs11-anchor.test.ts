// Issue 9: the trusted anchor on a real SoftHSM2 token (a private CKO_DATA object).
import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import pkcs11js from 'pkcs11js';
import { ANCHOR_MAX_BYTES } from '../src/core/platform.js';
import { openPkcs11Platform } from '../src/platform/pkcs11/index.js';
import { ANCHOR_LABEL } from '../src/platform/pkcs11/anchor.js';
import { createSoftHsmToken, type SoftHsmToken } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';
import { rejectsWithCode } from './helpers/platform-conformance.js';

const skip = softHsmSkip();
let token: SoftHsmToken;
if (!skip) token = createSoftHsmToken();

/** Objects labelled `coffer-anchor-v1` that a session WITHOUT login can see. */
function visibleWithoutLogin(tok: SoftHsmToken): { count: number; value: Buffer | null } {
  const p = new pkcs11js.PKCS11();
  p.load(tok.module);
  p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const slot = p.C_GetSlotList(true).find((sl) => p.C_GetTokenInfo(sl).label.trim() === tok.tokenLabel)!;
    const s = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    try {
      p.C_FindObjectsInit(s, [{ type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL }]);
      const found = p.C_FindObjects(s, 10);
      p.C_FindObjectsFinal(s);
      return { count: found.length, value: found[0] ? p.C_GetAttributeValue(s, found[0], [{ type: pkcs11js.CKA_VALUE }])[0]!.value : null };
    } finally {
      p.C_CloseSession(s);
    }
  } finally {
    p.C_Finalize();
    p.close();
  }
}

describeIf('PKCS#11 anchor (coffer-anchor-v1 on SoftHSM2)', skip, () => {
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
    const seen = visibleWithoutLogin(token);
    assert.equal(seen.count, 0);
    assert.equal(seen.value, null);
  });

  it('a stale older generation left by a crash between create and destroy is ignored, and the next write clears it', async () => {
    const p = await openPkcs11Platform(token.options);
    await p.writeAnchor(new Uint8Array([1]));
    await p.writeAnchor(new Uint8Array([2]));
    await p.close();
    // Simulate a crash between "create the new generation" and "destroy the old one":
    // add an object with an older generation by hand.
    const raw = new pkcs11js.PKCS11();
    raw.load(token.module);
    raw.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    try {
      const slot = raw.C_GetSlotList(true).find((sl) => raw.C_GetTokenInfo(sl).label.trim() === token.tokenLabel)!;
      const s = raw.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      raw.C_Login(s, pkcs11js.CKU_USER, token.pin);
      const stale = Buffer.concat([Buffer.alloc(8), Buffer.from([0xee])]);
      stale.writeBigUInt64BE(1n, 0);
      raw.C_CreateObject(s, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL },
        { type: pkcs11js.CKA_VALUE, value: stale },
      ]);
      raw.C_Logout(s);
      raw.C_CloseSession(s);
    } finally {
      raw.C_Finalize();
      raw.close();
    }
    const q = await openPkcs11Platform(token.options);
    assert.deepEqual(await q.readAnchor(), new Uint8Array([2]), 'the newest generation wins');
    await q.writeAnchor(new Uint8Array([3]));
    assert.deepEqual(await q.readAnchor(), new Uint8Array([3]));
    await q.close();
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
