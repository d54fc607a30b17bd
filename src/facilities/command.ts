// `strata facility …` and `strata audit`: argument parsing and output. The work is in registry.ts,
// grants.ts, lifecycle.ts and audit.ts; the caller (src/cli.ts) opens the admin connection.
import { parseArgs } from 'node:util';
import type { Db } from '../db/port.ts';
import { UsageError } from '../errors.ts';
import { parseDuration } from '../units.ts';
import { listAudit } from './audit.ts';
import { grantFacility, revokeFacility } from './grants.ts';
import { removeFacility, revokeToken, rotateToken, setDisabled } from './lifecycle.ts';
import { addFacility, listFacilities } from './registry.ts';

/** Runs fn on the admin connection; `readOnly`: a running `strata dev` may answer it. */
export type WithDb = <T>(purpose: string, fn: (db: Db) => Promise<T>, readOnly?: boolean) => Promise<T>;

const SUBCOMMANDS = 'add, list, grant, revoke, rotate-token, revoke-token, disable, enable or remove';

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

/** One positional <code>, or a usage error naming the command. */
function oneCode(positionals: string[], usage: string): string {
  if (positionals.length !== 1) throw new UsageError(`usage: strata facility ${usage}`);
  return positionals[0]!;
}

export async function facilityCommand(args: string[], withDb: WithDb, out: (line: string) => void): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'add') {
    const { values, positionals } = parseArgs({
      args: rest,
      allowPositionals: true,
      options: { region: { type: 'string' }, name: { type: 'string' }, json: { type: 'boolean' } },
    });
    if (positionals.length !== 1) throw new UsageError('usage: strata facility add <code> --region <region> [--name <text>] [--json]');
    if (!values.region) throw new UsageError('strata facility add: --region is required (the region whose gateway accepts this facility)');
    const created = await withDb('for strata facility add', (db) =>
      addFacility(db, { code: positionals[0]!, region: values.region!, ...(values.name !== undefined ? { name: values.name } : {}) }),
    );
    const f = created.facility;
    if (values.json) {
      out(JSON.stringify({ ...f, token: created.token, readerPassword: created.readerPassword }, null, 2));
    } else {
      out(
        [
          `facility ${f.code} registered (id ${f.id}, region ${f.region}${f.name ? `, "${f.name}"` : ''})`,
          `ingest token:    ${created.token}`,
          `reader login:    ${f.readerRole}`,
          `reader password: ${created.readerPassword}`,
          'The token and password are shown only now; Strata keeps only their hashes.',
        ].join('\n'),
      );
    }
    return 0;
  }
  if (sub === 'list') {
    const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' } } });
    const facilities = await withDb('for strata facility list', (db) => listFacilities(db), true);
    if (values.json) out(JSON.stringify(facilities, null, 2));
    else if (facilities.length === 0) out('no facilities registered (add one with: strata facility add <code> --region <region>)');
    else
      out(
        table([
          ['ID', 'CODE', 'REGION', 'NAME', 'READER ROLE', 'SERIES', 'STATE', 'CREATED'],
          ...facilities.map((f) => [
            String(f.id), f.code, f.region, f.name ?? '', f.readerRole, String(f.seriesCount),
            f.state + (f.previousTokenValidUntil ? ` (old token until ${f.previousTokenValidUntil.toISOString()})` : ''), f.createdAt.toISOString(),
          ]),
        ]),
      );
    return 0;
  }
  if (sub === 'grant' || sub === 'revoke') {
    const { positionals } = parseArgs({ args: rest, allowPositionals: true, options: {} });
    if (positionals.length !== 2) throw new UsageError(`usage: strata facility ${sub} <role> <facility>`);
    const [role, code] = positionals as [string, string];
    const r = await withDb(`for strata facility ${sub}`, (db) => (sub === 'grant' ? grantFacility(db, role, code) : revokeFacility(db, role, code)));
    if (sub === 'grant') out(r.changed ? `role ${role} may now read facility ${code} (through strata.facility_metrics)` : `role ${role} could already read facility ${code}`);
    else out(r.changed ? `role ${role} may no longer read facility ${code}` : `role ${role} had no grant on facility ${code}; nothing to revoke`);
    return 0;
  }
  if (sub === 'rotate-token') {
    const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { grace: { type: 'string' }, json: { type: 'boolean' } } });
    const code = oneCode(positionals, 'rotate-token <code> [--grace 10m] [--json]');
    const grace = values.grace === undefined ? 0 : parseDuration(values.grace);
    if (grace === null) throw new UsageError(`strata facility rotate-token --grace "${values.grace}": not a duration; give one such as 10m, 1h30m or 90s`);
    const r = await withDb('for strata facility rotate-token', (db) => rotateToken(db, code, grace));
    if (values.json) out(JSON.stringify(r, null, 2));
    else
      out(
        [
          `facility ${code}: new ingest token: ${r.token}`,
          r.previousValidUntil
            ? `The previous token keeps working until ${r.previousValidUntil.toISOString()}; move the collectors to the new one before then.`
            : 'The previous token stopped working now (give --grace 10m to keep it for a while).',
          'The token is shown only now; Strata keeps only its hash.',
        ].join('\n'),
      );
    return 0;
  }
  if (sub === 'revoke-token') {
    const { positionals } = parseArgs({ args: rest, allowPositionals: true, options: {} });
    const code = oneCode(positionals, 'revoke-token <code>');
    const r = await withDb('for strata facility revoke-token', (db) => revokeToken(db, code));
    out(r.changed ? `facility ${code}: its tokens no longer work; issue a new one with strata facility rotate-token ${code}` : `facility ${code} had no working token; nothing to revoke`);
    return 0;
  }
  if (sub === 'disable' || sub === 'enable') {
    const { positionals } = parseArgs({ args: rest, allowPositionals: true, options: {} });
    const code = oneCode(positionals, `${sub} <code>`);
    const r = await withDb(`for strata facility ${sub}`, (db) => setDisabled(db, code, sub === 'disable'));
    if (sub === 'disable') out(r.changed ? `facility ${code} disabled: its writes are refused (403) until strata facility enable ${code}` : `facility ${code} was already disabled`);
    else out(r.changed ? `facility ${code} enabled: its writes are accepted again` : `facility ${code} was not disabled`);
    return 0;
  }
  if (sub === 'remove') {
    const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { 'keep-data': { type: 'boolean' }, 'delete-data': { type: 'boolean' }, json: { type: 'boolean' } } });
    const code = oneCode(positionals, 'remove <code> [--keep-data | --delete-data] [--json]');
    const r = await withDb('for strata facility remove', (db) => removeFacility(db, code, { keepData: values['keep-data'] === true, deleteData: values['delete-data'] === true }));
    if (values.json) out(JSON.stringify(r, null, 2));
    else if (r.outcome === 'retired') out(`facility ${code} retired: tokens, grants and reader role ${r.readerRole} removed; its ${r.series} series and their rows kept (the code stays taken)`);
    else out(`facility ${code} removed with reader role ${r.readerRole}${r.rows || r.series ? `, ${r.rows} rows and ${r.series} series deleted` : ''}`);
    return 0;
  }
  throw new UsageError(`strata facility: unknown subcommand ${sub ? `"${sub}"` : '(none)'}; use ${SUBCOMMANDS}`);
}

export async function auditCommand(args: string[], withDb: WithDb, out: (line: string) => void): Promise<number> {
  const { values } = parseArgs({ args, options: { since: { type: 'string' }, facility: { type: 'string' }, json: { type: 'boolean' } } });
  let since: Date | undefined;
  if (values.since !== undefined) {
    const ago = /^\d/.test(values.since) && !values.since.includes('-') ? parseDuration(values.since) : null;
    since = ago !== null ? new Date(Date.now() - ago) : new Date(values.since);
    if (Number.isNaN(since.getTime())) throw new UsageError(`strata audit: --since "${values.since}" is neither a time (2026-12-01, 2026-12-01T08:00:00Z) nor a duration ago (24h, 90m)`);
  }
  const entries = await withDb('for strata audit', (db) => listAudit(db, { ...(since ? { since } : {}), ...(values.facility ? { facility: values.facility } : {}) }));
  if (values.json) out(JSON.stringify(entries, null, 2));
  else if (entries.length === 0) out(since ? `no admin actions since ${since.toISOString()}` : 'no admin actions recorded');
  else
    out(
      table([
        ['AT', 'DB ROLE', 'OS USER', 'ACTION', 'FACILITY', 'DETAILS'],
        ...entries.map((e) => [e.at.toISOString(), e.dbRole, e.osUser ?? '', e.action, e.facility ?? '', Object.keys(e.details).length ? JSON.stringify(e.details) : '']),
      ]),
    );
  return 0;
}
