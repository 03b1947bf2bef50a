// Seal and ECDH keys used through a session copy (issue 13, session 18): a key provisioned
// CKA_MODIFIABLE true is copied once into a session object and every C_EncryptInit /
// C_DecryptInit / C_DeriveKey uses the copy; a key provisioned before (CKA_MODIFIABLE
// false) is used in place. Same key either way. On a real SoftHSM2 token.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createECDH, randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { AesGCM, Handle, Mechanism, PKCS11 } from 'pkcs11js';
import { openPkcs11Platform, provisionPkcs11Keys } from '../src/platform/pkcs11/index.js';
import { ecdhKeyPairTemplates, mechanismList, sealKeyTemplate } from '../src/platform/pkcs11/keys.js';
import { createSoftHsmToken, withRawSession } from './helpers/softhsm.js';
import { describeIf, softHsmSkip } from './helpers/requirements.js';
import type { SoftHsmToken } from './helpers/softhsm.js';

const NEW = 'test-seal-new-v1';
const NEW_OTHER = 'test-seal-new-other-v1';
const OLD = 'test-seal-old-v1';
const EC = 'test-ecdh-new-v1';
const EC_OLD = 'test-ecdh-old-v1';

const skip = softHsmSkip();
let token: SoftHsmToken;
if (!skip) token = createSoftHsmToken();

/** Every key handle given to C_EncryptInit / C_DecryptInit / C_DeriveKey / C_CopyObject in this process (native calls, as bench-vault-ab counts them). */
const inits: { call: string; key: Handle }[] = [];
const copies: Handle[] = [];
if (!skip) {
  const native = Object.getPrototypeOf(pkcs11js.PKCS11.prototype) as Record<string, (...args: unknown[]) => unknown>;
  for (const name of ['C_EncryptInit', 'C_DecryptInit', 'C_DeriveKey'] as const) {
    const fn = native[name]!;
    native[name] = function (this: unknown, ...args: unknown[]) {
      inits.push({ call: name, key: args[2] as Handle });
      return fn.apply(this, args);
    };
  }
  const copy = native.C_CopyObject!;
  native.C_CopyObject = function (this: unknown, ...args: unknown[]) {
    const out = copy.apply(this, args) as Handle;
    copies.push(out);
    return out;
  };
}


function find(p: PKCS11, s: Handle, label: string, cls: number = pkcs11js.CKO_SECRET_KEY): Handle {
  p.C_FindObjectsInit(s, [
    { type: pkcs11js.CKA_CLASS, value: cls },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_TOKEN, value: true },
  ]);
  const [h, other] = p.C_FindObjects(s, 2);
  p.C_FindObjectsFinal(s);
  assert.ok(h !== undefined && other === undefined, label);
  return h;
}

function flags(p: PKCS11, s: Handle, h: Handle): Record<string, number> {
  const names = ['TOKEN', 'PRIVATE', 'SENSITIVE', 'EXTRACTABLE', 'MODIFIABLE'] as const;
  const attrs = p.C_GetAttributeValue(s, h, names.map((n) => ({ type: pkcs11js[`CKA_${n}`] })));
  return Object.fromEntries(names.map((n, i) => [n, attrs[i]!.value[0]!]));
}

function gcm(nonce: Buffer, aad: Buffer): Mechanism {
  const parameter: AesGCM = { type: pkcs11js.CK_PARAMS_AES_GCM, iv: nonce, aad, ivBits: 96, tagBits: 128 };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
}

/** `Platform.seal`'s format (nonce ‖ ciphertext ‖ tag) made with the token object itself. */
function sealWithTokenKey(p: PKCS11, s: Handle, key: Handle, aad: Buffer, pt: Buffer): Uint8Array {
  const nonce = randomBytes(12);
  p.C_EncryptInit(s, gcm(nonce, aad), key);
  const body = p.C_Encrypt(s, pt, Buffer.alloc(pt.length + 16));
  return new Uint8Array(Buffer.concat([nonce, body]));
}

function unsealWithTokenKey(p: PKCS11, s: Handle, key: Handle, aad: Buffer, sealed: Uint8Array): Buffer {
  const b = Buffer.from(sealed);
  p.C_DecryptInit(s, gcm(b.subarray(0, 12), aad), key);
  return p.C_Decrypt(s, b.subarray(12), Buffer.alloc(b.length - 12));
}

const isToken = (h: Handle): boolean => withRawSession(token, (p, s) => flags(p, s, h).TOKEN === 1);

describeIf('PKCS#11 seal keys through a session copy (SoftHSM2)', skip, () => {
  before(async () => {
    await provisionPkcs11Keys(token.options, { seal: [NEW, NEW_OTHER], ecdh: [EC] });
    // Keys as every token provisioned before session 18 holds them: CKA_MODIFIABLE false
    // (and no CKA_ALLOWED_MECHANISMS on the EC key).
    const old = (a: { type: number; value?: unknown }) => (a.type === pkcs11js.CKA_MODIFIABLE ? { type: a.type, value: false } : a);
    withRawSession(token, (p, s) => {
      p.C_GenerateKey(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, sealKeyTemplate(OLD).map(old) as ReturnType<typeof sealKeyTemplate>);
      const t = ecdhKeyPairTemplates(EC_OLD);
      p.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, t.publicKey, t.privateKey.filter((a) => a.type !== pkcs11js.CKA_ALLOWED_MECHANISMS).map(old) as typeof t.privateKey);
    });
  });
  after(() => token.cleanup());

  describe('a seal key provisioned now', () => {
    it('is modifiable, yet neither readable nor extractable, and cannot be made so by changing or copying it', () => {
      withRawSession(token, (p, s) => {
        const h = find(p, s, NEW);
        assert.deepEqual(flags(p, s, h), { TOKEN: 1, PRIVATE: 1, SENSITIVE: 1, EXTRACTABLE: 0, MODIFIABLE: 1 });
        assert.throws(() => p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/);
        assert.throws(() => p.C_SetAttributeValue(s, h, [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }]), /CKR_ATTRIBUTE_READ_ONLY/);
        assert.throws(() => p.C_SetAttributeValue(s, h, [{ type: pkcs11js.CKA_SENSITIVE, value: false }]), /CKR_ATTRIBUTE_READ_ONLY/);
        assert.throws(() => p.C_SetAttributeValue(s, h, [{ type: pkcs11js.CKA_PRIVATE, value: false }]), /CKR_ATTRIBUTE_READ_ONLY/);
        assert.throws(() => p.C_SetAttributeValue(s, h, [{ type: pkcs11js.CKA_VALUE, value: Buffer.alloc(32) }]), /CKR_ATTRIBUTE_READ_ONLY/);
        assert.throws(() => p.C_CopyObject(s, h, [{ type: pkcs11js.CKA_TOKEN, value: false }, { type: pkcs11js.CKA_EXTRACTABLE, value: true }]), /CKR_ATTRIBUTE_READ_ONLY/);
        assert.throws(() => p.C_CopyObject(s, h, [{ type: pkcs11js.CKA_TOKEN, value: false }, { type: pkcs11js.CKA_SENSITIVE, value: false }]), /CKR_ATTRIBUTE_READ_ONLY/);
        assert.throws(() => p.C_WrapKey(s, { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD }, find(p, s, NEW_OTHER), h, Buffer.alloc(64)), /CKR_KEY_UNEXTRACTABLE/);
      });
    });

    it('is copied once into a session object that every C_EncryptInit and C_DecryptInit uses; the copy is not readable, and goes with the platform', async () => {
      const platform = await openPkcs11Platform({ ...token.options, poolSize: 2 });
      let copy: Handle;
      try {
        inits.length = 0;
        copies.length = 0;
        const aad = new TextEncoder().encode('aad');
        for (let i = 0; i < 4; i++) {
          const pt = randomBytes(3072);
          const sealed = await platform.seal(NEW, aad, pt);
          assert.deepEqual(await platform.unseal(NEW, aad, sealed), new Uint8Array(pt));
        }
        assert.equal(copies.length, 1, 'one copy for the label, made at its first use');
        copy = copies[0]!;
        assert.equal(inits.length, 8);
        for (const { call, key } of inits) {
          assert.ok(key.equals(copy), `${call} on the session copy`);
          assert.equal(isToken(key), false, `${call}: not a token object`);
        }
        withRawSession(token, (p, s) => {
          assert.deepEqual(flags(p, s, copy), { TOKEN: 0, PRIVATE: 1, SENSITIVE: 1, EXTRACTABLE: 0, MODIFIABLE: 0 });
          assert.throws(() => p.C_GetAttributeValue(s, copy, [{ type: pkcs11js.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/);
          assert.throws(() => p.C_CopyObject(s, copy, [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }]), /CKR_ATTRIBUTE_READ_ONLY/);
        });
      } finally {
        await platform.close();
      }
      // The session that owned it closed with the platform: the copy is gone.
      assert.throws(() => withRawSession(token, (p, s) => p.C_GetAttributeValue(s, copy, [{ type: pkcs11js.CKA_TOKEN }])), /CKR_OBJECT_HANDLE_INVALID/);
    });

    it('is the same key as the token object: each opens what the other sealed', async () => {
      const platform = await openPkcs11Platform(token.options);
      try {
        const aad = Buffer.from('record aad');
        const pt = randomBytes(3072);
        const byToken = withRawSession(token, (p, s) => sealWithTokenKey(p, s, find(p, s, NEW), aad, pt));
        assert.deepEqual(await platform.unseal(NEW, aad, byToken), new Uint8Array(pt));
        const byCopy = await platform.seal(NEW, aad, pt);
        assert.deepEqual(withRawSession(token, (p, s) => unsealWithTokenKey(p, s, find(p, s, NEW), aad, byCopy)), pt);
        assert.ok(copies.length >= 1 && !isToken(copies.at(-1)!), 'the platform used a session copy');
      } finally {
        await platform.close();
      }
    });

    it('two platforms on one token in one process: the first one\'s session copy, which carries the label too, is not taken for a second key', async () => {
      const a = await openPkcs11Platform(token.options);
      try {
        const aad = Buffer.from('aad');
        const sealed = await a.seal(NEW, aad, Buffer.from('x'));
        const b = await openPkcs11Platform(token.options);
        try {
          assert.deepEqual(await b.unseal(NEW, aad, sealed), new Uint8Array(Buffer.from('x')));
          assert.deepEqual(await a.unseal(NEW, aad, await b.seal(NEW, aad, Buffer.from('y'))), new Uint8Array(Buffer.from('y')));
        } finally {
          await b.close();
        }
        assert.deepEqual(await a.unseal(NEW, aad, sealed), new Uint8Array(Buffer.from('x')), 'the first platform\'s copy outlives the second platform');
      } finally {
        await a.close();
      }
    });

    it('a record sealed under one key does not open under another', async () => {
      const platform = await openPkcs11Platform(token.options);
      try {
        const aad = Buffer.from('record aad');
        const pt = randomBytes(3072);
        assert.equal(await platform.unseal(NEW_OTHER, aad, await platform.seal(NEW, aad, pt)), null);
        assert.equal(await platform.unseal(OLD, aad, await platform.seal(NEW, aad, pt)), null);
        assert.equal(await platform.unseal(NEW, aad, await platform.seal(OLD, aad, pt)), null);
      } finally {
        await platform.close();
      }
    });
  });

  describe('an ECDH key provisioned now', () => {
    it('is modifiable but held to CKM_ECDH1_DERIVE: switching CKA_SIGN on gives no ECDSA, the mechanism list cannot be widened, the value cannot be read', () => {
      withRawSession(token, (p, s) => {
        const h = find(p, s, EC, pkcs11js.CKO_PRIVATE_KEY);
        assert.deepEqual(flags(p, s, h), { TOKEN: 1, PRIVATE: 1, SENSITIVE: 1, EXTRACTABLE: 0, MODIFIABLE: 1 });
        assert.deepEqual(p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_ALLOWED_MECHANISMS }])[0]!.value, mechanismList(pkcs11js.CKM_ECDH1_DERIVE));
        assert.throws(() => p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/);
        assert.throws(() => p.C_SetAttributeValue(s, h, [{ type: pkcs11js.CKA_ALLOWED_MECHANISMS, value: mechanismList(pkcs11js.CKM_ECDH1_DERIVE, pkcs11js.CKM_ECDSA) }]), /CKR_ATTRIBUTE_READ_ONLY/);
        assert.throws(() => p.C_CopyObject(s, h, [{ type: pkcs11js.CKA_TOKEN, value: false }, { type: pkcs11js.CKA_ALLOWED_MECHANISMS, value: mechanismList(pkcs11js.CKM_ECDSA) }]), /CKR_ATTRIBUTE_READ_ONLY/);
        assert.throws(() => p.C_SetAttributeValue(s, h, [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }]), /CKR_ATTRIBUTE_READ_ONLY/);
        p.C_SetAttributeValue(s, h, [{ type: pkcs11js.CKA_SIGN, value: true }]); // allowed: a usage flag …
        assert.throws(() => p.C_SignInit(s, { mechanism: pkcs11js.CKM_ECDSA }, h), /CKR_MECHANISM_INVALID/); // … that opens nothing
      });
    });

    it('is copied once into a session object that every C_DeriveKey uses, giving the DH of the token key', async () => {
      const platform = await openPkcs11Platform(token.options);
      try {
        const pub = await platform.publicKey(EC);
        inits.length = 0;
        copies.length = 0;
        for (let i = 0; i < 3; i++) {
          const peer = createECDH('prime256v1');
          peer.generateKeys();
          assert.deepEqual(await platform.ecdh(EC, new Uint8Array(peer.getPublicKey())), new Uint8Array(peer.computeSecret(pub)));
        }
        assert.equal(copies.length, 1);
        const derives = inits.filter((c) => c.call === 'C_DeriveKey');
        assert.equal(derives.length, 3);
        for (const { key } of derives) {
          assert.ok(key.equals(copies[0]!));
          assert.equal(isToken(key), false);
        }
        withRawSession(token, (p, s) => assert.deepEqual(flags(p, s, copies[0]!), { TOKEN: 0, PRIVATE: 1, SENSITIVE: 1, EXTRACTABLE: 0, MODIFIABLE: 0 }));
      } finally {
        await platform.close();
      }
    });

    it('one provisioned before (CKA_MODIFIABLE false) is used in place', async () => {
      const platform = await openPkcs11Platform(token.options);
      try {
        const pub = await platform.publicKey(EC_OLD);
        inits.length = 0;
        const peer = createECDH('prime256v1');
        peer.generateKeys();
        assert.deepEqual(await platform.ecdh(EC_OLD, new Uint8Array(peer.getPublicKey())), new Uint8Array(peer.computeSecret(pub)));
        const [derive] = inits.filter((c) => c.call === 'C_DeriveKey');
        assert.ok(derive && isToken(derive.key));
      } finally {
        await platform.close();
      }
    });
  });

  describe('a seal key provisioned before (CKA_MODIFIABLE false)', () => {
    it('is used in place: what it sealed still opens, and every init is on the token object', async () => {
      const aad = Buffer.from('old record');
      const pt = randomBytes(3072);
      const before = withRawSession(token, (p, s) => sealWithTokenKey(p, s, find(p, s, OLD), aad, pt));
      const platform = await openPkcs11Platform(token.options);
      try {
        inits.length = 0;
        assert.deepEqual(await platform.unseal(OLD, aad, before), new Uint8Array(pt));
        const again = await platform.seal(OLD, aad, pt);
        assert.deepEqual(await platform.unseal(OLD, aad, again), new Uint8Array(pt));
        const platformInits = inits.splice(0);
        assert.deepEqual(withRawSession(token, (p, s) => unsealWithTokenKey(p, s, find(p, s, OLD), aad, again)), pt);
        const old = withRawSession(token, (p, s) => find(p, s, OLD));
        assert.equal(platformInits.length, 3);
        for (const { call, key } of platformInits) {
          assert.ok(key.equals(old), `${call} on the token object`);
          assert.equal(isToken(key), true);
        }
      } finally {
        await platform.close();
      }
    });
  });
});
