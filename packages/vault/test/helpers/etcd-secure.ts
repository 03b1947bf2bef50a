// Moved to product code (scripts/cluster.mjs uses it): src/server/cluster-etcd-pki.ts.
export * from '../../src/server/cluster-etcd-pki.js';
