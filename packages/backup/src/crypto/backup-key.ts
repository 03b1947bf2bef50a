import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { CofferError } from '../errors.js';
import { BackupLabel } from './labels.js';

const KEY_BYTES = 32;
const KEY_ID_BYTES = 16;

/**
 * The backup key K: 32 random bytes from which every key used on data is derived
 * (spec/backup-format.md §3). A secret type: it prints as `[redacted]` and never
 * serialises by accident; `toDigits()` is the one deliberate way out.
 */
export class BackupKey {
  readonly #bytes: Uint8Array;

  private constructor(bytes: Uint8Array) {
    this.#bytes = Uint8Array.from(bytes);
  }

  /** A fresh random key. `rng` is a parameter so tests can feed vector values. */
  static generate(rng: (n: number) => Uint8Array = randomBytes): BackupKey {
    return new BackupKey(rng(KEY_BYTES));
  }

  /**
   * @throws RangeError if `bytes` is not 32 bytes long.
   */
  static fromBytes(bytes: Uint8Array): BackupKey {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('bytes: expected Uint8Array');
    if (bytes.length !== KEY_BYTES) throw new RangeError(`bytes: expected ${KEY_BYTES} bytes, got ${bytes.length}`);
    return new BackupKey(bytes);
  }

  /**
   * Parses the 64 hex digits a person wrote down. Accepts any case, spaces, dashes
   * and line breaks between digits.
   * @throws CofferError('invalid-key') with a message that says what is wrong.
   */
  static parse(text: string): BackupKey {
    const digits = text.replace(/[\s-]+/g, '');
    const bad = digits.match(/[^0-9a-fA-F]/);
    if (bad) {
      throw new CofferError('invalid-key', `that isn't a valid key: '${bad[0]}' is not a hex digit (0-9, a-f)`);
    }
    if (digits.length !== KEY_BYTES * 2) {
      throw new CofferError(
        'invalid-key',
        `that isn't a valid key: it has ${digits.length} digits, a Coffer key has ${KEY_BYTES * 2}`,
      );
    }
    return new BackupKey(Buffer.from(digits, 'hex'));
  }

  /** The key as people see it: 16 groups of 4 lowercase hex digits. */
  toDigits(): string {
    return Buffer.from(this.#bytes).toString('hex').replace(/(.{4})(?=.)/g, '$1 ');
  }

  /** The raw 32 bytes, for derivations inside this package and for wrapping by the SDK. */
  exportBytes(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }

  /**
   * HKDF-SHA256 (RFC 5869) from K with an explicit label. `salt` binds the output to a
   * repository (its ID) where that applies.
   */
  derive(label: string, length: number, salt: Uint8Array = new Uint8Array(0)): Uint8Array {
    return new Uint8Array(hkdfSync('sha256', this.#bytes, salt, label, length));
  }

  /**
   * A 16-byte identifier of this key that reveals nothing about it (an HKDF output).
   * Repository-independent: `coffer key show` prints it, and version 1 and 2
   * repositories store it (spec §3.2), which links every repository of one key.
   */
  keyId(): Uint8Array {
    return this.derive(BackupLabel.keyId, KEY_ID_BYTES);
  }

  /**
   * This key's ID in one repository (format version 3, spec §3.2): salted with the
   * repository ID, so repositories of one key show unrelated IDs.
   */
  repositoryKeyId(repositoryId: Uint8Array): Uint8Array {
    return this.derive(BackupLabel.repositoryKeyId, KEY_ID_BYTES, repositoryId);
  }

  /**
   * The config's key check (format version 3, spec §4): an HMAC under a key derived
   * from K alone over the config's random `nonce`. It does not depend on the repository
   * ID, so a damaged repository ID is not taken for a wrong key, and it differs between
   * repositories (the nonce is random), so it links nothing.
   */
  keyCheck(nonce: Uint8Array): Uint8Array {
    const k = this.derive(BackupLabel.keyCheck, 32);
    return new Uint8Array(createHmac('sha256', k).update(nonce).digest().subarray(0, KEY_ID_BYTES));
  }

  /** Constant-time comparison. */
  equals(other: BackupKey): boolean {
    return timingSafeEqual(this.#bytes, other.#bytes);
  }

  toString(): string {
    return 'BackupKey([redacted])';
  }
  toJSON(): string {
    return '[redacted]';
  }
  [inspect.custom](): string {
    return this.toString();
  }
}

export function formatKeyId(id: Uint8Array): string {
  return Buffer.from(id).toString('hex');
}
