import { readFile } from 'node:fs/promises';
import { openClient, type GlobalFlags } from '../context.js';
import { UsageError, type Io } from '../tui.js';

export interface AccountFlags extends GlobalFlags {
  account?: string;
  'token-file'?: string;
}

/** `coffer account create`: a built-in account bound to this profile's new device key. */
export async function accountCreate(flags: AccountFlags, io: Io): Promise<number> {
  const client = await openClient(flags, io);
  if (client.profile.state.account && client.profile.state.deviceKey) {
    throw new UsageError(`this profile already has account ${client.profile.state.account}: use another --profile for another account`);
  }
  const account = await client.createAccount();
  if (flags.json) io.stdout.write(JSON.stringify({ account, server: client.server, profile: client.profile.dir }) + '\n');
  else io.stdout.write(account + '\n');
  if (!flags.json && !flags.quiet) io.stderr.write(`created account ${account} on ${client.server} and logged in (profile ${client.profile.dir})\n`);
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
    await client.login(flags.account);
  }
  if (flags.json) io.stdout.write(JSON.stringify({ account: client.account, server: client.server, profile: client.profile.dir }) + '\n');
  else if (!flags.quiet) io.stderr.write(`logged in to ${client.server} as ${client.account}\n`);
  return 0;
}
