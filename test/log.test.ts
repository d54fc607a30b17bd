// Structured JSON logs with credentials redacted.
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.ts';
import { registerSecret } from '../src/redact.ts';

function capture(level: 'debug' | 'info' | 'warn' | 'error' = 'info') {
  const lines: string[] = [];
  return { lines, log: createLogger(level, (l) => lines.push(l)) };
}

describe('logger', () => {
  it('writes one JSON object per line with time, level, message and fields', () => {
    const { lines, log } = capture();
    log.child({ component: 'migrate' }).info('migration applied', { migration: '0001_roles', n: 1 });
    expect(lines).toHaveLength(1);
    const rec = JSON.parse(lines[0]!);
    expect(rec).toMatchObject({ level: 'info', msg: 'migration applied', component: 'migrate', migration: '0001_roles', n: 1 });
    expect(new Date(rec.time).toString()).not.toBe('Invalid Date');
  });

  it('drops records below its level', () => {
    const { lines, log } = capture('warn');
    log.debug('d');
    log.info('i');
    log.warn('w');
    log.error('e');
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(['w', 'e']);
  });

  it('redacts URL passwords, password=, auth headers and registered secrets in messages, fields and errors', () => {
    const { lines, log } = capture();
    registerSecret('Kx7-registered-secret');
    log.error('cannot connect to postgres://gw:Pw1-in-url@db:5432/m', {
      dsn: 'host=db password=Pw2-kv user=gw',
      header: 'Authorization: Token stk_AAAAAAAAAAAAAAAAAAAAAAAA',
      nested: { list: ['value Kx7-registered-secret here'] },
      error: new Error('auth failed for postgresql://u:Pw3-err@h/d'),
    });
    const text = lines.join('\n');
    for (const secret of ['Pw1-in-url', 'Pw2-kv', 'stk_AAAA', 'Kx7-registered-secret', 'Pw3-err']) expect(text).not.toContain(secret);
    const rec = JSON.parse(lines[0]!);
    expect(rec.msg).toBe('cannot connect to postgres://gw:***@db:5432/m');
    expect(rec.dsn).toBe('host=db password=*** user=gw');
    expect(rec.header).toBe('Authorization: Token ***');
    expect(rec.nested.list[0]).toBe('value *** here');
    expect(rec.error.message).toBe('auth failed for postgresql://u:***@h/d');
  });

  it('masks fields named like secrets, and PGPASSWORD= or JSON "password" forms in text', () => {
    const { lines, log } = capture();
    log.info('env PGPASSWORD=Pg-env-pw and {"password":"Js-pw"}', { password: 'F1-pw', apiToken: 'F2-tok', authorization: 'F3-auth', count: 3 });
    const text = lines.join('\n');
    for (const secret of ['Pg-env-pw', 'Js-pw', 'F1-pw', 'F2-tok', 'F3-auth']) expect(text).not.toContain(secret);
    expect(JSON.parse(lines[0]!)).toMatchObject({ password: '***', apiToken: '***', authorization: '***', count: 3 });
  });
});
