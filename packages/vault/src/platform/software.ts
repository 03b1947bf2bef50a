/**
 * The software platform: the embedded default's "HSM" is a key file on disk.
 *
 * NOT AN HSM. Anyone who can read the key file (mode 0600, owner only) or the vault
 * process's memory can unseal every record and run offline guessing against the
 * OPAQUE records. It exists so that Coffer starts with zero configuration; production
 * uses the PKCS#11 platform. docs/threat-model.md §"Software platform".
 */
import { createCipheriv, createDecipheriv, createECDH, createHmac, randomBytes, type ECDH } from 'node:crypto';
import { chmodSync, mkdirSync, openSync, readFileSync, statSync, writeSync, closeSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import { checkHeadroom, PlatformError, type Platform } from '../core/platform.js';
import { RandomPool } from './random-pool.js';
import { SoftwareAnchor } from './software-anchor.js';

export const SOFTWARE_PLATFORM_WARNING =
  'coffer-vault is using the SOFTWARE platform: this is NOT an HSM. Its keys sit in a file on disk; ' +
  'whoever reads that file or this process memory can unseal every record and guess passwords offline. ' +
  'Use platform "pkcs11" in production.';

type KeyEntry = { type: 'aes-256-gcm'; key: string } | { type: 'hmac-sha256'; key: string } | { type: 'p256'; privateKey: string; publicKey: string };

interface KeyFile {
  version: 1;
  warning: string;
  keys: Record<string, KeyEntry>;
}

export interface SoftwareKeySpec {
  readonly seal?: readonly string[];
  readonly mac?: readonly string[];
  readonly ecdh?: readonly string[];
}

export interface SoftwarePlatform extends Platform {
  readonly keyFile: string;
  close(): Promise<void>;
}

/**
 * A P-256 private scalar as 64 hex digits. node:crypto's `getPrivateKey()` drops leading
 * zero bytes (one key in 256 has one), and key files written before this fix may hold
 * such a short value; every reader and writer goes through here, so the file always
 * holds the fixed-length form that `checkEntry` and other implementations expect.
 */
export function p256ScalarHex(value: string | Buffer): string {
  const hex = typeof value === 'string' ? value : value.toString('hex');
  if (!/^[0-9a-f]{1,64}$/.test(hex)) throw new PlatformError('p256 private key: expected at most 32 bytes in hex', 'bad-argument');
  return hex.padStart(64, '0');
}

function readKeyFile(path: string): KeyFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PlatformError(`software key file ${path} cannot be read: ${(err as Error).message}`, 'token-missing');
  }
  const parsed = JSON.parse(text) as KeyFile;
  if (parsed?.version !== 1 || typeof parsed.keys !== 'object' || parsed.keys === null) throw new PlatformError(`software key file ${path}: not a version 1 key file`, 'hsm-failure');
  for (const entry of Object.values(parsed.keys)) {
    if (entry?.type === 'p256' && typeof entry.privateKey === 'string' && /^[0-9a-f]{1,63}$/.test(entry.privateKey)) entry.privateKey = p256ScalarHex(entry.privateKey);
  }
  return parsed;
}

/** Writes atomically with mode 0600 (temp file + rename), so a crash leaves the old file. */
function writeKeyFile(path: string, file: KeyFile): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify(file, null, 2) + '\n');
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/**
 * Creates the keys in `spec` that the key file does not hold yet (creating the file,
 * mode 0600, if needed). Existing keys are never replaced.
 * @returns the labels created
 */
export function provisionSoftwareKeys(path: string, spec: SoftwareKeySpec): string[] {
  let file: KeyFile;
  try {
    statSync(path);
    file = readKeyFile(path);
  } catch (err) {
    if (err instanceof PlatformError && err.code === 'hsm-failure') throw err;
    file = { version: 1, warning: 'NOT AN HSM: keys in this file unseal every Coffer vault record. Keep it mode 0600.', keys: {} };
  }
  const created: string[] = [];
  for (const label of spec.seal ?? []) {
    if (file.keys[label]) continue;
    file.keys[label] = { type: 'aes-256-gcm', key: randomBytes(32).toString('hex') };
    created.push(label);
  }
  for (const label of spec.mac ?? []) {
    if (file.keys[label]) continue;
    file.keys[label] = { type: 'hmac-sha256', key: randomBytes(32).toString('hex') };
    created.push(label);
  }
  for (const label of spec.ecdh ?? []) {
    if (file.keys[label]) continue;
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    file.keys[label] = { type: 'p256', privateKey: p256ScalarHex(ecdh.getPrivateKey()), publicKey: ecdh.getPublicKey('hex', 'uncompressed') };
    created.push(label);
  }
  if (created.length > 0) writeKeyFile(path, file);
  return created;
}

/**
 * Key material of `labels`, for the fleet key ceremony only (`fleet export-for` wraps it
 * to another node at once; it is never written anywhere in the clear).
 * @throws PlatformError key-missing naming the first absent label
 */
export function exportSoftwareKeys(path: string, labels: readonly string[]): Record<string, unknown> {
  const file = readKeyFile(path);
  const out: Record<string, unknown> = {};
  for (const label of labels) {
    const entry = file.keys[label];
    if (!entry) throw new PlatformError(`no key labelled ${label} in ${path}`, 'key-missing');
    out[label] = entry;
  }
  return out;
}

function checkEntry(label: string, e: unknown): KeyEntry {
  const x = e as Partial<{ type: string; key: string; privateKey: string; publicKey: string }>;
  const hex32 = (v: unknown): boolean => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
  if ((x?.type === 'aes-256-gcm' || x?.type === 'hmac-sha256') && hex32(x.key)) return { type: x.type, key: x.key! };
  if (x?.type === 'p256' && typeof x.privateKey === 'string' && /^[0-9a-f]{1,64}$/.test(x.privateKey) && typeof x.publicKey === 'string') {
    // A package from a node before p256ScalarHex may hold a scalar without its leading zero bytes.
    const privateKey = p256ScalarHex(x.privateKey);
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(Buffer.from(privateKey, 'hex'));
    if (ecdh.getPublicKey('hex', 'uncompressed') !== x.publicKey) throw new PlatformError(`imported key ${label}: public key does not match`, 'bad-argument');
    return { type: 'p256', privateKey, publicKey: x.publicKey };
  }
  throw new PlatformError(`imported key ${label}: not a key this platform holds`, 'bad-argument');
}

/**
 * Adds imported keys to the key file (created 0600 if needed). A label already present
 * must hold the same key: a node never silently swaps a key it seals with.
 * @returns the labels added
 */
export function importSoftwareKeys(path: string, keys: Record<string, unknown>): string[] {
  let file: KeyFile;
  try {
    statSync(path);
    file = readKeyFile(path);
  } catch (err) {
    if (err instanceof PlatformError && err.code === 'hsm-failure') throw err;
    file = { version: 1, warning: 'NOT AN HSM: keys in this file unseal every Coffer vault record. Keep it mode 0600.', keys: {} };
  }
  const added: string[] = [];
  for (const [label, raw] of Object.entries(keys)) {
    const entry = checkEntry(label, raw);
    const have = file.keys[label];
    if (have) {
      if (JSON.stringify(have) !== JSON.stringify(entry)) throw new PlatformError(`key ${label} in ${path} differs from the imported one (this node belongs to another fleet?)`, 'bad-argument');
      continue;
    }
    file.keys[label] = entry;
    added.push(label);
  }
  if (added.length > 0) writeKeyFile(path, file);
  return added;
}

/** Removes `labels` from the key file (retiring a node). @returns the labels removed */
export function removeSoftwareKeys(path: string, labels: readonly string[]): string[] {
  const file = readKeyFile(path);
  const removed = labels.filter((l) => l in file.keys);
  for (const l of removed) delete file.keys[l];
  if (removed.length > 0) writeKeyFile(path, file);
  return removed;
}

/** @throws PlatformError token-missing when the key file is absent or unreadable */
export function openSoftwarePlatform(path: string): SoftwarePlatform {
  const file = readKeyFile(path);
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) throw new PlatformError(`software key file ${path} has mode ${mode.toString(8)}; it must be 0600 (chmod 600 ${path})`, 'login-failed');
  return new SoftwarePlatformImpl(path, file);
}

class SoftwarePlatformImpl implements SoftwarePlatform {
  readonly name = 'software';
  readonly #secret = new Map<string, { type: 'aes-256-gcm' | 'hmac-sha256'; key: Buffer }>();
  readonly #ecdh = new Map<string, { ecdh: ECDH; publicKey: Uint8Array }>();
  readonly #random = new RandomPool();
  readonly #anchor: SoftwareAnchor;
  #closed = false;

  constructor(
    readonly keyFile: string,
    file: KeyFile,
  ) {
    this.#anchor = new SoftwareAnchor(`${keyFile}.anchor`);
    for (const [label, entry] of Object.entries(file.keys)) {
      if (entry.type === 'p256') {
        const ecdh = createECDH('prime256v1');
        ecdh.setPrivateKey(Buffer.from(entry.privateKey, 'hex'));
        this.#ecdh.set(label, { ecdh, publicKey: new Uint8Array(ecdh.getPublicKey()) });
      } else {
        const key = Buffer.from(entry.key, 'hex');
        if (key.length !== 32) throw new PlatformError(`software key ${label}: expected 32 bytes`, 'hsm-failure');
        this.#secret.set(label, { type: entry.type, key });
      }
    }
  }

  #open(): void {
    if (this.#closed) throw new PlatformError('software platform is closed', 'hsm-failure');
  }

  #key(label: string, type: 'aes-256-gcm' | 'hmac-sha256'): Buffer {
    this.#open();
    const k = this.#secret.get(label);
    if (!k || k.type !== type) throw new PlatformError(`no ${type} key labelled ${label} in ${this.keyFile}`, 'key-missing');
    return k.key;
  }

  #pair(label: string): { ecdh: ECDH; publicKey: Uint8Array } {
    this.#open();
    const p = this.#ecdh.get(label);
    if (!p) throw new PlatformError(`no P-256 key labelled ${label} in ${this.keyFile}`, 'key-missing');
    return p;
  }

  now(): number {
    return Date.now();
  }

  randomBytes(length: number): Uint8Array {
    return this.#random.take(length);
  }

  async seal(keyLabel: string, aad: Uint8Array, plaintext: Uint8Array, headroom = 0): Promise<Uint8Array> {
    const key = this.#key(keyLabel, 'aes-256-gcm');
    const h = checkHeadroom(headroom);
    const nonce = this.#random.take(12);
    const c = createCipheriv('aes-256-gcm', key, nonce);
    c.setAAD(aad);
    // [headroom zeros] || nonce || ciphertext || tag, written once into the result (GCM's final() is empty).
    const body = c.update(plaintext);
    const tail = c.final();
    const out = new Uint8Array(h + 12 + body.length + tail.length + 16);
    out.set(nonce, h);
    out.set(body, h + 12);
    out.set(tail, h + 12 + body.length);
    out.set(c.getAuthTag(), h + 12 + body.length + tail.length);
    return out;
  }

  async unseal(keyLabel: string, aad: Uint8Array, sealed: Uint8Array): Promise<Uint8Array | null> {
    const key = this.#key(keyLabel, 'aes-256-gcm');
    if (sealed.length < 12 + 16) return null;
    try {
      const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
      d.setAAD(aad);
      d.setAuthTag(sealed.subarray(sealed.length - 16));
      const body = d.update(sealed.subarray(12, sealed.length - 16));
      const tail = d.final(); // throws when the tag does not verify
      // A view of the fresh Buffer (not pooled: GCM's update allocates its own): no copy.
      return tail.length === 0 ? new Uint8Array(body.buffer, body.byteOffset, body.byteLength) : new Uint8Array(Buffer.concat([body, tail]));
    } catch {
      return null;
    }
  }

  async mac(keyLabel: string, data: Uint8Array): Promise<Uint8Array> {
    return new Uint8Array(createHmac('sha256', this.#key(keyLabel, 'hmac-sha256')).update(data).digest());
  }

  async ecdh(keyLabel: string, peerPublicKey: Uint8Array): Promise<Uint8Array> {
    const { ecdh } = this.#pair(keyLabel);
    if (peerPublicKey.length !== 65 || peerPublicKey[0] !== 0x04) throw new PlatformError('peer public key: expected a 65-byte uncompressed P-256 point', 'bad-argument');
    try {
      // OpenSSL checks that the point is on the curve (RFC 9180 §7.1.4 validation).
      return new Uint8Array(ecdh.computeSecret(peerPublicKey));
    } catch {
      throw new PlatformError('peer public key: not a point on P-256', 'bad-argument');
    }
  }

  async publicKey(keyLabel: string): Promise<Uint8Array> {
    return this.#pair(keyLabel).publicKey.slice();
  }

  /** `<keyFile>.anchor`: NOT tamper-resistant (whoever can write the key file's folder can roll it back). */
  get anchorFile(): string {
    return this.#anchor.path;
  }

  async readAnchor(): Promise<Uint8Array | null> {
    this.#open();
    return this.#anchor.read();
  }

  /** Two slots written in place with one fdatasync (software-anchor.ts). */
  async writeAnchor(value: Uint8Array): Promise<void> {
    this.#open();
    return this.#anchor.write(value);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#anchor.close();
    this.#random.clear();
    this.#secret.clear();
    this.#ecdh.clear();
  }
}
