/**
 * The service's error catalogue. Each code has one meaning and one HTTP status, is
 * stable, and is documented in spec/vault-protocol.md §8. Codes are never reused.
 * Business outcomes (wrong password, locked, …) are NOT errors: they travel inside the
 * sealed 200 response.
 */
export const ERRORS = {
  'bad-account': { status: 400, retry: false, message: 'the coffer-account header is missing or not 1..128 printable ASCII characters' },
  'bad-length': { status: 400, retry: false, message: 'the request body has the wrong length' },
  'bad-version': { status: 400, retry: false, message: 'unsupported protocol version' },
  'unknown-operation': { status: 400, retry: false, message: 'unknown operation code' },
  'unknown-fleet-key': { status: 400, retry: false, message: 'the request is sealed to a fleet key this vault does not hold' },
  undecryptable: { status: 400, retry: false, message: 'the request does not decrypt for this account and operation' },
  'relay-auth': { status: 401, retry: false, message: 'the coffer-relay-auth link authentication is missing, wrong or outside the clock window' },
  'body-too-large': { status: 413, retry: false, message: 'the request body is too large' },
  'unsupported-media-type': { status: 415, retry: false, message: 'the request body must be application/octet-stream' },
  'not-found': { status: 404, retry: false, message: 'no such endpoint' },
  'record-integrity': { status: 500, retry: false, message: 'the stored record failed authentication; it was left untouched' },
  'store-rolled-back': { status: 500, retry: false, message: 'the record store does not match what this vault captured (rolled back or edited); refused' },
  'store-contention': { status: 503, retry: true, message: 'too many concurrent changes to this account; retry' },
  'store-unavailable': { status: 503, retry: true, message: 'the record store is unavailable; retry' },
  'not-leader': { status: 503, retry: true, message: 'this vault node does not lead its group now; send the request to another node (header coffer-vault-leader names the leader when known)' },
  'platform-failure': { status: 503, retry: true, message: 'the HSM platform failed; retry' },
  internal: { status: 500, retry: false, message: 'internal error' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

/**
 * The HTTP error body: the catalogue's fixed message only. Details (etcd URLs, HSM
 * messages, parser diagnostics) go to the log, never to the caller.
 */
export function errorBody(code: ErrorCode): { error: { code: ErrorCode; message: string; retry: boolean } } {
  const e = ERRORS[code];
  return { error: { code, message: e.message, retry: e.retry } };
}
