// The SQLSTATE classifier decides whether a batch is retried (then spooled), rejected as bad data,
// or failed as a server problem; the backoff spreads retries out.
import { describe, expect, it } from 'vitest';
import { StrataError } from '../../src/errors.ts';
import { backoffMs, classify } from '../../src/ingest/classify.ts';

const pgError = (code: string) => Object.assign(new Error(`server error ${code}`), { code, severity: 'ERROR' });

describe('classify', () => {
  it.each([
    ['08006', 'retry'], // connection failure
    ['08P01', 'retry'], // PgBouncer: server login failing
    ['57P01', 'retry'], // admin shutdown
    ['57P02', 'retry'], // crash shutdown
    ['57P03', 'retry'], // cannot connect now (starting up)
    ['25006', 'retry'], // read-only transaction after a failover
    ['40001', 'retry'], // serialization failure
    ['40P01', 'retry'], // deadlock
    ['22003', 'data'], // numeric value out of range
    ['22P02', 'data'], // invalid text representation
    ['23514', 'data'], // check violation
    ['23503', 'data'], // foreign key violation
    ['54000', 'data'], // program limit exceeded: index row too large
    ['42P01', 'fatal'], // undefined table: retrying cannot help
    ['42501', 'fatal'], // insufficient privilege
    ['XX000', 'fatal'], // internal error
  ])('SQLSTATE %s is %s', (code, expected) => {
    expect(classify(pgError(code))).toBe(expected);
  });

  it('treats network failures and connect errors as retryable, anything unknown as fatal', () => {
    expect(classify(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6432'), { code: 'ECONNREFUSED' }))).toBe('retry');
    expect(classify(new Error('Connection terminated unexpectedly'))).toBe('retry');
    expect(classify(new Error('Query read timeout'))).toBe('retry');
    expect(classify(new StrataError('db_connect', 'cannot connect to postgres://x'))).toBe('retry');
    expect(classify(new TypeError('cannot read properties of undefined'))).toBe('fatal');
    // A Node error code without a server severity is not a SQLSTATE.
    expect(classify(Object.assign(new Error('x'), { code: '23505' }))).toBe('fatal');
  });

  it('backs off exponentially with full jitter under a cap', () => {
    expect(backoffMs(0, 50, 2_000, () => 0.999)).toBe(49);
    expect(backoffMs(3, 50, 2_000, () => 0.999)).toBe(399);
    expect(backoffMs(10, 50, 2_000, () => 0.999)).toBe(1_998);
    expect(backoffMs(10, 50, 2_000, () => 0)).toBe(0);
  });
});
