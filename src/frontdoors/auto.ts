/**
 * The auto door: SOCKS4, SOCKS5 and HTTP on one port, told apart by the first byte (0x04, 0x05,
 * anything else is HTTP). One byte decides; it is put back before the chosen door reads.
 */
import type { Socket } from 'node:net';
import type { Session } from '../core/session.js';
import type { DoorContext, DoorHandler } from './door.js';
import { httpProxyDoor } from './http-proxy.js';
import { socks4Door } from './socks4.js';
import { socks5Door } from './socks5.js';

export function doorForFirstByte(byte: number): DoorHandler {
  if (byte === 0x05) return socks5Door;
  if (byte === 0x04) return socks4Door;
  return httpProxyDoor;
}

/**
 * Wait for the first chunk (bounded by the handshake timeout), put it back and call `choose`'s
 * door. Shared by the auto door and the SOCKS door (which accepts 4 and 5 on one port).
 */
export function dispatchOnFirstByte(
  socket: Socket,
  session: Session,
  ctx: DoorContext,
  choose: (byte: number) => DoorHandler | null,
  doorName: string,
): void {
  const onData = (chunk: Buffer): void => {
    clearTimeout(timer);
    socket.pause();
    socket.unshift(chunk);
    const door = choose(chunk[0]!);
    if (!door) {
      ctx.log.info('unknown protocol', { session: session.id, client: session.clientLabel, door: doorName, byte: chunk[0] });
      session.settle('EPROTO');
      socket.destroy();
      return;
    }
    door(socket, session, ctx);
  };
  const timer = setTimeout(() => {
    socket.off('data', onData);
    ctx.log.info('handshake timeout', { session: session.id, client: session.clientLabel, door: doorName });
    session.settle('handshake-timeout');
    socket.destroy();
  }, ctx.config().timeouts.handshake);
  socket.once('close', () => clearTimeout(timer));
  socket.once('data', onData);
  socket.resume();
}

export const autoDoor: DoorHandler = (socket, session, ctx) => {
  dispatchOnFirstByte(socket, session, ctx, doorForFirstByte, 'auto');
};

/** SERVER=socks: SOCKS4, SOCKS4a and SOCKS5 on one port. */
export const socksDoor: DoorHandler = (socket, session, ctx) => {
  dispatchOnFirstByte(socket, session, ctx, (b) => (b === 0x05 ? socks5Door : b === 0x04 ? socks4Door : null), 'socks');
};
