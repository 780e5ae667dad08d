// A process that only holds streams: opens N to URL, prints "ready" once every one has its first
// event, and keeps them until killed. The memory probe measures the gateway without its clients.
const [url, count] = [process.argv[2] as string, Number(process.argv[3])];
const held: unknown[] = [];
let ready = 0;

async function open(): Promise<void> {
  const res = await fetch(url, { headers: { accept: 'text/event-stream' } });
  if (!res.body) throw new Error(`no stream: ${res.status}`);
  const reader = res.body.getReader();
  held.push(reader);
  const first = await reader.read();
  if (first.value && ++ready === count) process.stdout.write('ready\n');
  for (;;) if ((await reader.read()).done) return;
}

void (async () => {
  // In batches: a burst of thousands of handshakes is not what is measured.
  for (let i = 0; i < count; i += 200) {
    const batch = Array.from({ length: Math.min(200, count - i) }, () => open().catch((err: unknown) => process.stderr.write(`${String(err)}\n`)));
    await Promise.race([Promise.all(batch), new Promise((r) => setTimeout(r, 2_000))]);
  }
})();
setInterval(() => undefined, 60_000);
