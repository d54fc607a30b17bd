// `strata tier plan|run` and `strata worker` as an operator uses them, on an embedded TimescaleDB
// directory: the plan table and JSON, a bounded run and its summary, a second run that does nothing,
// clear usage errors, and the worker's scheduled run with its metrics.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import { openPglite } from '../../src/db/pglite.ts';
import { addFacility } from '../../src/facilities/registry.ts';
import { silentLogger } from '../../src/log.ts';
import { tierPolicy } from '../../src/jobs/policy.ts';
import { startWorker } from '../../src/worker.ts';
import { strata } from '../support/child.ts';

const dir = mkdtempSync(join(tmpdir(), 'strata-tier-cli-'));
const env = { STRATA_ADMIN_DATABASE_URL: `pglite:${dir}`, STRATA_LOG_LEVEL: 'error' };

beforeAll(async () => {
  const db = await openPglite(`pglite:${dir}`);
  await db.ensureTablespace('warm_data');
  await db.ensureTablespace('cold_data');
  await migrate(db, { chunkInterval: '30 days' });
  const f = await addFacility(db, { code: 'mill', region: 'test-1' });
  await db.query(`INSERT INTO strata.series (facility_id, measurement, field) VALUES ($1, 'press', 'temp')`, [f.facility.id]);
  await db.exec(`INSERT INTO strata.metrics SELECT t, s.facility_id, s.id, 20 + s.id FROM generate_series(now() - interval '400 days', now(), interval '6 hours') t, strata.series s`);
  await db.close();
});

describe('strata tier', () => {
  it('plans: every chunk with its range, tier, state and steps, and the totals', async () => {
    const r = await strata(['tier', 'plan'], env);
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toMatch(/^boundaries: warm ≤ \d{4}-\d\d-\d\d \d\d:\d\d, cold ≤ .* archive ≤ /);
    expect(r.out).toMatch(/CHUNK +RANGE \(UTC\) +SIZE +TIER +STATE +STEPS/);
    expect(r.out).toMatch(/hot → cold +default, uncompressed +move → cold_data, compress/);
    expect(r.out).toMatch(/hot → warm +default, uncompressed +move → warm_data, compress/);
    expect(r.out).toMatch(/\n_hyper_\S+ .* hot +default, uncompressed +-\n/);
    expect(r.out).toMatch(/\d+ steps on \d+ chunks; .* to move; expected savings unknown \(no chunk compressed yet\)/);
    const json = JSON.parse((await strata(['tier', 'plan', '--json'], env)).out);
    expect(json.totals.chunksWithSteps).toBeGreaterThanOrEqual(10);
    expect(json.warnings).toEqual([]);
  });

  it('runs within --max-chunks, summarizes, and finishes on the next run', async () => {
    const first = await strata(['tier', 'run', '--max-chunks', '2'], env);
    expect(first).toMatchObject({ code: 0 });
    expect(first.out).toMatch(/stopped at --max-chunks\n2 of \d+ chunks reached their tier, 0 failed; 0 of 0 cold merges; 4 steps done, 0 failed/);
    const rest = await strata(['tier', 'run', '--max-duration', '10m'], env);
    expect(rest.out).toMatch(/every planned chunk was handled/);
    const again = JSON.parse((await strata(['tier', 'run', '--json'], env)).out);
    expect(again).toMatchObject({ chunksPlanned: 0, stepsDone: 0, stopped: 'done' });
    expect((await strata(['tier', 'plan'], env)).out).toMatch(/expected savings 0 B \(at the [\d.]+:1 reached so far\)/);
  });

  it('names what is wrong with its arguments', async () => {
    expect(await strata(['tier', 'run', '--max-chunks', '0'], env)).toMatchObject({ code: 64, err: 'strata: strata tier run: --max-chunks "0" must be a whole number above 0' });
    expect(await strata(['tier', 'run', '--max-duration', 'soon'], env)).toMatchObject({ code: 64, err: expect.stringContaining('--max-duration "soon" must be a duration such as 90s') });
    expect(await strata(['tier', 'run', '--window', '25:00-01:00'], env)).toMatchObject({ code: 64, err: expect.stringContaining('maintenance window "25:00-01:00": must be HH:MM-HH:MM in UTC') });
    expect(await strata(['tier', 'plan', '--at', 'yesterday'], env)).toMatchObject({ code: 64, err: expect.stringContaining('--at "yesterday" is not a timestamp') });
    expect(await strata(['tier', 'shuffle'], env)).toMatchObject({ code: 64, err: expect.stringContaining('unknown subcommand "shuffle"') });
    expect(await strata(['tier', 'plan'], { ...env, STRATA_TIER_COLD_AFTER: '10 days' })).toMatchObject({ code: 78, err: expect.stringContaining('the cold age (10 days) must be longer than the warm age (30 days)') });
    expect(await strata(['worker'], { ...env, STRATA_TIER_SCHEDULE: 'every hour' })).toMatchObject({ code: 78, err: expect.stringContaining('STRATA_TIER_SCHEDULE="every hour": not a cron expression') });
  });

  it('warns about TimescaleDB compression and retention policies that would race with the workers', async () => {
    const db = await openPglite(`pglite:${dir}`);
    try {
      // TimescaleDB runs a policy as the hypertable's owner, which must be able to log in for it to be added.
      await db.exec(`ALTER ROLE strata_maintainer LOGIN; SELECT add_compression_policy('strata.metrics', INTERVAL '7 days'); SELECT add_retention_policy('strata.metrics', INTERVAL '5 years'); ALTER ROLE strata_maintainer NOLOGIN`);
    } finally {
      await db.close();
    }
    try {
      const plan = await strata(['tier', 'plan'], env);
      expect(plan.code).toBe(0);
      expect(plan.out).toMatch(/warning: TimescaleDB compression policy \(job \d+, every [^)]+\) runs on strata\.metrics and races with strata's workers; remove it \(SELECT remove_compression_policy\('strata\.metrics'\)\)/);
      expect(plan.out).toMatch(/warning: TimescaleDB retention policy .*\(SELECT remove_retention_policy\('strata\.metrics'\)/);
      expect(JSON.parse((await strata(['tier', 'plan', '--json'], env)).out).warnings).toHaveLength(2);
      const run = await strata(['tier', 'run'], { ...env, STRATA_LOG_LEVEL: 'warn' });
      expect(run.err).toMatch(/"level":"warn","msg":"TimescaleDB compression policy/);
    } finally {
      const db = await openPglite(`pglite:${dir}`);
      await db.exec(`SELECT remove_compression_policy('strata.metrics'); SELECT remove_retention_policy('strata.metrics')`);
      await db.close();
    }
    expect(JSON.parse((await strata(['tier', 'plan', '--json'], env)).out).warnings).toEqual([]);
  });

  it('does nothing outside the maintenance window', async () => {
    const h = new Date().getUTCHours();
    const later = `${String((h + 2) % 24).padStart(2, '0')}:00-${String((h + 3) % 24).padStart(2, '0')}:00`;
    const r = await strata(['tier', 'run', '--window', later], env);
    expect(r).toMatchObject({ code: 0, out: expect.stringContaining('outside (or at the end of) the maintenance window') });
  });
});

describe('strata worker', () => {
  it('runs tiering on its schedule and reports chunks, bytes and ratios per tier and the last success', async () => {
    const db = await openPglite(`pglite:${dir}`);
    try {
      await db.exec(`INSERT INTO strata.metrics SELECT t, facility_id, series_id, 1 FROM generate_series(now() - interval '600 days', now() - interval '560 days', interval '6 hours') t, (SELECT facility_id, id AS series_id FROM strata.series) s`);
      const w = await startWorker(db, silentLogger, { policy: tierPolicy({}), schedule: '* * * * * *', lockTimeoutMs: 1_000, host: '127.0.0.1', port: 0, defaultMetrics: false });
      try {
        let text = '';
        for (let i = 0; i < 100 && !/strata_tier_last_success_timestamp_seconds [1-9]/.test(text); i++) {
          await new Promise((r) => setTimeout(r, 100));
          text = await (await fetch(`${w.url}/metrics`)).text();
        }
        expect(text).toMatch(/strata_tier_last_success_timestamp_seconds [1-9]\d+/);
        expect(text).toMatch(/strata_tier_chunks\{tier="cold"\} [1-9]/);
        expect(text).toMatch(/strata_tier_bytes\{tier="hot"\} [1-9]/);
        expect(text).toMatch(/strata_tier_compression_ratio\{tier="cold"\} [1-9]/);
        expect(text).toMatch(/strata_tier_steps_pending 0/);
        expect(text).toMatch(/strata_tier_step_seconds_count\{step="compress"\} [1-9]/);
        expect((await fetch(`${w.url}/health`)).status).toBe(200);
      } finally {
        await w.stop();
      }
    } finally {
      await db.close();
    }
  });
});
