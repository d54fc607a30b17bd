// Ingest tokens and reader passwords: generated here, shown once, stored only as hashes.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';

/** A new ingest token: 256 random bits, base64url, with a recognisable prefix. */
export function newToken(): string {
  return `stk_${randomBytes(32).toString('base64url')}`;
}

/** What the catalog stores of a token. The token is high-entropy, so SHA-256 is enough. */
export function tokenHash(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export function newPassword(): string {
  return randomBytes(24).toString('base64url');
}

/**
 * A SCRAM-SHA-256 verifier (RFC 5802/7677, PostgreSQL's rolpassword format), so the plain password
 * never reaches the server or its statement log. Passwords here are ASCII, so SASLprep is the identity.
 */
export function scramVerifier(password: string, iterations = 4096, salt: Buffer = randomBytes(16)): string {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}
