/**
 * How `coffer` talks to people and scripts (the rules, after age's cmd/age/tui.go):
 * - stdout carries data only (keys, snapshot lists, JSON); everything else goes to stderr;
 * - diagnostics are `coffer: error: …` / `coffer: warning: …`, lowercase, no trailing period;
 * - progress bars are drawn on stderr only when it is a terminal, never with --json;
 * - exit codes mean one thing each (ExitCode below; README lists them);
 * - secrets are printed only where the user asked for them (`key generate`, `init`).
 */
import { CofferError, type CofferErrorCode } from '@coffer/backup/errors';
// Types only: @coffer/client (with OPAQUE's WASM) is loaded by the commands that use it
// (client.ts), not by every command (issue 13: a backup or restore doesn't need its memory).
import type { CofferClientError, CofferClientErrorCode } from '@coffer/client';

export enum ExitCode {
  Ok = 0,
  Failure = 1,
  Usage = 2,
  /** The snapshot was saved, but some files could not be read. */
  Incomplete = 3,
  /** No repository at the location. */
  NoRepository = 10,
  /** The key is malformed or is not this repository's key. */
  BadKey = 11,
  /** The repository is damaged (check found problems, an object failed authentication). */
  Corrupt = 12,
  /** Another process holds a conflicting lock. */
  Locked = 13,
  /** Storage failed: I/O error, disk full, permission. */
  Storage = 14,
  /** The vault counted a wrong password (the message says how many guesses are left). */
  WrongPassword = 20,
  /** The guess limit was reached: the vault erased the key; only the 64-digit key can decrypt. */
  KeyErased = 21,
  /** The relay or the vault is unreachable, slow or failing; retrying later is safe. */
  Unavailable = 22,
  /** Password backups are not enabled for this account (nothing to recover, change or disable). */
  NotEnabled = 23,
  /** Not logged in, or the relay refused this device's credentials. */
  NotAuthenticated = 24,
  /** Too many attempts for now; the message says when to retry. */
  RateLimited = 25,
}

const exitForClient: Record<CofferClientErrorCode, ExitCode> = {
  'wrong-password': ExitCode.WrongPassword,
  locked: ExitCode.KeyErased,
  'not-registered': ExitCode.NotEnabled,
  'already-registered': ExitCode.Failure,
  'rate-limited': ExitCode.RateLimited,
  unavailable: ExitCode.Unavailable,
  'invalid-credentials': ExitCode.NotAuthenticated,
  'not-logged-in': ExitCode.NotAuthenticated,
  'weak-password': ExitCode.Usage,
  'no-backup-key': ExitCode.Usage,
  stale: ExitCode.Failure,
  superseded: ExitCode.Failure,
  'proof-required': ExitCode.Usage,
  protocol: ExitCode.Failure,
  'bad-config': ExitCode.Usage,
};

const exitFor: Record<CofferErrorCode, ExitCode> = {
  'invalid-key': ExitCode.BadKey,
  'wrong-key': ExitCode.BadKey,
  'not-a-repository': ExitCode.NoRepository,
  'repository-exists': ExitCode.Failure,
  'unsupported-version': ExitCode.Failure,
  corrupt: ExitCode.Corrupt,
  'missing-object': ExitCode.Corrupt,
  storage: ExitCode.Storage,
  locked: ExitCode.Locked,
  'not-found': ExitCode.Failure,
  exists: ExitCode.Failure,
  'invalid-argument': ExitCode.Usage,
  'needs-repair': ExitCode.Corrupt,
  'nothing-read': ExitCode.Failure,
};

export class UsageError extends Error {}

export interface Io {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  env: NodeJS.ProcessEnv;
}

/**
 * @coffer/client's error class, once client.ts has loaded that package (a client error
 * can't exist before: nothing else in the CLI loads it).
 */
let clientErrorClass: typeof CofferClientError | undefined;
export function knowClientErrors(cls: typeof CofferClientError): void {
  clientErrorClass = cls;
}

export function errorLine(e: unknown): { line: string; code: ExitCode } {
  if (e instanceof UsageError) return { line: e.message, code: ExitCode.Usage };
  if (e instanceof CofferError) return { line: e.message, code: exitFor[e.code] };
  if (clientErrorClass !== undefined && e instanceof clientErrorClass) return { line: e.message, code: exitForClient[e.code] };
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOSPC') return { line: 'no space left on device', code: ExitCode.Storage };
  // A system call's failure that no command turned into a message of its own (a file
  // system gone read-only, a permission): one line with the call and the path, not a
  // stack trace; COFFER_DEBUG=1 shows the stack.
  if (typeof err?.code === 'string' && /^E[A-Z0-9]+$/.test(err.code) && typeof err.syscall === 'string' && process.env.COFFER_DEBUG !== '1') {
    return { line: err.message, code: ExitCode.Storage };
  }
  return { line: `internal error: ${err?.stack ?? String(e)}`, code: ExitCode.Failure };
}

export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--:--';
  s = Math.round(s);
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

/** A one-line progress bar on a terminal's stderr: bytes, files, speed, ETA. */
export class ProgressBar {
  readonly #io: Io;
  readonly #enabled: boolean;
  readonly #start = Date.now();
  #drawn = false;
  #lastStatus = 0;

  constructor(io: Io, enabled: boolean) {
    this.#io = io;
    this.#enabled = enabled && io.stderr.isTTY === true;
  }

  /** Whether anything is drawn (a terminal, not --quiet or --json): else progress need not be computed. */
  get enabled(): boolean {
    return this.#enabled;
  }

  update(bytes: number, totalBytes: number | undefined, files: number, totalFiles: number | undefined): void {
    if (!this.#enabled) return;
    const secs = (Date.now() - this.#start) / 1000;
    const speed = secs > 0 ? bytes / secs : 0;
    const width = 24;
    let bar = '';
    let pct = '';
    let eta = '';
    if (totalBytes && totalBytes > 0) {
      const f = Math.min(1, bytes / totalBytes);
      const full = Math.round(f * width);
      bar = `[${'='.repeat(Math.max(0, full - 1))}${full > 0 ? '>' : ''}${' '.repeat(width - full)}] `;
      pct = `${(f * 100).toFixed(0).padStart(3)}% `;
      eta = ` ETA ${fmtDuration(speed > 0 ? (totalBytes - bytes) / speed : NaN)}`;
    }
    const filesPart = totalFiles !== undefined ? `${files}/${totalFiles} files` : `${files} files`;
    const total = totalBytes !== undefined ? ` / ${fmtBytes(totalBytes)}` : '';
    const line = `${bar}${pct}${fmtBytes(bytes)}${total}  ${filesPart}  ${fmtBytes(speed)}/s${eta}`;
    const cols = this.#io.stderr.columns ?? 100;
    this.#io.stderr.write(`\r${line.slice(0, cols - 1).padEnd(Math.min(cols - 1, line.length + 2))}`);
    this.#drawn = true;
  }

  /** A progress line of counts for work measured in steps, not bytes: `prune: repacking 3/10`. */
  status(text: string, done: number, total: number): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (done !== 0 && done !== total && now - this.#lastStatus < 100) return;
    this.#lastStatus = now;
    const line = `${text} ${done}/${total}`;
    const cols = this.#io.stderr.columns ?? 100;
    this.#io.stderr.write(`\r${line.slice(0, cols - 1).padEnd(Math.min(cols - 1, line.length + 2))}`);
    this.#drawn = true;
  }

  done(): void {
    if (this.#drawn) this.#io.stderr.write('\r\x1b[K');
    this.#drawn = false;
  }
}
