import { readFile } from 'node:fs/promises';
import { openClient, type GlobalFlags } from '../context.js';
import { passwordAvailable, readPassword } from '../password.js';
import { UsageError, type Io } from '../tui.js';

export interface AccountFlags extends GlobalFlags {
  account?: string;
  'revoke-other-devices'?: boolean;
  sessions?: boolean;
  'token-file'?: string;
  'account-password-file'?: string;
}

const ACCOUNT_PASSWORD = { envName: 'COFFER_ACCOUNT_PASSWORD', flagName: '--account-password-file' } as const;

/**
 * `coffer account create`: a built-in account bound to this profile's new device key,
 * with an account password (asked twice on a terminal, or --account-password-file /
 * COFFER_ACCOUNT_PASSWORD) so a new device can sign in after this one is lost. Without
 * any source of a password (not a terminal, nothing given) the account gets none, with
 * a warning. The account ID goes to stdout.
 */
export async function accountCreate(flags: AccountFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  if (client.profile.state.account && client.profile.state.deviceKey) {
    throw new UsageError(`this profile already has account ${client.profile.state.account}: use another --profile for another account`);
  }
  void client.server;
  const src = { ...ACCOUNT_PASSWORD, file: flags['account-password-file'], prompt: 'new account password (to sign in on a new device; not your backup password)', confirm: true };
  const password = passwordAvailable(src, io) ? await readPassword(src, io) : undefined;
  const account = await client.createAccount(password ? { password } : {});
  if (flags.json) io.stdout.write(JSON.stringify({ account, server: client.server, profile: client.profile.dir, accountPassword: password !== undefined }) + '\n');
  else io.stdout.write(account + '\n');
  if (!flags.json && !flags.quiet) {
    io.stderr.write(`created account ${account} on ${client.server} and logged in (profile ${client.profile.dir})\n`);
    if (password) io.stderr.write('coffer: note: keep the account ID above with your account password: on a new device, `coffer login --account ID` asks for that password\n');
  }
  if (!password && !flags.quiet) io.stderr.write('coffer: warning: no account password (none given and no terminal): if this device is lost, the account is lost; set one with `coffer account password`\n');
  return 0;
}

/** `coffer account password`: set or change the account password (built-in accounts). */
export async function accountPassword(flags: AccountFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  void client.account;
  const pw = await readPassword({ ...ACCOUNT_PASSWORD, file: flags['account-password-file'], prompt: 'new account password', confirm: true }, io);
  const revokeOtherDevices = flags['revoke-other-devices'] === true;
  await client.setAccountPassword(pw, revokeOtherDevices ? { revokeOtherDevices } : {});
  if (flags.json) io.stdout.write(JSON.stringify({ account: client.account, accountPassword: true, revokedOtherDevices: revokeOtherDevices }) + '\n');
  else if (!flags.quiet) io.stderr.write(`account password set for ${client.account}${revokeOtherDevices ? '; every other device key was removed and its sessions ended' : ''}\n`);
  return 0;
}

/** `coffer account devices`: the account's device keys, this profile's marked. */
export async function accountDevices(flags: AccountFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  const devices = await client.devices();
  if (flags.json) {
    io.stdout.write(JSON.stringify({ account: client.account, devices }) + '\n');
    return 0;
  }
  const when = (ms: number | null): string => (ms === null ? 'never' : new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z'));
  for (const d of devices) io.stdout.write(`${d.current ? '*' : ' '} ${d.publicKey}  added ${when(d.createdAt)}  last used ${when(d.lastUsedAt)}\n`);
  if (!flags.quiet) io.stderr.write(`${devices.length} device key(s) on ${client.account}; remove one with \`coffer account revoke -- KEY\`\n`);
  return 0;
}

/**
 * `coffer account revoke KEY` removes a device key (proved with this profile's device
 * key); `coffer account revoke --sessions` ends every other session of the account.
 */
export async function accountRevoke(flags: AccountFlags, key: string | undefined, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  if (flags.sessions) {
    if (key !== undefined) throw new UsageError('account revoke: give a KEY or --sessions, not both');
    const n = await client.revokeOtherSessions();
    if (flags.json) io.stdout.write(JSON.stringify({ account: client.account, revokedSessions: n }) + '\n');
    else if (!flags.quiet) io.stderr.write(`ended ${n} other session(s) of ${client.account}\n`);
    return 0;
  }
  if (key === undefined || !/^[A-Za-z0-9_-]{4,43}$/.test(key)) throw new UsageError('account revoke: give the device key to remove (at least 4 characters of it, from `coffer account devices`), or --sessions');
  const mine = (await client.devices()).find((d) => d.current)?.publicKey;
  if (mine !== undefined && mine.startsWith(key)) throw new UsageError('account revoke: that is this device\'s own key; revoke it from another device');
  const removed = await client.revokeDevice(key);
  if (flags.json) io.stdout.write(JSON.stringify({ account: client.account, revoked: removed }) + '\n');
  else if (!flags.quiet) io.stderr.write(`removed device key ${removed} from ${client.account}: it can no longer sign in, and its sessions ended\n`);
  return 0;
}

/**
 * `coffer login`: a new session. With an app token (--token-file / COFFER_TOKEN) the
 * app's login names the account; otherwise this profile's device key signs in.
 */
export async function login(flags: AccountFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  let token: string | undefined;
  if (flags['token-file'] !== undefined) {
    try {
      token = (await readFile(flags['token-file'], 'utf8')).trim();
    } catch (e) {
      throw new UsageError(`cannot read token file ${flags['token-file']}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
  } else if (io.env.COFFER_TOKEN) {
    token = io.env.COFFER_TOKEN.trim();
  }
  void client.server; // a server is required
  if (token !== undefined) {
    if (flags.account !== undefined) throw new UsageError('login: --account does not apply with an app token (the token names the account)');
    await client.useAppToken(token);
  } else {
    const s = client.profile.state;
    const target = flags.account === undefined ? undefined : flags.account.startsWith('local:') ? flags.account : `local:${flags.account}`;
    if (s.deviceKey && (target === undefined || target === s.account)) {
      await client.login(flags.account);
    } else if (s.deviceKey) {
      throw new UsageError(`this profile holds the device key of ${s.account ?? 'another account'}: use another --profile to log in as ${target}`);
    } else {
      // A new device: the account password signs in, then this device registers its own key.
      if (target === undefined) throw new UsageError('login: this profile has no device key: give --account ID (and the account password), or an app token (--token-file)');
      const pw = await readPassword({ ...ACCOUNT_PASSWORD, file: flags['account-password-file'], prompt: `account password for ${target}` }, io);
      await client.loginWithPassword(target, pw);
    }
  }
  if (flags.json) io.stdout.write(JSON.stringify({ account: client.account, server: client.server, profile: client.profile.dir }) + '\n');
  else if (!flags.quiet) io.stderr.write(`logged in to ${client.server} as ${client.account}\n`);
  return 0;
}
