/**
 * Reading a response body into one array, for the storage backends that fetch over HTTP
 * (S3, the relay's blob API): the body's chunks are copied once, into the caller's buffer
 * when it gives one (restore's piece buffer, reused for every piece of a pack), else into
 * one array allocated once when the length is known, else gathered and joined.
 */

/** One chunk of a body, or its end (a ReadableStream reader's and an async iterator's results both fit). */
export type NextChunk = () => Promise<{ done?: boolean; value?: Uint8Array }>;

/**
 * Skips `skip` bytes of the body, then reads `length` bytes of it (to its end when
 * undefined) into `into` (at least `length` bytes, with a known length) or into a new
 * array. Stops reading once that is full; what came, shorter at the body's end.
 */
export async function readChunksInto(next: NextChunk, skip: number, length: number | undefined, into?: Uint8Array): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let out = length !== undefined ? (into ? into.subarray(0, length) : new Uint8Array(length)) : undefined;
  let n = 0;
  while (out === undefined || n < out.length) {
    const r = await next();
    if (r.done || !r.value) break;
    let c = r.value;
    if (skip > 0) {
      const drop = Math.min(skip, c.length);
      skip -= drop;
      c = c.subarray(drop);
      if (c.length === 0) continue;
    }
    if (out) {
      const take = Math.min(c.length, out.length - n);
      out.set(take === c.length ? c : c.subarray(0, take), n);
      n += take;
    } else {
      chunks.push(c);
      n += c.length;
    }
  }
  if (!out) {
    out = new Uint8Array(n);
    let o = 0;
    for (const c of chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
  return n < out.length ? out.subarray(0, n) : out;
}
