# Usage: perf script -i perf.data > stacks.txt; python3 per-request.py stacks.txt <CPU us per request>
# CPU us per request, inclusive, of named frames (a sample counts once per row if any frame matches).
import sys
stacks=[]; cur=[]
for line in open(sys.argv[1],errors='replace'):
    line=line.rstrip('\n')
    if not line.strip():
        if cur: stacks.append(cur[::-1]); cur=[]
        continue
    if line[0] in '\t ':
        parts=line.strip().split(' ',1); s=parts[1] if len(parts)>1 else parts[0]; cur.append(s.split('+0x')[0])
us=float(sys.argv[2]); tot=len(stacks)
rows=[('the socket write (writev syscall)','__GI___writev'),('  of it: waking the reader (sock_def_readable)','sock_def_readable'),('the socket read (read syscall)','ksys_read'),
('HTTP parser (llhttp + headers-complete callback)','Parser::Execute'),('  of it: the request listener (Socket.IO, fast path)','socket.io/dist/index.js'),
('FastRefusals.write(), res.end() included (main.js:7488 in build cbad19c)','main.js:7488'),('  res.end() (node:_http_outgoing:1034)','_http_outgoing:1034'),
('recordRequest (3 metric updates)','recordRequest'),('prom-client (all)','prom-client'),('GatewayException constructed','JSBuiltinsConstructStub'),
('V8 optimizing compiler (background threads)','OptimizingCompileDispatcher'),('GC (scavenges, marking)','Heap::'),('async hooks (init)','emitInitScript')]
for name,pat in rows:
    n=sum(1 for s in stacks if any(pat in f for f in s))
    print(f'| {name} | {us*n/tot:.1f} |')
