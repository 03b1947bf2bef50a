/**
 * Forwards sealed vault messages to the vault fleet (spec/relay-api.md §2). The bytes
 * are opaque here: never parsed, logged or stored. Each attempt carries the account and
 * the link MAC; nodes are tried in order (starting after the last one that failed) with
 * a per-attempt timeout and an overall deadline, so a dead or slow node costs at most
 * one attempt and the client always gets an answer.
 *
 * Tried again on the next node: connection errors, timeouts, 5xx answers — among them a
 * fleet member's 503 `not-leader` (only its group's leader decides, vault spec §13.6) —
 * and a vault that refuses our link MAC (a misconfigured node). The node that answers
 * is tried first next time, so the leader is found once and then kept. A replayed request is safe for the
 * vault: guesses are counted fleet-wide and login starts are replay-checked.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { RELAY_AUTH_HEADER } from '@coffer/protocol';
import { LinkSigner } from './link-signer.js';
import type { RelayMetrics } from './metrics.js';

export const VAULT_PATH = '/v1/request';
const MAX_RESPONSE_BYTES = 64 * 1024;
/** Between passes over the nodes while the fleet has no leader. */
const NOT_LEADER_PAUSE_MS = 250;

export interface ForwarderOptions {
  readonly nodes: readonly string[];
  readonly linkKey: Uint8Array;
  readonly attemptTimeoutMs?: number;
  readonly deadlineMs?: number;
  readonly metrics?: RelayMetrics;
  readonly now?: () => number;
}

export type ForwardResult =
  | { readonly kind: 'answer'; readonly status: number; readonly contentType: string; readonly body: Buffer; readonly node: string }
  | { readonly kind: 'unavailable'; readonly attempts: readonly string[] };

/** Where one node's messages go. */
interface Target {
  readonly https: boolean;
  readonly hostname: string;
  readonly port: string;
  readonly path: string;
  /** The Host header: the URL's host (with its port when it has one). */
  readonly host: string;
}

interface Attempt {
  status: number;
  contentType: string;
  body: Buffer;
}

export class VaultForwarder {
  /** Per node: the request options built once (no URL parsing per message). */
  readonly #nodes: { label: string; target: Target }[];
  readonly #signer: LinkSigner;
  readonly #attemptMs: number;
  readonly #deadlineMs: number;
  readonly #metrics: RelayMetrics | undefined;
  readonly #now: () => number;
  readonly #http = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  readonly #https = new HttpsAgent({ keepAlive: true, maxSockets: 256 });
  #preferred = 0;

  constructor(options: ForwarderOptions) {
    if (options.nodes.length === 0) throw new Error('vault.nodes: at least one vault node is required');
    this.#nodes = options.nodes.map((n, i) => {
      const url = new URL(VAULT_PATH, n.endsWith('/') ? n : `${n}/`);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`vault.nodes[${i}]: not an http(s) URL: ${n}`);
      return { label: url.host, target: { https: url.protocol === 'https:', hostname: url.hostname.replace(/^\[|\]$/g, ''), port: url.port, path: url.pathname, host: url.host } };
    });
    // The link MAC (spec/relay-api.md §2) with its constant parts prepared once (link-signer.ts).
    this.#signer = new LinkSigner(options.linkKey, 'POST', VAULT_PATH);
    this.#attemptMs = options.attemptTimeoutMs ?? 5000;
    this.#deadlineMs = options.deadlineMs ?? 12_000;
    this.#metrics = options.metrics;
    this.#now = options.now ?? Date.now;
  }

  async forward(account: string, body: Buffer): Promise<ForwardResult> {
    const started = process.hrtime.bigint();
    const deadline = Date.now() + this.#deadlineMs;
    const tried: string[] = [];
    let lastAnswer: (Attempt & { node: string }) | null = null;
    const n = this.#nodes.length;
    // Passes over the nodes: one, and more only while some node answers `not-leader` (a
    // fleet between two leaders, vault spec §13.8: seconds), until the deadline.
    for (;;) {
      let notLeader = false;
      const first = this.#preferred;
      for (let i = 0; i < n; i++) {
        const idx = (first + i) % n;
        const node = this.#nodes[idx]!;
        const left = deadline - Date.now();
        if (left <= 0) break;
        tried.push(node.label);
        let outcome: string;
        try {
          const sign = (): string => this.#signer.header(account, body, this.#now());
          let res: Attempt;
          try {
            res = await this.#attempt(node.target, account, sign(), body, Math.min(this.#attemptMs, left));
          } catch (err) {
            // A kept-alive connection the node closed while idle (its keep-alive timeout
            // raced our reuse): once more on a fresh connection to the same node, with a
            // fresh nonce, rather than fail over or answer 503 over a stale socket.
            if (!(err as { staleSocket?: boolean }).staleSocket || deadline - Date.now() <= 0) throw err;
            res = await this.#attempt(node.target, account, sign(), body, Math.min(this.#attemptMs, deadline - Date.now()));
          }
          outcome = String(res.status);
          const relayAuthRefused = res.status === 401 && /"relay-auth"/.test(res.body.toString('utf8', 0, 200));
          if (res.status < 500 && !relayAuthRefused) {
            this.#preferred = idx;
            this.#observe(started, 'answered', node.label, outcome);
            return { kind: 'answer', ...res, node: node.label };
          }
          if (!relayAuthRefused) lastAnswer = { ...res, node: node.label };
          if (res.status === 503 && /"not-leader"/.test(res.body.toString('utf8', 0, 200))) notLeader = true;
          outcome = relayAuthRefused ? 'relay-auth' : outcome;
        } catch (err) {
          outcome = (err as Error).name === 'TimeoutError' ? 'timeout' : 'error';
        }
        this.#metrics?.vaultAttempts.inc({ node: node.label, outcome });
        this.#preferred = (idx + 1) % n;
      }
      if (!notLeader || deadline - Date.now() <= NOT_LEADER_PAUSE_MS) break;
      await new Promise((r) => setTimeout(r, NOT_LEADER_PAUSE_MS));
    }
    if (lastAnswer) {
      // Every node answered or failed, and one answered with a (retryable) vault error:
      // that error says more than "unavailable".
      this.#observe(started, 'vault-error');
      return { kind: 'answer', status: lastAnswer.status, contentType: lastAnswer.contentType, body: lastAnswer.body, node: lastAnswer.node };
    }
    this.#observe(started, 'unavailable');
    return { kind: 'unavailable', attempts: tried };
  }

  #observe(started: bigint, outcome: string, node?: string, status?: string): void {
    if (!this.#metrics) return;
    this.#metrics.vaultForward.observe({ outcome }, Number(process.hrtime.bigint() - started) / 1e9);
    if (node && status) this.#metrics.vaultAttempts.inc({ node, outcome: status });
  }

  #attempt(target: Target, account: string, auth: string, body: Buffer, timeoutMs: number): Promise<Attempt> {
    return new Promise<Attempt>((resolve, reject) => {
      const https = target.https;
      // The headers as a flat list, Host included: Node writes them as given (each name
      // and value still checked) instead of a setHeader per header (issue 13, relay CPU).
      const req = (https ? httpsRequest : httpRequest)({
        hostname: target.hostname,
        port: target.port,
        path: target.path,
        method: 'POST',
        agent: https ? this.#https : this.#http,
        headers: ['host', target.host, 'content-type', 'application/octet-stream', 'content-length', String(body.length), 'coffer-account', account, RELAY_AUTH_HEADER, auth],
      });
      const timer = setTimeout(() => {
        const e = new Error(`vault attempt timed out after ${timeoutMs} ms`);
        e.name = 'TimeoutError';
        req.destroy(e);
      }, timeoutMs);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        reject(err);
      };
      let answered = false;
      req.on('error', (err: NodeJS.ErrnoException) => {
        // Reset or closed before any answer on a socket that served an earlier request.
        const code = err.code ?? '';
        if (req.reusedSocket && !answered && (code === 'ECONNRESET' || code === 'EPIPE')) Object.assign(err, { staleSocket: true });
        fail(err);
      });
      req.on('response', (res: IncomingMessage) => {
        answered = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new Error('vault response too large'));
          else chunks.push(c);
        });
        res.on('error', fail);
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 502, contentType: String(res.headers['content-type'] ?? 'application/octet-stream'), body: Buffer.concat(chunks) });
        });
      });
      req.end(body);
    });
  }

  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}
