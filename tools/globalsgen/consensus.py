import sys, json, glob, os
sys.path.insert(0,'/work/notes'); import globals_extract as ge
from collections import defaultdict
V=["1.19.8","1.21.13","1.22.10","1.23.9","1.24.11","1.25.5","1.26.6","1.27.3"]
for v in V:
    b=max(glob.glob(f'/tmp/ferret-go-builds/*/httpsrv-go{v}-static'), key=os.path.getmtime)
    sz=ge.symbol_sizes(b)
    rows=json.load(open(f'/work/notes/globals-tables/go{v}.json'))
    by=defaultdict(list)
    for r in rows: by[r['glob']].append(r)
    res=[]
    for g,rs in by.items():
        sets=[]
        for r in rs:
            ops=ge.rip_operands(b,r['func'])
            sets.append({o['target']-r['off'] for o in ops if o['mnem']==r['mnem']})
        inter=set.intersection(*sets)
        ok = inter=={sz[g][0]}
        res.append(f"{g.split('.')[1]}:{len(inter)}{'' if ok else '!'}")
    print(v," ".join(res))
    ge._cache.clear()
