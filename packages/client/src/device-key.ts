/**
 * The device key (Ed25519) that identifies this profile to the relay's built-in accounts
 * (spec/relay-api.md §1). Node only (node:crypto); a browser app would keep a
 * non-extractable WebCrypto key instead.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { Secret } from '@coffer/protocol/core';

export class DeviceKey {
  readonly #private: KeyObject;
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;

  private constructor(privateKey: KeyObject) {
    this.#private = privateKey;
    const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
    this.publicKey = new Uint8Array(Buffer.from(jwk.x!, 'base64url'));
  }

  static generate(): DeviceKey {
    return new DeviceKey(generateKeyPairSync('ed25519').privateKey);
  }

  /** From the PKCS#8 PEM kept in the profile. */
  static fromPem(pem: Secret<string>): DeviceKey {
    return new DeviceKey(createPrivateKey(pem.expose()));
  }

  toPem(): Secret<string> {
    return new Secret(this.#private.export({ format: 'pem', type: 'pkcs8' }).toString());
  }

  sign(message: Uint8Array): Uint8Array {
    return new Uint8Array(sign(null, message, this.#private));
  }

  toString(): string {
    return 'DeviceKey([redacted])';
  }
  toJSON(): string {
    return '[redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return 'DeviceKey([redacted])';
  }
}
