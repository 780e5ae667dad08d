import type { Browser } from 'playwright-core';
import type { Stack } from '@traffic-dam/stack';
import { launchBrowser, newPage, screenshot } from './browser/browser';
import { startE2eStack } from './e2e-stack';

interface DemoAnswer {
  messageId: string;
  tokens: number;
  seqs: number[];
  text: string;
}

describe('the demo page in a real browser (Debian Chromium)', () => {
  let stack: Stack;
  let browser: Browser;

  beforeAll(async () => {
    stack = await startE2eStack({ workerEnv: () => ({ AI_TTFT_MS: '50', AI_TOKENS_PER_SEC: '200', AI_ANSWER_TOKENS: '12' }) });
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it('answers a question over SSE, token by token, and shows the dam', async () => {
    const { context, page } = await newPage(browser, stack.url);
    try {
      await page.goto('/');
      await page.getByLabel('Server-Sent Events').check();
      await page.getByRole('button', { name: 'Open session' }).click();
      await page.waitForSelector('body[data-status="open"]');
      await page.getByLabel('Question').fill('What does the dam do?');
      await page.getByRole('button', { name: 'Ask' }).click();
      await page.waitForSelector('body[data-answer="done"]');
      const answers = await page.evaluate(() => (window as unknown as { tdDemo: { answers: DemoAnswer[] } }).tdDemo.answers);
      expect(answers).toHaveLength(1);
      expect(answers[0].tokens).toBe(12);
      expect(answers[0].seqs).toEqual(Array.from({ length: 12 }, (_, i) => i));
      expect(await page.locator('#answer').textContent()).toBe(answers[0].text);
      await page.waitForSelector('body[data-dam="live"]');
      expect(await page.locator('#dam-global').textContent()).toMatch(/^\d+ \/ 2000/);
      await screenshot(page, 'sse-answer');
    } finally {
      await context.close();
    }
  });
});
