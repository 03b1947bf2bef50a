/**
 * fleet.json: the public description of this vault fleet plus its sealed OPAQUE server
 * setup. Nothing in it is secret in the clear: the setup is sealed by the platform's
 * record key (bound to the fleet key ID), so the file can be copied to every node.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { equalBytes, fleetKeyFromPublicKey, fromBase64Url, fromHex, HPKE_SUITE_NAME, opaque, Secret, toBase64Url, toHex, type FleetKey, type FleetKeyBundle } from '@coffer/protocol';
import { KEY_LABELS } from '../core/key-labels.js';
import type { RecordKeyring } from '../core/record.js';
import { sealOpaqueSetup, unsealOpaqueSetup } from '../core/opaque-setup.js';
import { PlatformError, type Platform } from '../core/platform.js';

export interface FleetFile {
  version: 1;
  suite: typeof HPKE_SUITE_NAME;
  keyId: string;
  publicKey: string;
  /** Sealed under the first record-sealing key (`coffer-record-seal-v1`). */
  sealedOpaqueServerSetup: string;
  /**
   * Record-sealing keys this node holds, oldest first (absent: the v1 key only). A key is
   * added by `fleet rotate` and by `fleet join`; it seals new records only once made
   * `currentRecordSealKey` (`fleet activate`), after every node holds it.
   */
  recordSealKeys?: string[];
  currentRecordSealKey?: string;
}

export interface LoadedFleet {
  readonly fleetKey: FleetKey;
  readonly opaqueSetup: Secret<string>;
  readonly recordKeys: RecordKeyring;
}

/** The keyring a fleet file names (newest first in `all`). */
export function recordKeyring(file: FleetFile): RecordKeyring {
  const all = file.recordSealKeys?.length ? [...file.recordSealKeys].reverse() : [KEY_LABELS.recordSeal];
  const current = file.currentRecordSealKey ?? KEY_LABELS.recordSeal;
  if (!all.includes(current)) throw new FleetFileError(`fleet file: currentRecordSealKey ${current} is not in recordSealKeys`);
  return { current, all };
}

/** Writes the fleet file atomically (it holds nothing secret in the clear). */
export function writeFleetFile(path: string, file: FleetFile): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(file, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, path);
}

/** @throws FleetFileError when missing or malformed */
export function readFleetFile(path: string): FleetFile {
  let file: FleetFile;
  try {
    file = JSON.parse(readFileSync(path, 'utf8')) as FleetFile;
  } catch (err) {
    throw new FleetFileError(`fleet file ${path}: ${(err as Error).message} (create it with \`coffer-vault keys create\` or \`coffer-vault fleet init\`)`);
  }
  if (file?.version !== 1 || file.suite !== HPKE_SUITE_NAME || typeof file.publicKey !== 'string' || typeof file.sealedOpaqueServerSetup !== 'string') {
    throw new FleetFileError(`fleet file ${path}: not a version 1 fleet file`);
  }
  return file;
}

export class FleetFileError extends Error {
  override readonly name = 'FleetFileError';
}

/**
 * Creates fleet.json from the platform's fleet key and a fresh OPAQUE server setup, or,
 * if it exists, checks it against the platform. Idempotent.
 */
export async function ensureFleetFile(platform: Platform, path: string): Promise<{ created: boolean; fleet: LoadedFleet }> {
  if (existsSync(path)) return { created: false, fleet: await loadFleet(platform, path) };
  const fleetKey = await fleetKeyFromPublicKey(await platform.publicKey(KEY_LABELS.fleetHpke));
  await opaque.ready;
  const setup = new Secret(opaque.server.createSetup());
  const file: FleetFile = {
    version: 1,
    suite: HPKE_SUITE_NAME,
    keyId: toHex(fleetKey.keyId),
    publicKey: toHex(fleetKey.publicKey),
    sealedOpaqueServerSetup: toBase64Url(await sealOpaqueSetup(platform, fleetKey.keyId, setup)),
  };
  writeFleetFile(path, file);
  return { created: true, fleet: { fleetKey, opaqueSetup: setup, recordKeys: recordKeyring(file) } };
}

/** @throws FleetFileError when missing or malformed; PlatformError when it does not match the platform's keys */
export async function loadFleet(platform: Platform, path: string): Promise<LoadedFleet> {
  const file = readFleetFile(path);
  const fleetKey = await fleetKeyFromPublicKey(fromHex(file.publicKey));
  const platformKey = await platform.publicKey(KEY_LABELS.fleetHpke);
  if (!equalBytes(platformKey, fleetKey.publicKey)) {
    throw new PlatformError(`fleet file ${path} names a fleet key that is not the platform's ${KEY_LABELS.fleetHpke}`, 'key-missing');
  }
  const opaqueSetup = await unsealOpaqueSetup(platform, fleetKey.keyId, fromBase64Url(file.sealedOpaqueServerSetup, 'sealedOpaqueServerSetup'));
  return { fleetKey, opaqueSetup, recordKeys: recordKeyring(file) };
}

export function fleetBundle(fleetKey: FleetKey): FleetKeyBundle {
  return { version: 1, suite: HPKE_SUITE_NAME, keys: [fleetKey] };
}
