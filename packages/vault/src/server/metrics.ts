/**
 * Prometheus metrics of one vault service (own registry, so tests can run several).
 *
 * Served only on the admin listener (app.ts `buildAdminApp`), never on the listener the
 * front end talks to. Labels are deliberately coarse: a request is counted by its
 * operation (which travels in the clear anyway) and a class — `answered` (a sealed 200,
 * whatever the business outcome inside it), `refused` (a 4xx) or `error` (a 5xx) — and
 * never by its sealed outcome, so a scrape taken around one user's login cannot tell a
 * right password from a wrong one. The error catalogue code of a refusal or failure is
 * counted apart, without the operation: no code depends on a password.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type RequestClass = 'answered' | 'refused' | 'error';

export interface VaultMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'op' | 'result'>;
  readonly errors: Counter<'code'>;
  readonly duration: Histogram<'op'>;
  readonly guessesCounted: Counter;
  readonly recordsErased: Counter;
  readonly storeConflicts: Counter;
  readonly sweeps: Counter<'result'>;
  readonly rollbacksDetected: Counter;
  readonly logEntries: Counter;
  readonly logBatchSize: Histogram;
  readonly commitDelayExpired: Counter;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): VaultMetrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'coffer_vault_' });
  return {
    registry,
    requests: new Counter({
      name: 'coffer_vault_requests_total',
      help: 'Vault requests by operation and class: answered (sealed 200, any outcome), refused (4xx), error (5xx). Sealed outcomes are never labelled.',
      labelNames: ['op', 'result'],
      registers: [registry],
    }),
    errors: new Counter({ name: 'coffer_vault_request_errors_total', help: 'Refused (4xx) and failed (5xx) requests by error code (spec/vault-protocol.md §8)', labelNames: ['code'], registers: [registry] }),
    duration: new Histogram({
      name: 'coffer_vault_request_duration_seconds',
      help: 'Time from receiving a vault request to releasing its answer',
      labelNames: ['op'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    }),
    guessesCounted: new Counter({ name: 'coffer_vault_guesses_counted_total', help: 'Password guesses counted durably (each before its KE2 left)', registers: [registry] }),
    recordsErased: new Counter({ name: 'coffer_vault_records_erased_total', help: 'Records erased after reaching the guess limit (by a request or by the sweeper)', registers: [registry] }),
    storeConflicts: new Counter({ name: 'coffer_vault_store_conflicts_total', help: 'Compare-and-swap conflicts (the request was decided again)', registers: [registry] }),
    sweeps: new Counter({
      name: 'coffer_vault_sweeps_total',
      help: 'Sweep index entries handled: erased (the sweeper erased the record), nothing (nothing left to erase), failed (store or HSM error; retried), invalid (an entry naming no valid account, which no vault writes: dropped unread)',
      labelNames: ['result'],
      registers: [registry],
    }),
    rollbacksDetected: new Counter({ name: 'coffer_vault_rollbacks_detected_total', help: 'Requests and start-ups refused because the store does not continue what this vault captured (rolled back or edited; spec §13): an alarm', registers: [registry] }),
    logEntries: new Counter({ name: 'coffer_vault_log_entries_total', help: 'Rollback-protection log entries committed and captured by this node', registers: [registry] }),
    logBatchSize: new Histogram({ name: 'coffer_vault_log_batch_records', help: 'Record changes per log entry (group commit)', buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers: [registry] }),
    commitDelayExpired: new Counter({
      name: 'coffer_vault_commit_delay_expired_total',
      help: 'Group commits held open the whole commit delay by a request still deciding (latency, not CPU: a request that decides slowly, or a load so light that batches wait for nothing)',
      registers: [registry],
    }),
  };
}

/** The class of an HTTP status, for `coffer_vault_requests_total{result}`. */
export function requestClass(status: number): RequestClass {
  return status < 400 ? 'answered' : status < 500 ? 'refused' : 'error';
}
