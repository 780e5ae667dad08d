// The session core's side of a transport: what it emits, and the small interface a transport
// (SSE, Socket.IO) implements to carry it. The core never sees an Express or Socket.IO object.

export type Transport = 'sse' | 'socketio';
export const TRANSPORTS: readonly Transport[] = ['sse', 'socketio'];

export type ExpiredReason = 'idle' | 'lifetime' | 'draining';
export type CloseReason = 'client' | 'deleted' | 'draining' | 'slow_client' | 'error' | 'idle' | 'lifetime';

/** The payload of each event, the same on every transport. */
export interface SessionEventData {
  session: { sessionId: string; token: string; instanceId: string; expiresAt: number };
  token: { messageId: string; seq: number; text: string };
  /** usage: what the answer cost, per the model server's usage chunk or counted by the worker (absent from older workers). */
  done: { messageId: string; tokens: number; usage?: { model: string; promptTokens: number; completionTokens: number; counted: boolean } };
  /** An answer that ended without done (the SSE event is not called `error`: EventSource fires its own `error`). */
  failed: { messageId: string; code: string; message: string };
  expired: { reason: ExpiredReason };
}

export type SessionEventName = keyof SessionEventData;

/** One event of a session. `id` counts up from 1 within the session (for resuming a stream later). */
export type SessionEvent = { [N in SessionEventName]: { id: number; name: N; data: SessionEventData[N] } }[SessionEventName];

/** What a connection is told when a session starts, or resumes, on it. */
export interface OpenContext {
  /** The session's resume handle (resumable transports): every event id carries it. */
  resumeHandle?: string;
}

/** One client connection that carries a session's events. */
export interface SessionConnection {
  readonly transport: Transport;
  /**
   * True when a client can come back to its session on a new connection (SSE's Last-Event-ID): the
   * session then outlives a dropped connection for SSE_RESUME_MS. Socket.IO sessions end at once.
   */
  readonly resumable?: boolean;
  /** True once the client went away; the core looks after every wait while the session opens. */
  readonly gone: boolean;
  /** The session exists: start the stream (SSE sends its headers). Called once, before any event. */
  open(ctx?: OpenContext): void;
  /** Delivers one event; false when it could not (gone, or too far behind). */
  send(event: SessionEvent): boolean;
  /** Ends the connection from the server side. The close is reported through onClose. */
  end(): void;
  /** The one callback for when the connection has closed, for whatever reason; called at once if it already has. */
  onClose(cb: (reason: CloseReason) => void): void;
}

/** How a transport reaches a connection it holds on another instance. */
export interface TransportReach {
  /** Asks the instance holding the session to end it (a DELETE that landed elsewhere). */
  closeRemote(ownerInstanceId: string, sessionId: string): Promise<void>;
}
