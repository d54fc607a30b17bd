// Cancelling a statement in flight: the protocol's CancelRequest (a fresh connection to the same
// address carrying the session's key), which PgBouncer forwards to the server running the query.
import { connect } from 'node:net';
import type pg from 'pg';

/** The parts of a connected node-postgres client that address its session (set once it connected). */
interface SessionKey {
  host: string;
  port: number;
  processID?: number | null;
  secretKey?: number | null;
}

const CANCEL_REQUEST_CODE = 80877102;

/**
 * Asks the server to cancel the statement `client` is running. Resolves once the request was sent
 * and the server closed the cancel connection (or after `timeoutMs`); never rejects: a cancel that
 * cannot be delivered leaves the caller to close the session instead.
 */
export function sendCancel(client: pg.PoolClient, timeoutMs = 2_000): Promise<boolean> {
  const key = client as unknown as SessionKey;
  if (typeof key.processID !== 'number' || typeof key.secretKey !== 'number') return Promise.resolve(false);
  const message = Buffer.alloc(16);
  message.writeInt32BE(16, 0);
  message.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  message.writeInt32BE(key.processID, 8);
  message.writeInt32BE(key.secretKey, 12);
  return new Promise((resolve) => {
    const socket = key.host.startsWith('/') ? connect(`${key.host}/.s.PGSQL.${key.port}`) : connect(key.port, key.host);
    let sent = false;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(sent);
    };
    const timer = setTimeout(done, timeoutMs);
    socket.once('connect', () => socket.write(message, () => (sent = true)));
    socket.once('close', done);
    socket.once('error', done);
    socket.resume();
  });
}
