/**
 * Open connections per client address (IPv4 address, IPv6 /64: rate-limit.ts addressKey),
 * idle ones included. Rate limits count requests; a connection that sends nothing (or
 * idles between requests) holds a descriptor until a timeout (headers 60 s, keep-alive
 * 65 s), and one host opening a few hundred of them took every descriptor a relay under
 * `ulimit -n 256` had: nobody else was answered. Past the cap a new connection is refused
 * at once: on plain HTTP with a catalogue `429 too-many-connections` (Connection: close),
 * on TLS by closing it (no handshake is spent on it).
 *
 * Connections from trusted proxies (config trustProxy, a list) are not counted: behind a
 * proxy every client shares its address. With a hop count (every peer is a proxy) there
 * is no cap.
 */
import type { Server } from 'node:http';
import { BlockList, isIP, type Socket } from 'node:net';
import { addressKey } from './rate-limit.js';
import { rawErrorResponse } from './errors.js';

/** Default open connections per client address (config maxConnectionsPerAddress; 0 = no cap). */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256;

export function capConnectionsPerAddress(server: Server, max: number, options: { tls: boolean; exempt: (address: string) => boolean; onRefused?: () => void }): void {
  if (max <= 0) return;
  const open = new Map<string, number>();
  // Before node:http's own listener: a refused connection never gets a parser.
  server.prependListener('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    if (address === undefined || options.exempt(address)) return;
    const key = addressKey(address);
    const n = (open.get(key) ?? 0) + 1;
    if (n > max) {
      options.onRefused?.();
      if (options.tls) socket.destroy();
      else socket.end(rawErrorResponse('too-many-connections'));
      return;
    }
    open.set(key, n);
    socket.once('close', () => {
      const left = (open.get(key) ?? 1) - 1;
      if (left > 0) open.set(key, left);
      else open.delete(key);
    });
  });
}

/** Whether a peer is one of the trusted proxies (addresses or CIDRs, as config trustProxy lists them). */
export function proxyMatcher(list: readonly string[]): (address: string) => boolean {
  const trusted = new BlockList();
  for (const entry of list) {
    const [ip, bits] = entry.split('/') as [string, string | undefined];
    const family = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) trusted.addAddress(ip, family);
    else trusted.addSubnet(ip, Number(bits), family);
  }
  return (address) => {
    const a = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
    const family = isIP(a);
    return family !== 0 && trusted.check(a, family === 6 ? 'ipv6' : 'ipv4');
  };
}
