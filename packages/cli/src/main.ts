#!/usr/bin/env node
/**
 * The `coffer` command. Rules for output and exit codes are at the top of tui.ts.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { backupCmd, restoreCmd } from './commands/backup.js';
import { keyGenerate, keyShow } from './commands/key.js';
import { checkCmd, forget, init, pruneCmd, snapshots, unlock } from './commands/repository.js';
import { ExitCode, UsageError, errorLine, type Io } from './tui.js';

const USAGE = `usage: coffer COMMAND [options]

Backups (key mode):
  coffer init                          create a repository (makes a key if none is given)
  coffer backup PATH… [--tag T]        back up files and directories
  coffer snapshots                     list snapshots
  coffer restore ID|latest --target DIR [--overwrite]
  coffer check [--read-data]           verify structure (and with --read-data, every byte)
  coffer forget [ID…] [--keep-last N] [--keep-hourly|daily|weekly|monthly|yearly N] [--prune] [--dry-run]
  coffer prune [--dry-run]             delete data no snapshot needs
  coffer unlock [--remove-all]         remove stale locks
  coffer key generate                  print a new random key
  coffer key show                      print the key given and its key ID

Options:
  --repo DIR        repository (or COFFER_REPOSITORY)
  --key-file FILE   file holding the 64-digit key (or COFFER_KEY)
  --json            machine-readable output on stdout
  -q, --quiet       no progress or summaries
  -h, --help        this help
`;

const options = {
  repo: { type: 'string' },
  'key-file': { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
  tag: { type: 'string', multiple: true },
  target: { type: 'string' },
  overwrite: { type: 'boolean' },
  'read-data': { type: 'boolean' },
  'keep-last': { type: 'string' },
  'keep-hourly': { type: 'string' },
  'keep-daily': { type: 'string' },
  'keep-weekly': { type: 'string' },
  'keep-monthly': { type: 'string' },
  'keep-yearly': { type: 'string' },
  prune: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  'remove-all': { type: 'boolean' },
} satisfies ParseArgsConfig['options'];

/** Which options each command accepts (besides the global ones). */
const allowed: Record<string, string[]> = {
  init: [],
  backup: ['tag'],
  snapshots: [],
  restore: ['target', 'overwrite'],
  check: ['read-data'],
  forget: ['keep-last', 'keep-hourly', 'keep-daily', 'keep-weekly', 'keep-monthly', 'keep-yearly', 'prune', 'dry-run'],
  prune: ['dry-run'],
  unlock: ['remove-all'],
  key: [],
};
const globalOptions = ['repo', 'key-file', 'json', 'quiet', 'help'];

export async function run(argv: string[], io: Io): Promise<number> {
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    } catch (e) {
      throw new UsageError((e as Error).message.replace(/\. To specify.*$/s, '').replace(/^Unknown option/, 'unknown option'));
    }
    const { values: flags, positionals } = parsed;
    const [command, ...rest] = positionals;
    if (flags.help || command === undefined || command === 'help') {
      (command === undefined && !flags.help ? io.stderr : io.stdout).write(USAGE);
      return command === undefined && !flags.help ? ExitCode.Usage : ExitCode.Ok;
    }
    const accepted = allowed[command];
    if (!accepted) throw new UsageError(`unknown command '${command}' (see coffer --help)`);
    for (const k of Object.keys(flags)) {
      if (!globalOptions.includes(k) && !accepted.includes(k)) throw new UsageError(`${command}: option --${k} does not apply here`);
    }
    switch (command) {
      case 'init':
        if (rest.length > 0) throw new UsageError('init takes no arguments (the repository comes from --repo)');
        return await init(flags, io);
      case 'backup':
        return await backupCmd(flags, rest, io);
      case 'snapshots':
        return await snapshots(flags, io);
      case 'restore':
        return await restoreCmd(flags, rest, io);
      case 'check':
        return await checkCmd(flags, io);
      case 'forget':
        return await forget(flags, rest, io);
      case 'prune':
        return await pruneCmd(flags, io);
      case 'unlock':
        return await unlock(flags, io);
      case 'key':
        if (rest[0] === 'generate' && rest.length === 1) return await keyGenerate(flags, io);
        if (rest[0] === 'show' && rest.length === 1) return await keyShow(flags, io);
        throw new UsageError('key: use `coffer key generate` or `coffer key show`');
    }
    return ExitCode.Usage;
  } catch (e) {
    const { line, code } = errorLine(e);
    io.stderr.write(`coffer: error: ${line}\n`);
    if (code === ExitCode.Usage) io.stderr.write('(see coffer --help)\n');
    return code;
  }
}

const invokedDirectly = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (invokedDirectly || process.argv[1]?.endsWith('/coffer')) {
  run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env }).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`coffer: error: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exitCode = ExitCode.Failure;
    },
  );
}
