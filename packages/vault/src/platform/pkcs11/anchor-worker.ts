/**
 * Anchor reads and writes on a worker thread (anchor-thread.ts), so the event loop keeps
 * serving requests while the token stores the object (SoftHSM2: 10–60 ms per write,
 * measured in docs/pkcs11.md; pkcs11js has no async C_CreateObject).
 *
 * The guarantee is unchanged: `write` resolves only after the thread's C_CreateObject
 * returned, and the committers release answers only after `write` resolved. Requests go
 * to one thread and are handled in order, so writes never interleave. A thread that dies
 * fails its pending requests (PlatformError hsm-failure) and is started afresh on the
 * next call.
 */
import { Worker } from 'node:worker_threads';
import type { Handle } from 'pkcs11js';
import { PlatformError } from '../../core/platform.js';
import type { AnchorReply, AnchorRequest, AnchorThreadData } from './anchor-thread.js';

type Pending = { resolve(v: Uint8Array | null): void; reject(err: Error): void };

export class AnchorWorker {
  #worker: Worker | null = null;
  readonly #pending = new Map<number, Pending>();
  #next = 1;
  #closed = false;

  constructor(
    private readonly module: string,
    private readonly slot: Handle,
  ) {}

  read(): Promise<Uint8Array | null> {
    return this.#call({ op: 'read' });
  }

  async write(value: Uint8Array): Promise<void> {
    await this.#call({ op: 'write', value });
  }

  /** Waits for pending requests, closes the thread's session and stops the thread. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const w = this.#worker;
    if (w === null) return;
    try {
      await this.#send(w, { op: 'close' }); // after every earlier request: handled in order
    } catch {
      // the thread is gone: nothing left to close
    }
    this.#worker = null;
    await w.terminate();
  }

  #call(req: { op: 'read' } | { op: 'write'; value: Uint8Array }): Promise<Uint8Array | null> {
    if (this.#closed) return Promise.reject(new PlatformError('pkcs11: the platform is closed', 'hsm-failure'));
    return this.#send(this.#worker ?? this.#start(), req);
  }

  #send(w: Worker, req: { op: 'read' } | { op: 'write'; value: Uint8Array } | { op: 'close' }): Promise<Uint8Array | null> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      if (this.#pending.size === 1) w.ref(); // a pending request keeps the process alive
      w.postMessage({ id, ...req } satisfies AnchorRequest);
    });
  }

  #start(): Worker {
    const data: AnchorThreadData = { module: this.module, slot: Uint8Array.from(this.slot) };
    const w = new Worker(new URL('./anchor-thread.js', import.meta.url), { workerData: data });
    w.on('message', (m: AnchorReply) => {
      const p = this.#pending.get(m.id);
      if (p === undefined) return;
      this.#pending.delete(m.id);
      // An idle thread must not keep the process alive (close() stops it).
      if (this.#pending.size === 0) w.unref();
      if (m.ok) p.resolve(m.value === null ? null : Uint8Array.from(m.value));
      else p.reject(new PlatformError(m.message, m.code));
    });
    const fail = (why: string): void => {
      if (this.#worker === w) this.#worker = null;
      for (const [id, p] of this.#pending) {
        this.#pending.delete(id);
        p.reject(new PlatformError(`pkcs11: the anchor thread ${why}`, 'hsm-failure'));
      }
    };
    w.on('error', (err) => fail(`failed: ${err.message}`));
    w.on('exit', (code) => fail(`exited (${code})`));
    this.#worker = w;
    return w;
  }
}
