// LISTEN on a connection of its own (pg.ts's Db.listen). Never a pooled connection: a pool hands
// its sessions to other work, and PgBouncer in transaction mode gives the session's server
// connection to other clients between statements, where the notifications go astray.
import pg from 'pg';
import { errorText } from '../errors.ts';
import type { Notifications } from './port.ts';
import { tlsHint } from './tls.ts';
import { IDENTIFIER } from '../patterns.ts';


export async function listenOn(config: pg.ClientConfig, channel: string, on: { notify(payload: string): void; lost(err: Error): void }): Promise<Notifications> {
  if (!IDENTIFIER.test(channel)) throw new RangeError(`invalid channel name "${channel}"`);
  const client = new pg.Client(config);
  let closing = false;
  let lostSaid = false;
  const lost = (err: Error) => {
    if (closing || lostSaid) return;
    lostSaid = true;
    client.end().catch(() => {});
    on.lost(err);
  };
  client.on('notification', (m) => {
    if (m.channel === channel) on.notify(m.payload ?? '');
  });
  client.on('error', (err) => lost(err));
  client.on('end', () => lost(new Error('the listening connection ended')));
  try {
    await client.connect();
    await client.query(`LISTEN ${channel}`);
  } catch (err) {
    closing = true;
    await client.end().catch(() => {});
    throw new Error(`cannot LISTEN ${channel}: ${tlsHint(err) ?? errorText(err)}`, { cause: err });
  }
  return {
    async close() {
      closing = true;
      await client.end().catch(() => {});
    },
  };
}
