// RFC 9180 conformance of the HPKE used by the vault envelope: Appendix A.3.1
// (DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode), values copied from
// the RFC, plus interoperability with @hpke/core for the suite Coffer uses (AES-256-GCM).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createECDH } from 'node:crypto';
import { AeadId, CipherSuite, DhkemP256HkdfSha256, HkdfSha256 } from '@hpke/core';
import { nodeCryptoProvider } from '../src/node/node-crypto.js';
import { hmacSha256IntoSync } from '../src/primitives.js';
import {
  cryptoProvider,
  useCryptoProvider,
  webCryptoProvider,
  AEAD_AES_128_GCM,
  AEAD_AES_256_GCM,
  DecryptionError,
  fromHex,
  InvalidPeerKeyError,
  setupBaseRecipient,
  setupBaseSender,
  toHex,
  utf8,
  type CryptoProvider,
  type EphemeralKeyPair,
} from '../src/index.js';

const A31 = {
  info: '4f6465206f6e2061204772656369616e2055726e',
  skEm: '4995788ef4b9d6132b249ce59a77281493eb39af373d236a1fe415cb0c2d7beb',
  pkEm: '04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4',
  pkRm: '04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0',
  skRm: 'f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2',
  pt: '4265617574792069732074727574682c20747275746820626561757479',
  aad: '436f756e742d30',
  ct: '5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f9076ac232e3ab2523f39513434',
  exports: [
    ['', '5e9bc3d236e1911d95e65b576a8a86d478fb827e8bdfe77b741b289890490d4d'],
    ['00', '6cff87658931bda83dc857e6353efe4987a201b849658d9b047aab4cf216e796'],
    ['54657374436f6e74657874', 'd8f1ea7942adbba7412c6d431c62d01371ea476b823eb697e1f6e6cae1dab85a'],
  ],
} as const;

/** A fixed ephemeral key (the vector's skEm), DH through node:crypto. */
function ephemeralFrom(skHex: string, pkHex: string): EphemeralKeyPair {
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(Buffer.from(skHex, 'hex'));
  assert.equal(ecdh.getPublicKey('hex'), pkHex);
  return { publicKey: fromHex(pkHex), dh: async (peer) => new Uint8Array(ecdh.computeSecret(peer)) };
}

/** A synchronous provider without `hmacSha256Into`/`sha256Into`: hpke.ts builds them from its `hmacSha256`. */
const syncWithoutInto: CryptoProvider = { ...nodeCryptoProvider, name: 'node:crypto without hmacSha256Into', hmacSha256Into: undefined, sha256Into: undefined };

/**
 * Each test runs three times: with the WebCrypto provider (the async key schedule), with
 * node:crypto (synchronous: hpke.ts computes the key schedule without promises, each HMAC
 * written into an array) and with a synchronous provider that has no `hmacSha256Into`.
 */
function both(name: string, fn: () => Promise<void>): void {
  for (const provider of [webCryptoProvider, nodeCryptoProvider, syncWithoutInto]) {
    test(`${name} (${provider.name})`, async () => {
      const before = cryptoProvider();
      useCryptoProvider(provider);
      try {
        assert.equal(hmacSha256IntoSync() !== null, provider !== webCryptoProvider, 'the synchronous path is taken with the synchronous providers only');
        await fn();
      } finally {
        useCryptoProvider(before);
      }
    });
  }
}

/** An external DH as the vault's HSM adapter does it: a bad point is InvalidPeerKeyError. */
function dhWith(skHex: string) {
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(Buffer.from(skHex, 'hex'));
  return async (enc: Uint8Array) => {
    try {
      return new Uint8Array(ecdh.computeSecret(enc));
    } catch {
      throw new InvalidPeerKeyError();
    }
  };
}

both('RFC 9180 A.3.1: sender with the vector ephemeral key produces enc and ciphertext', async () => {
  const pkR = fromHex(A31.pkRm);
  const { enc, context } = await setupBaseSender(AEAD_AES_128_GCM, pkR, fromHex(A31.info), ephemeralFrom(A31.skEm, A31.pkEm));
  assert.equal(toHex(enc), A31.pkEm);
  assert.equal(toHex(await context.seal(fromHex(A31.aad), fromHex(A31.pt))), A31.ct);
  for (const [ctx, value] of A31.exports) assert.equal(toHex(await context.export(fromHex(ctx), 32)), value);
});

both('RFC 9180 A.3.1: recipient with an external DH opens the vector and exports the same secrets', async () => {
  const context = await setupBaseRecipient(AEAD_AES_128_GCM, fromHex(A31.pkEm), fromHex(A31.pkRm), dhWith(A31.skRm), fromHex(A31.info));
  for (const [ctx, value] of A31.exports) assert.equal(toHex(await context.export(fromHex(ctx), 32)), value);
  assert.equal(toHex(await context.open(fromHex(A31.aad), fromHex(A31.ct))), A31.pt);
});

both('RFC 9180 A.3.1: a flipped ciphertext bit, wrong info or wrong enc is one DecryptionError', async () => {
  const ct = fromHex(A31.ct);
  ct[3]! ^= 1;
  const ctx1 = await setupBaseRecipient(AEAD_AES_128_GCM, fromHex(A31.pkEm), fromHex(A31.pkRm), dhWith(A31.skRm), fromHex(A31.info));
  await assert.rejects(ctx1.open(fromHex(A31.aad), ct), DecryptionError);
  const ctx2 = await setupBaseRecipient(AEAD_AES_128_GCM, fromHex(A31.pkEm), fromHex(A31.pkRm), dhWith(A31.skRm), utf8('other'));
  await assert.rejects(ctx2.open(fromHex(A31.aad), fromHex(A31.ct)), DecryptionError);
  const badPoint = fromHex(A31.pkEm);
  badPoint[64]! ^= 1; // no longer on the curve: the DH must refuse it
  await assert.rejects(setupBaseRecipient(AEAD_AES_128_GCM, badPoint, fromHex(A31.pkRm), dhWith(A31.skRm), fromHex(A31.info)), DecryptionError);
});

both('a DH failure that is not InvalidPeerKeyError (an HSM failure) propagates, never DecryptionError', async () => {
  class HsmDown extends Error {}
  const failing = async (): Promise<Uint8Array> => {
    throw new HsmDown('token gone');
  };
  await assert.rejects(setupBaseRecipient(AEAD_AES_128_GCM, fromHex(A31.pkEm), fromHex(A31.pkRm), failing, fromHex(A31.info)), HsmDown);
});

both('interop with @hpke/core for DHKEM(P-256), HKDF-SHA256, AES-256-GCM in both directions', async () => {
  const suite = new CipherSuite({ kem: new DhkemP256HkdfSha256(), kdf: new HkdfSha256(), aead: new (await import('@hpke/core')).Aes256Gcm() });
  assert.equal(suite.aead.id, AeadId.Aes256Gcm);
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  const pkR = new Uint8Array(ecdh.getPublicKey());
  const info = utf8('coffer interop');
  // getPrivateKey() drops leading zero bytes (one key in 256); RFC 9180's SerializePrivateKey is 32 bytes.
  const recipientKey = await suite.kem.importKey('raw', Buffer.from(ecdh.getPrivateKey('hex').padStart(64, '0'), 'hex'), false);
  const pubKey = await suite.kem.importKey('raw', pkR, true);
  // ours → theirs
  const ours = await setupBaseSender(AEAD_AES_256_GCM, pkR, info);
  const sealed = await ours.context.seal(new Uint8Array(0), utf8('to them'));
  const theirR = await suite.createRecipientContext({ recipientKey: { privateKey: recipientKey, publicKey: pubKey }, enc: ours.enc, info });
  assert.equal(Buffer.from(await theirR.open(sealed)).toString(), 'to them');
  assert.equal(toHex(new Uint8Array(await theirR.export(utf8('x'), 32))), toHex(await ours.context.export(utf8('x'), 32)));
  // theirs → ours
  const theirS = await suite.createSenderContext({ recipientPublicKey: pubKey, info });
  const ct = new Uint8Array(await theirS.seal(utf8('to us')));
  const oursR = await setupBaseRecipient(AEAD_AES_256_GCM, new Uint8Array(theirS.enc), pkR, async (enc) => new Uint8Array(ecdh.computeSecret(enc)), info);
  assert.equal(Buffer.from(await oursR.open(new Uint8Array(0), ct)).toString(), 'to us');
});

both('openNow: the plaintext itself with a synchronous provider (a promise with WebCrypto); a flipped bit is DecryptionError', async () => {
  const sync = cryptoProvider().synchronous === true;
  const open = async (ct: Uint8Array) => {
    const context = await setupBaseRecipient(AEAD_AES_128_GCM, fromHex(A31.pkEm), fromHex(A31.pkRm), dhWith(A31.skRm), fromHex(A31.info));
    const got = (() => {
      try {
        return context.openNow(fromHex(A31.aad), ct);
      } catch (err) {
        return err as Error; // a synchronous provider throws at once
      }
    })();
    assert.equal(got instanceof Promise, !sync);
    return got instanceof Error ? Promise.reject(got) : got;
  };
  assert.equal(toHex(await open(fromHex(A31.ct))), A31.pt);
  const bad = fromHex(A31.ct);
  bad[0]! ^= 1;
  await assert.rejects(open(bad), DecryptionError);
  await assert.rejects(open(fromHex(A31.ct).subarray(0, 15)), DecryptionError);
});
