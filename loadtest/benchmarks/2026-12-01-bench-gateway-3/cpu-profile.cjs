// Preload (NODE_OPTIONS=--require): starts the V8 CPU profiler at once, writes /tmp/prof/<pid>-<n>.cpuprofile on SIGUSR2 (and restarts).
const inspector = require('node:inspector');
const fs = require('node:fs');
const s = new inspector.Session();
s.connect();
let n = 0;
const start = () => { s.post('Profiler.enable', () => s.post('Profiler.setSamplingInterval', { interval: 200 }, () => s.post('Profiler.start'))); };
const dump = (restart) => {
  s.post('Profiler.stop', (err, r) => {
    if (!err) fs.writeFileSync(`/tmp/prof/${process.pid}-${n++}.cpuprofile`, JSON.stringify(r.profile));
    if (restart) start();
  });
};
start();
process.on('SIGUSR2', () => dump(true));
process.on('exit', () => dump(false));
