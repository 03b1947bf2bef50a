/**
 * Relay→vault link authentication, vault side (spec/relay-api.md §2). With a link key
 * configured, every POST /v1/request must carry a valid `coffer-relay-auth` header
 * (HMAC over method, path, account, time and the body's hash) stamped within 30 s of
 * this vault's clock; anything else is a 401 `relay-auth`, so only the front ends that
 * hold the key can name an account.
 *
 * The key file holds 32 random bytes as 64 hex characters. `loadLinkKey` can create it
 * (mode 0600) atomically: several processes starting together agree on one key.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { RELAY_LINK_KEY_LENGTH, verifyRelayAuth, type RelayAuthCheck } from '@coffer/protocol';

export class LinkKeyError extends Error {
  override readonly name = 'LinkKeyError';
}

function parseKey(file: string, raw: Buffer): Uint8Array {
  const text = raw.toString('utf8').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  if (raw.length === RELAY_LINK_KEY_LENGTH) return new Uint8Array(raw);
  throw new LinkKeyError(`link key file ${file}: expected 64 hex characters (32 bytes)`);
}

/** Reads the link key; with `create`, first makes the file if it does not exist. */
export function loadLinkKey(file: string, options: { create?: boolean } = {}): Uint8Array {
  if (options.create) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.tmp-${randomBytes(8).toString('hex')}`;
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      writeSync(fd, randomBytes(RELAY_LINK_KEY_LENGTH).toString('hex') + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, file); // fails if another process made it first: theirs wins
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      unlinkSync(tmp);
    }
  }
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (err) {
    throw new LinkKeyError(`link key file ${file}: ${(err as Error).message}`);
  }
  return parseKey(file, raw);
}

/** Checks the request's `coffer-relay-auth` header against the link key. */
export function checkRelayAuth(linkKey: Uint8Array, method: string, path: string, account: string, body: Uint8Array, header: string | string[] | undefined, now = Date.now()): Promise<RelayAuthCheck> {
  return verifyRelayAuth(linkKey, typeof header === 'string' ? header : undefined, { method, path, account, body }, now);
}
