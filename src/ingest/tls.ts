// TLS on the gateway (STRATA_TLS_CERT, STRATA_TLS_KEY, STRATA_TLS_CA, STRATA_TLS_MIN_VERSION,
// STRATA_TLS_ALLOW_PLAIN): the PEM files read and checked (the key matches the certificate, the
// certificate is current) with errors naming the setting and the file, read again on reload.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { StrataError } from '../errors.ts';

export interface TlsSettings {
  /** STRATA_TLS_CERT: the server certificate (PEM), intermediates after it. */
  certFile: string;
  /** STRATA_TLS_KEY: its private key (PEM). */
  keyFile: string;
  /** STRATA_TLS_CA: clients must present a certificate this CA signed (in addition to their token). */
  caFile?: string | undefined;
  /** STRATA_TLS_MIN_VERSION: TLS 1.3 unless old collectors need 1.2. */
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  /** STRATA_TLS_ALLOW_PLAIN: plain HTTP on the same port too; otherwise it is answered 400 and closed. */
  allowPlain: boolean;
}

/** What the server is given (createServer, and setSecureContext on reload). */
export interface TlsMaterial {
  context: SecureContextOptions & { minVersion: 'TLSv1.2' | 'TLSv1.3' };
  /** Whether clients must present a certificate signed by the CA. */
  clientCertificates: boolean;
  subject: string;
  notAfter: Date;
  fingerprint256: string;
}

function readPem(file: string, setting: string, what: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StrataError('tls_file', `${setting}=${file}: cannot read the ${what} (${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(code ?? err)})`, { cause: err });
  }
  if (!data.includes('-----BEGIN ')) throw new StrataError('tls_file', `${setting}=${file}: not a PEM file (expected the ${what} between -----BEGIN and -----END lines)`);
  return data;
}

/** Reads and checks the files; throws naming the setting and file of the first problem. */
export function loadTls(s: TlsSettings, now = new Date()): TlsMaterial {
  const cert = readPem(s.certFile, 'STRATA_TLS_CERT', 'certificate');
  const key = readPem(s.keyFile, 'STRATA_TLS_KEY', 'private key');
  const ca = s.caFile ? readPem(s.caFile, 'STRATA_TLS_CA', 'client CA certificate') : undefined;
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new StrataError('tls_file', `STRATA_TLS_CERT=${s.certFile}: not a certificate (${(err as Error).message})`, { cause: err });
  }
  if (ca) {
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new StrataError('tls_file', `STRATA_TLS_CA=${s.caFile}: not a certificate (${(err as Error).message})`, { cause: err });
    }
  }
  const context = { cert, key, ...(ca ? { ca } : {}), minVersion: s.minVersion };
  try {
    createSecureContext(context);
  } catch (err) {
    const message = (err as Error).message;
    const hint = /key values mismatch/i.test(message)
      ? `STRATA_TLS_KEY=${s.keyFile} is not the key of the certificate in STRATA_TLS_CERT=${s.certFile}`
      : `STRATA_TLS_CERT=${s.certFile} / STRATA_TLS_KEY=${s.keyFile}${ca ? ` / STRATA_TLS_CA=${s.caFile}` : ''}: ${message}`;
    throw new StrataError('tls_material', `cannot use the TLS files: ${hint}`, { cause: err });
  }
  const notAfter = new Date(x509.validTo);
  if (notAfter.getTime() <= now.getTime()) throw new StrataError('tls_expired', `STRATA_TLS_CERT=${s.certFile}: the certificate expired on ${notAfter.toISOString()} (subject ${x509.subject.replace(/\n/g, ', ')})`);
  return { context, clientCertificates: !!ca, subject: x509.subject.replace(/\n/g, ', '), notAfter, fingerprint256: x509.fingerprint256 };
}

/** A TLS record starts with content type 22 (handshake); anything else on a TLS port is plain text (HTTP). */
export function looksLikeTls(first: Buffer): boolean {
  return first[0] === 0x16;
}
