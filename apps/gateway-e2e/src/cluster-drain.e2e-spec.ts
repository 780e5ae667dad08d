import { readFileSync } from 'node:fs';
import { SseClient, waitFor, type Stack } from '@traffic-dam/stack';
import { startE2eStack } from './e2e-stack';

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

// GATEWAY_WORKERS=2: one process tree, two dam instances (node:cluster). SIGTERM to the primary
// drains both workers; the primary exits 0 once both have.
describe('drain with node:cluster workers', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startE2eStack({ gateways: 1, env: { LOG_LEVEL: 'warn', GATEWAY_WORKERS: '2', DRAIN_GRACE_MS: '300' } });
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('expires the sessions of every worker (draining), then the primary exits 0 and no worker is left', async () => {
    const g = stack.gateways[0];
    if (!g?.child.pid) throw new Error('no gateway');
    const primary = g.child.pid;
    await waitFor('two cluster workers', () => childrenOf(primary).length === 2);
    const workers = childrenOf(primary);
    // The primary hands connections in turn to the workers that listen; a forked worker may still
    // be booting (a loaded machine), so streams are opened until both have answered.
    const streams: SseClient[] = [];
    const instances = new Set<string>();
    await waitFor(
      'streams on both cluster workers',
      async () => {
        const sse = await new SseClient(`${g.url}/chat/stream`).open();
        expect(sse.status).toBe(200);
        instances.add((await sse.session()).instanceId);
        streams.push(sse);
        return instances.size === 2;
      },
      { pollMs: 100 },
    );

    g.child.signal('SIGTERM');
    for (const sse of streams) {
      const e = await sse.waitFor((x) => x.event === 'expired');
      expect(e.data).toEqual({ reason: 'draining' });
    }
    expect(await waitFor('the primary exits after SIGTERM', g.child.wait())).toBe(0);
    for (const pid of workers) {
      let gone = false;
      try {
        process.kill(pid, 0);
      } catch {
        gone = true;
      }
      expect({ pid, gone }).toEqual({ pid, gone: true });
    }
  });
});
