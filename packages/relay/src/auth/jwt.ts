/**
 * App tokens (spec/relay-api.md §1): JWTs signed by a key in the configured JWKS (a
 * file, or a URL fetched and cached by jose), with the configured `iss` and `aud`,
 * `exp` required (60 s leeway) and `sub` the app's account ID.
 */
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';

export interface JwtConfig {
  readonly jwksFile?: string;
  readonly jwksUrl?: string;
  readonly issuer: string;
  readonly audience: string;
  /** Accepted algorithms; asymmetric only (never `none` or HMAC). */
  readonly algorithms?: readonly string[];
  /** The oldest `iat` accepted (seconds); `iat` is then required, and one in the future is refused. Default 24 h. */
  readonly maxTokenAgeSeconds?: number;
}

export const DEFAULT_JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export const JWT_LEEWAY_SECONDS = 60;
/** `sub`: printable ASCII, short enough that `app:` + sub fits the vault's 128 characters. */
const SUBJECT = /^[\x21-\x7e]{1,120}$/;

export const DEFAULT_JWT_MAX_AGE_SECONDS = 24 * 3600;

export class JwtVerifier {
  #keys: JWTVerifyGetKey;
  readonly #config: JwtConfig;
  #watching = false;

  constructor(config: JwtConfig) {
    this.#config = config;
    if (config.jwksFile) {
      this.#keys = this.#readFile(config.jwksFile);
    } else if (config.jwksUrl) {
      this.#keys = createRemoteJWKSet(new URL(config.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000 });
    } else {
      throw new Error('jwt: jwksFile or jwksUrl is required');
    }
  }

  #readFile(file: string): JWTVerifyGetKey {
    return createLocalJWKSet(JSON.parse(readFileSync(file, 'utf8')) as JSONWebKeySet);
  }

  /**
   * Reads the JWKS file again (SIGHUP, or the file changed). A file that does not parse
   * keeps the keys in use and throws, so a half-written file never locks everyone out.
   */
  reload(): void {
    if (this.#config.jwksFile) this.#keys = this.#readFile(this.#config.jwksFile);
  }

  /** Reloads when the JWKS file changes (polled every `intervalMs`). */
  watch(onError: (err: Error) => void, intervalMs = 2000): void {
    const file = this.#config.jwksFile;
    if (!file || this.#watching) return;
    this.#watching = true;
    watchFile(file, { interval: intervalMs, persistent: false }, (cur, prev) => {
      if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size) return;
      try {
        this.reload();
      } catch (err) {
        onError(err as Error);
      }
    });
  }

  close(): void {
    if (this.#config.jwksFile && this.#watching) unwatchFile(this.#config.jwksFile);
    this.#watching = false;
  }

  /** The subject of a valid token, or null (expired, forged, too old, issued in the future, wrong issuer/audience, …). */
  async subject(token: string): Promise<string | null> {
    try {
      const { payload } = await jwtVerify(token, this.#keys, {
        issuer: this.#config.issuer,
        audience: this.#config.audience,
        algorithms: [...(this.#config.algorithms ?? DEFAULT_JWT_ALGORITHMS)],
        clockTolerance: JWT_LEEWAY_SECONDS,
        requiredClaims: ['exp', 'sub', 'iat'],
        maxTokenAge: this.#config.maxTokenAgeSeconds ?? DEFAULT_JWT_MAX_AGE_SECONDS,
      });
      // jose allows an iat up to the leeway in the future; so do we, and not more.
      const now = Math.floor(Date.now() / 1000);
      if (typeof payload.iat !== 'number' || payload.iat > now + JWT_LEEWAY_SECONDS) return null;
      // A lifetime longer than the maximum age is refused as a whole, not only once it is old.
      if (typeof payload.exp === 'number' && payload.exp - payload.iat > (this.#config.maxTokenAgeSeconds ?? DEFAULT_JWT_MAX_AGE_SECONDS) + JWT_LEEWAY_SECONDS) return null;
      return typeof payload.sub === 'string' && SUBJECT.test(payload.sub) ? payload.sub : null;
    } catch {
      return null;
    }
  }
}
