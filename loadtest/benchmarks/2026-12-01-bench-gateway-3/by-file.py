import json, sys, collections
p = json.load(open(sys.argv[1]))
nodes = {n['id']: n for n in p['nodes']}
selft = collections.Counter()
for sid, d in zip(p['samples'], p['timeDeltas']): selft[sid] += d
by = collections.Counter()
for sid, t in selft.items():
    cf = nodes[sid]['callFrame']; u = cf['url']
    if not u: k = cf['functionName'] or '(native)'
    elif u.startswith('node:'): k = 'node:' + u[5:].split('/')[0]
    elif 'node_modules' in u: k = 'nm:' + u.split('node_modules/')[-1].split('/')[0]
    else: k = u.split('/')[-1]
    by[k] += t
tot = sum(v for k, v in by.items() if k != '(idle)')
for k, v in by.most_common(30):
    if k == '(idle)': continue
    print(f"{100*v/tot:5.1f}%  {k}")
