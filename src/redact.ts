// Credential redaction applied to every error message and log line.
// Ground floor: imports nothing of the project.

const secrets = new Set<string>();

/** Remember a secret (a password, a token) so that it is masked wherever it appears later. */
export function registerSecret(secret: string | undefined): void {
  if (secret && secret.length >= 4) secrets.add(secret);
}

// The password runs to the last "@" of the URL, so one holding "/" or "@" is masked whole.
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)(\S+)(@)/gi;
const KEY_VALUE = /(\w*(?:password|passwd|pwd|token|secret)"?)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&,;"]+)/gi;
const AUTH_HEADER = /\b(Token|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/g;

/** Mask passwords in URLs, `password=...` pairs, auth headers and any registered secret. */
export function redact(text: string): string {
  let out = text
    .replace(URL_PASSWORD, '$1***$3')
    .replace(KEY_VALUE, '$1$2***')
    .replace(AUTH_HEADER, '$1 ***');
  for (const s of secrets) if (out.includes(s)) out = out.split(s).join('***');
  return out;
}

/** Field names whose values are always masked in logs. */
export const SECRET_KEY = /pass|pwd|secret|token|auth|credential/i;

/** The URL without its password, for messages about a connection target. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) {
      registerSecret(decodeURIComponent(u.password));
      u.password = '***';
    }
    return u.toString().replace('%2A%2A%2A', '***');
  } catch {
    return redact(url);
  }
}
