/**
 * A StorageBackend over the relay's blob API (spec/relay-api.md §3): the repository's
 * encrypted objects live in the account's namespace on the front end. Objects are
 * already sealed by the backup engine; this layer only moves bytes.
 *
 * Errors follow the StorageBackend contract: CofferError('missing-object') for 404,
 * CofferError('storage') for everything else (unreachable, timeout, quota, conflict,
 * refused credentials), each message naming the object and the cause.
 */
import { CofferError, type ByteRange, type ObjectInfo, type ObjectWriter, type StorageBackend } from '@coffer/backup';
import { CofferClientError } from './errors.js';
import type { RelayHttp } from './relay-http.js';

const NAME_RE = /^[a-z0-9]+(\/[a-z0-9]+)*$/;

function checkName(name: string): void {
  if (!NAME_RE.test(name) || name.length > 200) throw new RangeError(`name: not a valid object name: ${JSON.stringify(name).slice(0, 80)}`);
}

export class RelayBlobBackend implements StorageBackend {
  readonly location: string;
  readonly #relay: RelayHttp;
  readonly #timeoutMs: number;

  /** `location` is only for messages (e.g. `coffer:` + the server URL). */
  constructor(relay: RelayHttp, options: { location?: string; timeoutMs?: number } = {}) {
    this.#relay = relay;
    this.location = options.location ?? `${relay.server}/v1/blobs`;
    this.#timeoutMs = options.timeoutMs ?? 5 * 60_000;
  }

  #fail(action: string, name: string, e: unknown): CofferError {
    if (e instanceof CofferError) return e;
    const why = e instanceof CofferClientError ? e.message : (e as Error)?.message ?? String(e);
    return new CofferError('storage', `${action} ${name} at ${this.location} failed: ${why}`, { cause: e });
  }

  async put(name: string, parts: readonly Uint8Array[]): Promise<void> {
    checkName(name);
    const body = concatParts(parts);
    let res: Response;
    try {
      res = await this.#relay.call({ method: 'PUT', path: `/v1/blobs/${name}`, auth: true, body, timeoutMs: this.#timeoutMs, pass: [409, 413, 507] });
    } catch (e) {
      throw this.#fail('writing', name, e);
    }
    await res.body?.cancel().catch(() => {});
    if (res.status === 409) throw new CofferError('storage', `object ${name} already exists at ${this.location}: objects are immutable`);
    if (res.status === 413) throw new CofferError('storage', `writing ${name} at ${this.location} failed: the object (${body.length} bytes) is above the server's size limit`);
    if (res.status === 507) throw new CofferError('storage', `writing ${name} at ${this.location} failed: the account's storage quota is exceeded`);
  }

  /** The relay takes whole objects, so a writer buffers until commit, then PUTs. */
  async create(name: string): Promise<ObjectWriter> {
    checkName(name);
    let parts: Uint8Array[] = [];
    return {
      write: async (more) => {
        // Kept as they are: callers hand over the pieces (StorageBackend's contract).
        for (const p of more) if (p.length > 0) parts.push(p);
      },
      commit: async () => {
        const all = parts;
        parts = [];
        await this.put(name, all);
      },
      abort: async () => {
        parts = [];
      },
    };
  }

  async get(name: string, range?: ByteRange): Promise<Uint8Array> {
    checkName(name);
    if (range && range.length === 0) return new Uint8Array(0);
    const headers: Record<string, string> = range ? { range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {};
    let res: Response;
    try {
      res = await this.#relay.call({ method: 'GET', path: `/v1/blobs/${name}`, auth: true, headers, timeoutMs: this.#timeoutMs, pass: [404, 416] });
      if (res.status === 404) {
        await res.body?.cancel().catch(() => {});
        throw new CofferError('missing-object', `${name} is missing from the repository at ${this.location}`);
      }
      if (res.status === 416) {
        // Like a short read of a local file: nothing at that offset.
        await res.body?.cancel().catch(() => {});
        return new Uint8Array(0);
      }
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (range && res.status === 200) return bytes.subarray(range.offset, range.offset + range.length); // server ignored Range
      return bytes;
    } catch (e) {
      throw this.#fail('reading', name, e);
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    checkName(name);
    try {
      const res = await this.#relay.call({ method: 'HEAD', path: `/v1/blobs/${name}`, auth: true, pass: [404] });
      await res.body?.cancel().catch(() => {});
      if (res.status === 404) return null;
      const size = Number(res.headers.get('content-length'));
      if (!Number.isSafeInteger(size) || size < 0) throw new CofferError('storage', `HEAD ${name} at ${this.location}: no content-length`);
      return { name, size };
    } catch (e) {
      throw this.#fail('reading', name, e);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    try {
      const r = await this.#relay.json<{ blobs?: { name?: unknown; size?: unknown }[] }>({
        method: 'GET',
        path: `/v1/blobs?prefix=${encodeURIComponent(prefix)}`,
        auth: true,
        timeoutMs: this.#timeoutMs,
      });
      if (!Array.isArray(r.blobs)) throw new CofferError('storage', `listing ${prefix || '/'} at ${this.location}: malformed answer`);
      const out: ObjectInfo[] = [];
      for (const b of r.blobs) {
        if (typeof b?.name !== 'string' || typeof b.size !== 'number' || !b.name.startsWith(prefix)) throw new CofferError('storage', `listing ${prefix || '/'} at ${this.location}: malformed entry`);
        out.push({ name: b.name, size: b.size });
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    } catch (e) {
      throw this.#fail('listing', prefix || '/', e);
    }
  }

  async delete(name: string): Promise<void> {
    checkName(name);
    try {
      const res = await this.#relay.call({ method: 'DELETE', path: `/v1/blobs/${name}`, auth: true, pass: [404] });
      await res.body?.cancel().catch(() => {});
    } catch (e) {
      throw this.#fail('deleting', name, e);
    }
  }

  /** A PUT is durable when the relay answers 201, so there is nothing to flush. */
  async sync(): Promise<void> {}
}

function concatParts(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
