import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { INSTANCE_ID } from '../common/instance';
import { ControlChannel } from '../sessions/control-channel';
import { SessionsService } from '../sessions/sessions.service';
import { SsePinger } from '../sse/sse-connection';
import { RemoteConnection } from './remote-connection';

/**
 * The session's side of a resume on another instance: an `attach` puts a RemoteConnection on the
 * session (it gets the events the client missed, then the rest), a `detach` from the edge is its
 * client going away again.
 */
@Injectable()
export class RemoteSessions implements OnModuleInit {
  private readonly remotes = new Map<string, RemoteConnection>();

  constructor(
    @Inject(INSTANCE_ID) private readonly instanceId: string,
    private readonly control: ControlChannel,
    private readonly sessions: SessionsService,
    private readonly pinger: SsePinger,
  ) {}

  get size(): number {
    return this.remotes.size;
  }

  onModuleInit(): void {
    this.control.on('attach', (m) => {
      const remote = new RemoteConnection(this.control, this.instanceId, m.edge, m.attachId, m.sessionId, (c) => {
        this.remotes.delete(c.attachId);
        this.pinger.remove(c);
      });
      const status = this.sessions.attach(m.sessionId, remote, m.after);
      if (status !== 'ok') {
        void this.control.send(m.edge, { type: 'attached', sessionId: m.sessionId, attachId: m.attachId, from: this.instanceId, status }).catch(() => undefined);
        return;
      }
      if (remote.gone) return;
      this.remotes.set(m.attachId, remote);
      this.pinger.add(remote);
    });
    this.control.on('detach', (m) => this.remotes.get(m.attachId)?.detached(m.reason));
  }
}
