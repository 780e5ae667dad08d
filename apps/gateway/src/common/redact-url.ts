/** Query parameters that are credentials: never written to a log or echoed in a problem. */
const SECRET_PARAMS = new Set(['ticket']);

/**
 * The URL with the value of every credential parameter replaced: `/chat/stream?ticket=…` becomes
 * `/chat/stream?ticket=[redacted]`. Names are compared decoded and without case, so
 * `?TICKET=` or `?tick%65t=` are caught too; a query that cannot be read is dropped whole.
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const path = url.slice(0, q);
  const parts = url.slice(q + 1).split('&');
  let changed = false;
  const out = parts.map((part) => {
    const eq = part.indexOf('=');
    const rawName = eq < 0 ? part : part.slice(0, eq);
    let name: string;
    try {
      name = decodeURIComponent(rawName.replace(/\+/g, ' ')).toLowerCase();
    } catch {
      changed = true;
      return null;
    }
    if (!SECRET_PARAMS.has(name)) return part;
    changed = true;
    return `${rawName}=[redacted]`;
  });
  if (!changed) return url;
  if (out.includes(null)) return `${path}?[redacted]`;
  return `${path}?${out.join('&')}`;
}
