/**
 * A synchronous node:crypto provider for @coffer/protocol's primitives. WebCrypto's
 * asynchronous calls cost tens of microseconds each in Node and HPKE makes about a
 * dozen per message; this provider cuts the envelope's cost several-fold (see the
 * `bench:vault` notes in spec/vault-protocol.md §11). Outputs are identical
 * (test/crypto-provider.test.ts).
 */
import * as nodeCrypto from 'node:crypto';
import { createCipheriv, createDecipheriv, createECDH, createHash, createHmac } from 'node:crypto';
import { useCryptoProvider, type CryptoProvider } from '@coffer/protocol';

const u8 = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

function gcm(key: Uint8Array): 'aes-128-gcm' | 'aes-256-gcm' {
  if (key.length === 16) return 'aes-128-gcm';
  if (key.length === 32) return 'aes-256-gcm';
  throw new RangeError(`AES-GCM key: expected 16 or 32 bytes, got ${key.length}`);
}

/** `crypto.hash` (Node ≥ 20.12): one-shot, about half the cost of createHash for small inputs. */
const oneShot = (nodeCrypto as { hash?: (alg: string, data: Uint8Array, enc: 'buffer') => Buffer }).hash;

export const nodeCryptoProvider: CryptoProvider = {
  name: 'node:crypto',
  sha256: oneShot ? (data) => u8(oneShot('sha256', data, 'buffer')) : (data) => u8(createHash('sha256').update(data).digest()),
  hmacSha256: (key, data) => u8(createHmac('sha256', key).update(data).digest()),
  aesGcmSeal(key, nonce, aad, plaintext) {
    const c = createCipheriv(gcm(key), key, nonce);
    c.setAAD(aad);
    return u8(Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]));
  },
  aesGcmOpen(key, nonce, aad, ciphertext) {
    if (ciphertext.length < 16) return null;
    try {
      const d = createDecipheriv(gcm(key), key, nonce);
      d.setAAD(aad);
      d.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
      return u8(Buffer.concat([d.update(ciphertext.subarray(0, ciphertext.length - 16)), d.final()]));
    } catch {
      return null;
    }
  },
  generateP256() {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    return {
      publicKey: u8(ecdh.getPublicKey()),
      // computeSecret throws for points not on the curve (RFC 9180 §7.1.4).
      dh: async (peer: Uint8Array) => u8(ecdh.computeSecret(peer)),
    };
  },
};

/** Makes this process's protocol primitives use node:crypto. */
export function installNodeCrypto(): void {
  useCryptoProvider(nodeCryptoProvider);
}
