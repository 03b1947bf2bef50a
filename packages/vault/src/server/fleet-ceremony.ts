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
 * The fleet keys: the HPKE key pair, every record-sealing key and the log MAC key
 * (`coffer-log-mac-v1`, rollback protection).
 *
 * Software platform: ECDH-ES + HKDF + AES-256-GCM over the key file's entries.
 * PKCS#11: the keys never leave a token in the clear: C_WrapKey on the source token
 * (CKM_AES_KEY_WRAP_PAD under a key derived inside it from an ECDH with B's transport
 * key) and C_UnwrapKey on B's token (platform/pkcs11/transfer.ts, docs/pkcs11.md). The
 * two package kinds are not interchangeable: a fleet is all-software or all-PKCS#11.
 *
 * Every ceremony step appends one JSON line to `ceremony.log` next to fleet.json (what
 * was done, to which node, which labels; never key material).
 */
import { createCipheriv, createDecipheriv, createECDH, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, renameSync } from 'node:fs';
import { dirname, join as joinPath } from 'node:path';
import { equalBytes, fleetKeyFromPublicKey, fromHex, HPKE_SUITE_NAME, LABELS, toHex, type FleetKeyBundle } from '@coffer/protocol';
import { KEY_LABELS, rotatedRecordSealLabel } from '../core/key-labels.js';
import { PlatformError } from '../core/platform.js';
import { openPlatform, provisionVaultKeys, type PlatformConfig } from '../platform/index.js';
import type { Pkcs11Options, TransferItem, TransferKind } from '../platform/pkcs11/index.js';
import { exportSoftwareKeys, importSoftwareKeys, provisionSoftwareKeys, removeSoftwareKeys } from '../platform/software.js';
import type { VaultConfig } from './config.js';
import { ensureFleetFile, fleetBundle, FleetFileError, loadFleet, readFleetFile, writeFleetFile, type FleetFile } from './fleet.js';

export class CeremonyError extends Error {
  override readonly name = 'CeremonyError';
}

export interface NodeIdentity {
  /** 16 hex digits: SHA-256(label || 0x00 || publicKey)[0..8]. */
  readonly nodeId: string;
  /** The node transport key, SEC1 uncompressed P-256, hex. */
  readonly publicKey: string;
}

export const SOFTWARE_TRANSFER_SUITE = 'ECDH-ES(P-256), HKDF-SHA256, AES-256-GCM';
/** Same string as platform/pkcs11/transfer.ts PKCS11_TRANSFER_SUITE (not imported: software nodes never load pkcs11js). */
export const PKCS11_TRANSFER_SUITE = 'PKCS#11: ECDH-ES(P-256, CKD_NULL) + CKM_AES_CBC_ENCRYPT_DATA, CKM_AES_KEY_WRAP_PAD';

export interface TransferPackage {
  version: 1;
  kind: 'coffer-fleet-transfer';
  suite: typeof SOFTWARE_TRANSFER_SUITE | typeof PKCS11_TRANSFER_SUITE;
  fleetKeyId: string;
  to: NodeIdentity;
  /** The sender's ephemeral P-256 public key, hex. */
  enc: string;
  /** Software: the AES-256-GCM sealed key entries, base64. */
  sealed?: string;
  /** PKCS#11: each fleet key, CKM_AES_KEY_WRAP_PAD-wrapped (base64), with its label and kind. */
  keys?: { label: string; kind: TransferKind; wrapped: string }[];
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

function pkcs11Options(platform: Extract<PlatformConfig, { kind: 'pkcs11' }>): Pkcs11Options {
  return { module: platform.module, tokenLabel: platform.tokenLabel, pin: platform.pin };
}

/** The fleet's keys: HPKE key pair, log MAC key, every record-sealing key. */
export function fleetLabels(file: FleetFile): string[] {
  return [KEY_LABELS.fleetHpke, KEY_LABELS.logMac, ...(file.recordSealKeys?.length ? file.recordSealKeys : [KEY_LABELS.recordSeal])];
}

const RECORD_SEAL_LABEL = /^coffer-record-seal-v1(-r[0-9]{1,4})?$/;

/** What a fleet key label is, or null for a label that is not a fleet key. */
export function fleetKeyKind(label: string): TransferKind | null {
  if (label === KEY_LABELS.fleetHpke) return 'ecdh';
  if (label === KEY_LABELS.logMac) return 'mac';
  if (RECORD_SEAL_LABEL.test(label)) return 'seal';
  return null;
}

/**
 * One line in `ceremony.log` beside fleet.json: the step, the fleet, the node, the
 * labels; never key material. Best effort (a read-only directory does not stop a join).
 */
function logCeremony(config: VaultConfig, entry: Record<string, unknown>): void {
  try {
    appendFileSync(joinPath(dirname(config.fleetFile), 'ceremony.log'), JSON.stringify({ time: new Date().toISOString(), platform: config.platform.kind === 'pkcs11' ? `pkcs11:${config.platform.tokenLabel}` : 'software', ...entry }) + '\n', { mode: 0o600 });
  } catch {
    // not fatal
  }
}

/** PKCS#11 context: label || 0 || suite || 0 || recipient || fleet key ID || SHA-256(fleet file JSON). */
function pkcs11TransferContext(recipient: Uint8Array, fleetKeyId: Uint8Array, fleet: FleetFile): Buffer {
  return sha256(LABELS.fleetTransfer, new Uint8Array([0]), PKCS11_TRANSFER_SUITE, new Uint8Array([0]), recipient, fleetKeyId, sha256(JSON.stringify(fleet)));
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

/**
 * `fleet init`: the fleet's keys, created once, on the first node. On PKCS#11 they are
 * created CKA_EXTRACTABLE (and sensitive): this token is the ceremony source that wraps
 * them to the other tokens.
 */
export async function fleetInit(config: VaultConfig): Promise<{ bundle: FleetKeyBundle; node: NodeIdentity }> {
  if (existsSync(config.fleetFile)) throw new CeremonyError(`fleet file ${config.fleetFile} exists: this node already belongs to a fleet`);
  await provisionVaultKeys(config.platform, { exportable: true });
  const node = await nodeKey(config);
  const opened = await openPlatform(config.platform);
  try {
    const { fleet } = await ensureFleetFile(opened.platform, config.fleetFile);
    logCeremony(config, { step: 'init', fleetKeyId: toHex(fleet.fleetKey.keyId), node: node.nodeId });
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
  const fleet = readFleetFile(config.fleetFile);
  // The log MAC key joined the fleet keys after the first fleets were made: create it on
  // the source if an older fleet lacks it (then every node gets it through this package).
  // On PKCS#11 only on a ceremony source (its fleet HPKE key is exportable): a joined
  // token must never make a MAC key of its own, which would differ from the fleet's.
  if (config.platform.kind === 'software') provisionSoftwareKeys(config.platform.keyFile, { mac: [KEY_LABELS.logMac] });
  else {
    const { inspectKey, provisionPkcs11Keys } = await import('../platform/pkcs11/index.js');
    const opts = pkcs11Options(config.platform);
    if ((await inspectKey(opts, KEY_LABELS.fleetHpke, 'ecdh')).extractable) await provisionPkcs11Keys(opts, { mac: [KEY_LABELS.logMac] }, { exportable: true });
  }
  const opened = await openPlatform(config.platform);
  try {
    await loadFleet(opened.platform, config.fleetFile); // this node really holds the fleet it exports
  } finally {
    await opened.close();
  }
  const fleetKeyId = fromHex(fleet.keyId);
  const to = { nodeId: nodeIdOf(recipient), publicKey: toHex(recipient) };
  const labels = fleetLabels(fleet);
  let pkg: TransferPackage;
  if (config.platform.kind === 'pkcs11') {
    const { wrapKeysFor } = await import('../platform/pkcs11/index.js');
    const items: TransferItem[] = labels.map((label) => ({ label, kind: fleetKeyKind(label)! }));
    const wrapped = await wrapKeysFor(pkcs11Options(config.platform), recipient, pkcs11TransferContext(recipient, fleetKeyId, fleet), items).catch((err: unknown) => {
      if (err instanceof Error && err.name === 'KeyTransferError') throw new CeremonyError(err.message);
      throw err;
    });
    pkg = {
      version: 1,
      kind: 'coffer-fleet-transfer',
      suite: PKCS11_TRANSFER_SUITE,
      fleetKeyId: fleet.keyId,
      to,
      enc: toHex(wrapped.enc),
      keys: wrapped.keys.map((k) => ({ label: k.label, kind: k.kind, wrapped: Buffer.from(k.wrapped).toString('base64') })),
      fleet,
    };
  } else {
    const keys = exportSoftwareKeys(config.platform.keyFile, labels);
    const eph = createECDH('prime256v1');
    eph.generateKeys();
    const enc = new Uint8Array(eph.getPublicKey());
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', transferKey(eph.computeSecret(recipient), recipient, enc), nonce);
    c.setAAD(transferAad(recipient, enc, fleetKeyId, fleet));
    const sealed = Buffer.concat([nonce, c.update(JSON.stringify(keys)), c.final(), c.getAuthTag()]);
    pkg = { version: 1, kind: 'coffer-fleet-transfer', suite: SOFTWARE_TRANSFER_SUITE, fleetKeyId: fleet.keyId, to, enc: toHex(enc), sealed: sealed.toString('base64'), fleet };
  }
  logCeremony(config, { step: 'export-for', fleetKeyId: fleet.keyId, to: to.nodeId, labels, package: sha256(JSON.stringify(pkg)).toString('hex') });
  return pkg;
}

/**
 * `fleet join`: opens a transfer package with this node's transport key, imports the
 * fleet keys into this node's platform and writes (or merges) fleet.json.
 * @param expectedFleetKeyId the key ID of the bundle clients pin (hex)
 * @param options.exportable PKCS#11: keep the received keys CKA_EXTRACTABLE so that this
 *   token can act as a ceremony source too (a second, offline ceremony token)
 */
export async function join(config: VaultConfig, packageText: string, expectedFleetKeyId: string, options: { exportable?: boolean } = {}): Promise<{ fleetKeyId: string; imported: string[] }> {
  let pkg: TransferPackage;
  try {
    pkg = JSON.parse(packageText) as TransferPackage;
  } catch {
    throw new CeremonyError('transfer package: not JSON');
  }
  if (pkg?.version !== 1 || pkg.kind !== 'coffer-fleet-transfer' || typeof pkg.enc !== 'string' || typeof pkg.fleet !== 'object' || pkg.fleet === null) {
    throw new CeremonyError('transfer package: not a version 1 coffer-fleet-transfer');
  }
  if (pkg.fleetKeyId !== expectedFleetKeyId.toLowerCase() || pkg.fleet.keyId !== pkg.fleetKeyId) {
    throw new CeremonyError(`transfer package is for fleet key ${pkg.fleetKeyId}, not ${expectedFleetKeyId}: refusing to join another fleet`);
  }
  if (pkg.fleet.suite !== HPKE_SUITE_NAME) throw new CeremonyError('transfer package: unknown fleet suite');
  const wantSuite = config.platform.kind === 'pkcs11' ? PKCS11_TRANSFER_SUITE : SOFTWARE_TRANSFER_SUITE;
  if (pkg.suite !== wantSuite) {
    throw new CeremonyError(`transfer package was made ${pkg.suite === PKCS11_TRANSFER_SUITE ? 'by a PKCS#11 token' : pkg.suite === SOFTWARE_TRANSFER_SUITE ? 'by a software-platform node' : `with suite ${String(pkg.suite)}`}; this node's platform is ${config.platform.kind} (a fleet is all-software or all-PKCS#11)`);
  }
  // The fleet key inside must be the one the pinned ID names.
  const fleetKey = await fleetKeyFromPublicKey(/^04[0-9a-f]{128}$/.test(pkg.fleet.publicKey ?? '') ? fromHex(pkg.fleet.publicKey) : new Uint8Array(0)).catch(() => null);
  if (!fleetKey || !equalBytes(fleetKey.keyId, fromHex(pkg.fleetKeyId))) throw new CeremonyError('transfer package: its fleet file does not match its fleet key ID');
  const me = await nodeKey(config);
  if (pkg.to?.publicKey !== me.publicKey) throw new CeremonyError(`transfer package is wrapped for node ${pkg.to?.nodeId}, this node is ${me.nodeId}`);
  const current = existsSync(config.fleetFile) ? readFleetFile(config.fleetFile) : null;
  if (current && current.keyId !== pkg.fleetKeyId) throw new CeremonyError(`this node already belongs to fleet ${current.keyId}; retire it (fleet leave) first`);
  const recipient = fromHex(me.publicKey);
  const enc = /^04[0-9a-f]{128}$/.test(pkg.enc) ? fromHex(pkg.enc) : null;
  if (!enc) throw new CeremonyError('transfer package: malformed');

  let imported: string[];
  if (config.platform.kind === 'pkcs11') {
    imported = await joinPkcs11(config.platform, pkg, recipient, enc, options.exportable === true);
  } else {
    const sealed = Buffer.from(pkg.sealed ?? '', 'base64');
    if (sealed.length < 28) throw new CeremonyError('transfer package: malformed');
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
    if (fleetPub !== pkg.fleet.publicKey) throw new CeremonyError('transfer package: the fleet key inside does not match its fleet key ID');
    imported = importSoftwareKeys(config.platform.keyFile, keys);
  }
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
  logCeremony(config, { step: 'join', fleetKeyId: pkg.fleetKeyId, node: me.nodeId, imported, package: sha256(packageText.trim()).toString('hex') });
  return { fleetKeyId: pkg.fleetKeyId, imported };
}

/** The PKCS#11 half of `join`: C_UnwrapKey into this node's token (transfer.ts). */
async function joinPkcs11(platform: Extract<PlatformConfig, { kind: 'pkcs11' }>, pkg: TransferPackage, recipient: Uint8Array, enc: Uint8Array, exportable: boolean): Promise<string[]> {
  if (!Array.isArray(pkg.keys)) throw new CeremonyError('transfer package: malformed (no keys)');
  const items = pkg.keys.map((k) => {
    const kind = typeof k?.label === 'string' ? fleetKeyKind(k.label) : null;
    if (kind === null || k.kind !== kind || typeof k.wrapped !== 'string') throw new CeremonyError(`transfer package: ${JSON.stringify(k?.label)} is not a fleet key`);
    return { label: k.label, kind, wrapped: new Uint8Array(Buffer.from(k.wrapped, 'base64')) };
  });
  if (!items.some((k) => k.label === KEY_LABELS.fleetHpke)) throw new CeremonyError(`transfer package: no ${KEY_LABELS.fleetHpke}`);
  const { unwrapKeys } = await import('../platform/pkcs11/index.js');
  try {
    const report = await unwrapKeys(pkcs11Options(platform), KEY_LABELS.nodeTransport, { enc, keys: items }, pkcs11TransferContext(recipient, fromHex(pkg.fleetKeyId), pkg.fleet), {
      publicKeys: { [KEY_LABELS.fleetHpke]: fromHex(pkg.fleet.publicKey) },
      exportable,
    });
    return [...report.imported];
  } catch (err) {
    if (err instanceof Error && err.name === 'KeyTransferError') throw new CeremonyError(err.message);
    throw err;
  }
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
    // Exportable: the new key goes to every other token through export-for/join.
    const { provisionPkcs11Keys } = await import('../platform/pkcs11/index.js');
    await provisionPkcs11Keys(pkcs11Options(config.platform), { seal: [label] }, { exportable: true });
  }
  writeFleetFile(config.fleetFile, { ...file, recordSealKeys: [...held, label], currentRecordSealKey: file.currentRecordSealKey ?? KEY_LABELS.recordSeal });
  logCeremony(config, { step: 'rotate', fleetKeyId: file.keyId, label });
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
  logCeremony(config, { step: 'activate', fleetKeyId: file.keyId, label });
}

/**
 * PKCS#11: the security attributes of this token's fleet keys and transport key, for
 * `fleet status` (the ceremony record: check them before and after a join). Software: null.
 */
export async function keyAttributes(config: VaultConfig): Promise<Record<string, unknown>[] | null> {
  if (config.platform.kind !== 'pkcs11') return null;
  const { inspectKey } = await import('../platform/pkcs11/index.js');
  const file = existsSync(config.fleetFile) ? readFleetFile(config.fleetFile) : null;
  const labels = [KEY_LABELS.nodeTransport, ...(file ? fleetLabels(file) : [])];
  const out: Record<string, unknown>[] = [];
  for (const label of labels) {
    try {
      out.push({ ...(await inspectKey(pkcs11Options(config.platform), label, label === KEY_LABELS.nodeTransport ? 'ecdh' : fleetKeyKind(label)!)) });
    } catch (err) {
      if (err instanceof PlatformError && err.code === 'key-missing') out.push({ label, missing: true });
      else throw err;
    }
  }
  return out;
}

/** `fleet leave`: this node drops the fleet keys and its fleet file (retiring it). */
export async function leave(config: VaultConfig): Promise<string[]> {
  if (!existsSync(config.fleetFile)) throw new FleetFileError(`fleet file ${config.fleetFile}: missing: this node is not in a fleet`);
  const file = readFleetFile(config.fleetFile);
  let removed: string[];
  if (config.platform.kind === 'pkcs11') {
    // Destroys the token objects; whether the HSM also erases them from its storage is
    // the vendor's business (docs/operations.md §7: rotate if the HSM is not trusted).
    const { destroyKeys } = await import('../platform/pkcs11/index.js');
    removed = await destroyKeys(pkcs11Options(config.platform), fleetLabels(file).map((label) => ({ label, kind: fleetKeyKind(label)! })));
  } else {
    removed = removeSoftwareKeys(config.platform.keyFile, fleetLabels(file));
  }
  renameSync(config.fleetFile, `${config.fleetFile}.retired-${Date.now()}`);
  logCeremony(config, { step: 'leave', fleetKeyId: file.keyId, removed });
  return removed;
}
