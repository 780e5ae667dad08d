import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { waitFor, type Stack } from '@traffic-dam/stack';
import { launchBrowser, newPage, screenshot } from './browser/browser';
import { demoState, openSession } from './browser/demo-page';
import { startE2eStack } from './e2e-stack';

/** The idle tab is watched for a minute after its session ended: 60 of its once-a-second /dam polls. */
const WATCH_POLLS = 60;

describe('an idle tab after `expired` (Debian Chromium)', () => {
  let stack: Stack;
  let browser: Browser;

  beforeAll(async () => {
    stack = await startE2eStack({ env: { DAM_SESSION_IDLE_MS: '3000' } });
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it('makes no further stream request for a minute: its one reconnect is answered 204 and EventSource stops', async () => {
    const { context, page } = await newPage(browser, stack.url);
    const streams: Array<{ at: number; status: number }> = [];
    let polls = 0;
    page.on('response', (r) => {
      const path = new URL(r.url()).pathname;
      if (path === '/chat/stream') streams.push({ at: Date.now(), status: r.status() });
      if (path === '/dam') polls++;
    });
    try {
      await page.goto('/');
      await openSession(page);
      await page.waitForSelector('body[data-status="open"]');
      await page.waitForSelector('body[data-status="ended"]', { timeout: 15_000 });
      expect(await page.locator('#status').textContent()).toBe('ended (idle)');
      // EventSource reconnects once by itself (after the expired event's retry: 2 s), and is told 204.
      await waitFor('the reconnect answered', () => streams.length === 2, 10_000);
      expect(streams.map((s) => s.status)).toEqual([200, 204]);
      const stoppedAt = Date.now();
      // The tab stays open, idle and alive: it polls /dam once a second. No stream request may come
      // before its 60th poll from now, a minute later (the wait is for that poll, never a sleep).
      const pollsThen = polls;
      await waitFor(`${WATCH_POLLS} more /dam polls`, () => polls >= pollsThen + WATCH_POLLS, 3 * WATCH_POLLS * 1_000);
      expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual((WATCH_POLLS - 1) * 1_000);
      expect(streams.filter((s) => s.at > stoppedAt)).toEqual([]);
      expect(await page.evaluate(() => (globalThis as unknown as { tdDemo: { state: { conn: unknown } } }).tdDemo.state.conn)).toBeNull();
      const demo = await demoState(page);
      expect(demo.events.filter((e) => e.event === 'session')).toHaveLength(1);
      await screenshot(page, 'sse-idle-ended');
    } finally {
      await context.close();
    }
    // nginx saw the same: one stream and its one reconnect, nothing since.
    await waitFor('access log flushed', () => (readFileSync(join(stack.opts.dir, 'nginx', 'access.log'), 'utf8').match(/"GET \/chat\/stream[^"]*"/g) ?? []).length >= 2, 5_000);
    const lines = readFileSync(join(stack.opts.dir, 'nginx', 'access.log'), 'utf8').split('\n').filter((l) => l.includes('"GET /chat/stream'));
    expect(lines.map((l) => / (\d{3}) /.exec(l.slice(l.indexOf('" ')))?.[1])).toEqual(['200', '204']);
  });
});
