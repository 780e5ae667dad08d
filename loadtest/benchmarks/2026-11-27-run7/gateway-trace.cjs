// Gateway trace for the experiment: CPU profile in 60 s chunks, GC pauses and event-loop stalls, with wall-clock times.
if (process.argv.some((a) => a.includes('apps/gateway/main.js'))) (() => {
  const inspector = require('node:inspector');
  const fs = require('node:fs');
  const { PerformanceObserver, performance, monitorEventLoopDelay } = require('node:perf_hooks');
  const out = `/tmp/trace/gw-${process.pid}`;
  const log = fs.openSync(`${out}.log`, 'a');
  const w = (o) => fs.writeSync(log, JSON.stringify({ t: new Date().toISOString(), ...o }) + '\n');
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.duration >= 5) w({ gc: e.detail?.kind ?? e.kind, ms: +e.duration.toFixed(1), at: new Date(performance.timeOrigin + e.startTime).toISOString() });
    }
  }).observe({ entryTypes: ['gc'] });
  let last = Date.now();
  setInterval(() => { const now = Date.now(); if (now - last > 60) w({ lag: now - last - 10 }); last = now; }, 10).unref();
  setInterval(() => { const m = process.memoryUsage(); const h = process.resourceUsage(); w({ heapMB: Math.round(m.heapUsed / 1e6), rssMB: Math.round(m.rss / 1e6), cpuUserMs: Math.round(h.userCPUTime / 1000), cpuSysMs: Math.round(h.systemCPUTime / 1000), handles: process._getActiveHandles().length }); }, 1000).unref();
  if (process.env.TRACE_PROF !== '1') return;
  const s = new inspector.Session();
  s.connect();
  let n = 0;
  const start = () => s.post('Profiler.enable', () => s.post('Profiler.setSamplingInterval', { interval: 1000 }, () => s.post('Profiler.start')));
  start();
  const t0 = Date.now();
  setInterval(() => {
    s.post('Profiler.stop', (err, r) => {
      if (!err) fs.writeFileSync(`${out}-${String(n++).padStart(2, '0')}-${t0}.cpuprofile`, JSON.stringify(r.profile));
      start();
    });
  }, 60000).unref();
})();
