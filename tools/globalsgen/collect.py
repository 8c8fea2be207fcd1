import sys, json, glob, os, subprocess
sys.path.insert(0,'/work/notes')
import globals_extract as ge
V=["1.19.8","1.21.13","1.22.10","1.23.9","1.24.11","1.25.5","1.26.6","1.27.3"]
out={}
for v in V:
    b=max(glob.glob(f'/tmp/ferret-go-builds/*/symprog-go{v}-plain'), key=os.path.getmtime)
    d={}
    for f in ge.CANDIDATES:
        ops=ge.rip_operands(b,f)
        d[f]=None if ops is None else ops
    out[v]=d
    ge._cache.clear()
json.dump(out,open('/work/notes/globals-tools/allops-symprog.json','w'))
