// POST /v1/metrics: {"metrics":[{"name","tags","fields","time"}]} validated with zod, one metric at a
// time, so a bad metric is reported by its index and never stops the good ones (as bad lines do).
import { z } from 'zod';
import type { LineError, ParsedPoint, ParseResult } from './lineprotocol.ts';

const MAX_NS = 9_223_372_036_854_775_806n;
const RFC3339 = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/i;

function timeNs(v: string | number): bigint | string {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return 'time must be a finite number of epoch milliseconds';
    const whole = Math.trunc(v);
    if (!Number.isSafeInteger(whole)) return `time ${v} is out of range (years 1677–2262)`;
    const ns = BigInt(whole) * 1_000_000n + BigInt(Math.round((v - whole) * 1e6));
    return ns > MAX_NS || ns < -MAX_NS ? `time ${v} is out of range (years 1677–2262)` : ns;
  }
  const m = RFC3339.exec(v);
  const seconds = m ? Date.parse(`${m[1]}${m[3]}`) : NaN;
  if (!m || Number.isNaN(seconds)) return `time ${JSON.stringify(v.slice(0, 40))} is not an RFC 3339 timestamp such as "2026-11-21T10:00:00Z"`;
  const ns = BigInt(seconds) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
  return ns > MAX_NS || ns < -MAX_NS ? `time ${v} is out of range (years 1677–2262)` : ns;
}

const name = z.string().min(1, 'must not be empty').max(256, 'must be at most 256 characters');
const metricSchema = z
  .object({
    name,
    tags: z.record(name, name).optional(),
    fields: z.record(name, z.unknown()).refine((f) => Object.keys(f).length > 0, 'needs at least one field'),
    time: z.union([z.string(), z.number()]).optional(),
  })
  .strict();

const bodySchema = z.object({ metrics: z.array(z.unknown()).min(1, 'must hold at least one metric') }).strict();

function describe(issues: z.core.$ZodIssue[], prefix: string): string {
  return issues.map((i) => `${[prefix, ...i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))].join('')}: ${i.message}`).join('; ');
}

/** Parses a JSON batch; `line` of each point and error is the metric's index in `metrics`. */
export function parseJsonMetrics(body: Uint8Array): ParseResult | { error: string } {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch (err) {
    return { error: `body is not valid UTF-8 JSON: ${(err as Error).message}` };
  }
  const top = bodySchema.safeParse(doc);
  if (!top.success) return { error: describe(top.error.issues, 'body') };
  const points: ParsedPoint[] = [];
  const errors: LineError[] = [];
  const fieldErrors: LineError[] = [];
  top.data.metrics.forEach((raw, index) => {
    const r = metricSchema.safeParse(raw);
    if (!r.success) return void errors.push({ line: index, reason: describe(r.error.issues, `metrics[${index}]`) });
    const m = r.data;
    let t: bigint | null = null;
    if (m.time !== undefined) {
      const parsed = timeNs(m.time);
      if (typeof parsed === 'string') return void errors.push({ line: index, reason: `metrics[${index}].time: ${parsed}` });
      t = parsed;
    }
    const fields: { key: string; value: number }[] = [];
    for (const [key, v] of Object.entries(m.fields)) {
      if (typeof v === 'number' && Number.isFinite(v)) fields.push({ key, value: v });
      else if (typeof v === 'boolean') fields.push({ key, value: v ? 1 : 0 });
      else fieldErrors.push({ line: index, reason: `metrics[${index}].fields.${key}: ${typeof v === 'string' ? 'string values are not accepted' : 'must be a finite number or a boolean'}` });
    }
    if (fields.length === 0) return;
    const tags = Object.entries(m.tags ?? {}).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    points.push({ line: index, measurement: m.name, tags, fields, timeNs: t });
  });
  return { points, errors, fieldErrors };
}
