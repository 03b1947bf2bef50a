/**
 * The relay's proof-of-work puzzle (spec/relay-api.md §1), shared by the relay that checks it
 * and the client that solves it: SHA-256(POW_LABEL || 0x00 || challenge || nonce) must start
 * with `bits` zero bits.
 */

/** The label hashed in front of every proof-of-work input. */
export const POW_LABEL = 'coffer-relay/v1/pow';

/** The number of leading zero bits of a digest. */
export function leadingZeroBits(d: Uint8Array): number {
  let n = 0;
  for (const byte of d) {
    if (byte === 0) {
      n += 8;
      continue;
    }
    return n + Math.clz32(byte) - 24;
  }
  return n;
}
