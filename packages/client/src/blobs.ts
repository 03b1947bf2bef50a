/**
 * `@coffer/client/blobs`: the relay's blob API as backup storage, and the backup key this
 * device holds, for a profile, without CofferClient. A `coffer backup --repo coffer:`
 * needs nothing else: no vault flows, no HPKE, no OPAQUE (issue 13: the whole SDK and
 * protocol in the old generation kept V8 at its first marking threshold, so the
 * backup ran a full collection every few packs). Node only.
 *
 * The backend signs in again with the profile's device key when the relay answers 401,
 * exactly as CofferClient's does (relay-session.ts is both).
 */
import { BackupKey } from '@coffer/backup/key';
import { RelayBlobBackend } from './blob-backend.js';
import type { Profile } from './profile.js';
import { openProfile, profileAccount, profileRelay, profileServer, type RelayConnectionOptions } from './relay-session.js';

export { CofferClientError } from './errors.js';
export { profileDir } from './profile.js';
export { RelayBlobBackend } from './blob-backend.js';
export type { RelayConnectionOptions } from './relay-session.js';

/** The account's blob namespace on the relay, as a backup StorageBackend. */
export function profileBlobBackend(profile: Profile, relay: ReturnType<typeof profileRelay>): RelayBlobBackend {
  profileAccount(profile); // must be logged in
  return new RelayBlobBackend(relay, { location: `coffer:${profileServer(profile)}` });
}

/** K held in `profile` (from `coffer vault enable` / `recover`), if any. */
export function profileBackupKey(profile: Profile): BackupKey | undefined {
  const k = profile.backupKeyBytes();
  return k ? BackupKey.fromBytes(k.expose()) : undefined;
}

/** One profile's blob storage and backup key. */
export class RelayBlobs {
  readonly profile: Profile;
  readonly #o: RelayConnectionOptions;

  private constructor(profile: Profile, options: RelayConnectionOptions) {
    this.profile = profile;
    this.#o = options;
  }

  /** Opens the profile in `profileDir` (a given `server` is saved over the profile's, as CofferClient.open does). */
  static async open(profileDir: string, options: RelayConnectionOptions = {}): Promise<RelayBlobs> {
    return new RelayBlobs(await openProfile(profileDir, options), options);
  }

  /** K on this device, if enabled or recovered here. */
  backupKey(): BackupKey | undefined {
    return profileBackupKey(this.profile);
  }

  /** The account's blob namespace; throws when the profile has no server or is not logged in. */
  backend(): RelayBlobBackend {
    profileAccount(this.profile);
    return profileBlobBackend(this.profile, profileRelay(this.profile, this.#o));
  }
}
