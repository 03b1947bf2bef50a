/**
 * What every process that reaches the relay does with a profile, in one place: the
 * server it names (a given one saved over it), the account it is signed in to, the
 * RelayHttp that sends its token, and a sign-in with its device key (also the refresh
 * of an expired token). CofferClient is built on these, and so is the slim blob path
 * (blobs.ts), which loads none of the vault protocol. Node only.
 */
import { Secret } from '@coffer/protocol/core';
import { DeviceKey } from './device-key.js';
import { CofferClientError } from './errors.js';
import { nodeUploadTransport } from './node-transport.js';
import { Profile } from './profile.js';
import { RelayHttp } from './relay-http.js';

export const LOCAL_PREFIX = 'local:';

/** How the relay is reached (CofferClientOptions has these too). */
export interface RelayConnectionOptions {
  /** The relay URL; overrides (and is saved over) the profile's. */
  readonly server?: string;
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
  /** Allow a plain `http://` relay off loopback (clear-text passwords and tokens); refused otherwise. */
  readonly insecureHttp?: boolean;
}

/** Opens the profile in `dir`; a given server that differs from the profile's is checked and saved. */
export async function openProfile(dir: string, options: RelayConnectionOptions): Promise<Profile> {
  const profile = await Profile.open(dir);
  if (options.server && options.server !== profile.state.server) {
    await profile.update({ server: new RelayHttp({ server: options.server, ...(options.insecureHttp ? { insecure: true } : {}) }).server });
  }
  return profile;
}

/** The profile's relay URL. */
export function profileServer(profile: Profile): string {
  const s = profile.state.server;
  if (!s) throw new CofferClientError('bad-config', 'no server given: use --server URL or set COFFER_SERVER');
  return s;
}

/** The account as the vault and blob store see it (`local:…` or `app:…`). */
export function profileAccount(profile: Profile): string {
  const a = profile.state.account;
  if (!a) throw new CofferClientError('not-logged-in', 'not logged in: run `coffer account create` or `coffer login` first');
  return a;
}

/**
 * The RelayHttp of `profile`: it sends the profile's current token, and on a 401 signs in
 * again with the profile's device key (when it has one) and tries once more.
 */
export function profileRelay(profile: Profile, options: RelayConnectionOptions): RelayHttp {
  const relay: RelayHttp = new RelayHttp({
    server: profileServer(profile),
    token: () => profile.state.token,
    refreshToken: async () => {
      if (!profile.state.deviceKey) return false;
      await loginWithDeviceKey(profile, () => relay);
      return true;
    },
    ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
    // Uploads over node:http (few large writes) unless the caller brought its own fetch.
    ...(options.fetch ? { fetch: options.fetch } : { uploads: nodeUploadTransport() }),
    ...(options.insecureHttp ? { insecure: true } : {}),
  });
  return relay;
}

/**
 * Opens a session with the profile's device key (challenge, signature, token) and saves
 * the token (`relay` is asked for once the key and account are checked). A different `account` than the profile's needs this profile's device key to
 * be one of that account's keys.
 */
export async function loginWithDeviceKey(profile: Profile, relay: () => RelayHttp, account?: string): Promise<void> {
  const pem = profile.state.deviceKey;
  if (!pem) throw new CofferClientError('not-logged-in', 'this profile has no device key: run `coffer account create`, or log in with an app token (--token-file)');
  const target = account ? (account.startsWith(LOCAL_PREFIX) ? account : LOCAL_PREFIX + account) : profileAccount(profile);
  if (!target.startsWith(LOCAL_PREFIX)) throw new CofferClientError('bad-config', `account ${target} is not a built-in account: log in with an app token`);
  const key = DeviceKey.fromPem(new Secret(pem));
  const s = await relay().login(target.slice(LOCAL_PREFIX.length), (m) => key.sign(m));
  await profile.update({ account: target, token: s.token, tokenExpiresAt: s.expiresAt });
}
