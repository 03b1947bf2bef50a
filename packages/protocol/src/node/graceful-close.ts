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
 *
 * Requests still running after `graceMs` are cut (every connection destroyed): a request
 * whose client stopped sending its body, or went away without closing, would otherwise
 * hold the shutdown for ever. Seen: after a 408 on an upload whose client then exited,
 * the relay kept two half-closed connections with a megabyte unread and never exited on
 * SIGTERM.
 */
import type { Server } from 'node:http';

export const CLOSE_SWEEP_MS = 50;
/** How long requests still running when a close begins are given to finish. */
export const CLOSE_GRACE_MS = 10_000;

export function closeIdleUntilClosed(
  server: Pick<Server, 'listening' | 'closeIdleConnections' | 'closeAllConnections' | 'once'>,
  everyMs = CLOSE_SWEEP_MS,
  graceMs = CLOSE_GRACE_MS,
): void {
  if (!server.listening) return;
  const sweep = setInterval(() => server.closeIdleConnections(), everyMs);
  const cut = setTimeout(() => server.closeAllConnections(), graceMs);
  // Unref'd: the open connections keep the process alive, not the timers.
  sweep.unref();
  cut.unref();
  server.once('close', () => {
    clearInterval(sweep);
    clearTimeout(cut);
  });
}
