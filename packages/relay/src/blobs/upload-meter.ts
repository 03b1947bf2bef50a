/**
 * An upload body on its way to the blob store (spec/relay-api.md §3–4): passes the
 * request's bytes through unchanged, one buffer at a time, and cuts the body off with a
 * catalogue error when it breaks a limit while streaming — more than the per-object
 * limit, a byte budget that cannot grow (quota, bytes in flight), a stall longer than the
 * idle timeout, a client that goes away, or fewer bytes than its Content-Length. The
 * store reading it then fails and keeps nothing; `failure` says why, for the answer.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { RelayError } from '../errors.js';

export interface UploadMeterOptions {
  /** Bytes allowed in all (the per-object limit). */
  readonly maxBytes: number;
  /** The declared Content-Length, when there is one: the body must be exactly that. */
  readonly declared?: number;
  /** A body that sends nothing for this long is cut off with 408 (ms; 0 = never). */
  readonly idleMs: number;
  /**
   * Called for every buffer before it passes, with its length: an error refuses it (and
   * the rest of the body). Every body takes its in-flight budget this way, and a body
   * without a length its quota too.
   */
  readonly reserve?: (bytes: number) => RelayError | undefined;
}

/** Passed-through bytes per buffer at most; reading pauses beyond this (back-pressure). */
const HIGH_WATER = 1024 * 1024;

export class UploadMeter extends Transform {
  /** Bytes passed through so far. */
  bytes = 0;
  /** Why the body was cut off (the answer to give), once it was. */
  failure: RelayError | undefined;
  readonly #o: UploadMeterOptions;
  #timer: NodeJS.Timeout | undefined;

  constructor(source: NodeJS.ReadableStream & { complete?: boolean }, options: UploadMeterOptions) {
    super({ readableHighWaterMark: HIGH_WATER, writableHighWaterMark: HIGH_WATER });
    this.#o = options;
    // Whoever reads the body sees the error (and `failure` keeps it for the answer);
    // a body cut off before anyone reads it must not become an uncaught 'error' event.
    this.on('error', () => {});
    this.#arm();
    const cutOff = (): void => this.fail(new RelayError('bad-request', { message: 'the upload was cut off before its end' }));
    source.on('error', cutOff);
    source.on('aborted', cutOff);
    source.on('close', () => {
      if (source.complete === false) cutOff();
    });
    source.pipe(this);
  }

  /** Ends the body with `err` (the first reason wins). */
  fail(err: RelayError): void {
    if (this.failure || this.destroyed) return;
    this.failure = err;
    this.destroy(err);
  }

  #arm(): void {
    if (this.#o.idleMs <= 0) return;
    // Once per buffer (thousands per upload): restart the one timer rather than make a new one.
    if (this.#timer) {
      this.#timer.refresh();
      return;
    }
    this.#timer = setTimeout(() => this.fail(new RelayError('request-timeout', { message: `no body bytes for ${Math.round(this.#o.idleMs / 1000)} s` })), this.#o.idleMs);
    this.#timer.unref?.();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#arm();
    this.bytes += chunk.length;
    if (this.bytes > this.#o.maxBytes) return this.#refuse(new RelayError('blob-too-large'), cb);
    const refused = this.#o.reserve?.(chunk.length);
    if (refused) return this.#refuse(refused, cb);
    cb(null, chunk);
  }

  #refuse(err: RelayError, cb: TransformCallback): void {
    this.failure ??= err;
    cb(err);
  }

  override _flush(cb: TransformCallback): void {
    clearTimeout(this.#timer);
    if (this.#o.declared !== undefined && this.bytes !== this.#o.declared) return this.#refuse(new RelayError('bad-request', { message: `the body has ${this.bytes} bytes, not the ${this.#o.declared} its content-length says` }), cb);
    cb();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    clearTimeout(this.#timer);
    cb(err);
  }
}
