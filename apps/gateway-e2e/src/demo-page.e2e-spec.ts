import type { Browser, Page } from 'playwright-core';
import { SseClient, type ChatSession, type Stack, waitFor } from '@traffic-dam/stack';
import { launchBrowser, newPage, screenshot } from './browser/browser';
import { CutProxy } from './browser/cut-proxy';
import { askQuestion, closeSession, demoState, openSession } from './browser/demo-page';
import { startE2eStack } from './e2e-stack';

const TOKENS = 40;

interface DamView {
  global: { used: number; capacity: number } | null;
}

describe('the demo page in a real browser (Debian Chromium)', () => {
  let stack: Stack;
  let browser: Browser;

  const used = async (): Promise<number> => ((await (await fetch(`${stack.url}/dam`)).json()) as DamView).global?.used ?? -1;

  beforeAll(async () => {
    // 2 slots per gateway (4 in all), so the page can be refused; 40 tokens at 20/s, so an answer
    // is still streaming when the network drops.
    stack = await startE2eStack({
      env: { DAM_SLOTS_PER_INSTANCE: '2' },
      workerEnv: () => ({ AI_TTFT_MS: '50', AI_TOKENS_PER_SEC: '20', AI_ANSWER_TOKENS: String(TOKENS) }),
    });
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  afterEach(async () => {
    // Every test closes what it opened: the next one starts with an empty budget.
    await waitFor('budget empty', async () => (await used()) === 0, 15_000);
  });

  async function onPage<T>(baseUrl: string, fn: (page: Page) => Promise<T>): Promise<T> {
    const { context, page } = await newPage(browser, baseUrl);
    try {
      await page.goto('/');
      return await fn(page);
    } finally {
      await closeSession(page).catch(() => undefined);
      await context.close();
    }
  }

  it('answers a question over SSE, token by token, and shows the dam', async () => {
    await onPage(stack.url, async (page) => {
      await openSession(page);
      await page.waitForSelector('body[data-status="open"]');
      await askQuestion(page, 'What does the dam do?');
      await page.waitForSelector('body[data-answer="done"]', { timeout: 30_000 });
      const demo = await demoState(page);
      expect(demo.answers).toHaveLength(1);
      expect(demo.answers[0]?.tokens).toBe(TOKENS);
      expect(demo.answers[0]?.seqs).toEqual(Array.from({ length: TOKENS }, (_, i) => i));
      expect(await page.locator('#answer').textContent()).toBe(demo.answers[0]?.text);
      // Every event has an id: the session's resume handle and its number.
      const ids = demo.events.map((e) => e.id ?? '');
      expect(ids.every((id) => /^[A-Za-z0-9_-]{22}\.\d+$/.test(id))).toBe(true);
      await page.waitForSelector('body[data-dam="live"]');
      expect(await page.locator('#dam-global').textContent()).toMatch(/^1 \/ 4$/);
      expect(await page.locator('#dam-breaker').textContent()).toBe('closed');
      expect(await page.locator('#dam-wait').textContent()).toMatch(/s \(limit 2\.0 s\)$/);
      expect(await page.locator('#dam-ai').textContent()).toMatch(/^1 \/ \d+\.\d$/);
      await screenshot(page, 'sse-answer');
    });
  });

  it('answers a question over Socket.IO (the client script served by the gateway through nginx), switched on the page', async () => {
    await onPage(stack.url, async (page) => {
      await openSession(page, 'Socket.IO');
      await page.waitForSelector('body[data-status="open"]');
      expect(await page.evaluate(() => typeof (globalThis as unknown as { io?: unknown }).io)).toBe('function');
      await askQuestion(page, 'And over a socket?');
      await page.waitForSelector('body[data-answer="done"]', { timeout: 30_000 });
      const demo = await demoState(page);
      expect(demo.answers[0]?.seqs).toEqual(Array.from({ length: TOKENS }, (_, i) => i));
      expect(demo.events.filter((e) => e.event === 'token')).toHaveLength(TOKENS);
      await page.waitForSelector('body[data-dam="live"]');
      expect(await page.locator('#dam-global').textContent()).toMatch(/^1 \/ 4$/);
      await screenshot(page, 'socketio-answer');
      // Closing the socket ends the session at once (no resume window on Socket.IO).
      await page.getByRole('button', { name: 'Close session' }).click();
      await waitFor('socket session closed', async () => (await used()) === 0, 5_000);
    });
  });

  it('resumes the same session when the network drops mid-answer: every seq once, and the dam does not grow', async () => {
    const proxy = await CutProxy.start('127.0.0.1', Number(new URL(stack.url).port));
    // The dam's count, sampled all along: a resume takes no new slot.
    let maxUsed = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxUsed = Math.max(maxUsed, await used().catch(() => 0));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    try {
      await onPage(proxy.url, async (page) => {
        // Which gateway carried each stream (the resume may land on either; both ways are tested in the integration tier).
        const carriers: string[] = [];
        page.on('response', (r) => {
          if (new URL(r.url()).pathname === '/chat/stream') carriers.push(`${r.status()} ${r.headers()['x-instance-id'] ?? '?'}`);
        });
        await openSession(page);
        await page.waitForSelector('body[data-status="open"]');
        const before = (await demoState(page)).state.session?.sessionId;
        await askQuestion(page, 'A long answer, please.');
        await page.waitForFunction(() => (globalThis as unknown as { tdDemo: { events: Array<{ event: string }> } }).tdDemo.events.filter((e) => e.event === 'token').length >= 5);
        expect(proxy.cut()).toBeGreaterThan(0);
        await page.waitForSelector('body[data-answer="done"]', { timeout: 30_000 });
        const demo = await demoState(page);
        const tokenEvents = demo.events.filter((e) => e.event === 'token');
        // Received, not deduplicated by the page: each seq exactly once, in order.
        expect(tokenEvents.map((e) => e.data.seq)).toEqual(Array.from({ length: TOKENS }, (_, i) => i));
        expect(new Set(demo.events.map((e) => e.id)).size).toBe(demo.events.length);
        expect(demo.opens).toBeGreaterThanOrEqual(2);
        expect(demo.events.filter((e) => e.event === 'session')).toHaveLength(1);
        expect(demo.state.session?.sessionId).toBe(before);
        expect(await page.locator('#status').textContent()).toBe('open (resumed)');
        expect(demo.answers[0]?.seqs).toHaveLength(TOKENS);
        process.stdout.write(`streams of the resumed session: ${carriers.join(', ')}\n`);
        expect(carriers.every((c) => c.startsWith('200 '))).toBe(true);
        await screenshot(page, 'sse-resumed-after-drop');
        // The session is whole: it takes the next question.
        await askQuestion(page, 'And another one.');
        await page.waitForFunction(() => (globalThis as unknown as { tdDemo: { answers: unknown[] } }).tdDemo.answers.length === 2, undefined, { timeout: 30_000 });
      });
    } finally {
      sampling = false;
      await sampler;
      await proxy.stop();
    }
    expect(maxUsed).toBe(1);
  });

  it("keeps the tokens that arrive before the POST's 202 names their answer, and shows them in order", async () => {
    await onPage(stack.url, async (page) => {
      await openSession(page);
      await page.waitForSelector('body[data-status="open"]');
      // The 202 is held back until the stream has brought tokens: the stream and the POST are two
      // connections, and on a busy machine the first tokens can come first.
      let held = 0;
      await page.route('**/chat/sessions/*/messages', async (route) => {
        const response = await route.fetch();
        await page.waitForFunction(() => (globalThis as unknown as { tdDemo: { events: Array<{ event: string }> } }).tdDemo.events.filter((e) => e.event === 'token').length >= 3);
        held++;
        await route.fulfill({ response });
      });
      await askQuestion(page, 'Tokens before the answer has a name?');
      await page.waitForSelector('body[data-answer="done"]', { timeout: 30_000 });
      expect(held).toBe(1);
      const demo = await demoState(page);
      expect(demo.answers[0]?.seqs).toEqual(Array.from({ length: TOKENS }, (_, i) => i));
      expect(await page.locator('#answer').textContent()).toBe(demo.answers[0]?.text);
      await page.unroute('**/chat/sessions/*/messages');
    });
  });

  it('shows a refused stream with its code and a Retry-After countdown', async () => {
    // The 4 slots taken by other clients.
    const holders: Array<{ sse: SseClient; s: ChatSession }> = [];
    for (let i = 0; i < 4; i++) {
      const sse = await new SseClient(`${stack.url}/chat/stream`).open();
      holders.push({ sse, s: await sse.session() });
    }
    try {
      await onPage(stack.url, async (page) => {
        await openSession(page);
        await page.waitForSelector('body[data-refused="dam_full"]');
        expect(await page.locator('#refusal-code').textContent()).toBe('dam_full');
        expect(await page.locator('#refusal-status').textContent()).toBe('429');
        const first = Number(await page.locator('#refusal-countdown').textContent());
        expect(first).toBeGreaterThanOrEqual(1);
        await screenshot(page, 'sse-refused-countdown');
        // It counts down.
        await page.waitForFunction((n) => Number(document.getElementById('refusal-countdown')?.textContent) < n, first, { timeout: 5_000 });
        expect(await page.locator('#status').textContent()).toBe('refused');
      });
    } finally {
      for (const { sse, s } of holders) {
        await fetch(`${stack.url}/chat/sessions/${s.sessionId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
        sse.close();
      }
    }
  });

  it('is usable by keyboard alone, labels every control, and has readable contrast (light and dark)', async () => {
    await onPage(stack.url, async (page) => {
      const unlabelled = await page.evaluate(() =>
        [...document.querySelectorAll('input, textarea, select')].filter((el) => ((el as HTMLInputElement).labels?.length ?? 0) === 0 && !el.getAttribute('aria-label')).map((el) => el.id),
      );
      expect(unlabelled).toEqual([]);
      // Tab to the button, Enter; then to the question, type, Tab on to Ask, Enter.
      const tabTo = async (id: string): Promise<void> => {
        for (let i = 0; i < 25; i++) {
          if ((await page.evaluate(() => document.activeElement?.id)) === id) return;
          await page.keyboard.press('Tab');
        }
        throw new Error(`Tab never reached #${id}`);
      };
      await tabTo('open');
      await page.keyboard.press('Enter');
      await page.waitForSelector('body[data-status="open"]');
      await tabTo('question');
      await page.keyboard.press('ControlOrMeta+A');
      await page.keyboard.type('Asked by keyboard?');
      await tabTo('ask');
      await page.keyboard.press('Enter');
      await page.waitForSelector('body[data-answer="done"]', { timeout: 30_000 });
      for (const scheme of ['light', 'dark'] as const) {
        await page.emulateMedia({ colorScheme: scheme });
        const worst = await page.evaluate(contrastOfText);
        expect({ scheme, worst: worst.filter((w) => w.ratio < 4.5) }).toEqual({ scheme, worst: [] });
      }
    });
  });
});

/** Runs in the page: the contrast ratio (WCAG 2) of each visible text element against its background. */
function contrastOfText(): Array<{ id: string; ratio: number }> {
  const rgb = (c: string): [number, number, number, number] => {
    const m = /rgba?\(([^)]+)\)/.exec(c);
    const [r = 0, g = 0, b = 0, a = 1] = (m?.[1] ?? '0,0,0,0').split(',').map((x) => Number(x.trim()));
    return [r, g, b, m?.[1]?.split(',').length === 4 ? a : 1];
  };
  const lum = ([r, g, b]: number[]): number => {
    const f = (v: number) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * f(r ?? 0) + 0.7152 * f(g ?? 0) + 0.0722 * f(b ?? 0);
  };
  const background = (el: Element | null): [number, number, number, number] => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) return c;
    }
    return [255, 255, 255, 1];
  };
  const out: Array<{ id: string; ratio: number }> = [];
  for (const el of document.querySelectorAll('h1, h2, h3, p, label, legend, dt, dd, th, td, button:not(:disabled), output, strong, code, caption')) {
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || (el as HTMLElement).offsetParent === null || !el.textContent?.trim()) continue;
    const fg = lum(rgb(style.color));
    const bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    out.push({ id: `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}: ${el.textContent.trim().slice(0, 30)}`, ratio: Math.round(ratio * 100) / 100 });
  }
  return out;
}
