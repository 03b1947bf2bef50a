/**
 * Blob store on S3-compatible object storage (`@aws-sdk/client-s3`, path-style by
 * default so MinIO, Ceph, s3rver and friends work). Keys: <prefix><namespace>/<name>.
 * Immutability: the put carries `If-None-Match: *` (S3 refuses an existing key with
 * 412) and, for servers that ignore it, the relay checks with HEAD first.
 */
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { BlobStoreError, type BlobInfo, type BlobStore, type ByteRange } from './store.js';

export interface S3Config {
  readonly endpoint?: string;
  readonly region?: string;
  readonly bucket: string;
  readonly prefix?: string;
  readonly accessKeyId?: string;
  readonly secretAccessKey?: string;
  readonly forcePathStyle?: boolean;
  /** TCP connect timeout (default 5 s) and per-request socket idle timeout (default 60 s). */
  readonly connectionTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
}

const status = (err: unknown): number | undefined => (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;

function wrap(err: unknown, what: string): BlobStoreError {
  const name = (err as Error).name ?? '';
  return new BlobStoreError(`${what}: ${name || (err as Error).message}`, name === 'EntityTooLarge' || name === 'QuotaExceeded', { cause: err });
}

export class S3BlobStore implements BlobStore {
  readonly name: string;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;

  constructor(config: S3Config) {
    this.#bucket = config.bucket;
    this.#prefix = config.prefix ?? '';
    this.name = `s3:${config.endpoint ?? 'aws'}/${config.bucket}/${this.#prefix}`;
    this.#client = new S3Client({
      region: config.region ?? 'us-east-1',
      forcePathStyle: config.forcePathStyle ?? true,
      maxAttempts: 2,
      // Without these a stalled S3 endpoint holds a request (and its buffered body) forever.
      requestHandler: { connectionTimeout: config.connectionTimeoutMs ?? 5_000, requestTimeout: config.requestTimeoutMs ?? 60_000, throwOnRequestTimeout: true },
      ...(config.endpoint ? { endpoint: config.endpoint } : {}),
      ...(config.accessKeyId && config.secretAccessKey ? { credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } } : {}),
    });
  }

  #key(ns: string, name: string): string {
    return `${this.#prefix}${ns}/${name}`;
  }

  async put(ns: string, name: string, data: Buffer): Promise<'created' | 'exists'> {
    if ((await this.size(ns, name)) !== null) return 'exists';
    try {
      await this.#client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: this.#key(ns, name), Body: data, ContentLength: data.length, ContentType: 'application/octet-stream', IfNoneMatch: '*' }));
      return 'created';
    } catch (err) {
      if (status(err) === 412 || status(err) === 409) return 'exists';
      throw wrap(err, 'writing an object');
    }
  }

  async size(ns: string, name: string): Promise<number | null> {
    try {
      const r = await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: this.#key(ns, name) }));
      return r.ContentLength ?? 0;
    } catch (err) {
      if (status(err) === 404) return null;
      throw wrap(err, 'reading an object');
    }
  }

  async read(ns: string, name: string, range?: ByteRange): Promise<Readable | null> {
    try {
      const r = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#key(ns, name), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }));
      return r.Body as Readable;
    } catch (err) {
      if (status(err) === 404) return null;
      throw wrap(err, 'reading an object');
    }
  }

  async list(ns: string, prefix: string): Promise<BlobInfo[]> {
    const base = `${this.#prefix}${ns}/`;
    const out: BlobInfo[] = [];
    let token: string | undefined;
    try {
      do {
        const r = await this.#client.send(new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: base + prefix, ...(token ? { ContinuationToken: token } : {}) }));
        for (const o of r.Contents ?? []) if (o.Key) out.push({ name: o.Key.slice(base.length), size: o.Size ?? 0 });
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw wrap(err, 'listing objects');
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * S3's DeleteObject does not say whether anything was there: a HEAD first tells. Not
   * atomic across processes; the blob routes serialize deletes of one name in-process.
   */
  async delete(ns: string, name: string): Promise<boolean> {
    const existed = (await this.size(ns, name)) !== null;
    if (!existed) return false;
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#key(ns, name) }));
      return true;
    } catch (err) {
      if (status(err) === 404) return false;
      throw wrap(err, 'deleting an object');
    }
  }

  async close(): Promise<void> {
    this.#client.destroy();
  }
}
