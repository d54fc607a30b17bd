// Token → facility. Every facility's token hash is held in memory (a region has ~50), refreshed
// periodically and on an unknown token, so known collectors keep authenticating while the database
// is down. A facility of another region is refused: data never crosses regions.
import type { IncomingHttpHeaders } from 'node:http';
import type { Queryable } from '../db/port.ts';
import { tokenHash } from '../facilities/secrets.ts';
import type { Logger } from '../log.ts';
import type { Facility } from './types.ts';

export type AuthResult =
  | { ok: true; facility: Facility }
  | { ok: false; status: 401 | 403 | 503; message: string };

/** The token a request carries: `Authorization: Token|Bearer <t>`; for the v1 API also Basic auth or `?p=`. */
export function requestToken(headers: IncomingHttpHeaders, query: URLSearchParams, v1: boolean): { token: string } | { error: string } {
  const header = headers.authorization;
  if (header) {
    const m = /^(\S+)\s+(.+)$/.exec(header.trim());
    const scheme = m?.[1]?.toLowerCase();
    if (m && (scheme === 'token' || scheme === 'bearer')) return { token: m[2]!.trim() };
    if (m && scheme === 'basic' && v1) {
      const decoded = Buffer.from(m[2]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon >= 0 && decoded.length > colon + 1) return { token: decoded.slice(colon + 1) };
      return { error: 'Basic credentials must carry the ingest token as the password' };
    }
    return { error: `unsupported Authorization scheme${m ? ` "${m[1]}"` : ''}; send "Authorization: Token <token>"` };
  }
  const p = v1 ? query.get('p') : null;
  if (p) return { token: p };
  return { error: `missing credentials; send "Authorization: Token <token>"${v1 ? ' (or u/p query parameters, or Basic auth with the token as password)' : ''}` };
}

export class FacilityDirectory {
  private byHash = new Map<string, Facility>();
  private codes = new Map<number, string>();
  private loadedAt = 0;
  private loading: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly db: Queryable,
    private readonly region: string,
    private readonly log: Logger,
    private readonly opts: { refreshMs?: number; missRefreshMs?: number } = {},
  ) {}

  /** Loads every facility; keeps refreshing in the background until stop(). */
  async start(): Promise<void> {
    this.timer = setInterval(() => this.refresh().catch((err) => this.log.warn('facility refresh failed', { error: err })), this.opts.refreshMs ?? 30_000);
    this.timer.unref();
    await this.refresh();
  }

  /** Whether the facilities were loaded at least once. */
  get loaded(): boolean {
    return this.loadedAt > 0;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** The code of a facility id (for metric labels); the id itself when unknown. */
  codeOf(id: number): string {
    return this.codes.get(id) ?? String(id);
  }

  get size(): number {
    return this.byHash.size;
  }

  refresh(): Promise<void> {
    this.loading ??= (async () => {
      try {
        const r = await this.db.query<{ id: number; code: string; region: string; token_hash: Buffer }>(
          'SELECT id, code, region, token_hash FROM strata.facilities',
        );
        this.byHash = new Map(r.rows.map((f) => [Buffer.from(f.token_hash).toString('hex'), { id: f.id, code: f.code, region: f.region }]));
        for (const f of this.byHash.values()) this.codes.set(f.id, f.code);
        this.loadedAt = Date.now();
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  async authenticate(token: string): Promise<AuthResult> {
    const hash = tokenHash(token).toString('hex');
    let facility = this.byHash.get(hash);
    if (!facility && Date.now() - this.loadedAt > (this.opts.missRefreshMs ?? 2_000)) {
      // A facility added since the last refresh; refreshes are rate-limited so bad tokens cannot hammer the database.
      try {
        await this.refresh();
      } catch (err) {
        this.log.warn('facility lookup failed', { error: err });
        return { ok: false, status: 503, message: 'cannot verify the token while the database is unreachable; retry later' };
      }
      facility = this.byHash.get(hash);
    }
    if (!facility) return { ok: false, status: 401, message: 'unknown ingest token' };
    if (facility.region !== this.region) {
      return { ok: false, status: 403, message: `facility ${facility.code} belongs to region ${facility.region}; this gateway serves region ${this.region} and data never crosses regions` };
    }
    return { ok: true, facility };
  }
}
