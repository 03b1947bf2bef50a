/**
 * A profile: everything one device keeps locally, in one directory holding one JSON
 * file (`profile.json`, mode 0600; the directory 0700). Two profiles on one machine act
 * as two devices. Node only.
 *
 * Location: `--profile` / `COFFER_PROFILE`; a value with a `/` (or starting with `.`)
 * is a directory path, any other value a name under `$XDG_CONFIG_HOME/coffer/` (default
 * `~/.config/coffer/`); with neither, the profile named `default`.
 */
import { promises as fs } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Secret } from '@coffer/protocol/core';
import { CofferClientError } from './errors.js';

export const PROFILE_FILE = 'profile.json';
export const PROFILE_VERSION = 1;

/** How this device keeps K: not at all, in the vault behind a password, or as the 64-digit key only. */
export type KeyMode = 'off' | 'password' | 'key';

export interface ProfileState {
  version: typeof PROFILE_VERSION;
  /** The relay's base URL. */
  server?: string;
  /** The account ID as the vault and blob store see it (`local:…` or `app:…`). */
  account?: string;
  /** Built-in accounts: the device key's PKCS#8 PEM. Absent in app-token (JWT) mode. */
  deviceKey?: string;
  /** The current bearer token (a session token or an app JWT) and its expiry (ms). */
  token?: string;
  tokenExpiresAt?: number;
  /** The pinned fleet key bundle JSON (from --fleet-bundle or fetched once from the relay). */
  fleetBundle?: string;
  /**
   * Where `fleetBundle` came from: `configured` (--fleet-bundle / COFFER_FLEET_BUNDLE /
   * the SDK option — a source the user trusts) or `fetched-unverified` (the relay's
   * GET /v1/fleet-bundle). Absent (older profiles) counts as `fetched-unverified`.
   * Only a configured bundle may be used to register a password.
   */
  fleetBundleSource?: 'configured' | 'fetched-unverified';
  mode: KeyMode;
  /**
   * Built-in accounts with an account password: a local scrypt verifier of it
   * (`scrypt$N$r$p$salt$hash`), kept so the client can refuse a vault password equal to
   * the account password without sending the vault password anywhere. Set when this
   * device created the account, signed in with the password, or set it.
   */
  accountPasswordCheck?: string;
  /** K as 64 hex digits, once enabled or recovered on this device. */
  backupKey?: string;
}

export function profileDir(given: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const v = given ?? env.COFFER_PROFILE;
  const base = env.XDG_CONFIG_HOME ? join(env.XDG_CONFIG_HOME, 'coffer') : join(env.HOME ?? homedir(), '.config', 'coffer');
  if (!v) return join(base, 'default');
  if (v.includes('/') || v.startsWith('.')) return resolve(v);
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(v)) throw new CofferClientError('bad-config', `profile: a name is letters, digits, - and _ (or give a directory path with a /), got "${v}"`);
  return join(base, v);
}

/** The profile file, read and written whole. Secrets in it are never logged. */
export class Profile {
  readonly dir: string;
  #state: ProfileState;

  private constructor(dir: string, state: ProfileState) {
    this.dir = dir;
    this.#state = state;
  }

  get path(): string {
    return join(this.dir, PROFILE_FILE);
  }

  /** Opens the profile at `dir`; an absent one is empty (nothing is written until save). */
  static async open(dir: string): Promise<Profile> {
    let text: string;
    try {
      text = await fs.readFile(join(dir, PROFILE_FILE), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Profile(dir, { version: PROFILE_VERSION, mode: 'off' });
      throw new CofferClientError('bad-config', `cannot read profile ${join(dir, PROFILE_FILE)}: ${(e as Error).message}`);
    }
    let state: ProfileState;
    try {
      state = JSON.parse(text) as ProfileState;
    } catch {
      throw new CofferClientError('bad-config', `profile ${join(dir, PROFILE_FILE)} is not JSON`);
    }
    if (state?.version !== PROFILE_VERSION) throw new CofferClientError('bad-config', `profile ${join(dir, PROFILE_FILE)}: unknown version ${String(state?.version)}`);
    state.mode ??= 'off';
    return new Profile(dir, state);
  }

  get state(): Readonly<ProfileState> {
    return this.#state;
  }

  /** Updates fields (undefined removes one) and writes the file atomically, mode 0600. */
  async update(changes: Partial<ProfileState>): Promise<void> {
    const next: ProfileState = { ...this.#state, ...changes };
    for (const [k, v] of Object.entries(next)) if (v === undefined) delete (next as unknown as Record<string, unknown>)[k];
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = join(this.dir, `.${PROFILE_FILE}.${randomBytes(6).toString('hex')}`);
    try {
      await fs.writeFile(tmp, JSON.stringify(next, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
      await fs.rename(tmp, this.path);
    } catch (e) {
      await fs.unlink(tmp).catch(() => {});
      throw new CofferClientError('bad-config', `cannot write profile ${this.path}: ${(e as Error).message}`);
    }
    this.#state = next;
  }

  backupKeyBytes(): Secret<Uint8Array> | undefined {
    const hex = this.#state.backupKey;
    return hex ? new Secret(new Uint8Array(Buffer.from(hex, 'hex'))) : undefined;
  }

  toString(): string {
    return `Profile(${this.dir})`;
  }
  toJSON(): { dir: string } {
    return { dir: this.dir };
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}
