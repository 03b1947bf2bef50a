#!/usr/bin/env node
/**
 * coffer-vault: the Backup Key Vault service and its admin commands.
 *
 * CLI conventions (as in age's tui.go): stdout carries data only (the bundle JSON, the
 * service's JSON logs); diagnostics go to stderr as `coffer-vault: error: …`, lowercase;
 * exit 0 ok, 1 runtime failure, 2 usage or configuration error.
 */
import { bundleToJson } from '@coffer/protocol';
import { pino } from 'pino';
import { PlatformError } from '../core/platform.js';
import { openPlatform, provisionVaultKeys } from '../platform/index.js';
import { ConfigError, DEFAULT_ADMIN_HOST, loadConfig, type VaultConfig } from './config.js';
import { ensureFleetFile, fleetBundle, FleetFileError, loadFleet } from './fleet.js';
import { fleetCommand, FLEET_USAGE } from './fleet-cli.js';
import { assembleVault } from './start.js';

const USAGE = `usage: coffer-vault [serve] [--config FILE]
       coffer-vault keys create [--config FILE]   create the fleet keys (software file or PKCS#11 token) and fleet.json
       coffer-vault bundle [--config FILE]        print the fleet key bundle JSON that clients pin
${FLEET_USAGE}
With no configuration, serve runs the embedded default: software platform (NOT an HSM),
SQLite in ./.coffer-data/vault, listening on 127.0.0.1:7441, metrics (admin listener)
on 127.0.0.1:7442. Settings: a JSON file
(--config or COFFER_VAULT_CONFIG) and COFFER_VAULT_* environment variables
(see spec/vault-protocol.md and docs/threat-model.md).
`;

function fail(message: string, code: number): never {
  process.stderr.write(`coffer-vault: error: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv: string[]): { command: string[]; configFile?: string; fleetKeyId?: string } {
  const command: string[] = [];
  let configFile: string | undefined;
  let fleetKeyId: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--fleet-key-id') {
      fleetKeyId = argv[++i];
      if (!fleetKeyId) fail('--fleet-key-id needs the bundle\'s keyId', 2);
    } else if (a === '--config') {
      configFile = argv[++i];
      if (!configFile) fail('--config needs a file', 2);
    } else if (a === '-h' || a === '--help' || a === 'help') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else if (a.startsWith('-') && a !== '-') fail(`unknown option ${a}\n${USAGE}`, 2);
    else command.push(a);
  }
  return { command, ...(configFile ? { configFile } : {}), ...(fleetKeyId ? { fleetKeyId } : {}) };
}

async function serve(config: VaultConfig): Promise<void> {
  // Zero-config start creates keys on the software platform only; a PKCS#11 fleet is
  // set up deliberately with `keys create`, so nodes never invent diverging fleet files.
  const vault = await assembleVault(config, { createIfMissing: config.platform.kind === 'software', defaultMetrics: true, logger: {
      level: config.logLevel,
      base: { service: 'coffer-vault' },
      // Asynchronous stdout: a line per request no longer costs a write(2) on the event
      // loop; lines queued while a write runs go out together. Flushed on exit (pino);
      // a kill -9 can lose the last lines still queued.
      stream: pino.destination({ dest: 1, sync: false }),
    },
  });
  if (config.insecureCrashAfterCommitForTesting) process.stderr.write('coffer-vault: WARNING: COFFER_VAULT_INSECURE_CRASH_AFTER_COMMIT_FOR_TESTING is set: this process kills itself after counting a guess\n');
  if (config.insecureCrashBeforeCaptureForTesting) process.stderr.write('coffer-vault: WARNING: COFFER_VAULT_INSECURE_CRASH_BEFORE_CAPTURE_FOR_TESTING is set: this process kills itself after committing a guess to the store and before capturing it in its anchor\n');
  if (config.policy.insecureAllowWeakKsfForTesting) process.stderr.write('coffer-vault: WARNING: weak KSF parameters are accepted (COFFER_VAULT_INSECURE_ALLOW_WEAK_KSF_FOR_TESTING)\n');
  if (config.host !== '127.0.0.1' && config.host !== '::1' && config.host !== 'localhost') {
    process.stderr.write(`coffer-vault: WARNING: listening on ${config.host}: only the front end should reach this service\n`);
  }
  const admin = config.admin ?? { host: DEFAULT_ADMIN_HOST, port: config.port === 0 ? 0 : config.port + 1 };
  if (admin.host !== '127.0.0.1' && admin.host !== '::1' && admin.host !== 'localhost') {
    process.stderr.write(`coffer-vault: WARNING: admin listener (metrics) on ${admin.host}: only monitoring should reach it, never the front end\n`);
  }
  let url: string;
  let adminUrl: string;
  try {
    url = await vault.app.listen({ host: config.host, port: config.port });
    adminUrl = await vault.admin.listen({ host: admin.host, port: admin.port });
  } catch (err) {
    await vault.close().catch(() => {});
    throw err;
  }
  vault.app.log.info({ url, adminUrl, platform: vault.platform.platform.name, store: vault.store.name, guessLimit: config.policy.guessLimit }, 'coffer-vault listening');
  process.stderr.write(`coffer-vault: listening on ${url}\n`);
  process.stderr.write(`coffer-vault: metrics (admin listener) at ${adminUrl}/metrics\n`);
  let closing = false;
  const shutdown = (signal: string): void => {
    if (closing) return;
    closing = true;
    vault.app.log.info({ signal }, 'coffer-vault shutting down');
    vault.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

async function keysCreate(config: VaultConfig): Promise<void> {
  const created = await provisionVaultKeys(config.platform);
  const platform = await openPlatform(config.platform);
  try {
    const { created: fleetCreated, fleet } = await ensureFleetFile(platform.platform, config.fleetFile);
    process.stderr.write(`coffer-vault: keys on ${platform.platform.name}: ${created.length ? `created ${created.join(', ')}` : 'already present'}\n`);
    process.stderr.write(`coffer-vault: fleet file ${config.fleetFile}: ${fleetCreated ? 'created' : 'already present, matches the platform'}\n`);
    process.stdout.write(bundleToJson(fleetBundle(fleet.fleetKey)) + '\n');
  } finally {
    await platform.close();
  }
}

async function bundle(config: VaultConfig): Promise<void> {
  const platform = await openPlatform(config.platform);
  try {
    const fleet = await loadFleet(platform.platform, config.fleetFile);
    process.stdout.write(bundleToJson(fleetBundle(fleet.fleetKey)) + '\n');
  } finally {
    await platform.close();
  }
}

async function main(): Promise<void> {
  const { command, configFile, fleetKeyId } = parseArgs(process.argv.slice(2));
  let config: VaultConfig;
  try {
    config = loadConfig(configFile ? { file: configFile } : {});
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 2);
    throw err;
  }
  const cmd = command.join(' ') || 'serve';
  try {
    if (cmd === 'serve') await serve(config);
    else if (cmd === 'keys create') await keysCreate(config);
    else if (cmd === 'bundle') await bundle(config);
    else if (command[0] === 'fleet' && (await fleetCommand(config, command.slice(1), fleetKeyId ? { fleetKeyId } : {}, (s) => process.stdout.write(s), (s) => process.stderr.write(`coffer-vault: ${s}\n`)))) return;
    else fail(`unknown command "${cmd}"\n${USAGE}`, 2);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 2);
    if (err instanceof PlatformError) fail(`platform (${err.code}): ${err.message}`, 1);
    if (err instanceof FleetFileError) fail(err.message, 1);
    fail((err as Error).message ?? String(err), 1);
  }
}

void main();
