// Line-protocol conformance: each case's body is sent alone to a real InfluxDB 1.6 (the oracle) and
// to the Strata gateway (through PgBouncer into native PostgreSQL), and each server's verdict is
// compared with the table: the HTTP status class and the number of field values the request stored.
// The `influx` column was filled in by running InfluxDB 1.6.7 (Debian's package) and is asserted
// too, so a different InfluxDB build shows up here rather than silently moving the goalposts. Where
// the two columns differ, `why` says why Strata differs on purpose.
//
// What a request stored is counted over every measurement, so a line that spills into a phantom
// point under another measurement is counted too: in InfluxDB each case writes into a retention
// policy of its own and counts everything in it; in Strata, the difference of the facility's
// per-measurement row counts before and after the request (cases run one at a time).
//
// STRATA_CONFORMANCE_REPORT=1 prints every case's actual verdicts and messages.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import type { Gateway } from '../../src/ingest/gateway.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { facility, gateway, plainSchema, tempDir } from '../support/gateway.ts';
import { fieldCounts, http, startInflux, type HttpReply, type Influx } from '../support/influxdb.ts';

type Status = '2xx' | '4xx' | '5xx' | 'conn';
interface Verdict {
  status: Status;
  /** Field values stored by the request (a point with two fields stores two). */
  stored: number;
}
const ok = (stored = 1): Verdict => ({ status: '2xx', stored });
const bad = (stored = 0): Verdict => ({ status: '4xx', stored });
const crash = (stored = 0): Verdict => ({ status: '5xx', stored });

interface Case {
  name: string;
  body: string | Uint8Array;
  precision?: string;
  influx: Verdict;
  strata: Verdict;
  /** Why Strata's verdict differs from InfluxDB's (required when they differ). */
  why?: string;
  /** InfluxDB only: no warm-up point, so the write creates its shard. */
  freshShard?: boolean;
}

/** A body from text and raw bytes (NUL, control characters, invalid UTF-8). */
const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

const STRINGS = 'Strata stores numbers and booleans only: string fields are refused per field (until they are stored)';
const FLOAT8 = 'Strata stores every number as float8, so there are no field types to conflict';
const KEY_LIMIT = 'the series key exceeds Strata’s key limit (2048 bytes by default); InfluxDB allows 65535';
const NUL = 'Strata refuses NUL bytes in names (PostgreSQL text and jsonb cannot hold them)';
const UTF8 = 'Strata refuses invalid UTF-8 per line; InfluxDB stores the bytes as they are';
const UNSIGNED = 'Strata accepts unsigned integers (`u`, InfluxDB 2.x syntax) on both write APIs; InfluxDB 1.6 is built without them';
const T = 1_700_000_000_000_000_000n; // 2023-11-14, in ns

const CASES: Case[] = [
  // ── escapes ──
  { name: 'escaped comma and space in measurement', body: 'esc_m\\,x\\ y v=1', influx: ok(), strata: ok() },
  { name: 'backslash-equals in measurement (literal)', body: 'esc_meq\\=x v=1', influx: ok(), strata: ok() },
  { name: 'escapes in tag key', body: 'esc_tk,a\\,b\\ c\\=d=1 v=1', influx: ok(), strata: ok() },
  { name: 'escapes in tag value', body: 'esc_tv,t=a\\,b\\ c\\=d v=1', influx: ok(), strata: ok() },
  { name: 'escapes in field key', body: 'esc_fk a\\,b\\ c\\=d=1', influx: ok(), strata: ok() },
  { name: 'escaped space ends a tag value into the fields', body: 'esc_sp,t=a\\ v=1', influx: bad(), strata: bad() },
  { name: 'double backslash before the space in a tag value', body: 'esc_bs,t=a\\\\ v=1', influx: bad(), strata: bad() },
  { name: 'escaped quote in a string field', body: 'esc_str s="a\\"b"', influx: ok(), strata: bad(), why: STRINGS },

  // ── field types ──
  { name: 'float', body: 'ft_float v=1.5', influx: ok(), strata: ok() },
  { name: 'integer', body: 'ft_int v=1i', influx: ok(), strata: ok() },
  { name: 'negative integer', body: 'ft_negint v=-12i', influx: ok(), strata: ok() },
  { name: 'unsigned', body: 'ft_uint v=1u', influx: bad(), strata: ok(), why: UNSIGNED },
  { name: 'negative unsigned', body: 'ft_neguint v=-1u', influx: bad(), strata: bad() },
  { name: 'every boolean spelling', body: 'ft_bool a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE', influx: ok(10), strata: ok(10) },
  { name: 'boolean tRUE', body: 'ft_bool2 v=tRUE', influx: bad(), strata: bad() },
  { name: 'boolean yes', body: 'ft_bool3 v=yes', influx: bad(), strata: bad() },
  { name: 'string field alone', body: 'ft_str s="hello"', influx: ok(), strata: bad(), why: STRINGS },
  { name: 'empty string field', body: 'ft_str2 s=""', influx: ok(), strata: bad(), why: STRINGS },
  { name: 'string and number fields', body: 'ft_mix s="x",v=1,b=true', influx: ok(3), strata: bad(2), why: STRINGS },
  { name: 'unquoted word', body: 'ft_word v=hello', influx: bad(), strata: bad() },

  // ── numbers ──
  { name: 'exponent floats', body: 'num_exp a=1e3,b=1E3,c=1e+3,d=1e-3,e=-1.5e-3,f=2.5E+10', influx: ok(6), strata: ok(6) },
  { name: 'exponent without digits', body: 'num_exp2 v=1e', influx: bad(), strata: bad() },
  { name: 'leading plus', body: 'num_plus v=+1', influx: bad(), strata: ok(), why: 'InfluxDB 1.6 reads `+1` as a bad boolean; Strata reads it as the number it spells (as InfluxDB 2.x does)' },
  { name: 'leading dot', body: 'num_dot v=.5', influx: ok(), strata: ok() },
  { name: 'trailing dot', body: 'num_dot2 v=1.', influx: ok(), strata: ok() },
  { name: 'negative zero', body: 'num_negzero v=-0', influx: ok(), strata: ok() },
  { name: 'double minus', body: 'num_dm v=--1', influx: bad(), strata: bad() },
  { name: 'two dots', body: 'num_2dot v=1.2.3', influx: bad(), strata: bad() },
  { name: 'hex', body: 'num_hex v=0x10', influx: bad(), strata: bad() },
  { name: 'int64 max', body: 'num_imax v=9223372036854775807i', influx: ok(), strata: ok() },
  { name: 'int64 min', body: 'num_imin v=-9223372036854775808i', influx: ok(), strata: ok() },
  { name: 'integer beyond int64', body: 'num_ibig v=9223372036854775808i', influx: bad(), strata: bad() },
  { name: 'integer below int64', body: 'num_ismall v=-9223372036854775809i', influx: bad(), strata: bad() },
  { name: 'unsigned beyond uint64', body: 'num_ubig v=18446744073709551616u', influx: bad(), strata: bad() },
  { name: 'huge integer written as a float', body: 'num_fbig v=99999999999999999999999', influx: ok(), strata: ok() },
  { name: 'float overflow', body: 'num_fover v=1e400', influx: bad(), strata: bad() },
  { name: 'float underflow', body: 'num_funder v=1e-400', influx: ok(), strata: ok() },
  { name: 'NaN', body: 'nan1 v=NaN', influx: bad(), strata: bad() },
  { name: 'nan', body: 'nan2 v=nan', influx: bad(), strata: bad() },
  { name: 'Inf', body: 'nan3 v=Inf', influx: bad(), strata: bad() },
  { name: '+Inf', body: 'nan4 v=+Inf', influx: bad(), strata: bad() },
  { name: '-inf', body: 'nan5 v=-inf', influx: bad(), strata: bad() },
  { name: 'Infinity', body: 'nan6 v=Infinity', influx: bad(), strata: bad() },
  { name: 'integer with a fraction', body: 'num_ifrac v=1.5i', influx: bad(), strata: bad() },

  // ── timestamps and precision ──
  { name: 'ns: largest timestamp', body: 'ts_max v=1 9223372036854775806', influx: ok(), strata: ok() },
  { name: 'ns: int64 max (a sentinel)', body: 'ts_max2 v=1 9223372036854775807', influx: bad(), strata: bad() },
  { name: 'ns: beyond int64', body: 'ts_big v=1 99999999999999999999', influx: bad(), strata: bad() },
  { name: 'ns: smallest timestamp', body: 'ts_min v=1 -9223372036854775806', influx: ok(), strata: ok() },
  { name: 'ns: below the range', body: 'ts_min2 v=1 -9223372036854775807', influx: bad(), strata: bad() },
  { name: 'ns: negative', body: 'ts_neg v=1 -1', influx: ok(), strata: ok() },
  { name: 'ns: zero', body: 'ts_zero v=1 0', influx: ok(), strata: ok() },
  { name: 's: largest second', body: 'ts_s_max v=1 9223372036', precision: 's', influx: ok(), strata: ok() },
  { name: 's: one second beyond', body: 'ts_s_over v=1 9223372037', precision: 's', influx: bad(), strata: bad() },
  { name: 's: smallest second', body: 'ts_s_min v=1 -9223372036', precision: 's', influx: ok(), strata: ok() },
  { name: 's: one second below', body: 'ts_s_under v=1 -9223372037', precision: 's', influx: bad(), strata: bad() },
  { name: 's: a value that overflows int64 when scaled', body: 'ts_s_wrap v=1 18446744074', precision: 's', influx: bad(), strata: bad() },
  { name: 'ms: negative', body: 'ts_ms_neg v=1 -1700000000000', precision: 'ms', influx: ok(), strata: ok() },
  { name: 'fractional timestamp', body: 'ts_frac v=1 1700000000.5', precision: 's', influx: bad(), strata: bad() },
  { name: 'exponent timestamp', body: 'ts_exp v=1 1e9', precision: 's', influx: bad(), strata: bad() },
  { name: 'text after the timestamp', body: `ts_junk v=1 ${T} junk`, influx: bad(), strata: bad() },

  // ── structure ──
  { name: 'missing fields', body: 'st_nofields', influx: bad(), strata: bad() },
  { name: 'missing fields, tags only', body: 'st_tagsonly,t=1', influx: bad(), strata: bad() },
  { name: 'missing fields, trailing space', body: 'st_nofields2 ', influx: bad(), strata: bad() },
  { name: 'field without a value', body: 'st_noval v=', influx: bad(), strata: bad() },
  { name: 'field without a key', body: 'st_nokey =1', influx: bad(), strata: bad() },
  { name: 'field without =', body: 'st_noeq v', influx: bad(), strata: bad() },
  { name: 'trailing comma after fields', body: 'st_comma v=1,', influx: bad(), strata: bad() },
  { name: 'empty tag value', body: 'st_etv,t= v=1', influx: bad(), strata: bad() },
  { name: 'empty tag key', body: 'st_etk,=x v=1', influx: bad(), strata: bad() },
  { name: 'tag without =', body: 'st_tnoeq,t v=1', influx: bad(), strata: bad() },
  { name: 'empty measurement', body: ',t=1 v=1', influx: bad(), strata: bad() },
  { name: 'trailing space after fields', body: 'st_trail v=1 ', influx: ok(), strata: ok() },
  { name: 'trailing space after timestamp', body: `st_trail2 v=1 ${T} `, influx: ok(), strata: ok() },
  { name: 'two spaces before fields', body: 'st_2sp  v=1', influx: ok(), strata: ok() },
  { name: 'two spaces before timestamp', body: `st_2sp2 v=1  ${T}`, influx: ok(), strata: ok() },
  { name: 'tab between measurement and fields', body: 'st_tab\tv=1', influx: bad(), strata: bad() },
  { name: 'tab before timestamp', body: `st_tab2 v=1\t${T}`, influx: bad(), strata: bad() },
  { name: 'tab inside a tag value', body: 'st_tab3,t=a\tb v=1', influx: ok(), strata: ok() },
  { name: 'CRLF line ending', body: 'st_crlf v=1\r\n', influx: bad(), strata: ok(), why: 'Strata drops the \\r of a CRLF line end (collectors on Windows); InfluxDB 1.6 reads it as part of the value and refuses the line' },
  { name: 'CRLF after a timestamp', body: `st_crlf2 v=1 ${T}\r\n`, influx: bad(), strata: ok(), why: 'Strata drops the \\r of a CRLF line end (collectors on Windows); InfluxDB 1.6 reads it as part of the value and refuses the line' },
  { name: 'CRLF between lines', body: `st_crlf3 v=1 ${T}\r\nst_crlf3 v=2 ${T + 1n}\r\n`, influx: bad(), strata: ok(2), why: 'Strata drops the \\r of a CRLF line end (collectors on Windows); InfluxDB 1.6 reads it as part of the value and refuses the line' },
  { name: 'comment line', body: '# a comment\nst_cm v=1', influx: ok(), strata: ok() },
  { name: 'comment after the fields', body: 'st_cm2 v=1 # not a comment', influx: bad(), strata: bad() },
  { name: 'indented comment', body: '   # indented comment\nst_cm3 v=1', influx: ok(), strata: ok() },
  { name: 'leading spaces', body: '  st_lead v=1', influx: ok(), strata: ok() },
  { name: 'leading tab', body: '\tst_lead2 v=1', influx: ok(), strata: ok() },
  { name: 'empty body', body: '', influx: ok(0), strata: ok(0) },
  { name: 'blank lines only', body: '\n\n  \n', influx: ok(0), strata: ok(0) },

  // ── duplicate and reserved keys ──
  { name: 'duplicate tag keys', body: 'dup_tag,b=2,c=3,b=1 value=1i', influx: bad(), strata: bad() },
  { name: '`time` as a tag key', body: 'rsv_tag,time=1 v=1', influx: bad(), strata: bad() },
  { name: '`time` as the only field key', body: 'rsv_field time=1', influx: bad(), strata: bad() },
  { name: '`time` as a field key beside another', body: 'rsv_field2 time=1,v=1', influx: ok(), strata: bad(), why: 'InfluxDB silently drops the `time` field and keeps the rest; Strata rejects the line so nothing is lost silently' },
  { name: 'duplicate tag keys on one line of two', body: `dup_tag2,b=2,b=1 v=1 ${T}\ndup_tag2,b=2 v=2 ${T}`, influx: bad(1), strata: bad(1) },
  { name: '`time` as a tag key on one line of two', body: `rsv_tag2,time=x v=1 ${T}\nrsv_tag2,t=x v=2 ${T}`, influx: bad(1), strata: bad(1) },
  { name: 'field repeated with the same type', body: 'dup_field v=1,v=2', influx: ok(), strata: ok() },
  { name: 'field repeated with another type', body: 'dup_field2 v=1,v=2i', influx: bad(), strata: bad() },
  { name: 'field repeated with another type, integer first', body: 'dup_field3 v=1i,v=2', influx: bad(), strata: bad() },
  { name: 'type conflict across lines', body: 'tconf v=1\ntconf v=2i', influx: bad(1), strata: ok(2), why: FLOAT8 },
  { name: 'type conflict across lines, in a fresh shard', body: 'tconf2 v=1 1\ntconf2 v=2i 2', freshShard: true, influx: bad(0), strata: ok(2), why: `${FLOAT8} (InfluxDB drops the whole batch when the write creates the shard)` },
  { name: 'same series and timestamp twice', body: 'samets v=1 5\nsamets v=2 5', influx: ok(1), strata: ok(2), why: 'InfluxDB overwrites a point with the same series and timestamp; Strata appends rows (strata.metrics has no uniqueness on series and time)' },

  // ── quoted strings ──
  { name: 'newline inside a quoted string', body: 'nl_str s="x\nphantom v=1\n"', influx: ok(), strata: bad(), why: STRINGS },
  { name: 'newline inside a quoted string, with a number', body: 'nl_str2 v=1,s="x\nphantom2 a=1,b=2,c=3\n"', influx: ok(2), strata: bad(1), why: STRINGS },
  { name: 'unterminated quote', body: 'unterm s="abc', influx: bad(), strata: bad() },
  { name: 'unterminated quote before a good line', body: `unterm2 v=1,s="abc ${T}\nunterm2 v=2 ${T + 1n}`, influx: bad(), strata: bad(1), why: 'InfluxDB lets an unterminated string swallow the rest of the body; Strata ends that line at its newline, so one bad line costs only itself' },
  { name: 'unterminated quote, then a line whose quote seems to close it', body: `unterm3 s="x ${T}\nunterm3 v=1,s="y" ${T + 1n}\nunterm3 v=2 ${T + 2n}`, influx: bad(0), strata: bad(2), why: 'InfluxDB reads the whole body as one line with unbalanced quotes and stores nothing; Strata takes the joined line back to its first line when it does not parse, so the second line\'s number is kept (its string field is refused per field)' },
  { name: 'separators inside a quoted string', body: 'q_sep s="a, b=c d",v=1', influx: ok(2), strata: bad(1), why: STRINGS },
  { name: 'escaped backslash ending a string', body: 'q_bs s="a\\\\",v=1', influx: ok(2), strata: bad(1), why: STRINGS },
  { name: 'quote inside a measurement', body: 'q_m"x v=1', influx: ok(), strata: ok() },
  { name: 'quote inside a tag value', body: 'q_tag,t="a" v=1', influx: ok(), strata: ok() },

  // ── NUL, control characters, UTF-8 ──
  { name: 'NUL in measurement', body: bytes('nul_m', [0], 'x v=1'), influx: ok(), strata: bad(), why: NUL },
  { name: 'NUL in tag key', body: bytes('nul_tk,k', [0], '=v v=1'), influx: ok(), strata: bad(), why: NUL },
  { name: 'NUL in tag value', body: bytes('nul_tv,k=v', [0], ' v=1'), influx: ok(), strata: bad(), why: NUL },
  { name: 'NUL in field key', body: bytes('nul_fk f', [0], '=1'), influx: ok(), strata: bad(), why: NUL },
  { name: 'NUL on one line of three', body: bytes(`nul_ml v=1 ${T}\nnul_ml,k=a`, [0], ` v=2 ${T}\nnul_ml v=3 ${T + 1n}`), influx: ok(3), strata: bad(2), why: NUL },
  { name: 'NUL in a string field', body: bytes('nul_str v=1,s="a', [0], 'b"'), influx: ok(2), strata: bad(1), why: STRINGS },
  { name: 'control characters in names', body: bytes('ctl_m', [1], ',t', [0x1b], '=a', [0x7f], ' f', [7], '=1'), influx: ok(), strata: ok() },
  { name: 'form feed and vertical tab in a tag value', body: bytes('ctl_ff,t=a', [0x0c, 0x0b], 'b v=1'), influx: ok(), strata: ok() },
  { name: 'invalid UTF-8 in measurement', body: bytes('utf_m', [0xff], ' v=1'), influx: ok(), strata: bad(), why: UTF8 },
  { name: 'invalid UTF-8 in tag value', body: bytes('utf_tv,t=', [0xc3, 0x28], ' v=1'), influx: ok(), strata: bad(), why: UTF8 },
  { name: 'invalid UTF-8 in field key', body: bytes('utf_fk ', [0xfe], '=1'), influx: ok(), strata: bad(), why: UTF8 },
  { name: 'invalid UTF-8 in measurement, in a fresh shard', body: bytes('utf_m2', [0xff], ' v=1'), freshShard: true, influx: crash(), strata: bad(), why: `${UTF8} (and answers 500 when the write creates the shard)` },
  { name: 'invalid UTF-8 in field key, in a fresh shard', body: bytes('utf_fk2 ', [0xfe], '=1'), freshShard: true, influx: crash(), strata: bad(), why: `${UTF8} (and answers 500 when the write creates the shard)` },
  { name: 'overlong UTF-8 encoding', body: bytes('utf_ov,t=', [0xc0, 0xaf], ' v=1'), influx: ok(), strata: bad(), why: UTF8 },
  { name: 'UTF-8-encoded surrogate', body: bytes('utf_sur,t=', [0xed, 0xa0, 0x80], ' v=1'), influx: ok(), strata: bad(), why: UTF8 },
  { name: 'invalid UTF-8 in a string field', body: bytes('utf_str v=1,s="', [0xff], '"'), influx: ok(2), strata: bad(), why: UTF8 },
  { name: 'invalid UTF-8 on one line of three', body: bytes(`utf_ml v=1 ${T}\nutf_ml,t=`, [0xff], ` v=2 ${T}\nutf_ml v=3 ${T + 1n}`), influx: ok(3), strata: bad(2), why: UTF8 },
  { name: 'unicode names', body: '温度,地点=東京 値=1', influx: ok(), strata: ok() },
  { name: 'emoji names', body: '📈,🏭=🔥 ✓=1,ünïcödé=2', influx: ok(2), strata: ok(2) },
  { name: 'byte order mark at the start', body: '\ufeffbom v=1', influx: ok(), strata: ok() },

  // ── long names ──
  { name: 'tag value of 1,000 characters', body: `long_tv1,t=${'a'.repeat(1000)} v=1`, influx: ok(), strata: ok() },
  { name: 'tag value of 3,000 characters', body: `long_tv3,t=${'a'.repeat(3000)} v=1`, influx: ok(), strata: bad(), why: KEY_LIMIT },
  { name: 'tag value of 1,500 two-byte characters (3,000 bytes)', body: `long_tvu,t=${'é'.repeat(1500)} v=1`, influx: ok(), strata: bad(), why: KEY_LIMIT },
  { name: 'measurement of 1,000 characters', body: `long_m1${'m'.repeat(1000)} v=1`, influx: ok(), strata: ok() },
  { name: 'measurement of 3,000 characters', body: `long_m3${'m'.repeat(3000)} v=1`, influx: ok(), strata: bad(), why: KEY_LIMIT },
  { name: 'measurement of 70,000 characters', body: `long_m70${'m'.repeat(70_000)} v=1`, influx: bad(), strata: bad() },
  { name: 'field key of 3,000 characters', body: `long_fk ${'f'.repeat(3000)}=1`, influx: ok(), strata: bad(), why: `${KEY_LIMIT}; a Strata series includes its field key` },

  // ── several lines ──
  { name: 'a bad line between good ones', body: `ml_bad v=1 ${T}\nml_bad v= ${T}\nml_bad v=3 ${T + 1n}`, influx: bad(2), strata: bad(2) },
  { name: 'comments and blank lines between lines', body: `ml_cm v=1 ${T}\n\n# c\n   \nml_cm v=2 ${T + 1n}\n`, influx: ok(2), strata: ok(2) },
  { name: 'string-only line between numeric lines', body: `ml_str v=1 ${T}\nml_str s="a" ${T + 1n}\nml_str v=3 ${T + 2n}`, influx: ok(3), strata: bad(2), why: STRINGS },
];

// ── the run ──

let t: TestDatabase | undefined;
let admin: Db | undefined;
let db: Db | undefined;
let gw: Gateway | undefined;
let influx: Influx | undefined;
let spoolDir: string | undefined;
let token = '';
let facilityId = 0;

beforeAll(async () => {
  // Both servers start at once; whatever started is stopped in afterAll even if the other failed.
  const strata = (async () => {
    t = await createDatabase(cluster().adminUrl(), 'strata_conf');
    admin = await openDb(t.url);
    await plainSchema(admin);
    const f = await facility(admin, 'conformance');
    token = f.token;
    facilityId = f.id;
    db = await openDb(cluster().bouncerUrl(t.name), { max: 4 });
    spoolDir = tempDir();
    gw = await gateway(db, { spoolDir });
  })();
  const oracle = startInflux({ database: 'conf' }).then((i) => (influx = i));
  const [a, b] = await Promise.allSettled([strata, oracle]);
  for (const r of [a, b]) if (r.status === 'rejected') throw r.reason;
});

afterAll(async () => {
  const steps: (() => Promise<unknown> | undefined)[] = [() => influx?.stop(), () => gw?.stop(), () => db?.close(), () => admin?.close(), () => t?.drop(), async () => spoolDir && rmSync(spoolDir, { recursive: true, force: true })];
  const errors: unknown[] = [];
  for (const step of steps) await Promise.resolve(step()).catch((err: unknown) => errors.push(err));
  if (process.env.STRATA_CONFORMANCE_REPORT) printReport();
  if (errors.length) throw errors[0];
});

const classOf = (r: HttpReply): Status => (r.status === 0 ? 'conn' : r.status >= 500 ? '5xx' : r.status >= 400 ? '4xx' : '2xx');

/** Rows per measurement in Strata, for the test's facility. */
async function strataCounts(): Promise<Map<string, number>> {
  const r = await admin!.query<{ measurement: string; n: number }>(
    `SELECT s.measurement, count(*)::int AS n FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id AND s.facility_id = m.facility_id
      WHERE m.facility_id = $1 GROUP BY s.measurement`,
    [facilityId],
  );
  return new Map(r.rows.map((row) => [row.measurement, row.n]));
}

interface Actual extends Verdict {
  code: number;
  message: string;
  /** Measurements the request stored into (names cut at 40 characters). */
  measurements: string[];
}

function actual(reply: HttpReply, before: Map<string, number>, after: Map<string, number>): Actual {
  let stored = 0;
  const measurements: string[] = [];
  for (const [m, n] of after) {
    const d = n - (before.get(m) ?? 0);
    if (d !== 0) (stored += d), measurements.push(m.length > 40 ? `${m.slice(0, 40)}…(${m.length})` : m);
  }
  let message = reply.error ?? reply.text;
  try {
    const b = JSON.parse(reply.text) as { error?: string; message?: string };
    message = b.error ?? b.message ?? message;
  } catch {
    // not JSON: the raw text
  }
  return { status: classOf(reply), stored, code: reply.status, message: message.length > 160 ? `${message.slice(0, 160)}…` : message, measurements };
}

/**
 * Each case writes to InfluxDB into a retention policy of its own, so its count sees nothing else
 * (see fieldCounts). A warm-up point at the current time goes first, so that lines without a
 * timestamp land in a shard that exists already, as on a running server: InfluxDB 1.6 answers some
 * input differently when the write creates its shard (the `freshShard` cases).
 */
async function influxVerdict(c: Case, n: number): Promise<Actual> {
  const rp = `case${n}`;
  await influx!.exec(`CREATE RETENTION POLICY "${rp}" ON "conf" DURATION INF REPLICATION 1`);
  if (!c.freshShard) {
    const warm = await influx!.write('_warmup _w=1', { rp });
    if (warm.status !== 204) throw new Error(`InfluxDB warm-up write answered ${warm.status}: ${warm.text}`);
  }
  const before = await fieldCounts(influx!, rp);
  const reply = await influx!.write(c.body, { precision: c.precision, rp });
  return actual(reply, before, await fieldCounts(influx!, rp));
}

/** Strata's count is the difference of the facility's per-measurement counts around the request. */
async function strataVerdict(c: Case): Promise<Actual> {
  const before = await strataCounts();
  const precision = c.precision ? `&precision=${encodeURIComponent(c.precision)}` : '';
  const reply = await http(`${gw!.url}/write?db=x${precision}`, { method: 'POST', body: c.body, headers: { Authorization: `Token ${token}`, 'Content-Type': 'text/plain; charset=utf-8' } });
  return actual(reply, before, await strataCounts());
}

const actuals = new Map<string, { influx: Actual; strata: Actual }>();

function printReport(): void {
  const short = (v: Verdict) => `${v.status}/${v.stored}`;
  const lines = CASES.map((c) => {
    const a = actuals.get(c.name);
    if (!a) return `${c.name}: not run`;
    const flags = [short(a.influx) !== short(c.influx) ? `✗ influx expected ${short(c.influx)}` : '', short(a.strata) !== short(c.strata) ? `✗ strata expected ${short(c.strata)}` : ''].filter(Boolean).join(' ');
    const one = (x: Actual) => `${short(x)} (${x.code} ${JSON.stringify(x.message.slice(0, 110))})`;
    return `${c.name}: influx ${one(a.influx)} | strata ${one(a.strata)} ${flags}`;
  });
  console.log(lines.join('\n'));
}

describe('line protocol conformance with InfluxDB 1.6', () => {
  it('explains every difference between InfluxDB and Strata, and expects no 5xx from Strata', () => {
    const names = new Set<string>();
    for (const c of CASES) {
      expect(names.has(c.name), `duplicate case name ${c.name}`).toBe(false);
      names.add(c.name);
      const differs = c.influx.status !== c.strata.status || c.influx.stored !== c.strata.stored;
      if (differs) expect(c.why?.trim(), `case "${c.name}" differs from InfluxDB without a why`).toBeTruthy();
      expect(['2xx', '4xx'], `case "${c.name}" expects ${c.strata.status} from Strata`).toContain(c.strata.status);
    }
  });

  CASES.forEach((c, n) => {
    it(c.name, async () => {
      // The two servers take the case side by side; cases run one after another.
      const [i, s] = await Promise.all([influxVerdict(c, n), strataVerdict(c)]);
      actuals.set(c.name, { influx: i, strata: s });
      const ctx = (who: string, a: Actual) => `${who} answered ${a.code} (${a.message}) and stored ${a.stored} in ${JSON.stringify(a.measurements)}`;
      expect.soft({ status: i.status, stored: i.stored }, ctx('InfluxDB', i)).toEqual(c.influx);
      expect.soft({ status: s.status, stored: s.stored }, ctx('Strata', s)).toEqual(c.strata);
      expect.soft(['2xx', '4xx'], `Strata must not answer ${s.code} to bad input`).toContain(s.status);
    });
  });

  it('keeps the last of a repeated field, and a newline inside a quoted string as part of the string', async () => {
    // What the verdicts cannot show: which value a repeated field keeps, and what InfluxDB's string holds.
    await influx!.exec('CREATE RETENTION POLICY "values" ON "conf" DURATION INF REPLICATION 1');
    const body = `last v=1,v=2 ${T}\nlast_str s="x\nphantom v=1\n" ${T}`;
    expect((await influx!.write(body, { rp: 'values' })).status).toBe(204);
    const r = await influx!.query('SELECT * FROM "conf"."values"./^last/');
    expect(r.results[0]?.series?.map((x) => [x.name, x.values[0]?.[x.columns.indexOf(x.name === 'last' ? 'v' : 's')]])).toEqual([
      ['last', 2],
      ['last_str', 'x\nphantom v=1\n'],
    ]);
    const w = await http(`${gw!.url}/write?db=x`, { method: 'POST', body: `last v=1,v=2 ${T}`, headers: { Authorization: `Token ${token}` } });
    expect(w.status).toBe(204);
    const v = await admin!.query<{ value: number }>(
      `SELECT m.value FROM strata.metrics m JOIN strata.series s ON s.id = m.series_id WHERE m.facility_id = $1 AND s.measurement = 'last' AND s.field = 'v'`,
      [facilityId],
    );
    expect(v.rows.map((x) => x.value)).toEqual([2]);
  });
});
