/**
 * A vault that is closing stops at once for idle kept-alive connections, including those
 * that only become idle after `close()` began.
 *
 * Fastify's close (and Node's `server.close()`) closes the connections idle at that
 * moment, then waits for the rest. A connection whose answer was still being finished
 * then (the client may already hold the whole answer) turns idle a moment later, and
 * nothing closes it until the keep-alive timeout (Fastify's default, 72 s): a shutdown
 * held for over a minute. The relay had the same (packages/relay/src/graceful-close.ts,
 * found as an intermittent 64 s test teardown). So from `preClose` on, idle connections
 * are swept every `everyMs` until the server has closed; requests still running are
 * answered first (their connection is idle only after the answer).
 */
import type { FastifyInstance } from 'fastify';

export const CLOSE_SWEEP_MS = 50;

export function closeIdleWhileClosing(app: FastifyInstance, everyMs = CLOSE_SWEEP_MS): void {
  app.addHook('preClose', (done) => {
    const server = app.server as { closeIdleConnections?: () => void } & FastifyInstance['server'];
    if (server.listening && typeof server.closeIdleConnections === 'function') {
      const sweep = setInterval(() => server.closeIdleConnections!(), everyMs);
      // Unref'd: the open connections keep the process alive, not the sweep.
      sweep.unref();
      server.once('close', () => clearInterval(sweep));
    }
    done();
  });
}
