/**
 * The worker thread that owns the anchor's PKCS#11 session (anchor-worker.ts starts it).
 *
 * Creating a token object is file I/O on SoftHSM2 (10–60 ms) and NVRAM on an HSM, and
 * pkcs11js has no async C_CreateObject: on the event loop it stalls every request. Here
 * it blocks only this thread. The module is the process's (C_Initialize'd and logged in
 * by token.ts on the main thread; a second C_Initialize answers ALREADY_INITIALIZED), and
 * the session opened here shares that login. Requests are handled one at a time in
 * arrival order, so two writes never interleave.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11 } from 'pkcs11js';
import { PlatformError } from '../../core/platform.js';
import { AnchorSlots } from './anchor.js';
import { ckrOf, toPlatformError } from './errors.js';

export interface AnchorThreadData {
  readonly module: string;
  readonly slot: Uint8Array;
}

export type AnchorRequest = { readonly id: number; readonly op: 'read' } | { readonly id: number; readonly op: 'write'; readonly value: Uint8Array } | { readonly id: number; readonly op: 'close' };

export type AnchorReply =
  | { readonly id: number; readonly ok: true; readonly value: Uint8Array | null }
  | { readonly id: number; readonly ok: false; readonly message: string; readonly code: PlatformError['code'] };

// PKCS#11 2.40 §5.6 session states.
const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;

const data = workerData as AnchorThreadData;
const port = parentPort;
if (port === null) throw new Error('anchor-thread: run as a worker thread');

let p: PKCS11 | null = null;
let session: Handle | null = null;
/** This thread is the anchor's one writer: it remembers the slots it wrote (anchor.ts). */
const anchor = new AnchorSlots();

function open(): { p: PKCS11; s: Handle } {
  if (p === null) {
    const m = new pkcs11js.PKCS11();
    try {
      m.load(data.module);
    } catch (err) {
      throw new PlatformError(`pkcs11: anchor thread cannot load module ${data.module}: ${(err as Error).message}`, 'token-missing');
    }
    try {
      m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch (err) {
      // The main thread initialized it (the expected case); anything else is a failure.
      if (ckrOf(err) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw toPlatformError(err, 'anchor thread: C_Initialize');
    }
    p = m;
  }
  if (session === null) {
    let s: Handle;
    try {
      s = p.C_OpenSession(Buffer.from(data.slot), pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    } catch (err) {
      throw toPlatformError(err, 'anchor thread: C_OpenSession');
    }
    const state = p.C_GetSessionInfo(s).state;
    if (state !== CKS_RW_USER_FUNCTIONS && state !== CKS_RO_USER_FUNCTIONS) {
      closeSession(p, s);
      throw new PlatformError('pkcs11: the token is no longer logged in', 'login-failed');
    }
    session = s;
  }
  return { p, s: session };
}

function closeSession(m: PKCS11, s: Handle): void {
  try {
    m.C_CloseSession(s);
  } catch {
    // gone either way
  }
}

function handle(req: AnchorRequest): Uint8Array | null {
  if (req.op === 'close') {
    anchor.forget();
    if (p !== null && session !== null) closeSession(p, session);
    session = null;
    return null;
  }
  const { p: m, s } = open();
  try {
    if (req.op === 'read') return anchor.read(m, s);
    anchor.write(m, s, Buffer.from(req.value.buffer, req.value.byteOffset, req.value.byteLength));
    return null;
  } catch (err) {
    anchor.forget();
    // As the session pool does: a session whose operation failed is not reused.
    closeSession(m, s);
    session = null;
    throw err;
  }
}

port.on('message', (req: AnchorRequest) => {
  let reply: AnchorReply;
  try {
    reply = { id: req.id, ok: true, value: handle(req) };
  } catch (err) {
    const e = err instanceof PlatformError ? err : toPlatformError(err, `anchor ${req.op}`);
    reply = { id: req.id, ok: false, message: e.message, code: e.code };
  }
  port.postMessage(reply);
});
