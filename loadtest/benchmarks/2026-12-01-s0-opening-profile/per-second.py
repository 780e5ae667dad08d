# Usage: perf script -i perf-s0.data -F pid,time > pidtime.txt
#        python3 per-second.py pidtime.txt 499 'gateway A=31793' 'gateway B=31794' 'load generator=31765' ...
# Cores used per second by each named process (samples / sampling rate); pid 0 is idle.
import collections, sys
path, hz, named = sys.argv[1], float(sys.argv[2]), dict(a.split('=')[::-1] for a in sys.argv[3:])
named.setdefault('0', 'idle')
rows = [l.split() for l in open(path) if l.strip()]
t0 = float(rows[0][1].rstrip(':'))
per = collections.defaultdict(collections.Counter)
for pid, t in rows:
    per[int(float(t.rstrip(':')) - t0)][named.get(pid, 'other')] += 1
cols = list(dict.fromkeys(list(named.values()) + ['other']))
print('| s | ' + ' | '.join(cols) + ' |')
print('|' + '---|' * (len(cols) + 1))
for s in sorted(per):
    print(f'| {s} | ' + ' | '.join(f'{per[s][c] / hz:.2f}' for c in cols) + ' |')
