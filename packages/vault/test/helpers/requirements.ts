/**
 * System parts the tests use for real (SoftHSM2, etcd). Where one is missing:
 *  - under CI=true the test file fails loudly (CI installs them: a green run must have
 *    run these tests, not skipped them silently);
 *  - elsewhere the suite is reported as ONE skipped test named after it, with the reason,
 *    so the summary's "skipped" count shows it (a skipped `describe` counts as nothing).
 */
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { SOFTHSM_MODULE, SOFTHSM_UTIL, softHsmAvailable } from './softhsm.js';

/** `false` when present; the skip reason when missing; throws under CI=true. */
export function required(what: string, present: boolean, install: string): string | false {
  if (present) return false;
  const reason = `${what} not installed (${install})`;
  if (process.env.CI === 'true' || process.env.CI === '1') {
    throw new Error(`${reason}: CI must run these tests, not skip them`);
  }
  return reason;
}

export function etcdInstalled(): boolean {
  return spawnSync(process.env.COFFER_ETCD_BIN ?? 'etcd', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** The skip reason for SoftHSM2 tests (the module file the tests load, and softhsm2-util). */
export const softHsmSkip = (): string | false =>
  required('SoftHSM2', softHsmAvailable(), `apt-get install softhsm2; looked for ${SOFTHSM_MODULE} and ${SOFTHSM_UTIL}`);

/** The skip reason for tests that start real etcd members. */
export const etcdSkip = (): string | false => required('etcd', etcdInstalled(), 'apt-get install etcd-server');

/** `describe(title, options, fn)`, or, when `skip` is a reason, one skipped test with that title. */
export function describeIf(title: string, skip: string | false, fn: () => void, options: { timeout?: number } = {}): void {
  if (skip) test(title, { skip }, () => {});
  else describe(title, options, fn);
}

/** A loopback port that nothing listens on now (bound, then closed): connections are refused. */
export async function closedPort(): Promise<number> {
  const { createServer } = await import('node:net');
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}
