/**
 * node:crypto's one-shot `crypto.hash` (Node ≥ 20.12; about half the cost of a Hash object
 * for a short input), looked up once for the relay: null before 20.12, where callers use
 * createHash/createHmac. The package allows Node ≥ 20, so it is not a named import.
 */
import * as nodeCrypto from 'node:crypto';

export interface NodeHash {
  (algorithm: 'sha256', data: Uint8Array | string, outputEncoding: 'buffer'): Buffer;
  (algorithm: 'sha256', data: Uint8Array | string, outputEncoding: 'latin1' | 'hex'): string;
}

export const nodeHash: NodeHash | null = ((nodeCrypto as { hash?: unknown }).hash as NodeHash | undefined) ?? null;
