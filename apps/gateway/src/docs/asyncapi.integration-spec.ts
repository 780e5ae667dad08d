import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { SocketChatClient, startTestRedis, type RedisHandle } from '@traffic-dam/stack';
import { startInstance, type TestInstance } from '../testing/instance';
import { WorkerDouble } from '../testing/worker-double';

interface AsyncDoc {
  asyncapi: string;
  channels: { chat: { address: string; messages: Record<string, { name: string; payload: Record<string, unknown> }> } };
  operations: Record<string, { action: string }>;
  components: { schemas: Record<string, unknown> };
}

describe('the Socket.IO contract (AsyncAPI at /docs-asyncapi)', () => {
  let redis: RedisHandle;
  let worker: WorkerDouble;
  let inst: TestInstance;
  let doc: AsyncDoc;

  beforeAll(async () => {
    redis = await startTestRedis(mkdtempSync(join(tmpdir(), 'td-asyncapi-')));
    worker = new WorkerDouble(redis.url);
    await worker.start();
    inst = await startInstance(redis.url, 'asyncapi', { QUESTION_MAX_CHARS: '123' });
    const res = await fetch(`${inst.url}/docs-asyncapi`);
    expect(res.status).toBe(200);
    doc = (await res.json()) as AsyncDoc;
  });

  afterAll(async () => {
    await worker?.stop();
    await inst?.app.close();
    await redis?.stop();
  });

  it('is linked from the OpenAPI page and describes namespace /chat, every $ref resolving', async () => {
    const openapi = (await (await fetch(`${inst.url}/docs-json`)).json()) as { info: { description: string } };
    expect(openapi.info.description).toContain('/docs-asyncapi');
    expect(doc.asyncapi).toBe('3.0.0');
    expect(doc.channels.chat.address).toBe('/chat');
    expect(Object.keys(doc.channels.chat.messages).sort()).toEqual(['ask', 'askAck', 'connectError', 'done', 'expired', 'failed', 'problem', 'session', 'token']);
    expect(doc.operations['receiveAsk']?.action).toBe('receive');
    for (const m of JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/(\w+)"/g)) expect(doc.components.schemas[m[1] ?? '']).toBeDefined();
    for (const m of JSON.stringify(doc).matchAll(/"\$ref":"#\/channels\/chat\/messages\/(\w+)"/g)) expect(doc.channels.chat.messages[m[1] ?? '']).toBeDefined();
  });

  it('what the gateway sends on a socket matches the documented payloads', async () => {
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(ajv);
    ajv.addSchema({ $id: 'td', components: { schemas: doc.components.schemas } });
    const check = (message: string, value: unknown): string[] => {
      const payload = doc.channels.chat.messages[message]?.payload;
      if (!payload) return [`no message ${message}`];
      const schema = JSON.parse(JSON.stringify(payload).replaceAll('"#/components/', '"td#/components/')) as object;
      const validate = ajv.compile(schema);
      return validate(value) ? [] : (validate.errors ?? []).map((e) => `${message}${e.instancePath} ${e.message ?? ''}`);
    };
    const c = await new SocketChatClient(inst.url).connect();
    try {
      await c.session();
      const ack = await c.ask({ question: 'is this documented?' });
      const refused = await c.ask({ question: 'x'.repeat(124) });
      const { messageId } = ack as { messageId: string };
      await c.waitFor((e) => e.event === 'done' && (e.data as { messageId: string }).messageId === messageId);
      expect(check('askAck', ack)).toEqual([]);
      expect(check('askAck', refused)).toEqual([]);
      expect((refused as { code: string }).code).toBe('question_too_large');
      for (const e of c.events) expect(check(e.event, e.data)).toEqual([]);
      expect(c.events.map((e) => e.event)).toEqual(['session', 'token', 'token', 'token', 'done']);
    } finally {
      c.close();
    }
  });
});
