/**
 * Graceful close for the relay's and the vault's HTTP servers (Node only): a server that
 * is closing closes its kept-alive connections as they turn idle, not only those idle
 * when the close began.
 *
 * Fastify's close (and Node's `server.close()`) closes the connections idle at that
 * moment, then waits for the rest. A connection whose answer was still being finished
 * then (the client may already hold the whole answer) turns idle a moment later, and
 * nothing closes it until the keep-alive timeout (the relay's 65 s, the vault's 72 s):
 * a shutdown held for over a minute, found as an intermittent 64 s teardown in the
 * relay's blobs-stream test. Called from the server's pre-close hook, this sweeps idle
 * connections every `everyMs` until the server has closed; requests still running are
 * answered first (their connection is idle only after the answer).
 */
import type { Server } from 'node:http';

export const CLOSE_SWEEP_MS = 50;

export function closeIdleUntilClosed(server: Pick<Server, 'listening' | 'closeIdleConnections' | 'once'>, everyMs = CLOSE_SWEEP_MS): void {
  if (!server.listening) return;
  const sweep = setInterval(() => server.closeIdleConnections(), everyMs);
  // Unref'd: the open connections keep the process alive, not the sweep.
  sweep.unref();
  server.once('close', () => clearInterval(sweep));
}
