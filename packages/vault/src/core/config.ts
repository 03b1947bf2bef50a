/**
 * The deployment policy the core enforces. Validated once, at start-up.
 */
import { DEFAULT_KSF, ksfAtLeast, type KsfParams } from '@coffer/protocol';

export interface CorePolicy {
  /** Wrong guesses allowed before the record is erased (1..255; default 10). */
  readonly guessLimit: number;
  /** How long a login may sit between KE2 and KE3 (default 60 s). */
  readonly loginTtlMs: number;
  /** How long a registration may sit between its two round trips (default 10 min). */
  readonly registrationTtlMs: number;
  /** How long a change-password grant from a login stays valid (default 10 min). */
  readonly grantTtlMs: number;
  /** A login request's timestamp must be within this of the vault's clock (default 5 min). */
  readonly freshnessWindowMs: number;
  /** Logins per account per freshness window before `rate-limited` (default 32). */
  readonly loginsPerWindow: number;
  /** register-starts per account per `registerWindowMs` before `rate-limited` (default 8). */
  readonly registerStartsPerWindow: number;
  /** The register-start rate window (default 1 h). */
  readonly registerWindowMs: number;
  /**
   * The weakest KSF a registration may declare: memory and passes (an attacker's cost is
   * memory × passes whatever the lanes, so `parallelism` is not part of the floor). Never
   * below DEFAULT_KSF unless `insecureAllowWeakKsfForTesting`.
   */
  readonly minimumKsf: KsfParams;
  /** Lets registrations use INSECURE_FAST_KSF_FOR_TESTING. Never in production. */
  readonly insecureAllowWeakKsfForTesting: boolean;
}

export const DEFAULT_POLICY: CorePolicy = {
  guessLimit: 10,
  loginTtlMs: 60_000,
  registrationTtlMs: 600_000,
  grantTtlMs: 600_000,
  freshnessWindowMs: 300_000,
  loginsPerWindow: 32,
  registerStartsPerWindow: 8,
  registerWindowMs: 3_600_000,
  minimumKsf: DEFAULT_KSF,
  insecureAllowWeakKsfForTesting: false,
};

/** @throws RangeError naming the field. */
export function checkPolicy(p: CorePolicy): CorePolicy {
  const int = (name: keyof CorePolicy, v: number, lo: number, hi: number): void => {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`${name}: must be an integer in ${lo}..${hi}, got ${v}`);
  };
  int('guessLimit', p.guessLimit, 1, 255);
  int('loginTtlMs', p.loginTtlMs, 1_000, 3_600_000);
  int('registrationTtlMs', p.registrationTtlMs, 1_000, 86_400_000);
  int('grantTtlMs', p.grantTtlMs, 1_000, 86_400_000);
  int('freshnessWindowMs', p.freshnessWindowMs, 1_000, 86_400_000);
  int('loginsPerWindow', p.loginsPerWindow, 1, 64);
  int('registerStartsPerWindow', p.registerStartsPerWindow, 1, 64);
  int('registerWindowMs', p.registerWindowMs, 60_000, 86_400_000);
  const k = p.minimumKsf;
  if (typeof k !== 'object' || k === null || k.algorithm !== 'argon2id' || !Number.isInteger(k.memoryKiB) || !Number.isInteger(k.iterations) || !Number.isInteger(k.parallelism)) {
    throw new RangeError('minimumKsf: must be { algorithm: "argon2id", memoryKiB, iterations, parallelism } with integer values');
  }
  if (!p.insecureAllowWeakKsfForTesting && !ksfAtLeast(k, DEFAULT_KSF)) {
    throw new RangeError(`minimumKsf: ${k.memoryKiB} KiB × ${k.iterations} passes is below the default floor (${DEFAULT_KSF.memoryKiB} KiB × ${DEFAULT_KSF.iterations}); a lower floor lets clients register records that are cheap to attack`);
  }
  if (typeof p.insecureAllowWeakKsfForTesting !== 'boolean') throw new RangeError('insecureAllowWeakKsfForTesting: must be a boolean');
  return p;
}
