/**
 * CofferClient: one device's view of Coffer — its profile (account, session, pinned
 * fleet key, backup key K), the relay, and password or key mode. Node only (profile
 * files, device key); the password flows themselves are KeyVault's, which is
 * isomorphic.
 *
 * Modes (ProfileState.mode):
 * - `off`: no vault record (never enabled, or disabled). K may still be on this device.
 * - `password`: K is in the vault behind the password; `recover(password)` gets it back.
 * - `key`: the user keeps K as 64 digits; there is no vault record.
 */
import { BackupKey } from '@coffer/backup';
import { bundleToJson, parseFleetKeyBundle, ProtocolError, Secret, toBase64Url, type FleetKey, type KsfParams } from '@coffer/protocol';
import type { RelayBlobBackend } from './blob-backend.js';
import { profileBackupKey, profileBlobBackend } from './blobs.js';
import { DeviceKey } from './device-key.js';
import { accountPasswordVerifier, checkNotAccountPassword } from './account-password-check.js';
import { CofferClientError, LockedError, NotRegisteredError, UntrustedFleetBundleError } from './errors.js';
import { KeyVault, type VaultStatus } from './key-vault.js';
import { checkPassword } from './password-policy.js';
import type { Profile, KeyMode } from './profile.js';
import type { RelayHttp, AccountProof } from './relay-http.js';
import { LOCAL_PREFIX, loginWithDeviceKey, openProfile, profileAccount, profileRelay, profileServer } from './relay-session.js';

export interface CofferClientOptions {
  /** The relay URL; overrides (and is saved over) the profile's. */
  readonly server?: string;
  /**
   * The fleet key bundle JSON to pin, from a source the user trusts (e.g. `coffer-vault
   * bundle`'s output). Without it the profile's pinned bundle is used, or the relay's
   * `GET /v1/fleet-bundle` is fetched and pinned as `fetched-unverified`: good enough
   * for `status()` only. Every flow that runs OPAQUE — `enablePassword()`,
   * `changePassword()`, `recover()`, and `disable()` with a password — refuses with
   * UntrustedFleetBundleError: with a relay-chosen key the relay plays the vault;
   * registering would let it guess the password offline, and a login would tell it,
   * uncounted, whether the password equals its guess (issue 8; docs/threat-model.md).
   * A configured bundle that differs from the pinned one is refused (bad-config).
   */
  readonly fleetBundle?: string;
  /** KSF for new registrations (default: the protocol's DEFAULT_KSF). */
  readonly ksf?: KsfParams;
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
  /** Allow a plain `http://` relay off loopback (clear-text passwords and tokens); refused otherwise. */
  readonly insecureHttp?: boolean;
  /**
   * TEST ONLY: receives the OPAQUE export key and session key of every flow, so the
   * blindness test can look for them in captured traffic. Never set outside tests.
   */
  readonly onSecretsForTesting?: (secrets: { readonly exportKey: Uint8Array; readonly sessionKey?: Uint8Array }) => void;
}

export interface ClientStatus {
  readonly profile: string;
  readonly server: string | null;
  readonly account: string | null;
  readonly mode: KeyMode;
  /** Whether this device holds K. */
  readonly hasBackupKey: boolean;
  /** K's key ID (hex), which reveals nothing about K. */
  readonly keyId: string | null;
  /** The vault's view, when logged in (null otherwise). */
  readonly vault: VaultStatus | null;
}

const APP_PREFIX = 'app:';

export class CofferClient {
  readonly profile: Profile;
  readonly #o: CofferClientOptions;
  #relay: RelayHttp | undefined;
  #fleetKey: FleetKey | undefined;

  private constructor(profile: Profile, options: CofferClientOptions) {
    this.profile = profile;
    this.#o = options;
  }

  /** Opens the profile in `profileDir` (created on first save). */
  static async open(profileDir: string, options: CofferClientOptions = {}): Promise<CofferClient> {
    return new CofferClient(await openProfile(profileDir, options), options);
  }

  get server(): string {
    return profileServer(this.profile);
  }

  /** The account as the vault and blob store see it (`local:…` or `app:…`). */
  get account(): string {
    return profileAccount(this.profile);
  }

  relay(): RelayHttp {
    this.#relay ??= profileRelay(this.profile, this.#o);
    return this.#relay;
  }

  // Accounts and sessions (spec/relay-api.md §1)

  /**
   * Creates a built-in account bound to a new device key and logs in. With `password`
   * (an **account password**, checked against the password rules; it must not be the
   * vault password) the account can also be signed in to from a new device with
   * `loginWithPassword` after this one is lost; without it, losing every device key
   * loses the account.
   * @returns the account ID (`local:…`)
   * @throws WeakPasswordError, RateLimitedError, UnavailableError
   */
  async createAccount(options: { password?: string | Secret<string> } = {}): Promise<string> {
    const pw = options.password !== undefined ? asSecret(options.password) : undefined;
    if (pw) checkPassword(pw.expose());
    const key = DeviceKey.generate();
    const id = await this.relay().createAccount(key.publicKey, pw?.expose());
    await this.profile.update({
      account: LOCAL_PREFIX + id,
      deviceKey: key.toPem().expose(),
      token: undefined,
      tokenExpiresAt: undefined,
      accountPasswordCheck: pw ? await accountPasswordVerifier(pw.expose()) : undefined,
    });
    await this.login();
    return this.account;
  }

  /**
   * Signs in to built-in account `account` with its account password — a new device
   * after the old one was lost — then registers a new device key for this profile, so
   * later logins (and token refreshes) use the key. The profile must not already hold a
   * device key of another account.
   * @throws InvalidCredentialsError (wrong password, unknown account, no account password), RateLimitedError, UnavailableError
   */
  async loginWithPassword(account: string, password: string | Secret<string>): Promise<string> {
    const target = account.startsWith(LOCAL_PREFIX) ? account : LOCAL_PREFIX + account;
    if (!/^local:[a-z0-9]{26}$/.test(target)) throw new CofferClientError('bad-config', `account: expected a 26-character built-in account ID, got "${account}"`);
    const s = this.profile.state;
    if (s.deviceKey && s.account && s.account !== target) throw new CofferClientError('bad-config', `this profile holds the device key of ${s.account}: use another profile for ${target}`);
    const pw = asSecret(password);
    const session = await this.relay().loginWithPassword(target.slice(LOCAL_PREFIX.length), pw.expose());
    await this.profile.update({ account: target, token: session.token, tokenExpiresAt: session.expiresAt, accountPasswordCheck: await accountPasswordVerifier(pw.expose()) });
    if (!this.profile.state.deviceKey) {
      // A session alone cannot add keys (spec §1): the password just proven goes along.
      const key = DeviceKey.generate();
      await this.relay().addDeviceKey(target.slice(LOCAL_PREFIX.length), key.publicKey, { currentPassword: pw.expose() });
      await this.profile.update({ deviceKey: key.toPem().expose() });
    }
    return this.account;
  }

  /**
   * Sets or changes the account password of the signed-in built-in account (checked
   * against the password rules; it must not be the vault password of this profile's
   * account, which this device cannot check — keep them different). A session alone is
   * not enough (spec/relay-api.md §1): the change is proven with `currentPassword` when
   * given, else with this profile's device key. The account's other sessions end.
   * @throws WeakPasswordError, InvalidCredentialsError (wrong current password / key), RateLimitedError
   */
  async setAccountPassword(password: string | Secret<string>, options: { currentPassword?: string | Secret<string>; revokeOtherDevices?: boolean } = {}): Promise<void> {
    if (!this.account.startsWith(LOCAL_PREFIX)) throw new CofferClientError('bad-config', 'account passwords belong to built-in accounts; this profile uses an app token');
    const pw = asSecret(password);
    checkPassword(pw.expose());
    const proof = this.#proof(options.currentPassword, 'changing the account password');
    await this.relay().setAccountPassword(this.account.slice(LOCAL_PREFIX.length), pw.expose(), proof, options.revokeOtherDevices ? { revokeOtherDevices: true } : {});
    await this.profile.update({ accountPasswordCheck: await accountPasswordVerifier(pw.expose()) });
  }

  #proof(currentPassword: string | Secret<string> | undefined, what: string): AccountProof {
    if (currentPassword !== undefined) return { currentPassword: asSecret(currentPassword).expose() };
    const pem = this.profile.state.deviceKey;
    if (!pem) throw new CofferClientError('not-logged-in', `${what} needs the current account password or this profile's device key`);
    const key = DeviceKey.fromPem(new Secret(pem));
    return { sign: (m) => key.sign(m) };
  }

  #localId(what: string): string {
    if (!this.account.startsWith(LOCAL_PREFIX)) throw new CofferClientError('bad-config', `${what} belong to built-in accounts; this profile uses an app token`);
    return this.account.slice(LOCAL_PREFIX.length);
  }

  /** The account's device keys (base64url public keys), marking this profile's. */
  async devices(): Promise<{ publicKey: string; createdAt: number; lastUsedAt: number | null; current: boolean }[]> {
    this.#localId('device keys');
    const { keys, current } = await this.relay().listDeviceKeys();
    const mine = this.profile.state.deviceKey ? toBase64Url(DeviceKey.fromPem(new Secret(this.profile.state.deviceKey)).publicKey) : current;
    return keys.map((k) => ({ ...k, current: k.publicKey === mine }));
  }

  /**
   * Removes a device key of the account (its sessions end, it can no longer sign in),
   * proven with this profile's device key or `currentPassword`. A unique prefix of the
   * key is enough.
   */
  async revokeDevice(publicKeyOrPrefix: string, options: { currentPassword?: string | Secret<string> } = {}): Promise<string> {
    const id = this.#localId('device keys');
    const keys = (await this.relay().listDeviceKeys()).keys.filter((k) => k.publicKey.startsWith(publicKeyOrPrefix));
    if (keys.length !== 1) throw new CofferClientError('bad-config', keys.length === 0 ? `no device key of this account starts with "${publicKeyOrPrefix}"` : `"${publicKeyOrPrefix}" matches ${keys.length} device keys: give more of it`);
    await this.relay().removeDeviceKey(id, keys[0]!.publicKey, this.#proof(options.currentPassword, 'removing a device key'));
    return keys[0]!.publicKey;
  }

  /** Ends every other session of the account (this one stays); how many ended. */
  async revokeOtherSessions(): Promise<number> {
    this.#localId('sessions');
    return this.relay().revokeOtherSessions();
  }

  /**
   * Opens a session with this profile's device key (challenge, signature, token). A
   * different `account` than the profile's needs this profile's device key to be one of
   * that account's keys.
   */
  async login(account?: string): Promise<void> {
    await loginWithDeviceKey(this.profile, () => this.relay(), account);
  }

  /**
   * App-token (JWT) mode: the app's own login issued `token`; its `sub` names the
   * account (`app:<sub>`). The relay verifies the token; the client only reads `sub`
   * and `exp` to know whose vault record it addresses.
   */
  async useAppToken(token: string): Promise<string> {
    const claims = jwtClaims(token);
    await this.profile.update({ account: APP_PREFIX + claims.sub, token, tokenExpiresAt: claims.exp !== undefined ? claims.exp * 1000 : undefined, deviceKey: undefined });
    return this.account;
  }

  /** Clears the session (keeps the device key and K). */
  async logout(): Promise<void> {
    await this.profile.update({ token: undefined, tokenExpiresAt: undefined });
  }

  // The fleet key

  async fleetKey(): Promise<FleetKey> {
    if (this.#fleetKey) return this.#fleetKey;
    const configured = this.#o.fleetBundle;
    const pinned = this.profile.state.fleetBundle;
    let json: string;
    if (configured !== undefined) {
      const canonical = bundleToJson(await parseBundle(configured));
      if (pinned !== undefined && bundleToJson(await parseBundle(pinned)) !== canonical) {
        throw new CofferClientError(
          'bad-config',
          `the configured fleet bundle differs from the one pinned in ${this.profile.path}` +
            (this.profile.state.fleetBundleSource === 'configured'
              ? ': the vault fleet\'s keys changed, or one of the two files is not the fleet\'s; check with the operator (`coffer-vault bundle`) before removing "fleetBundle" from the profile'
              : ' (which was fetched from the relay, unverified): the relay may have served a fake bundle; check with the operator (`coffer-vault bundle`) before removing "fleetBundle" from the profile'),
        );
      }
      if (pinned === undefined || this.profile.state.fleetBundleSource !== 'configured') await this.profile.update({ fleetBundle: configured, fleetBundleSource: 'configured' });
      json = configured;
    } else if (pinned !== undefined) {
      json = pinned;
    } else {
      json = await this.relay().fleetBundle();
      await parseBundle(json); // never pin garbage
      await this.profile.update({ fleetBundle: json, fleetBundleSource: 'fetched-unverified' });
    }
    this.#fleetKey = (await parseBundle(json)).keys[0]!;
    return this.#fleetKey;
  }

  /** Whether the pinned fleet bundle came from the user's configuration (not the relay). */
  get fleetBundleTrusted(): boolean {
    return this.profile.state.fleetBundle !== undefined && this.profile.state.fleetBundleSource === 'configured';
  }

  /**
   * Registration (enable, change password) hands the vault a new OPAQUE record: the
   * server holding the fleet key could then guess the password offline. So the fleet
   * key must come from the user's configuration, never from the relay.
   */
  async #requireTrustedFleetKey(): Promise<void> {
    await this.fleetKey();
    if (!this.fleetBundleTrusted) throw new UntrustedFleetBundleError();
  }

  async #vault(): Promise<KeyVault> {
    const relay = this.relay();
    return new KeyVault({
      fleetKey: await this.fleetKey(),
      account: this.account,
      transport: (bytes) => relay.vault(bytes),
      ...(this.#o.ksf ? { ksf: this.#o.ksf } : {}),
      ...(this.#o.onSecretsForTesting ? { onSecretsForTesting: this.#o.onSecretsForTesting } : {}),
    });
  }

  // The backup key

  /** K on this device, if enabled or recovered here. */
  backupKey(): BackupKey | undefined {
    return profileBackupKey(this.profile);
  }

  async #ensureBackupKey(): Promise<BackupKey> {
    const existing = this.backupKey();
    if (existing) return existing;
    const k = BackupKey.generate();
    // Saved before the vault sees it, so a crash after registration can't lose it.
    await this.profile.update({ backupKey: hexOf(k.exportBytes()) });
    return k;
  }

  /**
   * Password mode: registers `password` with the vault, protecting this device's K (made
   * now if the device has none). It must differ from the account password (checked on
   * the device against the profile's verifier; the relay never sees `password`).
   * Needs a configured fleet bundle (see CofferClientOptions.fleetBundle).
   * @throws UntrustedFleetBundleError, WeakPasswordError, CofferClientError('already-registered'), RateLimitedError, UnavailableError, InvalidCredentialsError
   */
  async enablePassword(password: string | Secret<string>, options: { guessLimit?: number } = {}): Promise<BackupKey> {
    const pw = asSecret(password);
    await checkNotAccountPassword(pw.expose(), this.profile.state.accountPasswordCheck);
    await this.#requireTrustedFleetKey();
    const vault = await this.#vault();
    const k = await this.#ensureBackupKey();
    await vault.enable(pw, new Secret(k.exportBytes()), options);
    await this.profile.update({ mode: 'password' });
    return k;
  }

  /**
   * Key mode: the user keeps K as 64 digits. Switching from password mode erases the
   * vault record (the password stops working), so show the digits to the user first.
   * @returns K as 64 digits
   */
  async enableKey(): Promise<string> {
    const k = await this.#ensureBackupKey();
    if (this.profile.state.mode === 'password') {
      try {
        await (await this.#vault()).remove({ backupKey: new Secret(k.exportBytes()) });
      } catch (e) {
        if (!CofferClientError.is(e, 'not-registered')) throw e;
      }
    }
    await this.profile.update({ mode: 'key' });
    return k.toDigits();
  }

  /**
   * K from the password (a new device after `login`); kept in the profile.
   * @throws WrongPasswordError{guessesRemaining}, LockedError, NotRegisteredError, RateLimitedError, UnavailableError
   */
  async recover(password: string | Secret<string>): Promise<BackupKey> {
    // A relay-served bundle would let the relay play the vault: run the login itself and
    // learn, per attempt, whether the password equals its guess, with nothing counted.
    await this.#requireTrustedFleetKey();
    const secret = await (await this.#vault()).recover(asSecret(password));
    const k = BackupKey.fromBytes(secret.expose());
    await this.profile.update({ backupKey: hexOf(secret.expose()), mode: 'password' });
    return k;
  }

  /**
   * New password, same K. A weak new password is refused before any guess is spent.
   * Needs a configured fleet bundle (see CofferClientOptions.fleetBundle).
   * @throws UntrustedFleetBundleError, WeakPasswordError, WrongPasswordError, LockedError, NotRegisteredError, …
   */
  async changePassword(oldPassword: string | Secret<string>, newPassword: string | Secret<string>): Promise<void> {
    checkPassword(asSecret(newPassword).expose());
    await checkNotAccountPassword(asSecret(newPassword).expose(), this.profile.state.accountPasswordCheck);
    await this.#requireTrustedFleetKey();
    const vault = await this.#vault();
    // The new record keeps the account's guess limit (0 would mean the deployment default).
    const before = await vault.status();
    if (before.state === 'locked') throw new LockedError();
    if (before.state === 'not-registered') throw new NotRegisteredError();
    const secret = await vault.changePassword(asSecret(oldPassword), asSecret(newPassword), { guessLimit: before.guessLimit });
    await this.profile.update({ backupKey: hexOf(secret.expose()), mode: 'password' });
  }

  /**
   * Turns password mode off: the vault erases the record. K stays on this device (its
   * backups stay readable here); `enableKey()` shows it, `enablePassword()` protects it
   * again.
   * The vault needs proof (spec §5.5): this device's K, or else `password` (a recovery,
   * which costs a guess only if the password is wrong).
   * @throws NotRegisteredError when the vault has no record (the profile is set to off anyway),
   *   CofferClientError('no-backup-key') when the device holds no K and no password was given
   */
  async disable(password?: string | Secret<string>): Promise<void> {
    const k = this.backupKey();
    if (!k && password === undefined) {
      throw new CofferClientError('no-backup-key', 'this device holds no backup key: give the backup password (the vault deletes a record only for its key or right after a recovery)');
    }
    if (!k) await this.#requireTrustedFleetKey();
    try {
      await (await this.#vault()).remove(k ? { backupKey: new Secret(k.exportBytes()) } : { password: asSecret(password!) });
    } catch (e) {
      if (e instanceof NotRegisteredError) await this.profile.update({ mode: 'off' });
      throw e;
    }
    await this.profile.update({ mode: 'off' });
  }

  /** Local state and, when logged in, the vault's view (`vault` null when not). */
  async status(): Promise<ClientStatus> {
    const s = this.profile.state;
    const k = this.backupKey();
    let vault: VaultStatus | null = null;
    if (s.account && s.token && s.server) vault = await (await this.#vault()).status(k ? new Secret(k.exportBytes()) : null);
    return {
      profile: this.profile.dir,
      server: s.server ?? null,
      account: s.account ?? null,
      mode: s.mode,
      hasBackupKey: k !== undefined,
      keyId: k ? hexOf(k.keyId()) : null,
      vault,
    };
  }

  /** The account's blob namespace on the relay, as a backup StorageBackend. */
  blobBackend(): RelayBlobBackend {
    void this.account; // must be logged in
    return profileBlobBackend(this.profile, this.relay());
  }

  toString(): string {
    return `CofferClient(${this.profile.dir})`;
  }
}

function asSecret(p: string | Secret<string>): Secret<string> {
  return typeof p === 'string' ? new Secret(p) : p;
}

function hexOf(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

async function parseBundle(json: string) {
  try {
    return await parseFleetKeyBundle(json);
  } catch (e) {
    if (e instanceof ProtocolError) throw new CofferClientError('bad-config', e.message, { cause: e });
    throw e;
  }
}

/** `sub` and `exp` of a JWT, unverified (the relay verifies it). */
function jwtClaims(token: string): { sub: string; exp?: number } {
  const parts = token.trim().split('.');
  let claims: { sub?: unknown; exp?: unknown } | undefined;
  try {
    if (parts.length === 3) claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { sub?: unknown; exp?: unknown };
  } catch {
    claims = undefined;
  }
  if (!claims || typeof claims.sub !== 'string' || claims.sub === '') throw new CofferClientError('bad-config', 'app token: not a JWT with a "sub" claim');
  return { sub: claims.sub, ...(typeof claims.exp === 'number' ? { exp: claims.exp } : {}) };
}
