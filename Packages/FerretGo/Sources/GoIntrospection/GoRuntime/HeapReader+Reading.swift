import Glibc
import Synchronization

extension HeapReader {
    private typealias Request = (address: UInt64, count: Int)

    /// One coherent reading (see the type's notes). `ProcessReadError` passes through:
    /// `.exited` means the process is gone and the caller should detach.
    public func read() throws -> HeapSnapshot {
        try readWithDiagnostics().snapshot
    }

    /// Like ``read()``, also saying how many attempts it took.
    public func readWithDiagnostics() throws -> (snapshot: HeapSnapshot, attempts: Int) {
        for attempt in 1...Self.maxAttempts {
            if let s = try attemptReading() { return (s, attempt) }
            // Writers (allocation, the background sweeper) come in bursts: back off a
            // little so a quiet moment can come (50 µs, 100 µs, ... at most 1.6 ms).
            if attempt >= 2 { usleep(UInt32(50 << min(attempt - 2, 5))) }
        }
        throw IntrospectionError("pid \(pid): heap stats changed under every one of \(Self.maxAttempts) readings "
            + "(the program allocates without pause); no figure reported")
    }

    // MARK: - Reading

    private func req(_ f: RuntimeField, base: UInt64) -> Request { (base &+ UInt64(f.offset), f.size) }

    private func value(_ f: RuntimeField, _ bytes: [UInt8]) -> Int64 {
        f.value(in: bytes, base: -f.offset) ?? 0
    }

    private func uvalue(_ f: RuntimeField, _ bytes: [UInt8]) -> UInt64 { UInt64(bitPattern: value(f, bytes)) }

    private func statsRequest() -> Request {
        (plan.memstats &+ UInt64(plan.statsRegion.offset), plan.statsRegion.size)
    }

    /// nil when the reading may be torn.
    private func attemptReading() throws -> HeapSnapshot? {
        let p = plan
        let cached = cache.withLock { $0 }

        // Round 1: the Ps' sequence numbers (before the stats), the stats, every scalar,
        // and, at the addresses seen last time, allp, the Ps' mcache pointers and the
        // mcaches' span arrays (they move only when GOMAXPROCS changes).
        var r: [Request] = cached.ps.map { req(p.pStatsSeq, base: $0) }
        let iStats = r.count
        r.append(statsRequest())
        let iMem = r.count
        r += p.memstatsFields.map { req($0, base: p.memstats) }
        let iCtl = r.count
        r += p.controller.map { req($0, base: p.gcController) }
        let iHeap = r.count
        r += [req(p.spanallocInuse, base: p.mheap), req(p.cacheallocInuse, base: p.mheap),
              req(p.gcCPU, base: p.work), req(p.schedTotaltime, base: p.sched),
              req(p.schedProcresizetime, base: p.sched), (p.gomaxprocs.address, p.gomaxprocs.size),
              (p.allp.address, 24)]
        let iAccounted = r.count
        if let f = p.gcAccountedTotal { r.append(req(f, base: p.work)) }
        let iArray = r.count
        if cached.allpLen > 0 { r.append((cached.allpPtr, cached.allpLen * 8)) }
        let iMcache = r.count
        r += cached.ps.map { req(p.pMcache, base: $0) }
        let iAlloc = r.count
        r += cached.mcaches.map { ($0 &+ UInt64(p.mcacheAlloc.offset), p.mcacheAlloc.count * 8) }
        let now = Self.monotonicNow()
        let got: [[UInt8]]
        do {
            got = try memory.readBatch(r)
        } catch {
            guard case .fault = error, !cached.ps.isEmpty else { throw error }
            cache.withLock { $0 = Cache() }  // a remembered P is gone: start afresh
            return nil
        }
        let seqBefore = (0..<cached.ps.count).map { uvalue(p.pStatsSeq, got[$0]) }
        let statsBytes = got[iStats]
        let allpHeader = got[iAccounted - 1]
        let allpPtr = allpHeader.u64(at: 0) ?? 0
        let allpLen = Int(truncatingIfNeeded: Int64(bitPattern: allpHeader.u64(at: 8) ?? 0))
        let accountedTotal = p.gcAccountedTotal.map { value($0, got[iAccounted]) }
        guard allpLen >= 0, allpLen <= Self.maxProcs, allpLen == 0 || allpPtr != 0 else {
            throw IntrospectionError("pid \(pid): allp has an implausible length \(allpLen)")
        }
        var ps: [UInt64]
        if cached.allpLen > 0 && allpPtr == cached.allpPtr && allpLen == cached.allpLen {
            ps = (0..<allpLen).compactMap { got[iArray].u64(at: $0 * 8) }.filter { $0 != 0 }
        } else {
            let array = allpLen > 0 ? try memory.read(allpPtr, count: allpLen * 8) : []
            ps = (0..<allpLen).compactMap { array.u64(at: $0 * 8) }.filter { $0 != 0 }
        }
        let mcaches = ps == cached.ps ? (0..<ps.count).map { uvalue(p.pMcache, got[iMcache + $0]) }.filter { $0 != 0 } : []
        if ps != cached.ps || mcaches != cached.mcaches {
            // The Ps or their mcaches changed (or first reading): their sequence numbers
            // and span arrays were not read with the stats. Remember them, read again.
            let fresh = try memory.readBatch(ps.map { req(p.pMcache, base: $0) }).map { uvalue(p.pMcache, $0) }
            cache.withLock { $0 = Cache(allpPtr: allpPtr, allpLen: allpLen, ps: ps, mcaches: fresh.filter { $0 != 0 }) }
            return nil
        }
        if seqBefore.contains(where: { $0 & 1 == 1 }) { return nil }  // a P is writing its stats

        // Round 2: the cached spans' counts (allocCount and allocCountBeforeCache, one
        // request covering both when they are close, as in every Go version so far).
        var spans: [UInt64] = []
        var seen = Set<UInt64>()
        for i in 0..<mcaches.count {
            let a = got[iAlloc + i]
            for j in 0..<p.mcacheAlloc.count {
                if let s = a.u64(at: j * 8), s != 0, seen.insert(s).inserted { spans.append(s) }
            }
        }
        var unpublished: Int64 = 0
        if !spans.isEmpty {
            let (f1, f2) = (p.spanAllocCount, p.spanAllocCountBeforeCache)
            let lo = min(f1.offset, f2.offset), hi = max(f1.offset + f1.size, f2.offset + f2.size)
            if hi - lo <= 16 {
                let w = hi - lo
                let packed = try memory.readBatchContiguous(spans.map { ($0 &+ UInt64(lo), w) })
                for i in spans.indices {
                    let used = (f1.value(in: packed, base: i * w - lo) ?? 0) - (f2.value(in: packed, base: i * w - lo) ?? 0)
                    if used > 0 { unpublished += used }
                }
            } else {
                var sr: [Request] = []
                for s in spans { sr += [req(f1, base: s), req(f2, base: s)] }
                let counts = try memory.readBatch(sr)
                for i in spans.indices {
                    let used = value(f1, counts[2 * i]) - value(f2, counts[2 * i + 1])
                    if used > 0 { unpublished += used }
                }
            }
        }

        // Round 3: the stats again, then the sequence numbers.
        let again = try memory.readBatch([statsRequest()] + ps.map { req(p.pStatsSeq, base: $0) })
        let seqAfter = (0..<ps.count).map { uvalue(p.pStatsSeq, again[1 + $0]) }
        guard seqAfter == seqBefore else { return nil }
        let genBefore = p.gen.value(in: statsBytes) ?? -1, genAfter = p.gen.value(in: again[0]) ?? -1
        guard genBefore == genAfter, (0..<3).contains(genBefore) else { return nil }
        for slot in 0..<3 where Int64(slot) != genBefore {
            let lo = slot * p.statsSlot, hi = lo + p.statsSlot
            guard statsBytes.count >= hi, again[0].count >= hi,
                  statsBytes[lo..<hi] == again[0][lo..<hi] else { return nil }
        }

        // The consistent stats: the three slots summed (what unsafeRead does).
        var inStacks: Int64 = 0, inWorkBufs: Int64 = 0, inPtrScalar: Int64 = 0
        var objects: Int64 = 0
        for slot in 0..<3 {
            let base = slot * p.statsSlot
            func v(_ f: RuntimeField) -> Int64 { f.value(in: statsBytes, base: base) ?? 0 }
            inStacks &+= v(p.inStacks)
            inWorkBufs &+= v(p.inWorkBufs)
            if let f = p.inPtrScalarBits { inPtrScalar &+= v(f) }
            objects &+= v(p.largeAllocCount) &- v(p.largeFreeCount)
            for i in 0..<p.smallAllocCount.count {
                let a = statsBytes.u64(at: base + p.smallAllocCount.offset + i * 8) ?? 0
                let fr = statsBytes.u64(at: base + p.smallFreeCount.offset + i * 8) ?? 0
                objects &+= Int64(bitPattern: a &- fr)
            }
        }
        objects &+= unpublished

        let m = p.memstatsFields.indices.map { uvalue(p.memstatsFields[$0], got[iMem + $0]) }
        let c = p.controller.indices.map { uvalue(p.controller[$0], got[iCtl + $0]) }
        func ctl(_ i: ControllerIndex) -> UInt64 { c[i.rawValue] }
        let spanInuse = uvalue(p.spanallocInuse, got[iHeap])
        let cacheInuse = uvalue(p.cacheallocInuse, got[iHeap + 1])
        let gcCPU = value(p.gcCPU, got[iHeap + 2])
        let schedTotal = value(p.schedTotaltime, got[iHeap + 3])
        let resize = value(p.schedProcresizetime, got[iHeap + 4])
        let gomaxprocs = Int64(p.gomaxprocs.size == 4 ? Int64(got[iHeap + 5].i32(at: 0) ?? 0)
                                                      : got[iHeap + 5].i64(at: 0) ?? 0)

        let stacks = UInt64(bitPattern: max(0, inStacks))
        let workBufs = UInt64(bitPattern: max(0, inWorkBufs))
        let ptrScalar = UInt64(bitPattern: max(0, inPtrScalar))
        let (stacksSys, mspanSys, mcacheSys, buckhash, gcMisc, other) = (m[0], m[1], m[2], m[3], m[4], m[5])
        let heapInUse = ctl(.heapInUse), heapFree = ctl(.heapFree), heapReleased = ctl(.heapReleased)
        let sys = heapInUse &+ heapFree &+ heapReleased &+ stacksSys &+ mspanSys &+ mcacheSys &+ buckhash
            &+ gcMisc &+ other &+ stacks &+ workBufs &+ ptrScalar
        return HeapSnapshot(
            heapInUse: heapInUse, heapFree: heapFree, heapReleased: heapReleased,
            heapObjects: UInt64(bitPattern: max(0, objects)),
            heapLive: ctl(.heapLive), heapMarked: ctl(.heapMarked),
            stackInUse: stacks, stackSys: stacks &+ stacksSys,
            mspanInUse: spanInuse, mspanSys: mspanSys, mcacheInUse: cacheInuse, mcacheSys: mcacheSys,
            buckHashSys: buckhash, gcSys: gcMisc &+ workBufs &+ ptrScalar, otherSys: other,
            sys: sys, nextGC: heapGoal(c),
            numGC: UInt32(truncatingIfNeeded: m[7]), pauseTotalNs: m[6],
            gcCPUTimeNs: gcCPU,
            totalCPUTimeNs: schedTotal &+ (Int64(bitPattern: now) &- resize) &* gomaxprocs,
            gcAccountedTotalNs: accountedTotal)
    }

    /// `gcControllerState.heapGoal()` (runtime/mgcpacer.go), from the fields it reads.
    private func heapGoal(_ c: [UInt64]) -> UInt64 {
        func ctl(_ i: ControllerIndex) -> UInt64 { c[i.rawValue] }
        var goal = ctl(.gcPercentHeapGoal)
        // memoryLimitHeapGoal
        let heapMarked = ctl(.heapMarked)
        let heapFree = ctl(.heapFree)
        let heapAlloc = ctl(.totalAlloc) &- ctl(.totalFree)
        let mappedReady = ctl(.mappedReady)
        let limit = ctl(.memoryLimit)
        var limitGoal = UInt64.max
        if heapFree &+ heapAlloc <= mappedReady, limit <= UInt64(Int64.max) {
            let nonHeap = mappedReady - heapFree - heapAlloc
            let overage = mappedReady > limit ? mappedReady - limit : 0
            if nonHeap &+ overage >= limit {
                limitGoal = heapMarked
            } else {
                var g = limit - (nonHeap + overage)
                var headroom: UInt64 = 1 << 20
                if plan.headroomPercent { headroom = max(g / 100 * 3, 1 << 20) }
                g = (g < headroom || g - headroom < headroom) ? headroom : g - headroom
                limitGoal = max(g, heapMarked)
            }
        }
        if limitGoal < goal {
            goal = limitGoal
        } else {
            goal = max(goal, ctl(.sweepDistMinTrigger))
            let triggered = ctl(.triggered)
            if triggered != UInt64.max && goal < triggered &+ (64 << 10) { goal = triggered &+ (64 << 10) }
        }
        return goal
    }

    /// CLOCK_MONOTONIC in ns: the clock Go's `nanotime` reads on Linux.
    static func monotonicNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
