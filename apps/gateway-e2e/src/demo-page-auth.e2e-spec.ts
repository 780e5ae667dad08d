import { createHash, randomBytes } from 'node:crypto';
import type { Browser, Page } from 'playwright-core';
import { Redis } from 'ioredis';
import jwt from 'jsonwebtoken';
import { waitFor, type Stack } from '@traffic-dam/stack';
import { launchBrowser, newPage, screenshot } from './browser/browser';
import { askQuestion, closeSession, demoState, openSession } from './browser/demo-page';
import { startE2eStack } from './e2e-stack';

const SECRET = randomBytes(32).toString('hex');
const jwtOf = (sub: string) => jwt.sign({ sub }, SECRET, { algorithm: 'HS256', expiresIn: '5m' });

describe('the demo page with AUTH_JWT_SECRET: a stream ticket for its JWT (Debian Chromium)', () => {
  let stack: Stack;
  let browser: Browser;
  let probe: Redis;

  beforeAll(async () => {
    stack = await startE2eStack({
      env: { AUTH_JWT_SECRET: SECRET, STREAM_TICKET_TTL_MS: '5000' },
      workerEnv: () => ({ AI_TTFT_MS: '50', AI_TOKENS_PER_SEC: '200', AI_ANSWER_TOKENS: '12' }),
    });
    browser = await launchBrowser();
    probe = new Redis(stack.redisUrl);
  });

  afterAll(async () => {
    probe?.disconnect();
    await browser?.close();
    await stack?.stop();
  });

  async function onPage<T>(fn: (page: Page) => Promise<T>): Promise<T> {
    const { context, page } = await newPage(browser, stack.url);
    try {
      await page.goto('/');
      return await fn(page);
    } finally {
      await closeSession(page).catch(() => undefined);
      await context.close();
    }
  }

  /** The page's ticket requests answer with this ticket instead (a real one, used or expired). */
  const serveTicket = (page: Page, ticket: string) =>
    page.route('**/chat/tickets', (route) => route.fulfill({ status: 201, contentType: 'application/json', body: JSON.stringify({ ticket, expiresAt: Date.now() }) }));

  const streamUrls: string[] = [];

  it('gets a ticket for the JWT, opens the stream with it and answers', async () => {
    await onPage(async (page) => {
      page.on('request', (r) => {
        if (new URL(r.url()).pathname === '/chat/stream') streamUrls.push(r.url());
      });
      await page.getByLabel(/^JWT/).fill(jwtOf('page-user'));
      await openSession(page);
      await page.waitForSelector('body[data-status="open"]');
      await askQuestion(page, 'Who am I?');
      await page.waitForSelector('body[data-answer="done"]', { timeout: 30_000 });
      expect((await demoState(page)).answers[0]?.tokens).toBe(12);
      await screenshot(page, 'sse-ticket-answer');
      // The stream was opened with a ticket, never with the JWT.
      expect(streamUrls).toHaveLength(1);
      expect(new URL(streamUrls[0] ?? '').searchParams.get('ticket')).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(streamUrls[0]).not.toContain(jwtOf('page-user').split('.')[0]);
      const session = (await demoState(page)).state.session;
      expect(await probe.hget(`td:session:{${session?.sessionId ?? ''}}`, 'userId')).toBe('jwt:page-user');
    });
  });

  it('refuses the used ticket with invalid_ticket, on the wire and on the page', async () => {
    const used = new URL(streamUrls[0] ?? '').searchParams.get('ticket') ?? '';
    const wire = await fetch(`${stack.url}/chat/stream?ticket=${used}`);
    expect(wire.status).toBe(401);
    expect(((await wire.json()) as { code: string }).code).toBe('invalid_ticket');
    await onPage(async (page) => {
      await serveTicket(page, used);
      await page.getByLabel(/^JWT/).fill(jwtOf('page-user'));
      await openSession(page);
      await page.waitForSelector('body[data-refused="invalid_ticket"]');
      expect(await page.locator('#refusal-status').textContent()).toBe('401');
      await screenshot(page, 'sse-ticket-reused');
    });
  });

  it('refuses an expired ticket with invalid_ticket', async () => {
    const res = await fetch(`${stack.url}/chat/tickets`, { method: 'POST', headers: { Authorization: `Bearer ${jwtOf('late-user')}` } });
    expect(res.status).toBe(201);
    const { ticket } = (await res.json()) as { ticket: string };
    const key = `td:ticket:${createHash('sha256').update(ticket).digest('base64url')}`;
    expect(await probe.exists(key)).toBe(1);
    await waitFor('ticket expired', async () => (await probe.exists(key)) === 0, 10_000);
    await onPage(async (page) => {
      await serveTicket(page, ticket);
      await page.getByLabel(/^JWT/).fill(jwtOf('late-user'));
      await openSession(page);
      await page.waitForSelector('body[data-refused="invalid_ticket"]');
    });
    const wire = await fetch(`${stack.url}/chat/stream?ticket=${ticket}`);
    expect([wire.status, ((await wire.json()) as { code: string }).code]).toEqual([401, 'invalid_ticket']);
  });

  it('shows missing_token when the page has no JWT to trade', async () => {
    await onPage(async (page) => {
      await openSession(page);
      await page.waitForSelector('body[data-refused="missing_token"]');
      expect(await page.locator('#status').textContent()).toBe('refused');
    });
  });
});
