// The PKCS#11 platform against a real SoftHSM2 token made for this test process.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11 } from 'pkcs11js';
import { openPkcs11Platform, provisionPkcs11Keys } from '../src/platform/pkcs11/index.js';
import type { Pkcs11KeyLabels, Pkcs11Options } from '../src/platform/pkcs11/index.js';
import { createSoftHsmToken, withRawSession } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';
import type { SoftHsmToken } from './helpers/softhsm.js';
import { platformConformance, rejectsWithCode } from './helpers/platform-conformance.js';

const LABELS = {
  seal: ['test-seal-v1', 'test-seal-other-v1'],
  mac: ['test-mac-v1'],
  ecdh: ['test-fleet-ecdh-v1'],
} satisfies Pkcs11KeyLabels;
const KEYS = {
  seal: 'test-seal-v1',
  otherSeal: 'test-seal-other-v1',
  mac: 'test-mac-v1',
  ecdh: 'test-fleet-ecdh-v1',
  missing: 'no-such-key',
};
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

const skip = softHsmSkip();

// Tokens must exist before the module is first initialized in this process.
let token: SoftHsmToken;
let spare: SoftHsmToken;
if (!skip) {
  token = createSoftHsmToken();
  spare = createSoftHsmToken();
}


function findOne(p: PKCS11, s: Handle, cls: number, label: string): Handle[] {
  p.C_FindObjectsInit(s, [
    { type: pkcs11js.CKA_CLASS, value: cls },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);
  const found = p.C_FindObjects(s, 10);
  p.C_FindObjectsFinal(s);
  return found;
}

describeIf('PKCS#11 platform on SoftHSM2', skip, () => {
  before(async () => {
    await provisionPkcs11Keys(token.options, LABELS);
  });
  after(() => {
    token.cleanup();
    spare.cleanup();
  });

  platformConformance('pkcs11 (blocking calls, pool of 4)', async () => {
    const platform = await openPkcs11Platform({ ...token.options, poolSize: 4 });
    return { platform, keys: KEYS, close: () => platform.close() };
  });

  platformConformance('pkcs11 (threaded calls, pool of 3)', async () => {
    const platform = await openPkcs11Platform({ ...token.options, poolSize: 3, calls: 'threaded' });
    return { platform, keys: KEYS, close: () => platform.close() };
  });

  platformConformance('pkcs11 (blocking calls, pool of 1)', async () => {
    const platform = await openPkcs11Platform({ ...token.options, poolSize: 1 });
    return { platform, keys: KEYS, close: () => platform.close() };
  });

  describe('provisioning', () => {
    it('is idempotent: a second run creates nothing and leaves one object per label', async () => {
      const again = await provisionPkcs11Keys(token.options, LABELS);
      assert.deepEqual(again.created, []);
      assert.deepEqual([...again.existing].sort(), [...LABELS.seal, ...LABELS.mac, ...LABELS.ecdh].sort());
      const fresh = await provisionPkcs11Keys(spare.options, LABELS);
      assert.equal(fresh.created.length, 4);
      const platform = await openPkcs11Platform(token.options);
      try {
        withRawSession(token, (p, s) => {
          for (const l of [...LABELS.seal, ...LABELS.mac]) assert.equal(findOne(p, s, pkcs11js.CKO_SECRET_KEY, l).length, 1, l);
          for (const l of LABELS.ecdh) {
            assert.equal(findOne(p, s, pkcs11js.CKO_PRIVATE_KEY, l).length, 1, l);
            assert.equal(findOne(p, s, pkcs11js.CKO_PUBLIC_KEY, l).length, 1, l);
          }
        });
      } finally {
        await platform.close();
      }
    });

    it('refuses a label already taken by a key of another kind', async () => {
      await rejectsWithCode(provisionPkcs11Keys(token.options, { mac: ['test-seal-v1'] }), 'key-missing');
      await rejectsWithCode(provisionPkcs11Keys(token.options, { seal: ['test-mac-v1'] }), 'key-missing');
    });
  });

  describe('keys', () => {
    it('are sensitive and never extractable: CKA_VALUE is refused, wrapping is refused', async () => {
      const platform = await openPkcs11Platform(token.options);
      try {
        withRawSession(token, (p, s) => {
          const objects: [string, Handle][] = [];
          for (const l of LABELS.seal) objects.push([l, findOne(p, s, pkcs11js.CKO_SECRET_KEY, l)[0] as Handle]);
          for (const l of LABELS.mac) objects.push([l, findOne(p, s, pkcs11js.CKO_SECRET_KEY, l)[0] as Handle]);
          for (const l of LABELS.ecdh) objects.push([l, findOne(p, s, pkcs11js.CKO_PRIVATE_KEY, l)[0] as Handle]);
          for (const [label, h] of objects) {
            assert.throws(
              () => p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_VALUE }]),
              (e: Error) => /CKR_ATTRIBUTE_SENSITIVE/.test(e.message),
              label,
            );
            const attrs = p.C_GetAttributeValue(s, h, [
              { type: pkcs11js.CKA_SENSITIVE },
              { type: pkcs11js.CKA_EXTRACTABLE },
              { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
              { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
              { type: pkcs11js.CKA_TOKEN },
              { type: pkcs11js.CKA_MODIFIABLE },
            ]);
            // Seal and ECDH keys are modifiable, so the platform can copy them into a
            // session object (platform-pkcs11-session-key.test.ts); never readable for that.
            const modifiable = (LABELS.mac as readonly string[]).includes(label) ? 0 : 1;
            assert.deepEqual(
              attrs.map((a) => a.value[0]),
              [1, 0, 1, 1, 1, modifiable],
              `${label}: SENSITIVE, EXTRACTABLE, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE, TOKEN, MODIFIABLE`,
            );
            // Nor can anyone flip CKA_EXTRACTABLE back on.
            assert.throws(() => p.C_SetAttributeValue(s, h, [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }]));
          }
          const wrapKey = findOne(p, s, pkcs11js.CKO_SECRET_KEY, KEYS.otherSeal)[0] as Handle;
          for (const [label, h] of objects) {
            assert.throws(
              () => p.C_WrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, wrapKey, h, Buffer.alloc(64)),
              (e: Error) => /CKR_KEY_UNEXTRACTABLE|CKR_KEY_NOT_WRAPPABLE/.test(e.message),
              label,
            );
          }
        });
      } finally {
        await platform.close();
      }
    });

    it('seal output is standard AES-256-GCM (nonce || ct || tag) and HMAC is standard HMAC-SHA256', async () => {
      const aesKey = randomBytes(32);
      const hmacKey = randomBytes(32);
      const platform = await openPkcs11Platform(token.options);
      try {
        withRawSession(token, (p, s) => {
          // Known-answer keys: the only keys here whose value the test knows.
          p.C_CreateObject(s, [
            { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
            { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
            { type: pkcs11js.CKA_TOKEN, value: true },
            { type: pkcs11js.CKA_LABEL, value: 'kat-aes' },
            { type: pkcs11js.CKA_ENCRYPT, value: true },
            { type: pkcs11js.CKA_DECRYPT, value: true },
            { type: pkcs11js.CKA_VALUE, value: aesKey },
          ]);
          p.C_CreateObject(s, [
            { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
            { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
            { type: pkcs11js.CKA_TOKEN, value: true },
            { type: pkcs11js.CKA_LABEL, value: 'kat-hmac' },
            { type: pkcs11js.CKA_SIGN, value: true },
            { type: pkcs11js.CKA_VALUE, value: hmacKey },
          ]);
        });
        const aad = enc('user:alice|v1');
        const pt = enc('the backup key, wrapped');
        const sealed = await platform.seal('kat-aes', aad, pt);
        const d = createDecipheriv('aes-256-gcm', aesKey, sealed.subarray(0, 12));
        d.setAAD(aad);
        d.setAuthTag(sealed.subarray(sealed.length - 16));
        assert.deepEqual(Uint8Array.from(Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()])), pt);

        const nonce = randomBytes(12);
        const c = createCipheriv('aes-256-gcm', aesKey, nonce);
        c.setAAD(aad);
        const theirs = Buffer.concat([nonce, c.update(pt), c.final(), c.getAuthTag()]);
        assert.deepEqual(await platform.unseal('kat-aes', aad, theirs), pt);

        for (const data of [enc(''), enc('log entry 7')]) {
          assert.deepEqual(await platform.mac('kat-hmac', data), Uint8Array.from(createHmac('sha256', hmacKey).update(data).digest()));
        }
      } finally {
        withRawSession(token, (p, s) => {
          for (const l of ['kat-aes', 'kat-hmac']) for (const h of findOne(p, s, pkcs11js.CKO_SECRET_KEY, l)) p.C_DestroyObject(s, h);
        });
        await platform.close();
      }
    });

    it('a key of the wrong kind under a label is key-missing, and the pool recovers', async () => {
      const platform = await openPkcs11Platform({ ...token.options, poolSize: 1 });
      try {
        await rejectsWithCode(platform.mac(KEYS.seal, enc('x')), 'key-missing');
        await rejectsWithCode(platform.seal(KEYS.mac, enc('x'), enc('y')), 'key-missing');
        const sealed = await platform.seal(KEYS.seal, enc('a'), enc('b'));
        assert.deepEqual(await platform.unseal(KEYS.seal, enc('a'), sealed), enc('b'));
      } finally {
        await platform.close();
      }
    });
  });

  describe('opening', () => {
    it('an unknown token label is token-missing', async () => {
      await rejectsWithCode(openPkcs11Platform({ ...token.options, tokenLabel: 'no-such-token' }), 'token-missing');
    });

    it('a module that does not exist is token-missing', async () => {
      await rejectsWithCode(openPkcs11Platform({ ...token.options, module: '/nonexistent/libpkcs11.so' }), 'token-missing');
    });

    it('a wrong PIN is login-failed, also while another platform is logged in', async () => {
      await rejectsWithCode(openPkcs11Platform({ ...token.options, pin: '0000' }), 'login-failed');
      const platform = await openPkcs11Platform(token.options);
      try {
        await rejectsWithCode(openPkcs11Platform({ ...token.options, pin: '0000' }), 'login-failed');
        // The failed attempt did not disturb the open platform.
        assert.equal((await platform.mac(KEYS.mac, enc('x'))).length, 32);
      } finally {
        await platform.close();
      }
    });

    it('finds the token by label whatever its slot', async () => {
      const a = await openPkcs11Platform(token.options);
      const b = await openPkcs11Platform(spare.options);
      try {
        // Same labels, different tokens, different keys.
        const sealed = await a.seal(KEYS.seal, enc('a'), enc('b'));
        assert.equal(await b.unseal(KEYS.seal, enc('a'), sealed), null);
        assert.notDeepEqual(await a.publicKey(KEYS.ecdh), await b.publicKey(KEYS.ecdh));
        assert.equal(a.name, `pkcs11:${token.tokenLabel}`);
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('rejects malformed options with TypeError/RangeError', async () => {
      await assert.rejects(openPkcs11Platform({ ...token.options, poolSize: 0 }), RangeError);
      await assert.rejects(openPkcs11Platform({ ...token.options, tokenLabel: '' }), TypeError);
      await assert.rejects(openPkcs11Platform({} as Pkcs11Options), TypeError);
    });
  });

  describe('closing', () => {
    it('close() then any use is a clean PlatformError, and close() is idempotent', async () => {
      const platform = await openPkcs11Platform(token.options);
      const sealed = await platform.seal(KEYS.seal, enc('a'), enc('b'));
      const pub = await platform.publicKey(KEYS.ecdh);
      await platform.close();
      await platform.close();
      await rejectsWithCode(platform.seal(KEYS.seal, enc('a'), enc('b')), 'hsm-failure');
      await rejectsWithCode(platform.unseal(KEYS.seal, enc('a'), sealed), 'hsm-failure');
      await rejectsWithCode(platform.unseal(KEYS.seal, enc('a'), new Uint8Array(3)), 'hsm-failure');
      await rejectsWithCode(platform.mac(KEYS.mac, enc('a')), 'hsm-failure');
      await rejectsWithCode(platform.ecdh(KEYS.ecdh, pub), 'hsm-failure');
      await rejectsWithCode(platform.publicKey(KEYS.ecdh), 'hsm-failure');
    });

    it('close() lets running operations finish and fails queued ones cleanly', async () => {
      const platform = await openPkcs11Platform({ ...token.options, poolSize: 2, calls: 'threaded' });
      const ops = Array.from({ length: 50 }, () => platform.seal(KEYS.seal, enc('a'), randomBytes(1000)));
      const closing = platform.close();
      const results = await Promise.allSettled(ops);
      await closing;
      for (const r of results) {
        if (r.status === 'fulfilled') assert.equal(r.value.length, 1028);
        else assert.equal((r.reason as { code?: string }).code, 'hsm-failure');
      }
      assert.ok(results.some((r) => r.status === 'rejected'), 'some queued seals were refused');
    });

    it('the module is finalized after the last platform closes and can be opened again', async () => {
      const a = await openPkcs11Platform(token.options);
      await a.close();
      const b = await openPkcs11Platform(token.options);
      assert.equal((await b.mac(KEYS.mac, enc('x'))).length, 32);
      await b.close();
    });
  });
});
