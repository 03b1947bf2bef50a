/**
 * Errors of the vault protocol. Business outcomes (wrong password, locked, …) are
 * *values* (see `outcome.ts`); these exceptions are for undecodable input and bugs.
 */

/** Base class: every error this package throws on purpose. */
export class ProtocolError extends Error {
  override readonly name: string = 'ProtocolError';
}

/**
 * Bytes that do not parse: wrong length, unknown version or code, non-canonical
 * padding. `code` is stable and safe to show; the message names the field.
 */
export class DecodeError extends ProtocolError {
  override readonly name = 'DecodeError';
  constructor(
    message: string,
    readonly code: DecodeErrorCode,
  ) {
    super(message);
  }
}

export type DecodeErrorCode =
  | 'bad-length'
  | 'bad-version'
  | 'unknown-operation'
  | 'unknown-outcome'
  | 'bad-field'
  | 'bad-padding'
  | 'trailing-bytes';

/**
 * Any authentication failure in the crypto layer (AEAD tag, bad KEM point, wrong key).
 * Deliberately says nothing about *which* check failed.
 */
export class DecryptionError extends ProtocolError {
  override readonly name = 'DecryptionError';
  constructor() {
    super('decryption failed');
  }
}

/**
 * Thrown by a recipient's DH function (`setupBaseRecipient`'s `dh`) when the peer's
 * public key is not a valid point: the one DH failure that is the sender's fault, and
 * the only one HPKE turns into a `DecryptionError`. Anything else the DH throws (an HSM
 * that failed, a token that is gone) propagates unchanged, so a service can answer it
 * as its own failure (retry elsewhere) rather than as bad input.
 */
export class InvalidPeerKeyError extends ProtocolError {
  override readonly name = 'InvalidPeerKeyError';
  constructor(message = 'peer public key is not a valid point') {
    super(message);
  }
}

/** A client-side flow was used wrongly (e.g. a pinned key bundle that does not parse). */
export class ClientUsageError extends ProtocolError {
  override readonly name = 'ClientUsageError';
}
