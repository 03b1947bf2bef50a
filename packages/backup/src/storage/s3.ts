/**
 * A repository directly on S3-compatible object storage (`--repo s3:https://host/bucket/prefix`),
 * through the S3 client the relay uses (@aws-sdk/client-s3). Keys are <prefix><object name>.
 *
 * What the Backend contract asks, and how S3 gives it:
 * - immutable objects: a put sends `If-None-Match: *` (S3 answers 412 when the key
 *   exists, so of two racing writers exactly one wins) after a HEAD, for servers that
 *   ignore the header (s3rver does; packages/relay/test/s3-conditional.test.ts). Every
 *   name but `config` is a fresh random ID, so only `coffer init` racing itself relies
 *   on the header;
 * - atomic visibility: a PUT is all or nothing, so nothing partial is ever listed and
 *   there is nothing for `removeStalePartials` to clean;
 * - durability: S3 acknowledges a PUT once it is stored, so `sync` has nothing to wait for;
 * - locks (spec §11) are write-then-list like on a directory: S3 lists a completed PUT
 *   at once (strong read-after-write consistency, AWS since 2020, MinIO, Ceph).
 * A writer holds a pack in memory until commit (a PUT needs its length): at most
 * PACK_BYTES_MAX per pack in flight, a few packs at once.
 */
import type * as S3Sdk from '@aws-sdk/client-s3';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { CofferError } from '../errors.js';
import { checkObjectName, type ByteRange, type ObjectInfo, type ObjectReader, type ObjectWriter, type StorageBackend } from './backend.js';
import { readChunksInto } from './read-into.js';


/** Where an `s3:` repository is: the endpoint URL, the bucket, and a key prefix ('' or ending in '/'). */
export interface S3Location {
  endpoint: string;
  bucket: string;
  prefix: string;
}

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3BackendOptions {
  region?: string;
  /** Explicit credentials; absent: the SDK's default chain (AWS_* variables, AWS_PROFILE, ~/.aws). */
  credentials?: S3Credentials;
  /** A named profile of ~/.aws/credentials (AWS_PROFILE) when no explicit credentials are given. */
  profile?: string;
  /** TCP connect timeout (default 5 s) and per-request socket idle timeout (default 60 s). */
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
}

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Parses what follows `s3:`: `https://host[:port]/bucket[/prefix…]`, `http://…` (the
 * caller decides whether plain HTTP is allowed), or `host/bucket[/prefix…]` (HTTPS).
 * @throws {CofferError} 'invalid-argument' naming what is wrong
 */
export function parseS3Location(spec: string): S3Location {
  const bad = (why: string) => new CofferError('invalid-argument', `repository 's3:${spec}': ${why} (expected s3:https://host[:port]/bucket[/prefix])`);
  // `s3://bucket/x` (the AWS CLI's form) names no endpoint.
  if (spec.startsWith('//')) throw bad('s3://bucket names no endpoint');
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(spec) ? spec : `https://${spec}`;
  // URL() would resolve them away: a typo must not silently name another prefix.
  if (/\/\.\.?(\/|$)/.test(withScheme.replace(/^[a-z0-9+.-]*:\/\//i, ''))) throw bad('the prefix has an empty, "." or ".." segment');
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw bad('not a URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw bad(`scheme ${url.protocol} is not http: or https:`);
  if (url.username || url.password) throw bad('credentials do not go in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY');
  if (url.search || url.hash) throw bad('no query or fragment allowed');
  if (!url.hostname) throw bad('no host');
  // Without a scheme the first segment must look like a host (s3.amazonaws.com, minio:9000):
  // `s3:bucket/prefix` is a bucket mistaken for one.
  if (withScheme !== spec && !url.hostname.includes('.') && !url.port && url.hostname !== 'localhost') throw bad(`'${url.hostname}' is not a host name`);
  const segments = url.pathname.split('/').filter((s, i, all) => !(s === '' && (i === 0 || i === all.length - 1)));
  const bucket = segments.shift();
  if (!bucket) throw bad('no bucket');
  if (!BUCKET_RE.test(bucket) || bucket.includes('..')) throw bad(`'${bucket}' is not a valid bucket name`);
  for (const s of segments) {
    if (s === '' || s === '.' || s === '..') throw bad('the prefix has an empty, "." or ".." segment');
    if (/%[0-9a-f]{2}/i.test(s)) throw bad('the prefix has an escaped character');
  }
  return { endpoint: `${url.protocol}//${url.host}`, bucket, prefix: segments.length > 0 ? segments.join('/') + '/' : '' };
}

/** True when `endpoint`'s host is this machine (plain HTTP is fine there). */
export function isLoopbackEndpoint(endpoint: string): boolean {
  const h = new URL(endpoint).hostname;
  return h === 'localhost' || h === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

type Sdk = typeof S3Sdk;
let sdkLoading: Promise<Sdk> | undefined;
/** The SDK takes over a second to load: only commands on an s3: repository pay for it. */
const loadSdk = (): Promise<Sdk> => (sdkLoading ??= import('@aws-sdk/client-s3'));

const statusOf = (err: unknown): number | undefined => (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
const nameOf = (err: unknown): string => (err as Error)?.name ?? '';

export class S3Backend implements StorageBackend {
  readonly location: string;
  /** `create` buffers the object and PUTs it at commit. */
  readonly keepsUntilCommit = true;
  readonly #where: S3Location;
  readonly #config: S3ClientConfig;
  readonly #region: string;
  #connection: Promise<{ sdk: Sdk; client: S3Client }> | undefined;
  #client: S3Client | undefined;

  constructor(where: S3Location, opts: S3BackendOptions = {}) {
    this.#where = where;
    this.#region = opts.region ?? 'us-east-1';
    this.location = `s3:${where.endpoint}/${where.bucket}${where.prefix ? '/' + where.prefix.slice(0, -1) : ''}`;
    const amazon = /\.amazonaws\.com(\.cn)?$/i.test(new URL(where.endpoint).hostname);
    this.#config = {
      endpoint: where.endpoint,
      region: this.#region,
      // MinIO, Ceph, s3rver and most others want path-style; AWS prefers virtual hosts.
      forcePathStyle: !amazon,
      maxAttempts: 3,
      // Without these a stalled endpoint holds a request (and its buffered body) forever.
      requestHandler: { connectionTimeout: opts.connectionTimeoutMs ?? 5_000, requestTimeout: opts.requestTimeoutMs ?? 60_000, throwOnRequestTimeout: true },
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      ...(!opts.credentials && opts.profile ? { profile: opts.profile } : {}),
    };
  }

  /** The SDK and a client, made on first use. */
  #s3(): Promise<{ sdk: Sdk; client: S3Client }> {
    return (this.#connection ??= loadSdk().then((sdk) => {
      this.#client = new sdk.S3Client(this.#config);
      return { sdk, client: this.#client };
    }));
  }

  #key(name: string): string {
    checkObjectName(name);
    return this.#where.prefix + name;
  }

  /** A CofferError 'storage' that says what failed and, where it can, why. */
  #fail(err: unknown, what: string): CofferError {
    const name = nameOf(err);
    const status = statusOf(err);
    let why: string;
    if (name === 'CredentialsProviderError' || /Could not load credentials/i.test((err as Error)?.message ?? '')) {
      why = 'no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)';
    } else if (name === 'NoSuchBucket') {
      why = `bucket ${this.#where.bucket} does not exist at ${this.#where.endpoint} (\`coffer init\` creates it)`;
    } else if (status === 403 || name === 'AccessDenied' || name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch') {
      why = `access denied (${name || status}): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy`;
    } else {
      const code = (err as NodeJS.ErrnoException)?.code;
      why = code && /^E[A-Z]+$/.test(code) ? `cannot reach ${this.#where.endpoint} (${code})` : name && name !== 'Error' ? `${name}${status ? ` (HTTP ${status})` : ''}` : ((err as Error)?.message ?? String(err));
    }
    return new CofferError('storage', `${what} ${this.location} failed: ${why}`, { cause: err });
  }

  async put(name: string, parts: readonly Uint8Array[]): Promise<void> {
    const key = this.#key(name);
    const exists = () => new CofferError('storage', `object ${name} already exists in ${this.location}: objects are immutable`);
    if ((await this.stat(name)) !== null) throw exists();
    const body = Buffer.concat(parts);
    const s3 = await this.#s3();
    const send = (conditional: boolean) =>
      s3.client.send(
        new s3.sdk.PutObjectCommand({ Bucket: this.#where.bucket, Key: key, Body: body, ContentLength: body.length, ContentType: 'application/octet-stream', ...(conditional ? { IfNoneMatch: '*' } : {}) }),
      );
    try {
      await send(true);
    } catch (err) {
      if (statusOf(err) === 412 || statusOf(err) === 409) throw exists();
      // A server without conditional writes: the HEAD above is then the only check.
      if (statusOf(err) === 501 || nameOf(err) === 'NotImplemented') {
        try {
          await send(false);
          return;
        } catch (e) {
          throw this.#fail(e, `writing ${name} to`);
        }
      }
      throw this.#fail(err, `writing ${name} to`);
    }
  }

  async create(name: string): Promise<ObjectWriter> {
    this.#key(name);
    let parts: Uint8Array[] = [];
    let open = true;
    return {
      write: async (more) => {
        if (!open) throw new CofferError('storage', `writing ${name} to ${this.location} failed: the writer is closed`);
        parts.push(...more);
      },
      commit: async () => {
        if (!open) throw new CofferError('storage', `writing ${name} to ${this.location} failed: the writer is closed`);
        open = false;
        const all = parts;
        parts = [];
        await this.put(name, all);
      },
      abort: async () => {
        open = false;
        parts = [];
      },
    };
  }

  get(name: string, range?: ByteRange): Promise<Uint8Array> {
    return this.#get(name, range, undefined);
  }

  /**
   * The object for several ranged reads (a restore reads each pack in 1 MiB pieces), each
   * read into the caller's buffer when it gives one, straight from the response body:
   * no new buffer per piece (the whole-body array and its copy `get` makes).
   */
  async openReader(name: string): Promise<ObjectReader> {
    this.#key(name);
    let closed = false;
    return {
      read: async (range, into) => {
        if (closed) throw new CofferError('storage', `reading ${name} from ${this.location} failed: the reader is closed`);
        if (into && into.length < range.length) throw new RangeError(`read into: ${into.length} bytes is less than the ${range.length} asked for`);
        return this.#get(name, range, into);
      },
      close: async () => {
        closed = true;
      },
    };
  }

  async #get(name: string, range: ByteRange | undefined, into: Uint8Array | undefined): Promise<Uint8Array> {
    const key = this.#key(name);
    if (range && range.length === 0) return new Uint8Array(0);
    const s3 = await this.#s3();
    try {
      const r = await s3.client.send(
        new s3.sdk.GetObjectCommand({ Bucket: this.#where.bucket, Key: key, ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}) }),
      );
      // A server that ignores Range sends the whole object (200 instead of 206).
      const skip = range && statusOf(r) === 200 ? range.offset : 0;
      if (range && into) {
        // Straight from the body into the caller's buffer; the rest of the body (a server
        // that ignored Range) is dropped with the stream.
        const it = (r.Body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
        try {
          return await readChunksInto(() => it.next(), skip, range.length, into);
        } finally {
          await it.return?.();
        }
      }
      const bytes = await r.Body!.transformToByteArray();
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      if (skip > 0 || (range && buf.length > range.length)) return buf.subarray(skip, skip + range!.length);
      return buf;
    } catch (err) {
      if (statusOf(err) === 404 && nameOf(err) !== 'NoSuchBucket') {
        throw new CofferError('missing-object', `${name} is missing from the repository at ${this.location}`);
      }
      // Like a short read of a file: a range starting at or past the end gives nothing.
      if (statusOf(err) === 416) return new Uint8Array(0);
      throw this.#fail(err, `reading ${name} from`);
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    const key = this.#key(name);
    const s3 = await this.#s3();
    try {
      const r = await s3.client.send(new s3.sdk.HeadObjectCommand({ Bucket: this.#where.bucket, Key: key }));
      return { name, size: r.ContentLength ?? 0, ...(r.LastModified ? { mtime: r.LastModified.getTime() } : {}) };
    } catch (err) {
      if (statusOf(err) === 404) return null;
      throw this.#fail(err, `reading ${name} from`);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const s3 = await this.#s3();
    const base = this.#where.prefix;
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    try {
      do {
        const r = await s3.client.send(new s3.sdk.ListObjectsV2Command({ Bucket: this.#where.bucket, Prefix: base + prefix, ...(token ? { ContinuationToken: token } : {}) }));
        for (const o of r.Contents ?? []) {
          if (!o.Key) continue;
          out.push({ name: o.Key.slice(base.length), size: o.Size ?? 0, ...(o.LastModified ? { mtime: o.LastModified.getTime() } : {}) });
        }
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw this.#fail(err, `listing ${prefix || '/'} in`);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async delete(name: string): Promise<void> {
    const key = this.#key(name);
    const s3 = await this.#s3();
    try {
      await s3.client.send(new s3.sdk.DeleteObjectCommand({ Bucket: this.#where.bucket, Key: key }));
    } catch (err) {
      if (statusOf(err) === 404 && nameOf(err) !== 'NoSuchBucket') return;
      throw this.#fail(err, `deleting ${name} from`);
    }
  }

  /** A completed PUT is already durable on S3. */
  async sync(): Promise<void> {}

  /** Creates the bucket when it does not exist (`coffer init`); returns whether it did. */
  async ensureBucket(): Promise<boolean> {
    const s3 = await this.#s3();
    try {
      await s3.client.send(new s3.sdk.HeadBucketCommand({ Bucket: this.#where.bucket }));
      return false;
    } catch (err) {
      if (statusOf(err) !== 404) throw this.#fail(err, 'opening');
    }
    try {
      // Outside us-east-1, S3 wants the region named again in the request.
      const where = this.#region === 'us-east-1' ? {} : { CreateBucketConfiguration: { LocationConstraint: this.#region as never } };
      await s3.client.send(new s3.sdk.CreateBucketCommand({ Bucket: this.#where.bucket, ...where }));
      return true;
    } catch (err) {
      if (nameOf(err) === 'BucketAlreadyOwnedByYou') return false;
      throw this.#fail(err, `creating bucket ${this.#where.bucket} for`);
    }
  }

  /** Closes the client's connections. */
  close(): void {
    this.#client?.destroy();
  }
}
