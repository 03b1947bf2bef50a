/**
 * The fleet key ceremony (docs/operations.md §"Key ceremony"): every node of a fleet
 * holds the same fleet HPKE key and record-sealing keys in its own HSM, so any node
 * opens what any other sealed and clients pin one bundle.
 *
 *   node A: fleet init                      create the fleet keys once (+ fleet.json)
 *   node B: fleet node-key                  B's HSM makes its transport key pair; prints B's public key and node ID
 *   node A: fleet export-for <B's key>      the fleet keys wrapped to B's transport key (ECDH-ES + HKDF + AES-256-GCM)
 *   node B: fleet join FILE --fleet-key-id  B opens the package inside its platform and imports the keys
 *   any:    fleet rotate / fleet activate   new record-sealing key: staged on every node, then made current
 *   node X: fleet leave                     X drops the fleet keys (retiring it)
 *
 * The transfer package is safe to carry in the clear: only B's transport private key
 * (inside B's platform: `Platform.ecdh`) opens it, and it is bound to B's public key, the
 * fleet key ID and the fleet file. The package says nothing about who made it, so `join`
 * requires the fleet key ID clients pin: a node never joins another fleet by mistake.
 *
 * Software platform: complete. PKCS#11: `node-key`, `init`, `rotate` and `activate`
 * work; `export-for` and `join` refuse (see PKCS11_WRAP_MISSING).
 */
import { createCipheriv, createDecipheriv, createECDH, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { existsSync, renameSync } from 'node:fs';
import { equalBytes, fleetKeyFromPublicKey, fromHex, HPKE_SUITE_NAME, LABELS, toHex, type FleetKeyBundle } from '@coffer/protocol';
import { KEY_LABELS, rotatedRecordSealLabel } from '../core/key-labels.js';
import { PlatformError } from '../core/platform.js';
import { openPlatform, provisionVaultKeys, type PlatformConfig } from '../platform/index.js';
import { exportSoftwareKeys, importSoftwareKeys, provisionSoftwareKeys, removeSoftwareKeys } from '../platform/software.js';
import type { VaultConfig } from './config.js';
import { ensureFleetFile, fleetBundle, FleetFileError, loadFleet, readFleetFile, writeFleetFile, type FleetFile } from './fleet.js';

export const PKCS11_WRAP_MISSING =
  'fleet key transfer between PKCS#11 HSMs needs C_WrapKey/C_UnwrapKey (CKM_ECDH1_DERIVE to an AES key, then CKM_AES_KEY_WRAP_PAD of the fleet keys, created CKA_EXTRACTABLE with CKA_WRAP_WITH_TRUSTED), ' +
  'which the pkcs11 platform module does not expose yet; until it does, copy the keys between tokens with the HSM vendor\'s backup/cloning tool ' +
  `(labels ${KEY_LABELS.fleetHpke}, ${KEY_LABELS.recordSeal} and any ${KEY_LABELS.recordSeal}-rN) and copy fleet.json`;

export class CeremonyError extends Error {
  override readonly name = 'CeremonyError';
}

export interface NodeIdentity {
  /** 16 hex digits: SHA-256(label || 0x00 || publicKey)[0..8]. */
  readonly nodeId: string;
  /** The node transport key, SEC1 uncompressed P-256, hex. */
  readonly publicKey: string;
}

export interface TransferPackage {
  version: 1;
  kind: 'coffer-fleet-transfer';
  suite: 'ECDH-ES(P-256), HKDF-SHA256, AES-256-GCM';
  fleetKeyId: string;
  to: NodeIdentity;
  enc: string;
  sealed: string;
  fleet: FleetFile;
}

function sha256(...parts: (Uint8Array | string)[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

export function nodeIdOf(publicKey: Uint8Array): string {
  return sha256(LABELS.fleetNodeId, new Uint8Array([0]), publicKey).subarray(0, 8).toString('hex');
}

function refusePkcs11(platform: PlatformConfig, what: string): asserts platform is Extract<PlatformConfig, { kind: 'software' }> {
  if (platform.kind !== 'software') throw new CeremonyError(`${what}: ${PKCS11_WRAP_MISSING}`);
}

function fleetLabels(file: FleetFile): string[] {
  return [KEY_LABELS.fleetHpke, ...(file.recordSealKeys?.length ? file.recordSealKeys : [KEY_LABELS.recordSeal])];
}

/** AAD: label || 0 || recipient public key || enc || fleet key ID || SHA-256(fleet file JSON). */
function transferAad(recipient: Uint8Array, enc: Uint8Array, fleetKeyId: Uint8Array, fleet: FleetFile): Buffer {
  return Buffer.concat([Buffer.from(LABELS.fleetTransfer), Buffer.from([0]), recipient, enc, fleetKeyId, sha256(JSON.stringify(fleet))]);
}

function transferKey(shared: Uint8Array, recipient: Uint8Array, enc: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.concat([enc, recipient]), LABELS.fleetTransfer, 32));
}

/** Creates this node's transport key pair if missing (idempotent) and returns its identity. */
export async function nodeKey(config: VaultConfig): Promise<NodeIdentity> {
  if (config.platform.kind === 'software') provisionSoftwareKeys(config.platform.keyFile, { ecdh: [KEY_LABELS.nodeTransport] });
  else {
    const { provisionPkcs11Keys } = await import('../platform/pkcs11/index.js');
    const p = config.platform;
    await provisionPkcs11Keys({ module: p.module, tokenLabel: p.tokenLabel, pin: p.pin }, { ecdh: [KEY_LABELS.nodeTransport] });
  }
  const opened = await openPlatform(config.platform);
  try {
    const pub = await opened.platform.publicKey(KEY_LABELS.nodeTransport);
    return { nodeId: nodeIdOf(pub), publicKey: toHex(pub) };
  } finally {
    await opened.close();
  }
}

/** `fleet init`: the fleet's keys, created once, on the first node. */
export async function fleetInit(config: VaultConfig): Promise<{ bundle: FleetKeyBundle; node: NodeIdentity }> {
  if (existsSync(config.fleetFile)) throw new CeremonyError(`fleet file ${config.fleetFile} exists: this node already belongs to a fleet`);
  await provisionVaultKeys(config.platform);
  const node = await nodeKey(config);
  const opened = await openPlatform(config.platform);
  try {
    const { fleet } = await ensureFleetFile(opened.platform, config.fleetFile);
    return { bundle: fleetBundle(fleet.fleetKey), node };
  } finally {
    await opened.close();
  }
}

/** Parses a recipient given as the public key hex or the JSON `fleet node-key` printed. */
export function parseRecipient(text: string): Uint8Array {
  const t = text.trim();
  let hex = t;
  if (t.startsWith('{')) {
    try {
      hex = String((JSON.parse(t) as { publicKey?: unknown }).publicKey ?? '');
    } catch {
      throw new CeremonyError('recipient: not JSON');
    }
  }
  if (!/^04[0-9a-f]{128}$/.test(hex)) throw new CeremonyError('recipient: expected the 65-byte node public key in hex (from `coffer-vault fleet node-key` on that node)');
  const pub = fromHex(hex);
  try {
    const probe = createECDH('prime256v1');
    probe.generateKeys();
    probe.computeSecret(pub); // OpenSSL rejects points not on the curve
  } catch {
    throw new CeremonyError('recipient: not a point on P-256');
  }
  return pub;
}

/** `fleet export-for`: the fleet keys, wrapped to one node's transport key. */
export async function exportFor(config: VaultConfig, recipient: Uint8Array): Promise<TransferPackage> {
  refusePkcs11(config.platform, 'fleet export-for');
  const fleet = readFleetFile(config.fleetFile);
  const opened = await openPlatform(config.platform);
  try {
    await loadFleet(opened.platform, config.fleetFile); // this node really holds the fleet it exports
  } finally {
    await opened.close();
  }
  const keys = exportSoftwareKeys(config.platform.keyFile, fleetLabels(fleet));
  const eph = createECDH('prime256v1');
  eph.generateKeys();
  const enc = new Uint8Array(eph.getPublicKey());
  const fleetKeyId = fromHex(fleet.keyId);
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', transferKey(eph.computeSecret(recipient), recipient, enc), nonce);
  c.setAAD(transferAad(recipient, enc, fleetKeyId, fleet));
  const sealed = Buffer.concat([nonce, c.update(JSON.stringify(keys)), c.final(), c.getAuthTag()]);
  return {
    version: 1,
    kind: 'coffer-fleet-transfer',
    suite: 'ECDH-ES(P-256), HKDF-SHA256, AES-256-GCM',
    fleetKeyId: fleet.keyId,
    to: { nodeId: nodeIdOf(recipient), publicKey: toHex(recipient) },
    enc: toHex(enc),
    sealed: sealed.toString('base64'),
    fleet,
  };
}

/**
 * `fleet join`: opens a transfer package with this node's transport key, imports the
 * fleet keys into this node's platform and writes (or merges) fleet.json.
 * @param expectedFleetKeyId the key ID of the bundle clients pin (hex)
 */
export async function join(config: VaultConfig, packageText: string, expectedFleetKeyId: string): Promise<{ fleetKeyId: string; imported: string[] }> {
  refusePkcs11(config.platform, 'fleet join');
  let pkg: TransferPackage;
  try {
    pkg = JSON.parse(packageText) as TransferPackage;
  } catch {
    throw new CeremonyError('transfer package: not JSON');
  }
  if (pkg?.version !== 1 || pkg.kind !== 'coffer-fleet-transfer' || typeof pkg.enc !== 'string' || typeof pkg.sealed !== 'string' || typeof pkg.fleet !== 'object') {
    throw new CeremonyError('transfer package: not a version 1 coffer-fleet-transfer');
  }
  if (pkg.fleetKeyId !== expectedFleetKeyId.toLowerCase() || pkg.fleet.keyId !== pkg.fleetKeyId) {
    throw new CeremonyError(`transfer package is for fleet key ${pkg.fleetKeyId}, not ${expectedFleetKeyId}: refusing to join another fleet`);
  }
  if (pkg.fleet.suite !== HPKE_SUITE_NAME) throw new CeremonyError('transfer package: unknown fleet suite');
  const me = await nodeKey(config);
  if (pkg.to?.publicKey !== me.publicKey) throw new CeremonyError(`transfer package is wrapped for node ${pkg.to?.nodeId}, this node is ${me.nodeId}`);
  const recipient = fromHex(me.publicKey);
  const enc = /^04[0-9a-f]{128}$/.test(pkg.enc) ? fromHex(pkg.enc) : null;
  const sealed = Buffer.from(pkg.sealed, 'base64');
  if (!enc || sealed.length < 28) throw new CeremonyError('transfer package: malformed');
  const opened = await openPlatform(config.platform);
  let plain: Buffer;
  try {
    // The DH runs inside this node's platform: its transport private key never leaves.
    const shared = await opened.platform.ecdh(KEY_LABELS.nodeTransport, enc);
    const d = createDecipheriv('aes-256-gcm', transferKey(shared, recipient, enc), sealed.subarray(0, 12));
    d.setAAD(transferAad(recipient, enc, fromHex(pkg.fleetKeyId), pkg.fleet));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    plain = Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
  } catch (err) {
    if (err instanceof PlatformError) throw err;
    throw new CeremonyError('transfer package does not open for this node (altered, or wrapped for another key)');
  } finally {
    await opened.close();
  }
  const keys = JSON.parse(plain.toString('utf8')) as Record<string, unknown>;
  plain.fill(0);
  const fleetPub = (keys[KEY_LABELS.fleetHpke] as { publicKey?: string } | undefined)?.publicKey;
  const fleetKey = await fleetKeyFromPublicKey(fromHex(fleetPub ?? ''));
  if (!equalBytes(fleetKey.keyId, fromHex(pkg.fleetKeyId)) || fleetPub !== pkg.fleet.publicKey) throw new CeremonyError('transfer package: the fleet key inside does not match its fleet key ID');
  const current = existsSync(config.fleetFile) ? readFleetFile(config.fleetFile) : null;
  if (current && current.keyId !== pkg.fleetKeyId) throw new CeremonyError(`this node already belongs to fleet ${current.keyId}; retire it (fleet leave) first`);
  const imported = importSoftwareKeys(config.platform.keyFile, keys);
  // Merge: keep every record key either side holds; the current key stays this node's
  // own choice once it has one (activation is a separate, deliberate step).
  const labels = [...new Set([...(current?.recordSealKeys ?? [KEY_LABELS.recordSeal]), ...(pkg.fleet.recordSealKeys ?? [KEY_LABELS.recordSeal])])];
  const next: FleetFile = { ...pkg.fleet, recordSealKeys: labels, currentRecordSealKey: current?.currentRecordSealKey ?? pkg.fleet.currentRecordSealKey ?? KEY_LABELS.recordSeal };
  writeFleetFile(config.fleetFile, next);
  const check = await openPlatform(config.platform);
  try {
    await loadFleet(check.platform, config.fleetFile);
  } finally {
    await check.close();
  }
  return { fleetKeyId: pkg.fleetKeyId, imported };
}

/**
 * `fleet rotate`: a new record-sealing key, staged (held, opens nothing yet, seals
 * nothing yet). Distribute it with export-for/join, then `fleet activate` it everywhere.
 */
export async function rotate(config: VaultConfig): Promise<string> {
  const file = readFleetFile(config.fleetFile);
  const held = file.recordSealKeys?.length ? file.recordSealKeys : [KEY_LABELS.recordSeal];
  const label = rotatedRecordSealLabel(held.length + 1);
  if (config.platform.kind === 'software') provisionSoftwareKeys(config.platform.keyFile, { seal: [label] });
  else {
    const { provisionPkcs11Keys } = await import('../platform/pkcs11/index.js');
    const p = config.platform;
    await provisionPkcs11Keys({ module: p.module, tokenLabel: p.tokenLabel, pin: p.pin }, { seal: [label] });
  }
  writeFleetFile(config.fleetFile, { ...file, recordSealKeys: [...held, label], currentRecordSealKey: file.currentRecordSealKey ?? KEY_LABELS.recordSeal });
  return label;
}

/** `fleet activate LABEL`: new records are sealed under LABEL (restart the node to apply). */
export async function activate(config: VaultConfig, label: string): Promise<void> {
  const file = readFleetFile(config.fleetFile);
  if (!(file.recordSealKeys ?? [KEY_LABELS.recordSeal]).includes(label)) throw new CeremonyError(`${label} is not one of this node's record keys (fleet join a package that holds it first)`);
  const opened = await openPlatform(config.platform);
  try {
    const probe = await opened.platform.seal(label, new Uint8Array(0), new Uint8Array(0));
    if (!(await opened.platform.unseal(label, new Uint8Array(0), probe))) throw new CeremonyError(`${label} does not work on this platform`);
  } finally {
    await opened.close();
  }
  writeFleetFile(config.fleetFile, { ...file, currentRecordSealKey: label });
}

/** `fleet leave`: this node drops the fleet keys and its fleet file (retiring it). */
export async function leave(config: VaultConfig): Promise<string[]> {
  if (config.platform.kind !== 'software') {
    throw new CeremonyError(`fleet leave on PKCS#11: destroy the objects labelled ${KEY_LABELS.fleetHpke} and ${KEY_LABELS.recordSeal}* on the token with the vendor tool (pkcs11-tool --delete-object), then remove ${config.fleetFile}`);
  }
  if (!existsSync(config.fleetFile)) throw new FleetFileError(`fleet file ${config.fleetFile}: missing: this node is not in a fleet`);
  const file = readFleetFile(config.fleetFile);
  const removed = removeSoftwareKeys(config.platform.keyFile, fleetLabels(file));
  renameSync(config.fleetFile, `${config.fleetFile}.retired-${Date.now()}`);
  return removed;
}
