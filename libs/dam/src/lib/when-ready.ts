/** A connection that says when it is ready (ioredis's Redis and Cluster). */
export interface Readiness {
  readonly status: string;
  once(event: 'ready', listener: () => void): unknown;
  off(event: 'ready', listener: () => void): unknown;
}

/**
 * Resolves once the connection is ready, or after timeoutMs if it is not: never rejects. For a
 * connection without an offline queue, where a call made before it is ready fails at once.
 */
export async function whenReady(conn: Readiness, timeoutMs: number): Promise<void> {
  if (conn.status === 'ready') return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      conn.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    conn.once('ready', done);
  });
}
