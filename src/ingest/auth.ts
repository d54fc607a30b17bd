// Token → facility. Every facility's token hashes are held in memory (a region has ~50): reloaded
// when the database announces a change (LISTEN strata_facilities, sent by a trigger on commit: a
// rotation, revocation or disable reaches the gateway in milliseconds), periodically as the fallback
// when notifications are lost, and on an unknown token; so known collectors keep authenticating
// while the database is down. A facility of another region is refused: data never crosses regions.
// A token replaced by a rotation is accepted until its grace period ends, by this process's clock
// (the remaining time is read from the database, so the two clocks need not agree).
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Notifications, Queryable } from '../db/port.ts';
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

/** Where the directory hears of changes: the database's notifications on a channel. */
export type Listen = (channel: string, on: { notify(payload: string): void; lost(err: Error): void }) => Promise<Notifications>;

/** The channel the facilities trigger notifies (sql/0010_facility_lifecycle.sql). */
export const FACILITIES_CHANNEL = 'strata_facilities';

interface Entry {
  facility: Facility;
  disabledAt: Date | null;
  /** A rotated-out token: accepted until this instant (ms, this process's clock). */
  until: number | null;
}

export class FacilityDirectory {
  private byHash = new Map<string, Entry>();
  private codes = new Map<number, string>();
  private loadedAt = 0;
  private loading: Promise<void> | null = null;
  /** A change was announced while a load ran: load once more after it. */
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private retry: NodeJS.Timeout | null = null;
  private notifications: Notifications | null = null;
  private stopped = false;
  private subscribedBefore = false;
  /** The probe sent after LISTEN and not heard yet. */
  private probing: { payload: string; heard(): void } | null = null;
  /** A probe came back on the listening connection: notifications do arrive. */
  private verified = false;
  /** Notifications heard and acted on (for tests and the log). */
  changesHeard = 0;

  constructor(
    private readonly db: Queryable,
    private readonly region: string,
    private readonly log: Logger,
    private readonly opts: { refreshMs?: number; missRefreshMs?: number; listen?: Listen; relistenMs?: number; probeTimeoutMs?: number } = {},
  ) {}

  /** Loads every facility and subscribes to changes; keeps refreshing in the background until stop(). */
  async start(): Promise<void> {
    this.timer = setInterval(() => this.refresh().catch((err) => this.log.warn('facility refresh failed', { error: err })), this.opts.refreshMs ?? 30_000);
    this.timer.unref();
    await this.subscribe();
    await this.refresh();
  }

  /** Whether changes are heard as they happen: subscribed, and a probe came back (false: only the periodic refresh). */
  get listening(): boolean {
    return this.notifications !== null && this.verified;
  }

  private async subscribe(): Promise<void> {
    if (!this.opts.listen || this.stopped) return;
    try {
      const n = await this.opts.listen(FACILITIES_CHANNEL, {
        notify: (payload) => {
          if (this.probing && payload === this.probing.payload) return this.probing.heard();
          if (payload.startsWith('probe:')) return; // another gateway's
          this.changesHeard++;
          this.refresh().catch((err) => this.log.warn('facility reload after a change failed; the periodic refresh retries', { error: err }));
        },
        lost: (err) => {
          if (this.stopped) return;
          this.notifications = null;
          this.verified = false;
          this.log.warn(`facility change notifications lost; listening again in ${(this.opts.relistenMs ?? 1_000) / 1000} s, the periodic refresh meanwhile`, { error: err });
          this.scheduleSubscribe();
        },
      });
      if (this.stopped) {
        await n.close();
        return;
      }
      this.notifications = n;
      // Changes made while nobody listened are picked up now (at start, the first load follows).
      if (this.subscribedBefore) await this.refresh().catch((err) => this.log.warn('facility reload after listening again failed; the periodic refresh retries', { error: err }));
      this.subscribedBefore = true;
      void this.probe();
    } catch (err) {
      this.log.warn('cannot listen for facility changes; the periodic refresh picks them up meanwhile', { error: err });
      this.scheduleSubscribe();
    }
  }

  /**
   * Sends a notification through the pool and waits for it on the listening connection. It does not
   * come back through PgBouncer in transaction mode (the session that ran LISTEN is handed to other
   * clients): said once, with the setting that fixes it.
   */
  private async probe(): Promise<void> {
    const payload = `probe:${randomUUID()}`;
    let timer: NodeJS.Timeout | undefined;
    const heard = new Promise<boolean>((resolve) => {
      this.probing = { payload, heard: () => resolve(true) };
      timer = setTimeout(() => resolve(false), this.opts.probeTimeoutMs ?? 5_000);
      timer.unref();
    });
    try {
      await this.db.query('SELECT pg_notify($1, $2)', [FACILITIES_CHANNEL, payload]);
    } catch (err) {
      clearTimeout(timer);
      this.probing = null;
      this.log.warn('cannot check that facility change notifications arrive; the periodic refresh picks changes up', { error: err });
      return;
    }
    const ok = await heard;
    clearTimeout(timer);
    this.probing = null;
    if (ok) this.verified = true;
    else if (!this.stopped)
      this.log.warn(
        `facility change notifications do not arrive on the listening connection (through PgBouncer in transaction mode they cannot): set STRATA_NOTIFY_DATABASE_URL to a direct connection; until then token rotations, revocations and disables take effect within the periodic refresh (${(this.opts.refreshMs ?? 30_000) / 1000} s)`,
      );
  }

  private scheduleSubscribe(): void {
    if (this.stopped || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.subscribe();
    }, this.opts.relistenMs ?? 1_000);
    this.retry.unref();
  }

  /** Whether the facilities were loaded at least once. */
  get loaded(): boolean {
    return this.loadedAt > 0;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    const n = this.notifications;
    this.notifications = null;
    n?.close().catch(() => {});
  }

  /** The code of a facility id (for metric labels); the id itself when unknown. */
  codeOf(id: number): string {
    return this.codes.get(id) ?? String(id);
  }

  /** Facilities known (with at least one token). */
  get size(): number {
    return new Set([...this.byHash.values()].map((e) => e.facility.id)).size;
  }

  refresh(): Promise<void> {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      try {
        do {
          this.again = false;
          await this.load();
        } while (this.again);
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  private async load(): Promise<void> {
    const r = await this.db.query<{ id: number; code: string; region: string; token_hash: Buffer | null; previous: Buffer | null; left_ms: number | null; disabled_at: Date | null }>(
      `SELECT id, code, region, token_hash, previous_token_hash AS previous, disabled_at,
              (extract(epoch FROM previous_token_expires_at - now()) * 1000)::float8 AS left_ms
         FROM strata.facilities WHERE retired_at IS NULL`,
    );
    const now = Date.now();
    const byHash = new Map<string, Entry>();
    for (const f of r.rows) {
      const facility = { id: f.id, code: f.code, region: f.region };
      this.codes.set(f.id, f.code);
      if (f.token_hash) byHash.set(Buffer.from(f.token_hash).toString('hex'), { facility, disabledAt: f.disabled_at, until: null });
      if (f.previous && f.left_ms !== null && f.left_ms > 0) byHash.set(Buffer.from(f.previous).toString('hex'), { facility, disabledAt: f.disabled_at, until: now + f.left_ms });
    }
    this.byHash = byHash;
    this.loadedAt = Date.now();
  }

  async authenticate(token: string): Promise<AuthResult> {
    const hash = tokenHash(token).toString('hex');
    let entry = this.byHash.get(hash);
    if (!entry && Date.now() - this.loadedAt > (this.opts.missRefreshMs ?? 2_000)) {
      // A facility added since the last refresh; refreshes are rate-limited so bad tokens cannot hammer the database.
      try {
        await this.refresh();
      } catch (err) {
        this.log.warn('facility lookup failed', { error: err });
        return { ok: false, status: 503, message: 'cannot verify the token while the database is unreachable; retry later' };
      }
      entry = this.byHash.get(hash);
    }
    if (entry && entry.until !== null && Date.now() >= entry.until) entry = undefined;
    if (!entry) return { ok: false, status: 401, message: 'unknown ingest token (revoked, replaced by a rotation, or never issued)' };
    const { facility } = entry;
    if (facility.region !== this.region) {
      return { ok: false, status: 403, message: `facility ${facility.code} belongs to region ${facility.region}; this gateway serves region ${this.region} and data never crosses regions` };
    }
    if (entry.disabledAt) {
      return { ok: false, status: 403, message: `facility ${facility.code} is disabled (since ${entry.disabledAt.toISOString()}): its writes are refused until an operator runs strata facility enable ${facility.code}` };
    }
    return { ok: true, facility };
  }
}
