/**
 * App tokens (spec/relay-api.md §1): JWTs signed by a key in the configured JWKS (a
 * file, or a URL fetched and cached by jose), with the configured `iss` and `aud`,
 * `exp` required (60 s leeway) and `sub` the app's account ID.
 */
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';

export interface JwtConfig {
  readonly jwksFile?: string;
  readonly jwksUrl?: string;
  readonly issuer: string;
  readonly audience: string;
  /** Accepted algorithms; asymmetric only (never `none` or HMAC). */
  readonly algorithms?: readonly string[];
}

export const DEFAULT_JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export const JWT_LEEWAY_SECONDS = 60;
/** `sub`: printable ASCII, short enough that `app:` + sub fits the vault's 128 characters. */
const SUBJECT = /^[\x21-\x7e]{1,120}$/;

export class JwtVerifier {
  readonly #keys: JWTVerifyGetKey;
  readonly #config: JwtConfig;

  constructor(config: JwtConfig) {
    this.#config = config;
    if (config.jwksFile) {
      this.#keys = createLocalJWKSet(JSON.parse(readFileSync(config.jwksFile, 'utf8')) as JSONWebKeySet);
    } else if (config.jwksUrl) {
      this.#keys = createRemoteJWKSet(new URL(config.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000 });
    } else {
      throw new Error('jwt: jwksFile or jwksUrl is required');
    }
  }

  /** The subject of a valid token, or null (expired, forged, wrong issuer/audience, …). */
  async subject(token: string): Promise<string | null> {
    try {
      const { payload } = await jwtVerify(token, this.#keys, {
        issuer: this.#config.issuer,
        audience: this.#config.audience,
        algorithms: [...(this.#config.algorithms ?? DEFAULT_JWT_ALGORITHMS)],
        clockTolerance: JWT_LEEWAY_SECONDS,
        requiredClaims: ['exp', 'sub'],
      });
      return typeof payload.sub === 'string' && SUBJECT.test(payload.sub) ? payload.sub : null;
    } catch {
      return null;
    }
  }
}
