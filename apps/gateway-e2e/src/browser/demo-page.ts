import type { Page } from 'playwright-core';

/** What the demo page records for tests (window.tdDemo in infra/web/app.js). */
export interface DemoEvent {
  event: string;
  /** EventSource's lastEventId when it fired (SSE only). */
  id?: string;
  data: { seq?: number; messageId?: string; sessionId?: string; reason?: string; code?: string };
}

export interface DemoAnswer {
  messageId: string;
  tokens: number;
  seqs: number[];
  text: string;
}

export interface DemoState {
  events: DemoEvent[];
  answers: DemoAnswer[];
  /** EventSource opens (1 + its reconnects). */
  opens: number;
  state: { session: { sessionId: string; token: string } | null };
}

/** The page's record, read in the browser. The test runs in Node, which has no `window`. */
export function demoState(page: Page): Promise<DemoState> {
  return page.evaluate(() => (globalThis as unknown as { tdDemo: DemoState }).tdDemo);
}

/** Opens a session with the page's own form (the transport chosen by its label). */
export async function openSession(page: Page, transport: 'Server-Sent Events' | 'Socket.IO' = 'Server-Sent Events'): Promise<void> {
  await page.getByLabel(transport).check();
  await page.getByRole('button', { name: 'Open session' }).click();
}

export async function askQuestion(page: Page, question: string): Promise<void> {
  await page.getByLabel('Question').fill(question);
  await page.getByRole('button', { name: 'Ask' }).click();
}

/** Closes the page's session (its Close button: a DELETE over SSE), if it has one. */
export async function closeSession(page: Page): Promise<void> {
  const close = page.getByRole('button', { name: 'Close session' });
  if (await close.isEnabled()) await close.click();
}
