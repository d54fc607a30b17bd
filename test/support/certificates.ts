// Certificates for TLS tests, made with Debian's openssl: a CA, and certificates it signs for a server
// (names in subjectAltName) or a client. Files land in `dir` as <name>.crt and <name>.key.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertFiles {
  crt: string;
  key: string;
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: 'pipe' });

/** A self-signed CA certificate named `cn`. */
export function makeCa(dir: string, name: string, cn = name): CertFiles {
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${cn}`], dir);
  return { crt: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

/** A certificate `ca` signed for `cn`; `san` (e.g. "DNS:localhost,IP:127.0.0.1") makes it a server's. */
export function issue(dir: string, ca: CertFiles, name: string, cn: string, san?: string): CertFiles {
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, san ? `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n` : 'extendedKeyUsage=clientAuth\n');
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', ca.crt, '-CAkey', ca.key, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', ext], dir);
  return { crt: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}
