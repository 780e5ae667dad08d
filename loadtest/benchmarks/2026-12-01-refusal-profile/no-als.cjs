// Preload for an A/B run: nestjs-pino's per-request AsyncLocalStorage.run(store, cb) becomes cb(),
// so the gateway process never enables async hooks. Not for production: service logs lose the
// request's bindings.
const Module = require('node:module');
const original = Module.prototype.require;
Module.prototype.require = function (id) {
  const m = original.apply(this, arguments);
  if (m && m.storage && m.Store && typeof m.storage.run === 'function' && !m.storage.__plain) {
    m.storage.run = (_store, cb, ...args) => cb(...args);
    m.storage.__plain = true;
  }
  return m;
};
