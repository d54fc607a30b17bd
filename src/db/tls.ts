// TLS to PostgreSQL from a database URL's libpq parameters: sslmode, sslrootcert, sslcert, sslkey.
// node-postgres reads these itself but not as libpq does (its sslmode=require verifies the
// certificate, it ignores sslrootcert=system, and a parsed URL overrides an explicit `ssl`), so they
// are taken out of the URL and turned into the driver's `ssl` option here, for every connection
// Strata opens (the pool, the listening connection, the job lock's session).
//
//   disable, allow, prefer  no TLS (node-postgres cannot fall back from TLS to plain as libpq does)
//   require                 TLS; the certificate is not checked, unless sslrootcert is given (then as verify-ca)
//   verify-ca               TLS; the server's certificate must chain to sslrootcert (else the system CAs)
//   verify-full             as verify-ca, and the certificate must name the host connected to: the production setting
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { StrataError, errorText } from '../errors.ts';

const MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
type Mode = (typeof MODES)[number];
/** Parameters taken out of the URL (node-postgres would otherwise apply its own reading of them). */
const TLS_PARAMS = ['sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'ssl', 'sslpassword', 'uselibpqcompat'];

export interface PgConnection {
  connectionString: string;
  ssl: false | ConnectionOptions;
}

function file(param: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new StrataError('db_tls', `${param}=${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? errorText(err)}); it names the PEM file of ${param === 'sslrootcert' ? "the CA that signed the server's certificate" : param === 'sslcert' ? "this client's certificate" : "this client's private key"}`, { cause: err, exitCode: 78 });
  }
}

/** The driver's connection settings for a postgres:// URL. */
export function pgConnection(url: string): PgConnection {
  const u = new URL(url);
  const p = u.searchParams;
  const mode = (p.get('sslmode') ?? 'disable') as Mode;
  if (!MODES.includes(mode)) throw new StrataError('db_tls', `sslmode=${mode}: must be one of ${MODES.join(', ')} (verify-full in production)`, { exitCode: 78 });
  const rootcert = p.get('sslrootcert');
  const cert = p.get('sslcert');
  const key = p.get('sslkey');
  if ((cert === null) !== (key === null)) throw new StrataError('db_tls', `${cert === null ? 'sslkey' : 'sslcert'} is set without ${cert === null ? 'sslcert' : 'sslkey'}: a client certificate needs both`, { exitCode: 78 });
  for (const name of TLS_PARAMS) p.delete(name);
  const connectionString = u.toString();
  if (mode === 'disable' || mode === 'allow' || mode === 'prefer') return { connectionString, ssl: false };
  const verify = mode === 'verify-full' || mode === 'verify-ca' || (mode === 'require' && rootcert !== null);
  const ssl: ConnectionOptions = { rejectUnauthorized: verify };
  if (rootcert !== null && rootcert !== 'system') ssl.ca = file('sslrootcert', rootcert);
  if (cert !== null && key !== null) {
    ssl.cert = file('sslcert', cert);
    ssl.key = file('sslkey', key);
  }
  // verify-ca (and require with a root certificate) check the chain only, not the host name.
  if (verify && mode !== 'verify-full') ssl.checkServerIdentity = () => undefined;
  return { connectionString, ssl };
}

const TLS_CODES = /^(?:SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(?:_LOCALLY)?|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|ERR_TLS_CERT_ALTNAME_INVALID|CERT_SIGNATURE_FAILURE|ERR_SSL_.*)$/;

/** What to check when a connection failed for a TLS reason; null for other failures. */
export function tlsHint(err: unknown): string | null {
  const code = (err as { code?: string })?.code ?? '';
  const text = errorText(err);
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `TLS to the database failed: ${text} — with sslmode=verify-full the server's certificate must name the host in the URL (connect by a name in its subjectAltName, or use sslmode=verify-ca)`;
  if (TLS_CODES.test(code)) return `TLS to the database failed: ${text} — check sslrootcert (the CA that signed the server's certificate) and sslmode`;
  if (/does not support SSL/i.test(text)) return `TLS to the database failed: ${text} — turn TLS on at the server (ssl = on) or lower sslmode`;
  if (/SSL off/i.test(text) || /(no pg_hba\.conf entry|pg_hba\.conf rejects connection).*no encryption/i.test(text)) return `${text} — the server accepts only TLS connections here: set sslmode=verify-full and sslrootcert in the URL`;
  return null;
}
