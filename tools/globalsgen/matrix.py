import json,sys
W=sys.argv[1:] 
d=json.load(open('/work/notes/globals-tools/allops-symprog.json'))
V=list(d)
funcs=list(d[V[0]])
short=lambda m:m
for g in W:
    print("######",g)
    for f in funcs:
        rows=[]
        for v in V:
            ops=d[v][f]
            if ops is None: rows.append("MISSING"); continue
            rows.append(" ".join(f"{o['idx']}:{o['mnem']}{'>' if o['dir']=='dst' else ''}+{o['off']:#x}" for o in ops if o['sym']==g))
        if any(r and r!="MISSING" for r in rows):
            print(" ",f)
            for v,r in zip(V,rows): print(f"    {v:8s} n={len(d[v][f]) if d[v][f] else '-':<4} {r}")
