/**
 * Relay→vault link authentication, vault side (spec/relay-api.md §2). With a link key
 * configured, every POST /v1/request must carry a valid `coffer-relay-auth` header
 * (HMAC over method, path, account, time and the body's hash) stamped within 30 s of
 * this vault's clock; anything else is a 401 `relay-auth`, so only the front ends that
 * hold the key can name an account.
 *
 * The key file and its loader are shared with the relay: `@coffer/protocol/node`.
 */
import { verifyRelayAuth, type RelayAuthCheck } from '@coffer/protocol';

export { loadLinkKey, LinkKeyError } from '@coffer/protocol/node';

/** Checks the request's `coffer-relay-auth` header against the link key. */
export function checkRelayAuth(linkKey: Uint8Array, method: string, path: string, account: string, body: Uint8Array, header: string | string[] | undefined, now = Date.now()): Promise<RelayAuthCheck> {
  return verifyRelayAuth(linkKey, typeof header === 'string' ? header : undefined, { method, path, account, body }, now);
}
