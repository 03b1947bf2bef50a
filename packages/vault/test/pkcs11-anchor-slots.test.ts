// The PKCS#11 anchor's write strategy (platform/pkcs11/anchor.ts) against an in-memory
// token that counts calls: writes in place once two slots exist, no search while the
// slots are known, and the version 1 form on a token that refuses a slot's long label.
// The same code on SoftHSM2: platform-pkcs11-anchor.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11, Template } from 'pkcs11js';
import { ANCHOR_LABEL, ANCHOR_SLOT_APPLICATION, AnchorSlots, readAnchorObject } from '../src/platform/pkcs11/anchor.js';
import { PlatformError } from '../src/core/platform.js';

type Value = Buffer | string | boolean | number;

/** Just what anchor.ts calls, on objects kept in a Map; `maxLabel` makes it refuse longer labels as some HSMs do. */
class FakeToken {
  readonly objects = new Map<string, Map<number, Value>>();
  readonly calls = new Map<string, number>();
  #next = 1;
  #found: string[] = [];
  /** `truncate`: labels longer than this are stored cut short, without an error (as some tokens do). */
  constructor(
    private readonly maxLabel = Infinity,
    private readonly truncate = Infinity,
  ) {}
  #stored(attrs: Template): Template {
    return attrs.map((a) => (a.type === pkcs11js.CKA_LABEL && String(a.value).length > this.truncate ? { type: a.type, value: String(a.value).slice(0, this.truncate) } : a));
  }

  #count(name: string): void {
    this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
  }
  #check(attrs: Template): void {
    for (const a of attrs) {
      if (a.type === pkcs11js.CKA_LABEL && String(a.value).length > this.maxLabel) throw new pkcs11js.Pkcs11Error('CKR_ATTRIBUTE_VALUE_INVALID:19');
    }
  }
  C_FindObjectsInit(_s: Handle, template: Template): void {
    this.#count('C_FindObjectsInit');
    const same = (x: Value | undefined, y: unknown): boolean => (Buffer.isBuffer(x) || Buffer.isBuffer(y) ? Buffer.from(x as string).equals(Buffer.from(y as string)) : x === y);
    this.#found = [...this.objects].filter(([, o]) => template.every((a) => same(o.get(a.type), a.value))).map(([h]) => h);
  }
  /** At most `max` handles per call, the next ones on the next call (as the standard has it). */
  C_FindObjects(_s: Handle, max = 1): Handle[] {
    return this.#found.splice(0, max).map((h) => Buffer.from(h, 'hex'));
  }
  C_FindObjectsFinal(): void {}
  /** Set: every attribute read fails with this CK_RV text (a device error, say). */
  readFails: string | undefined;
  C_GetAttributeValue(_s: Handle, h: Handle, template: Template): { type: number; value: Buffer }[] {
    if (this.readFails) throw new pkcs11js.Pkcs11Error(this.readFails);
    const o = this.objects.get(h.toString('hex'));
    if (!o) throw new pkcs11js.Pkcs11Error('CKR_OBJECT_HANDLE_INVALID:130');
    return template.map((a) => ({ type: a.type, value: Buffer.from(o.get(a.type) as string) }));
  }
  C_CreateObject(_s: Handle, attrs: Template): Handle {
    this.#count('C_CreateObject');
    this.#check(attrs);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(this.#next++);
    this.objects.set(h.toString('hex'), new Map(this.#stored(attrs).map((a) => [a.type, a.value as Value])));
    return h;
  }
  C_SetAttributeValue(_s: Handle, h: Handle, attrs: Template): void {
    this.#count('C_SetAttributeValue');
    const o = this.objects.get(h.toString('hex'));
    if (!o) throw new pkcs11js.Pkcs11Error('CKR_OBJECT_HANDLE_INVALID:130');
    this.#check(attrs);
    for (const a of this.#stored(attrs)) o.set(a.type, a.value as Value);
  }
  C_DestroyObject(_s: Handle, h: Handle): void {
    this.#count('C_DestroyObject');
    this.objects.delete(h.toString('hex'));
  }
  /** How many objects of each anchor form the token holds. */
  kinds(): { slots: number; v1: number } {
    let slots = 0;
    let v1 = 0;
    for (const o of this.objects.values()) {
      if (o.get(pkcs11js.CKA_APPLICATION) === ANCHOR_SLOT_APPLICATION) slots++;
      if (o.get(pkcs11js.CKA_LABEL) === ANCHOR_LABEL) v1++;
    }
    return { slots, v1 };
  }
}

const session = Buffer.alloc(8);

describe('PKCS#11 anchor slots (in-memory token)', () => {
  it('writes in place once two slots exist: one C_SetAttributeValue per write, no search and no object created or destroyed', () => {
    const t = new FakeToken();
    const p = t as unknown as PKCS11;
    const a = new AnchorSlots();
    assert.equal(a.read(p, session), null);
    a.write(p, session, Buffer.from([1]));
    a.write(p, session, Buffer.from([2]));
    assert.deepEqual(t.kinds(), { slots: 2, v1: 0 });
    const before = new Map(t.calls);
    for (let i = 3; i <= 12; i++) a.write(p, session, Buffer.from([i]));
    const delta = (name: string): number => (t.calls.get(name) ?? 0) - (before.get(name) ?? 0);
    assert.equal(delta('C_SetAttributeValue'), 10);
    assert.equal(delta('C_FindObjectsInit'), 0);
    assert.equal(delta('C_CreateObject'), 0);
    assert.equal(delta('C_DestroyObject'), 0);
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from([12]));
    assert.deepEqual(t.kinds(), { slots: 2, v1: 0 });
  });

  it('a remembered slot that is gone (destroyed behind its back) makes the write search the token and go on', () => {
    const t = new FakeToken();
    const p = t as unknown as PKCS11;
    const a = new AnchorSlots();
    for (let i = 1; i <= 3; i++) a.write(p, session, Buffer.from([i]));
    // The older slot (holding [2]) disappears.
    const [older] = [...t.objects].find(([, o]) => String(o.get(pkcs11js.CKA_LABEL)).length > 0 && readLabelValue(o) === 2)!;
    t.objects.delete(older);
    a.write(p, session, Buffer.from([4]));
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from([4]));
    assert.deepEqual(t.kinds(), { slots: 2, v1: 0 });
    a.write(p, session, Buffer.from([5]));
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from([5]));
  });

  it('a slot whose label cannot be read fails the write: it is not taken for damaged and written over (the newest generation stays)', () => {
    const t = new FakeToken();
    const p = t as unknown as PKCS11;
    const a = new AnchorSlots();
    for (let i = 1; i <= 3; i++) a.write(p, session, Buffer.from([i]));
    const before = JSON.stringify([...t.objects].map(([h, o]) => [h, String(o.get(pkcs11js.CKA_LABEL))]));
    t.readFails = 'CKR_DEVICE_ERROR:48';
    assert.throws(() => new AnchorSlots().write(p, session, Buffer.from([4])), /anchor slot/);
    assert.throws(() => a.write(p, session, Buffer.from([4])), /anchor slot/);
    t.readFails = undefined;
    assert.equal(JSON.stringify([...t.objects].map(([h, o]) => [h, String(o.get(pkcs11js.CKA_LABEL))])), before, 'nothing written');
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from([3]));
  });

  it('a second writer on the token: the next write is refused (anchor-moved, nothing written) until this writer reads again, then goes above it', () => {
    const t = new FakeToken();
    const p = t as unknown as PKCS11;
    const a = new AnchorSlots();
    const b = new AnchorSlots();
    for (let i = 1; i <= 3; i++) a.write(p, session, Buffer.from([i]));
    for (let i = 10; i <= 14; i++) b.write(p, session, Buffer.from([i]));
    assert.throws(() => a.write(p, session, Buffer.from([99])), (err: unknown) => err instanceof PlatformError && err.code === 'anchor-moved');
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from([14]), 'the other writer\'s anchor stays');
    assert.throws(() => a.write(p, session, Buffer.from([99])), (err: unknown) => err instanceof PlatformError && err.code === 'anchor-moved');
    assert.deepEqual(a.read(p, session), Uint8Array.from([14]));
    a.write(p, session, Buffer.from([99]));
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from([99]), 'the last write is the one read');
    const gens = [...t.objects.values()].map((o) => labelGeneration(o)).sort();
    assert.deepEqual(gens, [8n, 9n], 'generation 9 follows the other writer\'s 8');
    // And the writer that was gone under: refused the same way.
    assert.throws(() => b.write(p, session, Buffer.from([15])), (err: unknown) => err instanceof PlatformError && err.code === 'anchor-moved');
  });

  it('a token that changes no label in place but creates slots: each write makes the next generation a new slot and destroys the one it replaces', () => {
    const t = new FakeToken();
    const p = t as unknown as PKCS11;
    const setLabel = t.C_SetAttributeValue.bind(t);
    t.C_SetAttributeValue = () => {
      throw new pkcs11js.Pkcs11Error('CKR_ATTRIBUTE_READ_ONLY:16');
    };
    const a = new AnchorSlots();
    for (let i = 1; i <= 5; i++) a.write(p, session, Buffer.from([i]));
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from([5]));
    assert.deepEqual(t.kinds(), { slots: 2, v1: 0 });
    assert.deepEqual([...t.objects.values()].map((o) => labelGeneration(o)).sort(), [4n, 5n]);
    t.C_SetAttributeValue = setLabel;
  });

  it('a token that refuses the slot label (too long for it) keeps the version 1 form: one object per generation, the older one destroyed', () => {
    const t = new FakeToken(32);
    const p = t as unknown as PKCS11;
    const a = new AnchorSlots();
    const anchor = (i: number): Buffer => Buffer.alloc(56, i);
    for (let i = 1; i <= 4; i++) a.write(p, session, anchor(i));
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from(anchor(4)));
    assert.deepEqual(t.kinds(), { slots: 0, v1: 1 });
    // Its generation continues from the version 1 objects it holds.
    const v1 = [...t.objects.values()][0]!.get(pkcs11js.CKA_VALUE) as Buffer;
    assert.equal(v1.readBigUInt64BE(0), 4n);
  });

  it('a token that silently cuts long labels short: every write is read back, and the version 1 form holds the anchor (never a generation behind)', () => {
    const t = new FakeToken(Infinity, 40);
    const p = t as unknown as PKCS11;
    const a = new AnchorSlots();
    for (let i = 1; i <= 5; i++) {
      a.write(p, session, Buffer.alloc(56, i));
      assert.deepEqual(readAnchorObject(p, session), Uint8Array.from(Buffer.alloc(56, i)), `after write ${i}`);
    }
    assert.deepEqual(t.kinds(), { slots: 0, v1: 1 });
  });

  it('finds every anchor object however many there are (C_FindObjects gives them a few at a time): the newest generation is read, and written above', () => {
    const t = new FakeToken(32);
    const p = t as unknown as PKCS11;
    // Version 1 objects left behind by writes whose clean-up never ran: generations 1..40,
    // the newest created last, so a search that takes only the first batch misses it.
    for (let g = 1; g <= 40; g++) {
      const body = Buffer.alloc(8 + 56, g);
      body.writeBigUInt64BE(BigInt(g), 0);
      t.C_CreateObject(session, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_LABEL, value: ANCHOR_LABEL },
        { type: pkcs11js.CKA_VALUE, value: body },
      ]);
    }
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from(Buffer.alloc(56, 40)), 'the newest of 40');
    new AnchorSlots().write(p, session, Buffer.alloc(56, 99));
    assert.deepEqual(readAnchorObject(p, session), Uint8Array.from(Buffer.alloc(56, 99)));
    const left = [...t.objects.values()].map((o) => (o.get(pkcs11js.CKA_VALUE) as Buffer).readBigUInt64BE(0));
    assert.deepEqual(left, [41n], 'written as generation 41, every older object destroyed');
  });
});

/** The value byte of a slot (test helper: the label's base64url body, generation skipped). */
function readLabelValue(o: Map<number, Value>): number {
  const label = String(o.get(pkcs11js.CKA_LABEL));
  const raw = Buffer.from(label.slice(label.indexOf(' ') + 1), 'base64url');
  return raw[8]!;
}

/** The generation a slot's label holds. */
function labelGeneration(o: Map<number, Value>): bigint {
  const label = String(o.get(pkcs11js.CKA_LABEL));
  return Buffer.from(label.slice(label.indexOf(' ') + 1), 'base64url').readBigUInt64BE(0);
}
