// The JSON endpoint's parser: each metric validated on its own, reported by index; times exact.
import { describe, expect, it } from 'vitest';
import { parseJsonMetrics } from '../../src/ingest/json.ts';

const parse = (doc: unknown) => parseJsonMetrics(Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)));

describe('JSON metrics', () => {
  it('turns metrics into points with sorted tags, numeric and boolean fields, exact times', () => {
    const r = parse({
      metrics: [
        { name: 'press', tags: { z: '1', a: '2' }, fields: { temp: 71.5, running: true, stopped: false }, time: '2026-11-21T10:00:00.123456789Z' },
        { name: 'press', fields: { temp: 1 }, time: 1_763_719_200_000.5 },
        { name: 'press', fields: { temp: 2 }, time: '2026-11-21T12:00:00+02:00' },
        { name: 'press', fields: { temp: 3 } },
      ],
    });
    expect(r).toEqual({
      errors: [],
      fieldErrors: [],
      points: [
        { line: 0, measurement: 'press', tags: [['a', '2'], ['z', '1']], fields: [{ key: 'temp', value: 71.5 }, { key: 'running', value: 1 }, { key: 'stopped', value: 0 }], timeNs: 1_795_255_200_123_456_789n },
        { line: 1, measurement: 'press', tags: [], fields: [{ key: 'temp', value: 1 }], timeNs: 1_763_719_200_000_500_000n },
        { line: 2, measurement: 'press', tags: [], fields: [{ key: 'temp', value: 2 }], timeNs: 1_795_255_200_000_000_000n },
        { line: 3, measurement: 'press', tags: [], fields: [{ key: 'temp', value: 3 }], timeNs: null },
      ],
    });
  });

  it('reports each bad metric and field by index and keeps the good ones', () => {
    const r = parse({
      metrics: [
        { name: '', fields: { v: 1 } },
        { name: 'ok', fields: { v: 1, s: 'text', n: null } },
        { name: 'x', tags: { t: 5 }, fields: { v: 1 } },
        { name: 'x', fields: {} },
        { name: 'x', fields: { v: 1 }, extra: 1 },
        'not an object',
      ],
    });
    if ('error' in r) throw new Error(r.error);
    expect(r.points.map((p) => p.line)).toEqual([1]);
    expect(r.points[0]!.fields).toEqual([{ key: 'v', value: 1 }]);
    expect(r.fieldErrors).toEqual([
      { line: 1, reason: 'metrics[1].fields.s: string values are not accepted' },
      { line: 1, reason: 'metrics[1].fields.n: must be a finite number or a boolean' },
    ]);
    expect(r.errors.map((e) => e.line)).toEqual([0, 2, 3, 4, 5]);
    expect(r.errors[0]!.reason).toMatch(/^metrics\[0\]\.name: must not be empty/);
    expect(r.errors[1]!.reason).toMatch(/^metrics\[2\]\.tags\.t: /);
    expect(r.errors[2]!.reason).toBe('metrics[3].fields: needs at least one field');
    expect(r.errors[3]!.reason).toMatch(/^metrics\[4\]: .*extra/);
  });

  it('rejects a body that is not a metrics document as a whole', () => {
    expect(parse('[1,2]')).toEqual({ error: expect.stringMatching(/^body: /) });
    expect(parse({ metrics: [] })).toEqual({ error: 'body.metrics: must hold at least one metric' });
    expect(parseJsonMetrics(Buffer.from([0x7b, 0xff, 0x7d]))).toEqual({ error: expect.stringMatching(/^body is not valid UTF-8 JSON/) });
  });
});
