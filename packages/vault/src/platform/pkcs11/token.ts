/**
 * Loading a PKCS#11 module, finding a token by label and logging in to it.
 *
 * Cryptoki state is per process, not per object: a module can be C_Initialize'd once
 * (a second time answers CKR_CRYPTOKI_ALREADY_INITIALIZED, even from a second
 * `PKCS11` instance), a login is shared by every session of the application, and
 * C_Logout or C_Finalize from one user would pull the rug from all others. So the
 * module and each token login are reference-counted here, and every platform opened
 * in this process on the same module shares them.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11, TokenInfo } from 'pkcs11js';
import { PlatformError } from '../../core/platform.js';
import { ckrOf, describe, toPlatformError } from './errors.js';
import { SessionPool } from './session-pool.js';

/** How to reach the token. */
export interface Pkcs11Options {
  /** Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`. */
  readonly module: string;
  /** The token's label (CKA token label, compared after trimming the padding). */
  readonly tokenLabel: string;
  /** The user PIN. */
  readonly pin: string;
  /** Sessions in the pool (default 4, at most 64). */
  readonly poolSize?: number;
  /**
   * `blocking` (default) runs each PKCS#11 call on the event loop thread; `threaded`
   * uses pkcs11js's `…Async` variants, which run the long calls (encrypt, decrypt,
   * sign, derive) on libuv's thread pool. Measured on SoftHSM2 (in-process, ~15 µs
   * per seal), blocking is 2× faster; a network HSM with millisecond latency wants
   * `threaded` so the event loop keeps serving while the HSM works.
   */
  readonly calls?: 'blocking' | 'threaded';
}

/** An open, logged-in token and its session pool. */
export interface OpenToken {
  readonly pkcs11: PKCS11;
  readonly info: TokenInfo;
  readonly pool: SessionPool;
  readonly label: string;
  /** The module's path and the token's slot (for a worker thread opening its own session). */
  readonly module: string;
  readonly slot: Handle;
  /**
   * A session of its own, opened on first call and kept until `close` (after the pool):
   * the owner of the session objects the platform makes once (the keys' session copies),
   * which live as long as the session that created them. Never used for
   * operations, so no pooled operation's failure closes it.
   * @throws PlatformError when it cannot be opened or the token is closed
   */
  objectSession(): Handle;
  /** Releases the pool, the login (last user logs out) and the module (last user finalizes). */
  close(): Promise<void>;
}

// PKCS#11 2.40 §5.6 session states; pkcs11js does not export CKS_*.
const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;

interface ModuleEntry {
  readonly pkcs11: PKCS11;
  refs: number;
  /** False when someone outside this registry had already initialized the module. */
  readonly ownsInit: boolean;
  readonly logins: Map<string, LoginEntry>;
}

interface LoginEntry {
  refs: number;
  /** A session kept open only to hold the login: closing the last session logs out. */
  readonly anchor: Handle;
  /** Salted digest of the PIN that logged in, to check later opens with another PIN. */
  readonly salt: Buffer;
  readonly pinDigest: Buffer;
}

const modules = new Map<string, ModuleEntry>();

function acquireModule(path: string): ModuleEntry {
  const known = modules.get(path);
  if (known !== undefined) {
    known.refs++;
    return known;
  }
  const pkcs11 = new pkcs11js.PKCS11();
  try {
    pkcs11.load(path);
  } catch (err) {
    throw new PlatformError(`pkcs11: cannot load module ${path}: ${describe(err)}`, 'token-missing');
  }
  let ownsInit = true;
  try {
    // CKF_OS_LOCKING_OK: without it SoftHSM2 turns its mutexes off, and the `threaded`
    // calls would run on several threads at once.
    pkcs11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (err) {
    if (ckrOf(err) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      safely(() => pkcs11.close());
      throw new PlatformError(`pkcs11: C_Initialize of ${path} failed: ${describe(err)}`, 'token-missing');
    }
    ownsInit = false;
  }
  const entry: ModuleEntry = { pkcs11, refs: 1, ownsInit, logins: new Map() };
  modules.set(path, entry);
  return entry;
}

function releaseModule(path: string, entry: ModuleEntry): void {
  if (--entry.refs > 0) return;
  modules.delete(path);
  if (entry.ownsInit) safely(() => entry.pkcs11.C_Finalize());
  safely(() => entry.pkcs11.close());
}

/** The slot holding the one initialized token labelled `label`. */
function findSlot(pkcs11: PKCS11, label: string): { slot: Handle; info: TokenInfo } {
  let slots: Handle[];
  try {
    slots = pkcs11.C_GetSlotList(true);
  } catch (err) {
    throw toPlatformError(err, 'C_GetSlotList');
  }
  const found: { slot: Handle; info: TokenInfo }[] = [];
  const seen: string[] = [];
  for (const slot of slots) {
    let info: TokenInfo;
    try {
      info = pkcs11.C_GetTokenInfo(slot);
    } catch {
      continue; // a token removed while we looked
    }
    if ((info.flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0) continue;
    const l = info.label.trim();
    seen.push(JSON.stringify(l));
    if (l === label) found.push({ slot, info });
  }
  const [first, second] = found;
  if (first === undefined) {
    const list = seen.length > 0 ? seen.join(', ') : 'none';
    throw new PlatformError(`pkcs11: no token labelled ${JSON.stringify(label)} (tokens present: ${list})`, 'token-missing');
  }
  if (second !== undefined) {
    throw new PlatformError(`pkcs11: ${found.length} tokens are labelled ${JSON.stringify(label)}; labels must be unique`, 'token-missing');
  }
  return first;
}

function pinDigest(salt: Buffer, pin: string): Buffer {
  return createHash('sha256').update(salt).update(pin, 'utf8').digest();
}

const SESSION_FLAGS = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;

function acquireLogin(m: ModuleEntry, slot: Handle, pin: string): LoginEntry {
  const key = slot.toString('hex');
  const known = m.logins.get(key);
  if (known !== undefined) {
    // The token already answers CKR_USER_ALREADY_LOGGED_IN whatever PIN we give it, so
    // check the PIN against the one that logged in.
    if (!timingSafeEqual(pinDigest(known.salt, pin), known.pinDigest)) {
      throw new PlatformError('pkcs11: login failed (wrong PIN)', 'login-failed');
    }
    known.refs++;
    return known;
  }
  let anchor: Handle;
  try {
    anchor = m.pkcs11.C_OpenSession(slot, SESSION_FLAGS);
  } catch (err) {
    throw toPlatformError(err, 'C_OpenSession');
  }
  try {
    m.pkcs11.C_Login(anchor, pkcs11js.CKU_USER, pin);
  } catch (err) {
    const rv = ckrOf(err);
    if (rv !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) {
      safely(() => m.pkcs11.C_CloseSession(anchor));
      if (rv === pkcs11js.CKR_PIN_INCORRECT) throw new PlatformError('pkcs11: login failed (wrong PIN)', 'login-failed');
      if (rv === pkcs11js.CKR_PIN_LOCKED) throw new PlatformError('pkcs11: login failed (PIN locked)', 'login-failed');
      throw toPlatformError(err, 'C_Login');
    }
    // Logged in by someone outside this registry: we cannot check the PIN here.
  }
  const salt = randomBytes(16);
  const entry: LoginEntry = { refs: 1, anchor, salt, pinDigest: pinDigest(salt, pin) };
  m.logins.set(key, entry);
  return entry;
}

function releaseLogin(m: ModuleEntry, slot: Handle, entry: LoginEntry): void {
  if (--entry.refs > 0) return;
  m.logins.delete(slot.toString('hex'));
  safely(() => m.pkcs11.C_Logout(entry.anchor));
  safely(() => m.pkcs11.C_CloseSession(entry.anchor));
}

/**
 * Loads the module, finds the token by label, logs in and makes the session pool.
 * @throws PlatformError token-missing (module or token absent), login-failed (PIN)
 */
export function openToken(opts: Pkcs11Options): OpenToken {
  checkOptions(opts);
  const m = acquireModule(opts.module);
  let slot: Handle;
  let info: TokenInfo;
  let login: LoginEntry;
  try {
    ({ slot, info } = findSlot(m.pkcs11, opts.tokenLabel));
    login = acquireLogin(m, slot, opts.pin);
  } catch (err) {
    releaseModule(opts.module, m);
    throw err;
  }
  const pkcs11 = m.pkcs11;
  const openSession = (): Handle => {
    let s: Handle;
    try {
      s = pkcs11.C_OpenSession(slot, SESSION_FLAGS);
    } catch (err) {
      throw toPlatformError(err, 'C_OpenSession');
    }
    // Sessions share the application's login; if it was lost (token reset), say so.
    let state: number;
    try {
      state = pkcs11.C_GetSessionInfo(s).state;
    } catch (err) {
      safely(() => pkcs11.C_CloseSession(s));
      throw toPlatformError(err, 'C_GetSessionInfo');
    }
    if (state !== CKS_RW_USER_FUNCTIONS && state !== CKS_RO_USER_FUNCTIONS) {
      safely(() => pkcs11.C_CloseSession(s));
      throw new PlatformError('pkcs11: the token is no longer logged in', 'login-failed');
    }
    return s;
  };
  const pool = new SessionPool(opts.poolSize ?? 4, openSession, (s) => safely(() => pkcs11.C_CloseSession(s)));
  let closed = false;
  let objects: Handle | undefined;
  return {
    pkcs11,
    info,
    pool,
    label: opts.tokenLabel,
    module: opts.module,
    slot,
    objectSession() {
      if (closed) throw new PlatformError('pkcs11: the token is closed', 'hsm-failure');
      objects ??= openSession();
      return objects;
    },
    async close() {
      if (closed) return;
      closed = true;
      await pool.close();
      // After the pool: no operation runs any more with a key this session owns.
      if (objects !== undefined) {
        const s = objects;
        safely(() => pkcs11.C_CloseSession(s));
      }
      releaseLogin(m, slot, login);
      releaseModule(opts.module, m);
    },
  };
}

function checkOptions(opts: Pkcs11Options): void {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('options must be an object');
  if (typeof opts.module !== 'string' || opts.module === '') throw new TypeError('module must be a non-empty string');
  if (typeof opts.tokenLabel !== 'string' || opts.tokenLabel === '') throw new TypeError('tokenLabel must be a non-empty string');
  if (typeof opts.pin !== 'string') throw new TypeError('pin must be a string');
  const n = opts.poolSize;
  if (n !== undefined && (!Number.isInteger(n) || n < 1 || n > 64)) throw new RangeError(`poolSize must be an integer in 1..64, got ${n}`);
  const c = opts.calls;
  if (c !== undefined && c !== 'blocking' && c !== 'threaded') throw new RangeError(`calls must be 'blocking' or 'threaded', got ${String(c)}`);
}

/** Runs a clean-up call whose failure must not hide the error being reported. */
function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // Nothing useful to do: the session, login or module is gone either way.
  }
}
