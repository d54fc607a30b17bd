// The README's settings table and the configuration schema say the same: every variable once, under
// its file key, with the default the schema (or, for the slow-client limits, the gateway) applies.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENV_NAMES, configSchema } from '../src/config.ts';
import { SLOW_CLIENT_DEFAULTS } from '../src/ingest/server.ts';

const README = readFileSync(join(import.meta.dirname, '../README.md'), 'utf8');
/** Rows of the settings table: `| \`STRATA_X\` | \`key\` | default | meaning |`. */
const rows = [...README.matchAll(/^\| `(STRATA_[A-Z0-9_]+)` \| `([A-Za-z0-9]+)` \| ([^|]*) \|/gm)].map((m) => ({ variable: m[1]!, key: m[2]!, cell: m[3]!.trim() }));
const defaults = configSchema.parse({}) as Record<string, unknown>;
/** Settings left unset in the schema whose default the gateway applies (src/ingest/server.ts). */
const GATEWAY_DEFAULTS: Record<string, number> = {
  headersTimeoutMs: SLOW_CLIENT_DEFAULTS.headersTimeoutMs,
  idleTimeoutMs: SLOW_CLIENT_DEFAULTS.idleTimeoutMs,
  bodyIdleTimeoutMs: SLOW_CLIENT_DEFAULTS.bodyIdleTimeoutMs,
  bodyMinBytesPerSecond: SLOW_CLIENT_DEFAULTS.bodyMinBytesPerSecond,
  maxConnections: SLOW_CLIENT_DEFAULTS.maxConnections,
};
const UNITS: Record<string, number> = { KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** What a default cell says, as the schema would hold it. */
function cellValue(cell: string, like: unknown): unknown {
  const text = cell.replace(/^`(.*)`$/, '$1');
  if (text === '—') return undefined;
  if (typeof like === 'number') {
    const m = /^(\d+)(?: (KiB|MiB|GiB))?$/.exec(text);
    return m ? Number(m[1]) * (m[2] ? UNITS[m[2]]! : 1) : text;
  }
  if (typeof like === 'boolean') return text === '1' ? true : text === '0' ? false : text;
  return text;
}

describe('the README settings table', () => {
  it('lists every setting once, under its variable and file key', () => {
    expect(rows.length).toBeGreaterThan(40);
    const listed = rows.map((r) => `${r.variable} ${r.key}`).sort();
    const known = Object.entries(ENV_NAMES).map(([key, variable]) => `${variable} ${key}`).sort();
    expect(listed).toEqual(known);
  });

  it('gives each setting the default the code applies', () => {
    const wrong = rows.flatMap(({ key, cell, variable }) => {
      const want = key in GATEWAY_DEFAULTS ? GATEWAY_DEFAULTS[key] : defaults[key];
      // A setting without a value of its own (a URL, a path, the machine's cores): described, not given.
      if (want === undefined) return cell === '' ? [`${variable}: no default given`] : /^`?\d/.test(cell) ? [`${variable}: README says ${cell}, the schema has none`] : [];
      const said = cellValue(cell, want);
      return said === want ? [] : [`${variable}: README says ${cell}, the code ${JSON.stringify(want)}`];
    });
    expect(wrong).toEqual([]);
  });
});
