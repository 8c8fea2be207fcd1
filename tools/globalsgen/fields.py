import json
import os
L=json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../Packages/FerretGo/Sources/GoBinaryFormat/Layouts/layouts.json')))
S=L['strings']; M=L['members']; T=L['types']
TYPE={'runtime.sched':'runtime.schedt','runtime.memstats':'runtime.mstats','runtime.gcController':'runtime.gcControllerState','runtime.mheap_':'runtime.mheap','runtime.work':'runtime.workType'}
def fields(v,typ):
    li=L['versions']['go'+v][T.index(typ)]
    if li<0: return None,[]
    lay=L['layouts'][li]
    return lay[0],[(S[M[4*m]],M[4*m+1],M[4*m+2]) for m in lay[1:]]
def name(v,glob,off):
    if glob not in TYPE: return ''
    size,fs=fields(v,TYPE[glob])
    best=[f for f in fs if f[1]<=off<f[1]+max(f[2],1)]
    # prefer the deepest (longest name) match
    best.sort(key=lambda f:(-len(f[0])))
    return (best[0][0]+(f"+{off-best[0][1]}" if best and off!=best[0][1] else '')) if best else f'?(size {size})'
V=["1.19.8","1.21.13","1.22.10","1.23.9","1.24.11","1.25.5","1.26.6","1.27.3"]
for v in V:
    rows=json.load(open(f'/work/notes/globals-tables/go{v}.json'))
    print(v, "; ".join(f"{r['glob'].split('.')[1]}@{r['func'].split('.',1)[1]}={name(v,r['glob'],r['off'])}" for r in rows if r['glob'] in TYPE))
