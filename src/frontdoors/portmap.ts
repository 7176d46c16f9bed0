/**
 * The tcprelay door (DeleGate SERVER=tcprelay://HOST:PORT): every connection to the port goes to
 * one fixed destination, through the same pipeline as any tunnel.
 */
import type { DoorHandler } from './door.js';

export const tcprelayDoor: DoorHandler = (socket, session, ctx) => {
  const target = ctx.listen.target ?? ctx.config().serverTarget;
  session.frontProtocol = 'tcprelay';
  if (!target) {
    ctx.log.warn('tcprelay door without a target', { session: session.id, listen: session.listen });
    socket.destroy();
    return;
  }
  void ctx.sink.handle({
    session,
    socket,
    command: 'connect',
    dst: target,
    tags: ['tcprelay'],
    replySuccess: () => {},
    replyFailure: () => socket.destroy(),
  });
};
