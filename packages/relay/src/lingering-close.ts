/**
 * Lingering close (spec/relay-api.md §4): a refusal answered while the request body is
 * still arriving (an upload above the size limit, a quota spent mid-body, a request
 * refused before its body was read) must reach the client as that refusal.
 *
 * Node closes a `connection: close` socket as soon as the answer is written. Body bytes
 * that then arrive unread make the kernel reset the connection (RST), and a client still
 * sending sees `write EPIPE` / `ECONNRESET` — often before it has read the answer that
 * was already on its way (blob-stream.test.ts failed so about 1 run in 5). So instead,
 * after the answer: half-close (FIN after the answer), read and discard what the client
 * still sends, up to `maxBytes`, then stop reading (TCP holds the client back), and close
 * when the client closes, its body ends, or `maxMs` has passed — whichever comes first.
 * The relay never reads more than `maxBytes` of a refused body, nor holds the socket
 * longer than `maxMs`.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

/** Body bytes read and discarded after a refusal, at most. */
export const LINGER_MAX_BYTES = 8 * 1024 * 1024;
/** How long the socket stays open after a refusal, at most (ms). */
export const LINGER_MAX_MS = 3_000;

const LINGERING = Symbol('coffer.lingering');

/**
 * Arms a lingering close for the socket of `req`, whose answer says `connection: close`:
 * Node's close after the answer (`destroySoon`) becomes a half-close followed by the
 * bounded drain described above. Idempotent per socket.
 */
export function lingerAfterAnswer(req: IncomingMessage, limits: { maxBytes?: number; maxMs?: number } = {}): void {
  const socket = req.socket as Socket & { [LINGERING]?: true };
  if (!socket || socket.destroyed || socket[LINGERING]) return;
  socket[LINGERING] = true;
  const maxBytes = limits.maxBytes ?? LINGER_MAX_BYTES;
  const maxMs = limits.maxMs ?? LINGER_MAX_MS;
  // Node's server calls destroySoon once the answer (marked connection: close) is
  // handed to the socket; this one socket gets the lingering variant instead.
  socket.destroySoon = function lingeringClose(this: Socket): void {
    if (this.destroyed) return;
    const close = (): void => {
      clearTimeout(timer);
      if (!this.destroyed) this.destroy();
    };
    // Not unref'd: once reading has stopped (the byte bound), this timer is what ends the
    // socket, and a server closing (it waits for its connections) must not be left
    // waiting on a socket nothing will close.
    const timer = setTimeout(close, maxMs);
    this.once('close', () => clearTimeout(timer));
    // The client closed its side, or its body is complete: nothing more will come that
    // could reset the connection.
    this.once('end', close);
    if (req.readableEnded) {
      // The whole body is in already: Node's own close (after the answer is flushed).
      if (this.writable) this.end();
      if (this.writableFinished) close();
      else this.once('finish', close);
      return;
    }
    req.once('end', () => (this.writableFinished ? close() : this.once('finish', close)));
    // FIN after the answer: the client reads it to its end and knows nothing more comes.
    if (this.writable) this.end();
    let read = 0;
    // Whatever read the body before (an upload's meter) has let go of it: read on,
    // counting, and let the bytes fall.
    req.unpipe();
    req.on('data', (chunk: Buffer) => {
      read += chunk.length;
      // Enough: stop reading, so TCP holds the client back until it has read the answer
      // and closes, or the time is up.
      if (read >= maxBytes) req.pause();
    });
    req.resume();
  };
}
