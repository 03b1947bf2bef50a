/**
 * The relay's error catalogue (spec/relay-api.md). Each code has one meaning and one
 * HTTP status and is never reused for another meaning. Errors travel as
 * `{ "error": { "code", "message", "retryAfter"? } }`. Vault errors (spec/vault-protocol.md
 * §8) are passed through unchanged and are not listed here.
 */
export const ERRORS = {
  /** No bearer token, or a token that is unknown, expired, forged or for another audience. */
  unauthenticated: { status: 401, message: 'missing or invalid bearer token' },
  /** Session sign-in failed: unknown account, wrong signature, used or expired challenge (one code for all). */
  'invalid-credentials': { status: 401, message: 'invalid credentials' },
  /** Changing the account password or adding a device key without proof of a long-term credential (current account password or a device-key signature). */
  'proof-required': { status: 403, message: 'this change needs the current account password or a signature by one of the account\'s device keys' },
  /** Built-in account endpoints on a relay that runs without built-in accounts, or on an app (JWT) account. */
  'accounts-disabled': { status: 403, message: 'built-in accounts are not available here' },
  'bad-request': { status: 400, message: 'malformed request' },
  /** An account password the relay refuses (too short or too long). */
  'weak-password': { status: 400, message: 'the account password does not meet the rules' },
  'bad-blob-name': { status: 400, message: 'blob names are [a-z0-9]+(/[a-z0-9]+)*, at most 200 characters' },
  'unsupported-media-type': { status: 415, message: 'unsupported content-type' },
  'body-too-large': { status: 413, message: 'the request body is too large' },
  'blob-too-large': { status: 413, message: 'the object is larger than the per-object limit' },
  'blob-exists': { status: 409, message: 'the object exists; objects are immutable' },
  'key-exists': { status: 409, message: 'this device key is already registered' },
  /** Removing a device key that is not one of the account's. */
  'key-not-found': { status: 404, message: 'no such device key on this account' },
  /**
   * Account-password attempts beyond the per-account limit: the attempt must carry a
   * proof-of-work; the body's `pow` is the puzzle (`challenge`, `bits`).
   */
  'proof-of-work-required': { status: 428, message: 'this account is being tried too often: solve the proof-of-work and retry' },
  'headers-too-large': { status: 431, message: 'the request headers are too large' },
  'blob-not-found': { status: 404, message: 'no such object' },
  'range-not-satisfiable': { status: 416, message: 'the range is outside the object' },
  'quota-exceeded': { status: 507, message: 'the account storage quota is exhausted' },
  'blob-store-full': { status: 507, message: 'the blob store is out of space' },
  'rate-limited': { status: 429, message: 'too many requests; retry later' },
  /** Too many connections open from this client address (connection-cap.ts). */
  'too-many-connections': { status: 429, message: 'too many connections open from this address; close some and retry' },
  'vault-unavailable': { status: 503, message: 'no vault node answered in time; retry' },
  /** Too many upload bytes in flight across the relay right now (memory bound). */
  'uploads-busy': { status: 503, message: 'the server is receiving too many uploads; retry shortly' },
  'blob-store-unavailable': { status: 503, message: 'the blob store failed; retry' },
  'request-timeout': { status: 408, message: 'the request took too long to arrive' },
  /** Too many upload bytes in flight for this account right now. */
  'account-uploads-busy': { status: 429, message: 'this account has too many uploads in progress; retry shortly' },
  'not-found': { status: 404, message: 'no such endpoint' },
  internal: { status: 500, message: 'internal error' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

/** A proof-of-work puzzle (proof-of-work-required). */
export interface PowPuzzle {
  readonly challenge: string;
  readonly bits: number;
}

export interface ErrorBody {
  error: { code: string; message: string; retryAfter?: number; pow?: PowPuzzle };
}

export function errorBody(code: ErrorCode, options: { message?: string; retryAfter?: number; pow?: PowPuzzle } = {}): ErrorBody {
  return { error: { code, message: options.message ?? ERRORS[code].message, ...(options.retryAfter !== undefined ? { retryAfter: options.retryAfter } : {}), ...(options.pow ? { pow: options.pow } : {}) } };
}

/** The whole HTTP response of a catalogue error, for answers written straight to a socket (before Fastify). */
export function rawErrorResponse(code: ErrorCode): string {
  const body = JSON.stringify(errorBody(code));
  const { status } = ERRORS[code];
  const reason: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 413: 'Payload Too Large', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large' };
  return `HTTP/1.1 ${status} ${reason[status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** Thrown inside handlers; the app's error handler turns it into the catalogue answer. */
export class RelayError extends Error {
  override readonly name = 'RelayError';
  constructor(
    readonly code: ErrorCode,
    readonly options: { message?: string; retryAfter?: number; cause?: unknown; pow?: PowPuzzle } = {},
  ) {
    super(options.message ?? ERRORS[code].message, options.cause !== undefined ? { cause: options.cause } : undefined);
  }
}
