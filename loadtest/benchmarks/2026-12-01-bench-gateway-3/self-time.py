import json,sys,collections
p=json.load(open(sys.argv[1]))
nodes={n['id']:n for n in p['nodes']}
self=collections.Counter()
for s in p['samples']: self[s]+=1
tot=sum(self.values())
agg=collections.Counter()
for nid,c in self.items():
    cf=nodes[nid]['callFrame']
    agg[(cf['functionName'] or '(anon)', cf['url'].split('/node_modules/')[-1].split('/')[-1], cf['lineNumber'])]+=c
for k,c in agg.most_common(int(sys.argv[2]) if len(sys.argv)>2 else 40):
    print(f"{100*c/tot:5.1f}% {k[0]} {k[1]}:{k[2]}")
