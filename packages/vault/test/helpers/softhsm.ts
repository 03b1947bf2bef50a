/**
 * Throwaway SoftHSM2 tokens for tests and benchmarks.
 *
 * SoftHSM2 reads its configuration (`SOFTHSM2_CONF`) once, in C_Initialize, and sees
 * only the tokens that exist at that moment. So, in a test process:
 *
 *  1. call `createSoftHsmToken()` (as many times as you need tokens) BEFORE opening any
 *     PKCS#11 platform: the first call makes a temp dir, writes a softhsm2.conf that
 *     points at it and sets `process.env.SOFTHSM2_CONF` for this process;
 *  2. then open platforms with `token.options`;
 *  3. `token.cleanup()` when done (an exit hook removes the temp dir anyway).
 *
 * A token made after a platform is open becomes visible once every platform in the
 * process has been closed (the module is finalized and re-initialized). `node --test`
 * runs each test file in its own process, so files don't share tokens.
 * For a child process (a vault server under test), pass `token.env` in its environment.
 *
 * @example
 * const token = createSoftHsmToken();
 * const platform = await openPkcs11Platform(token.options);
 * …
 * await platform.close();
 * token.cleanup();
 */
import assert from 'node:assert/strict';
import pkcs11js from 'pkcs11js';
import type { Handle, PKCS11 } from 'pkcs11js';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Pkcs11Options } from '../../src/platform/pkcs11/index.js';

/** The SoftHSM2 module (Debian's path), overridable with `COFFER_SOFTHSM_MODULE`. */
export const SOFTHSM_MODULE = process.env.COFFER_SOFTHSM_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';

/** The `softhsm2-util` binary, overridable with `COFFER_SOFTHSM_UTIL`. */
export const SOFTHSM_UTIL = process.env.COFFER_SOFTHSM_UTIL ?? '/usr/bin/softhsm2-util';

export interface SoftHsmToken {
  /** What `openPkcs11Platform` and `provisionPkcs11Keys` take. */
  readonly options: Pkcs11Options;
  readonly module: string;
  readonly tokenLabel: string;
  readonly pin: string;
  readonly soPin: string;
  /** The softhsm2.conf and the token directory it points at. */
  readonly conf: string;
  readonly tokenDir: string;
  /** Environment for a child process that should see this token. */
  readonly env: { readonly SOFTHSM2_CONF: string };
  /**
   * Deletes this token (close its platforms first). The temp dir itself lives until the
   * process exits, because SOFTHSM2_CONF keeps pointing at it.
   */
  cleanup(): void;
}

/** Whether SoftHSM2 is installed, so suites can skip with a clear reason. */
export function softHsmAvailable(): boolean {
  return existsSync(SOFTHSM_MODULE) && existsSync(SOFTHSM_UTIL);
}

let shared: { dir: string; tokenDir: string; conf: string } | undefined;


function sharedDir(): NonNullable<typeof shared> {
  if (shared !== undefined) return shared;
  const dir = mkdtempSync(join(tmpdir(), 'coffer-softhsm-'));
  const tokenDir = join(dir, 'tokens');
  mkdirSync(tokenDir);
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  // Must happen before the module's C_Initialize in this process (see above).
  process.env.SOFTHSM2_CONF = conf;
  shared = { dir, tokenDir, conf };
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return shared;
}

/**
 * Initializes a new SoftHSM2 token in this process's temp token directory.
 * @param opts.label token label (default: `coffer-test-` + random hex), ≤ 32 bytes
 * @param opts.pin user PIN (default `1234`), opts.soPin SO PIN (default `123456`)
 * @param opts.poolSize put into `options`
 * @throws Error if softhsm2-util fails (not installed: check `softHsmAvailable()`)
 */
export function createSoftHsmToken(
  opts: { label?: string; pin?: string; soPin?: string; poolSize?: number } = {},
): SoftHsmToken {
  const s = sharedDir();
  const tokenLabel = opts.label ?? `coffer-test-${randomBytes(4).toString('hex')}`;
  const pin = opts.pin ?? '1234';
  const soPin = opts.soPin ?? '123456';
  const env = { ...process.env, SOFTHSM2_CONF: s.conf };
  execFileSync(SOFTHSM_UTIL, ['--init-token', '--free', '--label', tokenLabel, '--pin', pin, '--so-pin', soPin], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let cleaned = false;
  return {
    options: { module: SOFTHSM_MODULE, tokenLabel, pin, ...(opts.poolSize !== undefined ? { poolSize: opts.poolSize } : {}) },
    module: SOFTHSM_MODULE,
    tokenLabel,
    pin,
    soPin,
    conf: s.conf,
    tokenDir: s.tokenDir,
    env: { SOFTHSM2_CONF: s.conf },
    cleanup() {
      if (cleaned) return;
      cleaned = true;
      try {
        execFileSync(SOFTHSM_UTIL, ['--delete-token', '--token', tokenLabel], { env, stdio: 'ignore' });
      } catch {
        // already gone
      }
    },
  };
}

/**
 * A raw PKCS#11 session on `tok`, for looking at what a platform made. It rides on the
 * module initialization and login that an open platform already holds (or makes its own).
 */
export function withRawSession<T>(tok: SoftHsmToken, fn: (p: PKCS11, s: Handle) => T): T {
  const p = new pkcs11js.PKCS11();
  p.load(tok.module);
  let inited = true;
  try {
    p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch {
    inited = false; // already initialized by an open platform
  }
  try {
    const slot = p.C_GetSlotList(true).find((sl) => p.C_GetTokenInfo(sl).label.trim() === tok.tokenLabel);
    assert.ok(slot !== undefined);
    const s = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      try {
        p.C_Login(s, pkcs11js.CKU_USER, tok.pin);
      } catch {
        // already logged in through the platform
      }
      return fn(p, s);
    } finally {
      p.C_CloseSession(s);
    }
  } finally {
    if (inited) p.C_Finalize();
  }
}
