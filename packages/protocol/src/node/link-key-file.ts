/**
 * The relay→vault link key file (spec/relay-api.md §2), for Node services only (the
 * rest of @coffer/protocol is isomorphic; this is its `@coffer/protocol/node` entry):
 * 32 random bytes stored as 64 hex characters, mode 0600. With `create`, the file is
 * made atomically if missing (temp file + link), so a relay and a vault starting
 * together agree on one key.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { RELAY_LINK_KEY_LENGTH } from '../relay-link.js';

export class LinkKeyError extends Error {
  override readonly name = 'LinkKeyError';
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
  const text = raw.toString('utf8').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  if (raw.length === RELAY_LINK_KEY_LENGTH) return new Uint8Array(raw);
  throw new LinkKeyError(`link key file ${file}: expected 64 hex characters (32 bytes)`);
}
