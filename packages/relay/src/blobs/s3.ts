/**
 * Blob store on S3-compatible object storage (`@aws-sdk/client-s3`, path-style by
 * default so MinIO, Ceph, s3rver and friends work). Keys: <prefix><namespace>/<name>.
 * Immutability: the put carries `If-None-Match: *` (S3 refuses an existing key with
 * 412) and, for servers that ignore it, the relay checks with HEAD first.
 *
 * The SDK is loaded with the first request (issue 13): ~4 MB of heap that a relay on a
 * local blob store never needs, and that every full collection of its heap would mark.
 */
import type * as S3 from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { BlobStoreError, type BlobBody, type BlobInfo, type BlobStore, type ByteRange } from './store.js';

/**
 * A streamed body goes up in multipart parts of this size (S3's minimum is 5 MiB,
 * except the last): one part in memory per upload (the relay's in-flight budget bounds
 * how many). A body shorter than one part is a single PutObject.
 */
export const S3_PART_BYTES = 8 * 1024 * 1024;

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
  readonly #config: S3Config;
  #sdk: Promise<{ readonly c: S3.S3Client; readonly sdk: typeof S3 }> | undefined;
  #closed = false;
  readonly #bucket: string;
  readonly #prefix: string;

  constructor(config: S3Config) {
    this.#config = config;
    this.#bucket = config.bucket;
    this.#prefix = config.prefix ?? '';
    this.name = `s3:${config.endpoint ?? 'aws'}/${config.bucket}/${this.#prefix}`;
  }

  /** The SDK and the client, made on first use. */
  #s3(): Promise<{ readonly c: S3.S3Client; readonly sdk: typeof S3 }> {
    if (this.#closed) return Promise.reject(new BlobStoreError('the blob store is closed'));
    return (this.#sdk ??= import('@aws-sdk/client-s3').then((sdk) => ({ sdk, c: this.#newClient(sdk) })));
  }

  #newClient(sdk: typeof S3): S3.S3Client {
    const config = this.#config;
    return new sdk.S3Client({
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

  /**
   * A buffer: one PutObject. A stream: read up to one part; if it ended there, one
   * PutObject, else a multipart upload of whole parts, aborted if anything fails. A
   * part goes to S3 only once it is complete, so a body cut off mid-stream never
   * reaches S3 as a short object (on servers that, unlike S3, would keep one).
   */
  async put(ns: string, name: string, data: BlobBody): Promise<'created' | 'exists'> {
    if ((await this.size(ns, name)) !== null) return 'exists';
    if (Buffer.isBuffer(data)) return this.#putOne(ns, name, data, data.length);
    const it = data[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const reader = new PartReader(it);
    try {
      const first = await reader.next();
      if (first.ended) return await this.#putOne(ns, name, first.bytes, first.bytes.length);
      return await this.#putMultipart(ns, name, first.bytes, reader);
    } finally {
      await it.return?.().catch(() => {});
    }
  }

  async #putOne(ns: string, name: string, body: Buffer, length: number): Promise<'created' | 'exists'> {
    const s3 = await this.#s3();
    try {
      await s3.c.send(new s3.sdk.PutObjectCommand({ Bucket: this.#bucket, Key: this.#key(ns, name), Body: body, ContentLength: length, ContentType: 'application/octet-stream', IfNoneMatch: '*' }));
      return 'created';
    } catch (err) {
      if (status(err) === 412 || status(err) === 409) return 'exists';
      throw wrap(err, 'writing an object');
    }
  }

  async #putMultipart(ns: string, name: string, first: Buffer, reader: PartReader): Promise<'created' | 'exists'> {
    const Key = this.#key(ns, name);
    const s3 = await this.#s3();
    let uploadId: string | undefined;
    try {
      const created = await s3.c.send(new s3.sdk.CreateMultipartUploadCommand({ Bucket: this.#bucket, Key, ContentType: 'application/octet-stream' }));
      uploadId = created.UploadId;
      if (!uploadId) throw new Error('CreateMultipartUpload gave no UploadId');
      const parts: { ETag: string; PartNumber: number }[] = [];
      let part = { bytes: first, ended: false };
      for (let n = 1; part.bytes.length > 0; n++) {
        const r = await s3.c.send(new s3.sdk.UploadPartCommand({ Bucket: this.#bucket, Key, UploadId: uploadId, PartNumber: n, Body: part.bytes, ContentLength: part.bytes.length }));
        parts.push({ ETag: r.ETag ?? '', PartNumber: n });
        if (part.ended) break;
        part = await reader.next();
      }
      await s3.c.send(new s3.sdk.CompleteMultipartUploadCommand({ Bucket: this.#bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: parts }, IfNoneMatch: '*' }));
      uploadId = undefined;
      return 'created';
    } catch (err) {
      if (status(err) === 412 || status(err) === 409) return 'exists';
      if (err instanceof BlobStoreError || status(err) !== undefined || (err as Error).name === 'TimeoutError') throw wrap(err, 'writing an object');
      throw err; // the body failed: the route says why
    } finally {
      if (uploadId) await s3.c.send(new s3.sdk.AbortMultipartUploadCommand({ Bucket: this.#bucket, Key, UploadId: uploadId })).catch(() => {});
    }
  }

  async size(ns: string, name: string): Promise<number | null> {
    const s3 = await this.#s3();
    try {
      const r = await s3.c.send(new s3.sdk.HeadObjectCommand({ Bucket: this.#bucket, Key: this.#key(ns, name) }));
      return r.ContentLength ?? 0;
    } catch (err) {
      if (status(err) === 404) return null;
      throw wrap(err, 'reading an object');
    }
  }

  async read(ns: string, name: string, range?: ByteRange): Promise<Readable | null> {
    const s3 = await this.#s3();
    try {
      const r = await s3.c.send(new s3.sdk.GetObjectCommand({ Bucket: this.#bucket, Key: this.#key(ns, name), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }));
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
    const s3 = await this.#s3();
    try {
      do {
        const r = await s3.c.send(new s3.sdk.ListObjectsV2Command({ Bucket: this.#bucket, Prefix: base + prefix, ...(token ? { ContinuationToken: token } : {}) }));
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
    const s3 = await this.#s3();
    try {
      await s3.c.send(new s3.sdk.DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#key(ns, name) }));
      return true;
    } catch (err) {
      if (status(err) === 404) return false;
      throw wrap(err, 'deleting an object');
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const loaded = this.#sdk;
    this.#sdk = undefined;
    if (loaded) (await loaded.catch(() => undefined))?.c.destroy();
  }
}

/** Reads a stream in parts of S3_PART_BYTES (the last may be shorter). */
class PartReader {
  #carry: Buffer | undefined;
  #ended = false;
  constructor(readonly it: AsyncIterator<Buffer>) {}

  /** The next part, and whether the stream ended with it. */
  async next(): Promise<{ bytes: Buffer; ended: boolean }> {
    const chunks: Buffer[] = [];
    let n = 0;
    const take = (c: Buffer): void => {
      const room = S3_PART_BYTES - n;
      if (c.length > room) {
        this.#carry = c.subarray(room);
        c = c.subarray(0, room);
      }
      chunks.push(c);
      n += c.length;
    };
    if (this.#carry) {
      const c = this.#carry;
      this.#carry = undefined;
      take(c);
    }
    while (n < S3_PART_BYTES && !this.#ended) {
      const r = await this.it.next();
      if (r.done) this.#ended = true;
      else take(Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array));
    }
    return { bytes: Buffer.concat(chunks, n), ended: this.#ended && !this.#carry };
  }
}
