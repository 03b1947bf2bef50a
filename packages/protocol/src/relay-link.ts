/**
 * Relay→vault link authentication (spec/relay-api.md §2): the vault accepts an account
 * ID only from its own front ends. Each forwarded request carries
 *
 *   coffer-relay-auth: v1,t=<unix ms>,mac=<hex>
 *   mac = HMAC-SHA256(linkKey, "coffer-relay-link/v1" || 0x00 || method || 0x00 || path
 *                     || 0x00 || account || 0x00 || t || 0x00 || SHA-256(body))
 *
 * `t` enters the MAC as its decimal ASCII text, exactly as sent. Isomorphic: it uses the
 * package's crypto provider (node:crypto where the process installed it).
 */
import { concat, toHex, utf8 } from './bytes.js';
import { hmacSha256, sha256 } from './primitives.js';

export const RELAY_AUTH_HEADER = 'coffer-relay-auth';
export const RELAY_LINK_LABEL = 'coffer-relay-link/v1';
export const RELAY_LINK_KEY_LENGTH = 32;
/** The vault refuses a `t` further than this from its clock. */
export const RELAY_LINK_MAX_SKEW_MS = 30_000;

export interface RelayLinkRequest {
  readonly method: string;
  readonly path: string;
  readonly account: string;
  readonly body: Uint8Array;
}

const ZERO = new Uint8Array([0]);

export async function relayLinkMac(linkKey: Uint8Array, request: RelayLinkRequest, t: string): Promise<Uint8Array> {
  if (linkKey.length !== RELAY_LINK_KEY_LENGTH) throw new RangeError(`relay link key: expected ${RELAY_LINK_KEY_LENGTH} bytes, got ${linkKey.length}`);
  const bodyHash = await sha256(request.body);
  const input = concat(utf8(RELAY_LINK_LABEL), ZERO, utf8(request.method), ZERO, utf8(request.path), ZERO, utf8(request.account), ZERO, utf8(t), ZERO, bodyHash);
  return hmacSha256(linkKey, input);
}

/** The `coffer-relay-auth` header value for `request`, stamped `now` (unix ms). */
export async function relayAuthHeader(linkKey: Uint8Array, request: RelayLinkRequest, now: number): Promise<string> {
  const t = String(Math.floor(now));
  return `v1,t=${t},mac=${toHex(await relayLinkMac(linkKey, request, t))}`;
}

export type RelayAuthCheck = 'ok' | 'missing' | 'malformed' | 'stale' | 'bad-mac';

/** Checks a `coffer-relay-auth` header value; constant-time on the MAC. */
export async function verifyRelayAuth(linkKey: Uint8Array, header: string | undefined, request: RelayLinkRequest, now: number): Promise<RelayAuthCheck> {
  if (header === undefined || header === '') return 'missing';
  const m = /^v1,t=(\d{1,15}),mac=([0-9a-f]{64})$/.exec(header);
  if (!m) return 'malformed';
  const t = m[1]!;
  if (Math.abs(Number(t) - now) > RELAY_LINK_MAX_SKEW_MS) return 'stale';
  const expected = toHex(await relayLinkMac(linkKey, request, t));
  const given = m[2]!;
  let diff = 0;
  for (let i = 0; i < expected.length; i++) diff |= expected.charCodeAt(i) ^ given.charCodeAt(i);
  return diff === 0 ? 'ok' : 'bad-mac';
}
