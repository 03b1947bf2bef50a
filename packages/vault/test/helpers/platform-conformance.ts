/**
 * Behaviours every vault `Platform` must share, as one reusable node:test suite.
 *
 * Usage (from a *.test.ts file):
 *   platformConformance('software', async () => ({ platform, keys, close }));
 * `makePlatform` is called once for the suite; its keys must already exist.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createECDH, ECDH } from 'node:crypto';
import { PlatformError } from '../../src/core/platform.js';
import type { Platform } from '../../src/core/platform.js';

export interface ConformanceSubject {
  readonly platform: Platform;
  /** Labels of keys present on the platform, and one that is not. */
  readonly keys: {
    readonly seal: string;
    /** A second sealing key, distinct from `seal`. */
    readonly otherSeal: string;
    readonly mac: string;
    readonly ecdh: string;
    readonly missing: string;
  };
  close(): Promise<void>;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
/** Plain Uint8Array copy, so a platform may return Buffers and still compare equal. */
const bytes = (b: Uint8Array | null): Uint8Array | null => (b === null ? null : Uint8Array.from(b));

/** Asserts that `p` rejects with a PlatformError whose code is `code`. */
export async function rejectsWithCode(p: Promise<unknown>, code: PlatformError['code']): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof PlatformError, `expected PlatformError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

export function platformConformance(name: string, makePlatform: () => Promise<ConformanceSubject>): void {
  describe(`Platform conformance: ${name}`, () => {
    let subject: ConformanceSubject;
    let p: Platform;
    let k: ConformanceSubject['keys'];
    before(async () => {
      subject = await makePlatform();
      p = subject.platform;
      k = subject.keys;
    });
    after(async () => {
      await subject?.close();
    });

    it('has a name, a clock and a random source', () => {
      assert.ok(p.name.length > 0);
      assert.ok(Math.abs(p.now() - Date.now()) < 5_000);
      const a = p.randomBytes(32);
      assert.ok(a instanceof Uint8Array);
      assert.equal(a.length, 32);
      assert.notDeepEqual(a, p.randomBytes(32));
      assert.equal(p.randomBytes(0).length, 0);
    });

    it('seal then unseal returns the plaintext, for every size and AAD', async () => {
      for (const size of [0, 1, 15, 16, 17, 100, 4096, 65_536]) {
        for (const aad of [new Uint8Array(0), enc('user:alice|v1')]) {
          const pt = p.randomBytes(size);
          const sealed = await p.seal(k.seal, aad, pt);
          assert.equal(sealed.length, 12 + size + 16, 'nonce || ciphertext || tag');
          const opened = await p.unseal(k.seal, aad, sealed);
          assert.ok(opened !== null, `size ${size}`);
          assert.deepEqual(Uint8Array.from(opened), pt);
        }
      }
    });

    it('seal with headroom: that many zero bytes, then what unseal opens; a bad headroom is refused', async () => {
      const aad = enc('aad');
      const pt = enc('a record body of some length');
      for (const h of [0, 1, 3, 64]) {
        const sealed = await p.seal(k.seal, aad, pt, h);
        assert.equal(sealed.length, h + 12 + pt.length + 16, `headroom ${h}`);
        assert.deepEqual(bytes(sealed.subarray(0, h)), new Uint8Array(h));
        assert.deepEqual(bytes(await p.unseal(k.seal, aad, sealed.subarray(h))), pt);
      }
      for (const h of [-1, 1.5, 65, Number.NaN]) await rejectsWithCode(p.seal(k.seal, aad, pt, h), 'bad-argument');
    });

    it('uses a fresh nonce for every seal', async () => {
      const pt = enc('same');
      const a = await p.seal(k.seal, enc('x'), pt);
      const b = await p.seal(k.seal, enc('x'), pt);
      assert.notDeepEqual(a.subarray(0, 12), b.subarray(0, 12));
    });

    it('unseal of altered bytes returns null, whichever byte changed', async () => {
      const aad = enc('aad');
      const sealed = await p.seal(k.seal, aad, enc('the record'));
      for (const i of [0, 11, 12, 12 + 5, sealed.length - 16, sealed.length - 1]) {
        const bad = Uint8Array.from(sealed);
        bad[i] = (bad[i] ?? 0) ^ 0x01;
        assert.equal(await p.unseal(k.seal, aad, bad), null, `byte ${i}`);
      }
    });

    it('unseal of truncated, extended or too-short input returns null', async () => {
      const aad = enc('aad');
      const sealed = await p.seal(k.seal, aad, enc('the record'));
      assert.equal(await p.unseal(k.seal, aad, sealed.subarray(0, sealed.length - 1)), null);
      assert.equal(await p.unseal(k.seal, aad, Uint8Array.of(...sealed, 0)), null);
      for (const n of [0, 1, 12, 27]) assert.equal(await p.unseal(k.seal, aad, new Uint8Array(n)), null, `${n} bytes`);
      assert.equal(await p.unseal(k.seal, aad, new Uint8Array(28)), null, '28 zero bytes');
    });

    it('unseal with the wrong AAD returns null', async () => {
      const sealed = await p.seal(k.seal, enc('user:alice'), enc('the record'));
      assert.equal(await p.unseal(k.seal, enc('user:bob'), sealed), null);
      assert.equal(await p.unseal(k.seal, new Uint8Array(0), sealed), null);
    });

    it('unseal under another key returns null', async () => {
      const sealed = await p.seal(k.seal, enc('a'), enc('the record'));
      assert.equal(await p.unseal(k.otherSeal, enc('a'), sealed), null);
    });

    it('keeps working after failed unseals', async () => {
      const aad = enc('a');
      const sealed = await p.seal(k.seal, aad, enc('still here'));
      for (let i = 0; i < 10; i++) assert.equal(await p.unseal(k.seal, enc('b'), sealed), null);
      assert.deepEqual(bytes(await p.unseal(k.seal, aad, sealed)), enc('still here'));
    });

    it('mac is 32 bytes, deterministic, and depends on key and data', async () => {
      const m1 = await p.mac(k.mac, enc('entry 1'));
      assert.equal(m1.length, 32);
      assert.deepEqual(bytes(await p.mac(k.mac, enc('entry 1'))), bytes(m1));
      assert.notDeepEqual(await p.mac(k.mac, enc('entry 2')), m1);
      assert.equal((await p.mac(k.mac, new Uint8Array(0))).length, 32);
    });

    it('publicKey is an uncompressed P-256 point', async () => {
      const pub = await p.publicKey(k.ecdh);
      assert.equal(pub.length, 65);
      assert.equal(pub[0], 0x04);
      assert.doesNotThrow(() => ECDH.convertKey(pub, 'prime256v1', undefined, undefined, 'uncompressed'));
      assert.deepEqual(bytes(await p.publicKey(k.ecdh)), bytes(pub));
    });

    it("ecdh equals node:crypto's ECDH against publicKey()", async () => {
      const pub = await p.publicKey(k.ecdh);
      for (let i = 0; i < 5; i++) {
        const peer = createECDH('prime256v1');
        peer.generateKeys();
        const shared = await p.ecdh(k.ecdh, peer.getPublicKey());
        assert.equal(shared.length, 32);
        assert.deepEqual(Uint8Array.from(shared), Uint8Array.from(peer.computeSecret(pub)));
      }
    });

    it('ecdh rejects points that are not uncompressed P-256 points with bad-argument', async () => {
      const peer = createECDH('prime256v1');
      peer.generateKeys();
      const good = peer.getPublicKey();
      const offCurve = Uint8Array.from(good);
      offCurve[64] = (offCurve[64] ?? 0) ^ 0x01;
      const bad: [string, Uint8Array][] = [
        ['empty', new Uint8Array(0)],
        ['identity', Uint8Array.of(0)],
        ['compressed', Uint8Array.from(peer.getPublicKey(undefined, 'compressed'))],
        ['64 bytes', good.subarray(1)],
        ['66 bytes', Uint8Array.of(...good, 0)],
        ['wrong prefix', Uint8Array.of(0x05, ...good.subarray(1))],
        ['off the curve', offCurve],
        ['all zero', Uint8Array.of(0x04, ...new Uint8Array(64))],
        ['x = p', Uint8Array.of(0x04, ...Buffer.from('ffffffff00000001000000000000000000000000ffffffffffffffffffffffff', 'hex'), ...good.subarray(33))],
      ];
      for (const [what, point] of bad) {
        await rejectsWithCode(p.ecdh(k.ecdh, point), 'bad-argument').catch((e: unknown) => {
          throw new Error(`${what}: ${String(e)}`);
        });
      }
    });

    it('a missing key label is a PlatformError key-missing for every operation', async () => {
      await rejectsWithCode(p.seal(k.missing, enc('a'), enc('b')), 'key-missing');
      const sealed = await p.seal(k.seal, enc('a'), enc('b'));
      await rejectsWithCode(p.unseal(k.missing, enc('a'), sealed), 'key-missing');
      await rejectsWithCode(p.mac(k.missing, enc('a')), 'key-missing');
      const peer = createECDH('prime256v1');
      peer.generateKeys();
      await rejectsWithCode(p.ecdh(k.missing, peer.getPublicKey()), 'key-missing');
      await rejectsWithCode(p.publicKey(k.missing), 'key-missing');
    });

    it('200 concurrent seals, unseals, macs and ecdhs all give correct answers', async () => {
      const pub = await p.publicKey(k.ecdh);
      const expectedMac = await p.mac(k.mac, enc('concurrent'));
      const work = Array.from({ length: 200 }, async (_, i) => {
        const aad = enc(`user:${i}`);
        const pt = enc(`record ${i}`);
        const peer = createECDH('prime256v1');
        peer.generateKeys();
        const [sealed, mac, shared] = await Promise.all([
          p.seal(k.seal, aad, pt),
          p.mac(k.mac, enc('concurrent')),
          p.ecdh(k.ecdh, peer.getPublicKey()),
        ]);
        const [opened, wrong] = await Promise.all([p.unseal(k.seal, aad, sealed), p.unseal(k.seal, enc('other'), sealed)]);
        assert.deepEqual(bytes(opened), pt);
        assert.equal(wrong, null);
        assert.deepEqual(bytes(mac), bytes(expectedMac));
        assert.deepEqual(Uint8Array.from(shared), Uint8Array.from(peer.computeSecret(pub)));
      });
      await Promise.all(work);
    });
  });
}
