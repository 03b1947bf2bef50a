/**
 * Relay→vault link authentication, vault side (spec/relay-api.md §2). With a link key
 * configured, every POST /v1/request must carry a valid `coffer-relay-auth` header
 * (HMAC over method, path, account, time, a nonce and the body's hash) stamped within
 * 30 s of this vault's clock, with a nonce it has not accepted before; anything else is a 401 `relay-auth`, so only the front ends that
 * hold the key can name an account.
 *
 * The key file and its loader are shared with the relay: `@coffer/protocol/node`.
 */
import { RelayLinkReplayCache, verifyRelayAuth, type RelayAuthCheck } from '@coffer/protocol';

export { loadLinkKey, LinkKeyError } from '@coffer/protocol/node';

/** One replay cache per link key this process holds (one per vault service). */
const replayCaches = new WeakMap<Uint8Array, RelayLinkReplayCache>();

/**
 * Checks the request's `coffer-relay-auth` header against the link key, and that its
 * nonce was not accepted before (a captured request replayed on the link is `replayed`).
 */
export function checkRelayAuth(linkKey: Uint8Array, method: string, path: string, account: string, body: Uint8Array, header: string | string[] | undefined, now = Date.now()): Promise<RelayAuthCheck> {
  let replays = replayCaches.get(linkKey);
  if (!replays) replayCaches.set(linkKey, (replays = new RelayLinkReplayCache()));
  return verifyRelayAuth(linkKey, typeof header === 'string' ? header : undefined, { method, path, account, body }, now, replays);
}
