/** Prometheus metrics of the relay (spec/relay-api.md §5). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface RelayMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'status'>;
  readonly vaultForward: Histogram<'outcome'>;
  readonly vaultAttempts: Counter<'node' | 'outcome'>;
  readonly blobBytes: Counter<'direction'>;
  /** Upload body bytes received and not yet stored, across the relay (its in-flight budget's use). */
  readonly uploadBytesInFlight: Gauge;
  /** Connections refused because their address had too many open (connection-cap.ts). */
  readonly connectionsRefused: Counter;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): RelayMetrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({ name: 'coffer_relay_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers: [registry] }),
    vaultForward: new Histogram({
      name: 'coffer_relay_vault_forward_seconds',
      help: 'Time to forward one vault message, all attempts included',
      labelNames: ['outcome'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    vaultAttempts: new Counter({ name: 'coffer_relay_vault_attempts_total', help: 'Forwarding attempts per vault node and outcome', labelNames: ['node', 'outcome'], registers: [registry] }),
    blobBytes: new Counter({ name: 'coffer_relay_blob_bytes_total', help: 'Blob bytes received (in) and sent (out)', labelNames: ['direction'], registers: [registry] }),
    connectionsRefused: new Counter({ name: 'coffer_relay_connections_refused_total', help: 'Connections refused: their client address had maxConnectionsPerAddress open', registers: [registry] }),
    uploadBytesInFlight: new Gauge({ name: 'coffer_relay_upload_bytes_in_flight', help: 'Upload body bytes received and not yet stored (the in-flight budget in use)', registers: [registry] }),
  };
}
