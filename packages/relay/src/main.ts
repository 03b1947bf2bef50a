#!/usr/bin/env node
/**
 * coffer-relay: the Coffer front end (spec/relay-api.md).
 *
 * stdout carries the service's JSON logs; diagnostics go to stderr as
 * `coffer-relay: …`; exit 0 ok, 1 runtime failure, 2 usage or configuration error.
 */
import pino from 'pino';
import { ConfigError, loadConfig, type RelayConfig } from './config.js';
import { assembleRelay } from './start.js';
import { LOG_REDACT } from './app.js';
import { tuneHeapForRelay } from './heap.js';

const USAGE = `usage: coffer-relay [serve] [--config FILE]

With no configuration, runs the embedded default: built-in accounts, blobs in
./.coffer-data/relay/blobs, accounts in ./.coffer-data/relay/relay.db, forwarding to the
vault at http://127.0.0.1:7441 with the link key ./.coffer-data/link.key, listening on
127.0.0.1:7440. Settings: a JSON file (--config or COFFER_RELAY_CONFIG) and
COFFER_RELAY_* environment variables (see docs/relay.md).
`;

function fail(message: string, code: number): never {
  process.stderr.write(`coffer-relay: error: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv: string[]): { command: string[]; configFile?: string } {
  const command: string[] = [];
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config') {
      configFile = argv[++i];
      if (!configFile) fail('--config needs a file', 2);
    } else if (a === '-h' || a === '--help' || a === 'help') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else if (a.startsWith('-')) fail(`unknown option ${a}\n${USAGE}`, 2);
    else command.push(a);
  }
  return configFile ? { command, configFile } : { command };
}

async function serve(config: RelayConfig, embeddedLinkKey: boolean): Promise<void> {
  tuneHeapForRelay();
  const relay = await assembleRelay(config, { createLinkKey: embeddedLinkKey, defaultMetrics: true, logger: {
      level: config.logLevel,
      base: { service: 'coffer-relay' },
      redact: LOG_REDACT,
      // A write(2) per line on the event loop, not an asynchronous write through libuv's
      // thread pool: the hand-off cost more than the write (bench-relay-overhead.mjs, a
      // tenth of the relay's CPU per vault message); a line is on its way when logged.
      stream: pino.destination({ dest: 1, sync: true }),
    },
  });
  const loopback = config.host === '127.0.0.1' || config.host === '::1' || config.host === 'localhost';
  if (!config.tls && !loopback) process.stderr.write(`coffer-relay: WARNING: listening on ${config.host} without TLS: put a TLS terminator in front or configure tls.cert/tls.key\n`);
  const url = await relay.app.listen({ host: config.host, port: config.port });
  relay.app.log.info({ url, vaultNodes: config.vault.nodes, accounts: config.accounts, accountStore: relay.accounts?.kind ?? null, jwt: !!config.jwt, blobs: relay.blobs.name }, 'coffer-relay listening');
  process.stderr.write(`coffer-relay: listening on ${url}\n`);
  if (config.admin) {
    const adminUrl = await relay.admin.listen({ host: config.admin.host, port: config.admin.port });
    process.stderr.write(`coffer-relay: admin (metrics) on ${adminUrl}\n`);
  }
  // The JWKS file is read again on SIGHUP and whenever it changes (key rotation without a restart).
  if (relay.jwt) {
    relay.jwt.watch((err) => relay.app.log.error({ err: err.message }, 'JWKS file unreadable; keeping the keys in use'));
    process.on('SIGHUP', () => {
      try {
        relay.jwt!.reload();
        relay.app.log.info('JWKS reloaded (SIGHUP)');
      } catch (err) {
        relay.app.log.error({ err: (err as Error).message }, 'JWKS file unreadable; keeping the keys in use');
      }
    });
  } else {
    process.on('SIGHUP', () => relay.app.log.info('SIGHUP: nothing to reload'));
  }
  let closing = false;
  const shutdown = (signal: string): void => {
    if (closing) return;
    closing = true;
    relay.app.log.info({ signal }, 'coffer-relay shutting down');
    relay.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

async function main(): Promise<void> {
  const { command, configFile } = parseArgs(process.argv.slice(2));
  let config: RelayConfig;
  try {
    config = loadConfig(configFile ? { file: configFile } : {});
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 2);
    throw err;
  }
  const cmd = command.join(' ') || 'serve';
  if (cmd !== 'serve') fail(`unknown command "${cmd}"\n${USAGE}`, 2);
  // The link key is created only where the embedded default puts it; a configured
  // path must already hold the fleet's key (creating one there would split the fleet).
  const embedded = !process.env.COFFER_RELAY_LINK_KEY_FILE && !configFile && !process.env.COFFER_RELAY_CONFIG;
  try {
    await serve(config, embedded);
  } catch (err) {
    fail((err as Error).message ?? String(err), 1);
  }
}

void main();
