/** Deterministic test data: a fast xorshift32 stream, so failures reproduce. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

export function bytes(n: number, seed = 1): Buffer {
  const next = prng(seed);
  const out = Buffer.allocUnsafe(n);
  let i = 0;
  for (; i + 4 <= n; i += 4) out.writeUInt32LE(next(), i);
  for (; i < n; i++) out[i] = next() & 0xff;
  return out;
}
