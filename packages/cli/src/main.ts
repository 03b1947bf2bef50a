#!/usr/bin/env node
/**
 * The `coffer` command. Rules for output and exit codes are at the top of tui.ts.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ExitCode, UsageError, errorLine, type Io } from './tui.js';
import { tuneHeapEarly, tuneHeapForReading, tuneHeapForRestore } from './heap.js';

// Each command's module is imported when that command runs (issue 13): a backup or a
// restore then loads neither the relay client nor OPAQUE's WASM (about 16 MiB resident),
// and the command modules import the engine's modules one by one (@coffer/backup/backup,
// /restore, …), not its barrel: a backup loads no restore, browse, prune or check code.
const accountCommands = () => import('./commands/account.js');
const backupCommands = () => import('./commands/backup.js');
const restoreCommands = () => import('./commands/restore.js');
const extraCommands = () => import('./commands/extras.js');
const keyCommands = () => import('./commands/key.js');
const browseCommands = () => import('./commands/browse.js');
const repositoryCommands = () => import('./commands/repository.js');
const vaultCommands = () => import('./commands/vault.js');

const USAGE = `usage: coffer COMMAND [options]

Backups (key mode):
  coffer init [--pad off|auto|max] [--compression auto|off]
                                       create a repository (makes a key if none is given);
                                       --pad sets its default size padding (auto),
                                       --compression its default compression (auto)
  coffer backup PATH… [--tag T] [--pad off|auto|max] [--compression auto|off|max]
                                       back up files and directories
  coffer backup PATH… --force | --parent SNAPSHOT
                                       --force reads every file again; --parent compares
                                       with SNAPSHOT (ID or latest) instead of the latest
                                       backup of the same paths from this host
  coffer backup PATH… [--ignore-inode] [--ignore-ctime]
                                       a file is unchanged when its size and mtime are,
                                       whatever its inode number and ctime / its ctime
                                       (FUSE, network mounts; as restic's)
  coffer backup PATH… --host NAME --time T
                                       the snapshot's host name (also whose latest backup
                                       is compared with) and time (UTC: 2026-01-31 14:00,
                                       or ISO 8601), instead of this machine's and now
  coffer backup PATH… [--exclude P] [--iexclude P] [--exclude-file F] [--iexclude-file F]
         [--exclude-caches] [--exclude-if-present NAME[:HEADER]] [--exclude-larger-than SIZE]
         [--one-file-system] [--dry-run]
                                       choose what is stored: P is a gitignore-style pattern
                                       (restic's: no '/' = any name, leading '/' = absolute
                                       path, '**', '!' re-includes); SIZE such as 500M, 2G
                                       (files larger are left out); --dry-run writes nothing
  coffer backup --files-from F | --files-from-raw F
                                       back up the paths listed in F (one per line; -raw:
                                       NUL-separated, for names that are not UTF-8)
  coffer backup --stdin [--stdin-filename NAME]
                                       store standard input as one file (a database dump)
  coffer backup --stdin-from-command [--stdin-filename NAME] -- CMD ARG…
                                       store CMD's output; no snapshot if CMD fails
  coffer snapshots [--tag T] [--host H] [--path P] [--latest N] [--group-by host,paths,tags]
                                       list snapshots (filters: see Choosing snapshots);
                                       --latest N: the newest N of each host and paths
  coffer restore ID|latest[:PATH] --target DIR [--overwrite] [--no-owners] [--no-lock] [--verify]
                                       owners are restored when run as root; with :PATH only
                                       that file or directory (its contents go into DIR);
                                       --verify reads every file back and checks it
  coffer restore ID|latest --target DIR --include P [--exclude P] [--iinclude P] [--iexclude P]
                                       restore only what matches (patterns as for backup,
                                       against the paths at backup time); parents are made
  coffer ls ID|latest [PATH…] [-l] [--recursive]
                                       list a snapshot's files (a PATH: it and its children)
  coffer find PATTERN… [--snapshot ID…] [-i] [--newest T] [--oldest T] [-l]
                                       which snapshots hold paths matching a glob (on the name,
                                       or with a / on the whole path; -i ignores case)
  coffer diff ID1 ID2                  added (+), removed (-), modified (M), type changed (T),
                                       metadata-only (U) paths, and the data added and removed
  coffer dump ID|latest PATH [--archive tar|zip]
                                       a file to stdout; a directory as a tar stream
  coffer stats [ID…] [--mode restore-size|files-by-contents|blobs-per-file|raw-data]
                                       sizes and counts (restore size, distinct file contents,
                                       the blobs they need, or the stored data)
  coffer check [--read-data] [--no-lock]  verify structure (and with --read-data, every byte)
  coffer check --read-data-subset n/m|x%|SIZE
                                       verify structure and the bytes of some packs: group n
                                       of m (n = 1…m reads each pack once), a random x%, or
                                       random packs up to SIZE (e.g. 500M)
  coffer forget [ID…] [--keep-last N] [--keep-hourly|daily|weekly|monthly|yearly N] [--prune] [--dry-run]
                [--keep-within[-hourly|-daily|-weekly|-monthly|-yearly] DURATION] [--keep-tag T]
                [--group-by host,paths,tags]
                                       DURATION is like 1y2m3d4h, counted back from the group's
                                       newest snapshot; groups default to host,paths
  coffer tag [ID…] --add T | --remove T | --set T [--tag T] [--host H] [--path P]
                                       change snapshots' tags (no ID: every snapshot the
                                       filters let through); each changed one gets a new ID
  coffer prune [--dry-run] [--max-unused N%|SIZE|unlimited] [--max-repack-size SIZE]
                                       delete data no snapshot needs (refuses when that could
                                       lose data); --max-unused: how much unused data may stay
                                       (default: repack every pack over 10% unused)
  coffer repair index [--read-all]     rebuild the index from the packs (after a lost or damaged index)
  coffer repair snapshots [--forget] [--dry-run]
                                       rewrite snapshots without the files whose data is gone
  coffer repair packs ID…              salvage damaged packs (as check --read-data names them):
                                       what still reads goes into new packs, then they are deleted
  coffer unlock [--remove-all]         remove stale locks
  coffer copy [ID…] --from-repo R [--from-key-file F]
                                       copy snapshots (all, or those given) from repository R
                                       into --repo; keys may differ; already copied ones are
                                       skipped (or COFFER_FROM_REPOSITORY, COFFER_FROM_KEY)
  coffer key generate                  print a new random key
  coffer key show [--repo R]           print the key given and its key ID (with --repo: its
                                       key ID in that repository, which differs per repository)

Accounts and password backups (through a Coffer relay):
  coffer account create --server URL [--account-password-file F]
                                       create an account for this device (profile) and log in;
                                       asks for an account password (for a new device); prints the ID
  coffer account password [--revoke-other-devices]
                                       set or change the account password (proved with
                                       this profile's device key; other sessions end; with
                                       --revoke-other-devices every other device key goes too)
  coffer account devices               list the account's device keys (* = this device)
  coffer account revoke [--] KEY       remove a device key (a unique prefix will do): it can no
                                       longer sign in and its sessions end (a key that starts
                                       with '-' goes after --)
  coffer account revoke --sessions     end every other session of the account
  coffer login [--server URL] [--account ID] [--token-file FILE] [--account-password-file F]
                                       new session: this profile's device key, an app token (JWT),
                                       or on a new profile the account password (--account ID)
  coffer vault enable [--guess-limit N] protect the backup key with a password (made now if needed)
  coffer vault enable --key            key mode: print the 64-digit key, erase the vault record
  coffer vault recover                 get the backup key back with the password (a new device)
  coffer vault change-password         new password, same key
  coffer vault disable                 the vault erases the record (the key stays on this device)
  coffer vault status                  mode, account, guesses left

Options:
  --repo DIR        repository (or COFFER_REPOSITORY); \`coffer:\` is the relay's blob API
                    for the logged-in account, with the key from the profile
  --key-file FILE   file holding the 64-digit key (or COFFER_KEY)
  --compression M   init: the default auto|off; backup: auto|off|max for this backup
                    (max: zstd level 9, 19 for chunks from 1 MiB: smallest, slowest)
  --read-data-subset S  check: read the bytes of n/m, x% or SIZE of the packs
  --from-repo R     copy: the repository to copy from (or COFFER_FROM_REPOSITORY)
  --from-key-file F copy: the source repository's key (or COFFER_FROM_KEY)
  --profile P       this device's state: a directory (with a /) or a name under
                    ~/.config/coffer (or COFFER_PROFILE; default: default)
  --server URL      the relay (or COFFER_SERVER)
  --insecure        allow a plain http:// server that is not on this machine (or
                    COFFER_INSECURE_HTTP=1): passwords and tokens in clear text
  --fleet-bundle F  the vault fleet's key bundle to pin (or COFFER_FLEET_BUNDLE),
                    from a trusted source (coffer-vault bundle); needed by vault
                    enable/change-password. Without it, the relay's is pinned
                    unverified: enough for recover and status only
  --password-file F first line is the vault password (or COFFER_PASSWORD; default: ask)
  --new-password-file F  for change-password (or COFFER_NEW_PASSWORD)
  --account-password-file F  first line is the account password (or
                    COFFER_ACCOUNT_PASSWORD; default: ask); never the vault password
  --tag T           snapshots, forget, restore, ls, find, dump, stats: only snapshots
                    with tag T (--tag a,b: both; --tag a --tag b: either); for backup:
                    the tags to give the new snapshot
  --host H          only snapshots from host H (repeat for either)
  --path P          only snapshots whose backed-up paths include P (repeat: all of them)
  --no-lock         restore/check: read without writing a lock (a full disk, read-only
                    storage); a prune running meanwhile could make the read fail.
                    restore also does this by itself, with a warning, when storage
                    refuses to write the lock
  --json            machine-readable output on stdout
  -q, --quiet       no progress or summaries
  -h, --help        this help (\`coffer COMMAND --help\`: that command's)
  --version         print coffer's version
`;

/**
 * `coffer COMMAND --help`: that command's lines of USAGE (with their continuation lines)
 * and the options it takes, nothing else.
 */
function commandHelp(command: string, accepted: readonly string[]): string {
  const lines = USAGE.split('\n');
  const out: string[] = [];
  let inCommand = false;
  for (const line of lines) {
    if (/^ {2}coffer /.test(line)) inCommand = line.startsWith(`  coffer ${command} `) || line === `  coffer ${command}`;
    else if (!/^ {5,}/.test(line)) inCommand = false;
    if (inCommand) out.push(line);
  }
  const optStart = lines.indexOf('Options:');
  const opts: string[] = [];
  let keep = false;
  for (const line of lines.slice(optStart + 1)) {
    const m = /^ {2}(?:-\w, )?--([\w-]+)/.exec(line);
    if (m) keep = (globalOptions.includes(m[1]!) || accepted.includes(m[1]!)) && m[1] !== 'version';
    else if (!/^ {5,}/.test(line)) keep = false;
    if (keep) opts.push(line);
  }
  return `usage:\n${out.join('\n')}\n\nOptions:\n${opts.join('\n')}\n`;
}

function version(): string {
  // dist/src/main.js → the package's package.json
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const options = {
  repo: { type: 'string' },
  'key-file': { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  tag: { type: 'string', multiple: true },
  add: { type: 'string', multiple: true },
  remove: { type: 'string', multiple: true },
  set: { type: 'string', multiple: true },
  target: { type: 'string' },
  overwrite: { type: 'boolean' },
  pad: { type: 'string' },
  compression: { type: 'string' },
  'no-owners': { type: 'boolean' },
  'read-data': { type: 'boolean' },
  'read-data-subset': { type: 'string' },
  'keep-last': { type: 'string' },
  'keep-hourly': { type: 'string' },
  'keep-daily': { type: 'string' },
  'keep-weekly': { type: 'string' },
  'keep-monthly': { type: 'string' },
  'keep-yearly': { type: 'string' },
  prune: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  'remove-all': { type: 'boolean' },
  profile: { type: 'string' },
  server: { type: 'string' },
  'fleet-bundle': { type: 'string' },
  account: { type: 'string' },
  'token-file': { type: 'string' },
  'account-password-file': { type: 'string' },
  key: { type: 'boolean' },
  'password-file': { type: 'string' },
  'new-password-file': { type: 'string' },
  'guess-limit': { type: 'string' },
  insecure: { type: 'boolean' },
  'revoke-other-devices': { type: 'boolean' },
  sessions: { type: 'boolean' },
  'no-lock': { type: 'boolean' },
  'read-all': { type: 'boolean' },
  forget: { type: 'boolean' },
  exclude: { type: 'string', multiple: true },
  iexclude: { type: 'string', multiple: true },
  'exclude-file': { type: 'string', multiple: true },
  'iexclude-file': { type: 'string', multiple: true },
  'exclude-caches': { type: 'boolean' },
  'exclude-if-present': { type: 'string', multiple: true },
  'exclude-larger-than': { type: 'string' },
  'one-file-system': { type: 'boolean' },
  'ignore-inode': { type: 'boolean' },
  'ignore-ctime': { type: 'boolean' },
  'files-from': { type: 'string', multiple: true },
  'files-from-raw': { type: 'string', multiple: true },
  stdin: { type: 'boolean' },
  'stdin-filename': { type: 'string' },
  'stdin-from-command': { type: 'boolean' },
  include: { type: 'string', multiple: true },
  iinclude: { type: 'string', multiple: true },
  host: { type: 'string', multiple: true },
  path: { type: 'string', multiple: true },
  long: { type: 'boolean', short: 'l' },
  recursive: { type: 'boolean' },
  'ignore-case': { type: 'boolean', short: 'i' },
  snapshot: { type: 'string', multiple: true },
  newest: { type: 'string' },
  oldest: { type: 'string' },
  archive: { type: 'string' },
  mode: { type: 'string' },
  'keep-within': { type: 'string' },
  'keep-within-hourly': { type: 'string' },
  'keep-within-daily': { type: 'string' },
  'keep-within-weekly': { type: 'string' },
  'keep-within-monthly': { type: 'string' },
  'keep-within-yearly': { type: 'string' },
  'keep-tag': { type: 'string', multiple: true },
  'group-by': { type: 'string' },
  latest: { type: 'string' },
  'max-unused': { type: 'string' },
  verify: { type: 'boolean' },
  'max-repack-size': { type: 'string' },
  'from-repo': { type: 'string' },
  'from-key-file': { type: 'string' },
  force: { type: 'boolean' },
  parent: { type: 'string' },
  time: { type: 'string' },
} satisfies ParseArgsConfig['options'];

/** Which options each command accepts (besides the global ones). */
const allowed: Record<string, string[]> = {
  init: ['pad', 'compression'],
  backup: [
    'tag',
    'pad',
    'compression',
    'exclude',
    'iexclude',
    'exclude-file',
    'iexclude-file',
    'exclude-caches',
    'exclude-if-present',
    'exclude-larger-than',
    'one-file-system',
    'ignore-inode',
    'ignore-ctime',
    'files-from',
    'files-from-raw',
    'dry-run',
    'force',
    'parent',
    'stdin',
    'stdin-filename',
    'stdin-from-command',
    'host',
    'time',
  ],
  snapshots: ['tag', 'host', 'path', 'latest', 'group-by'],
  restore: ['target', 'overwrite', 'no-owners', 'no-lock', 'verify', 'include', 'iinclude', 'exclude', 'iexclude', 'tag', 'host', 'path'],
  ls: ['long', 'recursive', 'tag', 'host', 'path'],
  find: ['ignore-case', 'snapshot', 'newest', 'oldest', 'long', 'tag', 'host', 'path'],
  diff: [],
  dump: ['archive', 'tag', 'host', 'path'],
  stats: ['mode', 'tag', 'host', 'path'],
  check: ['read-data', 'read-data-subset', 'no-lock'],
  forget: [
    'keep-last',
    'keep-hourly',
    'keep-daily',
    'keep-weekly',
    'keep-monthly',
    'keep-yearly',
    'keep-within',
    'keep-within-hourly',
    'keep-within-daily',
    'keep-within-weekly',
    'keep-within-monthly',
    'keep-within-yearly',
    'keep-tag',
    'group-by',
    'tag',
    'host',
    'path',
    'prune',
    'max-unused',
    'max-repack-size',
    'dry-run',
  ],
  tag: ['add', 'remove', 'set', 'tag', 'host', 'path'],
  prune: ['dry-run', 'max-unused', 'max-repack-size'],
  unlock: ['remove-all'],
  copy: ['from-repo', 'from-key-file'],
  repair: ['read-all', 'forget', 'dry-run'],
  key: [],
  account: ['account-password-file', 'revoke-other-devices', 'sessions'],
  login: ['account', 'token-file', 'account-password-file'],
  vault: ['key', 'password-file', 'new-password-file', 'guess-limit'],
};
const globalOptions = ['repo', 'key-file', 'json', 'quiet', 'help', 'profile', 'server', 'fleet-bundle', 'insecure'];

/**
 * parseArgs' error, in our words. A value the user copied (a device key is base64url
 * and may start with '-') reads as a cluster of short options: say which argument it
 * was and that it goes after `--`.
 */
function parseErrorText(message: string, argv: string[]): string {
  const text = message.replace(/\. To specify.*$/s, '').replace(/^Unknown option/, 'unknown option');
  const short = /^unknown option '(-[^-])'$/.exec(text)?.[1];
  const end = argv.indexOf('--');
  const arg = short === undefined ? undefined : argv.slice(0, end < 0 ? argv.length : end).find((a) => a.startsWith(short) && a.length > 2);
  if (arg === undefined) return text;
  return `${text} in '${arg}' (an argument that starts with '-' goes after '--', as in: coffer ${argv.filter((a) => a !== arg).join(' ')} -- ${arg})`;
}

export async function run(argv: string[], io: Io): Promise<number> {
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    } catch (e) {
      throw new UsageError(parseErrorText((e as Error).message, argv));
    }
    const { values: flags, positionals } = parsed;
    const [command, ...rest] = positionals;
    if (flags.version) {
      io.stdout.write(`coffer ${version()}\n`);
      return ExitCode.Ok;
    }
    if (flags.help && command !== undefined && command !== 'help') {
      const acceptedHere = allowed[command];
      if (!acceptedHere) throw new UsageError(`unknown command '${command}'`);
      io.stdout.write(commandHelp(command, acceptedHere));
      return ExitCode.Ok;
    }
    if (command === 'help' && rest[0] !== undefined && allowed[rest[0]]) {
      io.stdout.write(commandHelp(rest[0], allowed[rest[0]]!));
      return ExitCode.Ok;
    }
    if (flags.help || command === undefined || command === 'help') {
      (command === undefined && !flags.help ? io.stderr : io.stdout).write(USAGE);
      return command === undefined && !flags.help ? ExitCode.Usage : ExitCode.Ok;
    }
    const accepted = allowed[command];
    if (!accepted) throw new UsageError(`unknown command '${command}'`);
    for (const k of Object.keys(flags)) {
      if (!globalOptions.includes(k) && !accepted.includes(k)) throw new UsageError(`${command}: option --${k} does not apply here`);
    }
    switch (command) {
      case 'init':
        if (rest.length > 0) throw new UsageError('init takes no arguments (the repository comes from --repo)');
        return await (await repositoryCommands()).init(flags, io);
      case 'backup':
        return await (await backupCommands()).backupCmd(flags, rest, io);
      case 'snapshots':
        if (rest.length > 0) throw new UsageError('snapshots takes no arguments (choose with --tag, --host, --path)');
        return await (await repositoryCommands()).snapshots(flags, io);
      case 'ls':
        return await (await browseCommands()).lsCmd(flags, rest, io);
      case 'find':
        return await (await browseCommands()).findCmd(flags, rest, io);
      case 'diff':
        return await (await browseCommands()).diffCmd(flags, rest, io);
      case 'dump':
        return await (await browseCommands()).dumpCmd(flags, rest, io);
      case 'stats':
        return await (await browseCommands()).statsCmd(flags, rest, io);
      case 'restore':
        return await (await restoreCommands()).restoreCmd(flags, rest, io);
      case 'check':
        return await (await repositoryCommands()).checkCmd(flags, io);
      case 'forget':
        return await (await repositoryCommands()).forget(flags, rest, io);
      case 'tag':
        return await (await repositoryCommands()).tagCmd(flags, rest, io);
      case 'prune':
        return await (await repositoryCommands()).pruneCmd(flags, io);
      case 'unlock':
        return await (await repositoryCommands()).unlock(flags, io);
      case 'copy':
        return await (await extraCommands()).copyCmd(flags, rest, io);
      case 'repair': {
        if (rest[0] === 'packs' && flags.forget === undefined && flags['dry-run'] === undefined && flags['read-all'] === undefined) return await (await repositoryCommands()).repairPacksCmd(flags, rest.slice(1), io);
        const sub = rest.length === 1 ? rest[0] : undefined;
        if (sub === 'index' && flags.forget === undefined && flags['dry-run'] === undefined) return await (await repositoryCommands()).repairIndexCmd(flags, io);
        if (sub === 'snapshots' && flags['read-all'] === undefined) return await (await repositoryCommands()).repairSnapshotsCmd(flags, io);
        if (sub === 'index' || sub === 'snapshots') throw new UsageError(`repair ${sub}: options --read-all (index) and --forget, --dry-run (snapshots) don't mix`);
        throw new UsageError('repair: use `coffer repair index`, `coffer repair snapshots` or `coffer repair packs ID…` (which takes no options)');
      }
      case 'key':
        if (rest[0] === 'generate' && rest.length === 1) return await (await keyCommands()).keyGenerate(flags, io);
        if (rest[0] === 'show' && rest.length === 1) return await (await keyCommands()).keyShow(flags, io);
        throw new UsageError('key: use `coffer key generate` or `coffer key show`');
      case 'account':
        if (rest[0] === 'create' && rest.length === 1) return await (await accountCommands()).accountCreate(flags, io);
        if (rest[0] === 'password' && rest.length === 1) return await (await accountCommands()).accountPassword(flags, io);
        if (rest[0] === 'devices' && rest.length === 1) return await (await accountCommands()).accountDevices(flags, io);
        if (rest[0] === 'revoke' && rest.length <= 2) return await (await accountCommands()).accountRevoke(flags, rest[1], io);
        throw new UsageError('account: use `coffer account create|password|devices|revoke`');
      case 'login':
        if (rest.length > 0) throw new UsageError('login takes no arguments');
        return await (await accountCommands()).login(flags, io);
      case 'vault': {
        const sub = rest.length === 1 ? rest[0] : undefined;
        if (sub !== 'enable' && flags.key) throw new UsageError(`vault ${sub ?? ''}: option --key applies to \`vault enable\` only`);
        if (sub !== 'change-password' && flags['new-password-file'] !== undefined) throw new UsageError('option --new-password-file applies to `vault change-password` only');
        if (sub === 'enable') return await (await vaultCommands()).vaultEnable(flags, io);
        if (sub === 'recover') return await (await vaultCommands()).vaultRecover(flags, io);
        if (sub === 'change-password') return await (await vaultCommands()).vaultChangePassword(flags, io);
        if (sub === 'disable') return await (await vaultCommands()).vaultDisable(flags, io);
        if (sub === 'status') return await (await vaultCommands()).vaultStatus(flags, io);
        throw new UsageError('vault: use `coffer vault enable|recover|change-password|disable|status`');
      }
    }
    return ExitCode.Usage;
  } catch (e) {
    const { line, code } = errorLine(e);
    io.stderr.write(`coffer: error: ${line}\n`);
    if (code === ExitCode.Usage) io.stderr.write('(see coffer --help)\n');
    return code;
  }
}

/** Runs `coffer` with this process's arguments and streams (bin/coffer.js calls it). */
/** How long an interrupted command may take to release its lock and remove partial data. */
const INTERRUPT_CLEANUP_MS = 5000;

export function runMain(): void {
  // A backup's (a restore's) heap settings before any of its work (see heap.ts); a command line that
  // does not parse is left to run() to report.
  const argv = process.argv.slice(2);
  try {
    const command = parseArgs({ args: argv, options, allowPositionals: true, strict: false }).positionals[0];
    if (command === 'backup') tuneHeapEarly();
    else if (command === 'restore') tuneHeapForRestore();
    else if (command === 'dump') {
      // A dump streams like a restore: its young generation held too (50,000-file tree,
      // tar: peak RSS 144 → ~110 MiB, zip 219 → ~175 MiB, both faster; heap.ts).
      tuneHeapForReading();
      tuneHeapForRestore();
    } else if (command !== undefined) tuneHeapForReading();
  } catch {
    // run() says what is wrong with the arguments
  }
  // Ctrl-C or SIGTERM in the middle of a command: the repository lock is released and a
  // restore's partial data removed (what the library registered) before the process
  // exits 130 / 143, within a few seconds; a second signal exits at once.
  let interrupted = false;
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(signal, () => {
      if (interrupted) process.exit(code);
      interrupted = true;
      process.stderr.write(`\ncoffer: interrupted (${signal}): cleaning up\n`);
      // Loaded here: a command that took no lock and made nothing registered nothing (and --help loads no engine module).
      void import('@coffer/backup/interrupt')
        .then(({ runInterruptCleanups }) => runInterruptCleanups(INTERRUPT_CLEANUP_MS))
        .finally(() => process.exit(code));
    });
  }
  // A reader that stops early (`coffer ls latest | head`) closes the pipe: stop quietly.
  // Any other failure (stdout on a full disk, an I/O error) is the command's failure: one
  // line and its exit code (14), the lock released as on an interrupt. Thrown here, it was
  // an uncaught exception: a stack trace and exit 1.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? ExitCode.Ok);
    if (interrupted) return;
    interrupted = true; // the command's own messages stop: its output is gone
    const { line, code } = errorLine(e);
    process.stderr.write(`coffer: error: writing to standard output failed: ${line}\n`);
    void import('@coffer/backup/interrupt')
      .then(({ runInterruptCleanups }) => runInterruptCleanups(INTERRUPT_CLEANUP_MS))
      .finally(() => process.exit(code));
  });
  // Once interrupted, the command's own messages stop: what fails because the clean-up
  // removed it under the command (a restore's staging directory: "ENOENT") is no error
  // of the user's. The interruption's line above says what happened; the exit code too.
  const stderr = new Proxy(process.stderr, {
    get(target, prop) {
      if (prop === 'write') return (...args: Parameters<typeof process.stderr.write>) => (interrupted ? true : target.write(...args));
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  run(argv, { stdout: process.stdout, stderr, env: process.env }).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`coffer: error: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exitCode = ExitCode.Failure;
    },
  );
}

const invokedDirectly = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (invokedDirectly) runMain();
