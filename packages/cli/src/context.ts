/** Where the repository and the key come from: flags first, then the environment. */
import { appendFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
// The engine's modules one by one, not the @coffer/backup barrel: every command loads
// these, and the barrel would load the whole engine (issue 13). S3 is loaded for s3: only.
import { CofferError } from '@coffer/backup/errors';
import { BackupKey } from '@coffer/backup/key';
import { LocalBackend } from '@coffer/backup/storage/local';
import { Repository } from '@coffer/backup/repository';
import type * as S3Module from '@coffer/backup/storage/s3';
import type { S3Backend, S3Credentials } from '@coffer/backup/storage/s3';
import type { StorageBackend } from '@coffer/backup';
import type { CofferClient } from '@coffer/client';
import type { RelayBlobs } from '@coffer/client/blobs';
import { loadBlobs, loadClient } from './client.js';
import { tuneHeapForRelayBackup } from './heap.js';
import { UsageError, type Io } from './tui.js';

export interface GlobalFlags {
  repo?: string;
  'key-file'?: string;
  json?: boolean;
  quiet?: boolean;
  profile?: string;
  server?: string;
  'fleet-bundle'?: string;
  insecure?: boolean;
}

/**
 * `--repo coffer:` — the relay's blob API for the profile's logged-in account. The
 * relay is the profile's (set by `coffer account create` / `coffer login --server`).
 */
export const RELAY_REPOSITORY = 'coffer:';

export function isRelayRepository(location: string): boolean {
  return location === RELAY_REPOSITORY;
}

/**
 * The profile's client (--profile / COFFER_PROFILE; --server / COFFER_SERVER;
 * --fleet-bundle / COFFER_FLEET_BUNDLE). COFFER_INSECURE_FAST_KSF_FOR_TESTING=1 makes new
 * registrations use a cheap KSF (tests only; the vault refuses it unless told otherwise).
 */
export async function openClient(flags: GlobalFlags, io: Io): Promise<CofferClient> {
  const bundleFile = flags['fleet-bundle'] ?? io.env.COFFER_FLEET_BUNDLE;
  let fleetBundle: string | undefined;
  if (bundleFile) {
    try {
      fleetBundle = await readFile(bundleFile, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read fleet bundle ${bundleFile}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
  }
  const fast = io.env.COFFER_INSECURE_FAST_KSF_FOR_TESTING === '1';
  if (fast) io.stderr.write('coffer: warning: COFFER_INSECURE_FAST_KSF_FOR_TESTING is set: new passwords get a cheap key-stretching function (tests only)\n');
  const { server, insecureHttp } = connection(flags, io);
  // TEST ONLY: the blindness test needs the OPAQUE export and session keys to look for them.
  const dump = io.env.COFFER_INSECURE_DUMP_SECRETS_FOR_TESTING;
  if (dump) io.stderr.write('coffer: warning: COFFER_INSECURE_DUMP_SECRETS_FOR_TESTING is set: protocol secrets are written to a file (tests only)\n');
  // Loaded here, not at start: only the commands that reach the relay or vault need it.
  const { CofferClient, profileDir } = await loadClient();
  const ksf = fast ? (await import('@coffer/protocol')).INSECURE_FAST_KSF_FOR_TESTING : undefined;
  return CofferClient.open(profileDir(flags.profile, io.env), {
    ...(dump
      ? { onSecretsForTesting: (s: { exportKey: Uint8Array; sessionKey?: Uint8Array }) => appendFileSync(dump, JSON.stringify({ exportKey: Buffer.from(s.exportKey).toString('hex'), sessionKey: s.sessionKey ? Buffer.from(s.sessionKey).toString('hex') : null }) + '\n', { mode: 0o600 }) }
      : {}),
    ...(server ? { server } : {}),
    ...(insecureHttp ? { insecureHttp } : {}),
    ...(fleetBundle !== undefined ? { fleetBundle } : {}),
    ...(ksf ? { ksf } : {}),
  });
}

/** The relay URL given (--server / COFFER_SERVER) and whether plain http:// off this machine is allowed (warned about). */
function connection(flags: GlobalFlags, io: Io): { server: string | undefined; insecureHttp: boolean } {
  const server = flags.server ?? (io.env.COFFER_SERVER || undefined);
  const insecureHttp = flags.insecure === true || io.env.COFFER_INSECURE_HTTP === '1';
  if (insecureHttp) io.stderr.write('coffer: warning: --insecure: a plain http:// server off this machine is allowed: account passwords and tokens cross the network in clear text\n');
  return { server, insecureHttp };
}

/**
 * The profile's blob storage and backup key, for `--repo coffer:` (and a key from an
 * explicitly chosen profile): @coffer/client/blobs, not CofferClient, which would load
 * the vault protocol a backup never runs (issue 13). Same profile, same server override,
 * same sign-in with the device key on an expired token as openClient's.
 */
export async function openRelayBlobs(flags: GlobalFlags, io: Io): Promise<RelayBlobs> {
  const { server, insecureHttp } = connection(flags, io);
  const { RelayBlobs, profileDir } = await loadBlobs();
  return RelayBlobs.open(profileDir(flags.profile, io.env), { ...(server ? { server } : {}), ...(insecureHttp ? { insecureHttp } : {}) });
}

export function repoLocation(flags: GlobalFlags, io: Io): string {
  const loc = flags.repo ?? io.env.COFFER_REPOSITORY;
  if (!loc) throw new UsageError('no repository given: use --repo DIR or set COFFER_REPOSITORY');
  return checkArgPath(flags.repo !== undefined ? '--repo' : 'COFFER_REPOSITORY', loc);
}

/**
 * An argument whose bytes were not UTF-8: Node decodes arguments as UTF-8, so they reach
 * coffer as U+FFFD. A path would name another directory than the one meant (made or
 * written there), a pattern would silently match nothing (an --exclude that excludes
 * nothing). Refused, with `hint` (a name really holding U+FFFD too: rare, and the
 * refusal says why).
 */
function refuseReplacedBytes(what: string, value: string, kind: string, hint: string): string {
  if (value.includes('\ufffd')) throw new UsageError(`${what} ${JSON.stringify(value)}: the ${kind} holds bytes that are not UTF-8 (shown as U+FFFD), which coffer cannot receive as given; ${hint}`);
  return value;
}

/** A path argument (--target, --repo) whose bytes are not UTF-8: refused (refuseReplacedBytes). */
export function checkArgPath(what: string, path: string): string {
  return refuseReplacedBytes(what, path, 'path', 'rename the directory or use one whose name is UTF-8');
}

/** A pattern argument (--exclude, --include, find's) whose bytes are not UTF-8: refused, saying how such a name is matched. */
export function checkArgPattern(what: string, pattern: string): string {
  return refuseReplacedBytes(what, pattern, 'pattern', 'a name that is not UTF-8 is matched as Latin-1, one character per byte (write \\xe9 as é, or use ?)');
}

export async function backendFor(location: string, flags: GlobalFlags, io: Io): Promise<StorageBackend> {
  if (isRelayRepository(location)) {
    const blobs = await openRelayBlobs(flags, io);
    const backend = blobs.backend();
    tuneHeapForRelayBackup(io.env);
    return backend;
  }
  if (location.startsWith('s3:')) return s3Backend(location, flags, io, await import('@coffer/backup/storage/s3'));
  // Any other `scheme:` prefix (sftp:host:/path, https://…) is a backend this version
  // does not have: refuse rather than make a local directory named after it. (A
  // directory whose name has a colon can be given as ./name.)
  const scheme = /^([a-z][a-z0-9+.-]+):/i.exec(location);
  if (scheme) {
    const dirHint = location.includes('//') ? '' : ` (a directory whose name has a colon: write ./${location})`;
    throw new UsageError(`repository '${location}': unknown storage '${scheme[1]}:'; this version supports local directories, coffer: (the relay's blob API) and s3:https://host/bucket/prefix${dirHint}`);
  }
  return new LocalBackend(location);
}

/**
 * `--repo s3:https://host[:port]/bucket/prefix`, with the standard AWS variables:
 * AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), or AWS_PROFILE;
 * AWS_REGION / AWS_DEFAULT_REGION (default us-east-1). Plain http:// only to this
 * machine, or with --insecure (objects are sealed either way, but the request
 * signatures, names and sizes cross the network in the clear).
 */
function s3Backend(location: string, flags: GlobalFlags, io: Io, { S3Backend, isLoopbackEndpoint, parseS3Location }: typeof S3Module): S3Backend {
  let where;
  try {
    where = parseS3Location(location.slice(3));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (where.endpoint.startsWith('http:') && !isLoopbackEndpoint(where.endpoint)) {
    if (flags.insecure !== true && io.env.COFFER_INSECURE_HTTP !== '1') {
      throw new UsageError(`repository '${location}': plain http:// to another machine: use https://, or --insecure to accept it (request signatures, object names and sizes cross the network in clear text)`);
    }
    io.stderr.write('coffer: warning: --insecure: the S3 endpoint is plain http://: request signatures, object names and sizes cross the network in clear text\n');
  }
  const env = io.env;
  const id = env.AWS_ACCESS_KEY_ID || undefined;
  const secret = env.AWS_SECRET_ACCESS_KEY || undefined;
  if ((id === undefined) !== (secret === undefined)) {
    throw new UsageError(`${id ? 'AWS_SECRET_ACCESS_KEY' : 'AWS_ACCESS_KEY_ID'} is not set: S3 credentials need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`);
  }
  const credentials: S3Credentials | undefined = id && secret ? { accessKeyId: id, secretAccessKey: secret, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) } : undefined;
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined;
  // The SDK's notice that its 2027 releases need Node 22 would be printed on every
  // command: it says nothing about this run (tui.ts: stderr is for diagnostics).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  return new S3Backend(where, {
    ...(credentials ? { credentials } : {}),
    ...(region ? { region } : {}),
    ...(env.AWS_PROFILE ? { profile: env.AWS_PROFILE } : {}),
  });
}

/** The key from --key-file or COFFER_KEY, or undefined when neither is set. */
export async function loadKeyIfGiven(flags: GlobalFlags, io: Io): Promise<BackupKey | undefined> {
  if (flags['key-file'] !== undefined) return readKeyFile(flags['key-file'], io);
  const env = io.env.COFFER_KEY;
  if (env !== undefined && env !== '') return parseKey(env, 'COFFER_KEY');
  // The relay's repository, or an explicitly chosen profile: the key this device got
  // from `coffer vault enable` / `coffer vault recover`.
  const location = flags.repo ?? io.env.COFFER_REPOSITORY;
  if ((location !== undefined && isRelayRepository(location)) || flags.profile !== undefined) {
    return (await openRelayBlobs(flags, io)).backupKey();
  }
  return undefined;
}

/** A key file: the 64-digit key; warns when other users can read it. */
async function readKeyFile(file: string, io: Io): Promise<BackupKey> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CofferError('invalid-argument', `cannot read key file ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message}`);
  }
  const key = parseKey(text, `key file ${file}`);
  const mode = (await stat(file)).mode;
  if ((mode & 0o077) !== 0) {
    io.stderr.write(`coffer: warning: key file ${file} can be read by other users (mode ${(mode & 0o777).toString(8)}): anyone who reads it can decrypt your backups; run chmod 600 on it\n`);
  }
  return key;
}

function parseKey(text: string, where: string): BackupKey {
  try {
    return BackupKey.parse(text);
  } catch (e) {
    if (e instanceof CofferError) throw new CofferError('invalid-key', `${where}: ${e.message}`);
    throw e;
  }
}

export async function loadKey(flags: GlobalFlags, io: Io): Promise<BackupKey> {
  const key = await loadKeyIfGiven(flags, io);
  if (!key) throw new UsageError('no key given: use --key-file FILE or set COFFER_KEY to the 64-digit key (or, with --repo coffer:, run `coffer vault enable` or `coffer vault recover` first)');
  return key;
}

export async function openRepo(flags: GlobalFlags, io: Io): Promise<Repository> {
  const location = repoLocation(flags, io);
  const key = await loadKey(flags, io);
  const repo = await Repository.open(await backendFor(location, flags, io), key);
  // Objects that can't be read are skipped, and the person is told.
  repo.onWarning = (m) => io.stderr.write(`coffer: warning: ${m}\n`);
  return repo;
}

export interface SourceFlags {
  'from-repo'?: string;
  'from-key-file'?: string;
}

/**
 * The repository `coffer copy` reads from: --from-repo (or COFFER_FROM_REPOSITORY) with
 * --from-key-file (or COFFER_FROM_KEY); a coffer: source takes the profile's key.
 */
export async function openSourceRepo(flags: GlobalFlags & SourceFlags, io: Io): Promise<Repository> {
  const location = flags['from-repo'] ?? (io.env.COFFER_FROM_REPOSITORY || undefined);
  if (!location) throw new UsageError('no source repository given: use --from-repo LOCATION or set COFFER_FROM_REPOSITORY');
  let key: BackupKey | undefined;
  if (flags['from-key-file'] !== undefined) key = await readKeyFile(flags['from-key-file'], io);
  else if (io.env.COFFER_FROM_KEY) key = parseKey(io.env.COFFER_FROM_KEY, 'COFFER_FROM_KEY');
  else if (isRelayRepository(location)) key = (await openRelayBlobs(flags, io)).backupKey();
  if (!key) throw new UsageError('no key for the source repository: use --from-key-file FILE or set COFFER_FROM_KEY');
  const repo = await Repository.open(await backendFor(location, flags, io), key);
  repo.onWarning = (m) => io.stderr.write(`coffer: warning: source: ${m}\n`);
  return repo;
}
