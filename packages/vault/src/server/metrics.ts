/** Prometheus metrics of one vault service (own registry, so tests can run several). */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface VaultMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'op' | 'outcome'>;
  readonly duration: Histogram<'op'>;
  readonly guessesCounted: Counter;
  readonly recordsErased: Counter;
  readonly storeConflicts: Counter;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): VaultMetrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'coffer_vault_' });
  return {
    registry,
    requests: new Counter({ name: 'coffer_vault_requests_total', help: 'Vault requests by operation and outcome (or error:<code>)', labelNames: ['op', 'outcome'], registers: [registry] }),
    duration: new Histogram({
      name: 'coffer_vault_request_duration_seconds',
      help: 'Time from receiving a vault request to releasing its answer',
      labelNames: ['op'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [registry],
    }),
    guessesCounted: new Counter({ name: 'coffer_vault_guesses_counted_total', help: 'Password guesses counted durably (each before its KE2 left)', registers: [registry] }),
    recordsErased: new Counter({ name: 'coffer_vault_records_erased_total', help: 'Records erased after reaching the guess limit', registers: [registry] }),
    storeConflicts: new Counter({ name: 'coffer_vault_store_conflicts_total', help: 'Compare-and-swap conflicts (the request was decided again)', registers: [registry] }),
  };
}
