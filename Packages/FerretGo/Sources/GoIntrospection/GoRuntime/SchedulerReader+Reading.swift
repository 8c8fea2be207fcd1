import Glibc
import Synchronization

extension SchedulerReader {
    /// One coherent reading (see the type's notes). `ProcessReadError` passes through:
    /// `.exited` means the process is gone and the caller should detach.
    public func read() throws -> SchedulerSnapshot {
        try readWithDiagnostics().snapshot
    }

    /// Like ``read()``, also saying how many attempts it took and whether the last
    /// one was confirmed by an unchanged re-read of the counters.
    public func readWithDiagnostics() throws -> (snapshot: SchedulerSnapshot, attempts: Int, coherent: Bool) {
        var last: SchedulerSnapshot?
        for attempt in 1...Self.maxAttempts {
            let r = try fullReading()
            let again = try counters(ps: r.ps)
            if again == r.counters { return (r.snapshot, attempt, true) }
            last = r.snapshot
        }
        return (last!, Self.maxAttempts, false)
    }

    // MARK: - Reading

    private struct Reading {
        var snapshot: SchedulerSnapshot
        var counters: [Int64]
        var ps: [UInt64]
    }

    private typealias Request = (address: UInt64, count: Int)

    private func req(_ f: RuntimeField, base: UInt64) -> Request { (base &+ UInt64(f.offset), f.size) }
    private func req(_ g: Global) -> Request { (g.address, g.size) }

    private func value(_ f: RuntimeField, _ bytes: [UInt8]) -> Int64 {
        // Requests are exactly f.size bytes long, so `value` only fails on a bug here.
        f.value(in: bytes, base: -f.offset) ?? 0
    }

    private func globalValue(_ g: Global, _ bytes: [UInt8]) -> Int64 {
        switch g.size {
        case 4: Int64(bytes.u32(at: 0) ?? 0)
        default: Int64(bitPattern: bytes.u64(at: 0) ?? 0)
        }
    }

    private func fullReading() throws -> Reading {
        let p = plan
        let cached = cache.withLock { $0 }
        let schedFields = [p.mnext, p.nmfreed, p.nmidle, p.nmspinning, p.npidle, p.ngsys, p.runqsize] + p.schedGFree
        var requests: [Request] = schedFields.map { req($0, base: p.sched) }
        requests += [req(p.allglen), req(p.allp), req(p.allm), req(p.ncgocall), req(p.gomaxprocs)]
        if let e = p.extraM { requests.append(req(e)) }
        let fixedCount = requests.count

        // Speculation: last reading's allp array, its Ps' free counts and its Ms.
        var specRequests: [Request] = []
        if cached.allpPtr != 0 && cached.allpLen > 0 {
            specRequests.append((cached.allpPtr, cached.allpLen * 8))
            specRequests += cached.ps.map { req(p.pGFree, base: $0) }
        }
        for m in cached.ms {
            specRequests += [req(p.mNcgocall, base: m), req(p.mAlllink, base: m)]
        }

        var results: [[UInt8]]
        var speculated = !specRequests.isEmpty
        if speculated {
            do {
                results = try memory.readBatch(requests + specRequests)
            } catch {
                guard case .fault = error else { throw error }
                // A remembered address is gone (freed memory unmapped): read afresh.
                cache.withLock { $0 = Cache() }
                speculated = false
                results = try memory.readBatch(requests)
            }
        } else {
            results = try memory.readBatch(requests)
        }

        var v = schedFields.indices.map { value(schedFields[$0], results[$0]) }
        let (mnext, nmfreed, nmidle, nmspinning, npidle, ngsys, runqsize) = (v[0], v[1], v[2], v[3], v[4], v[5], v[6])
        let schedFree = v[7...].reduce(0, +)
        var i = schedFields.count
        let allglen = globalValue(p.allglen, results[i])
        let allpHeader = results[i + 1]
        let allpPtr = allpHeader.u64(at: 0) ?? 0
        let allpLen = Int(truncatingIfNeeded: Int64(bitPattern: allpHeader.u64(at: 8) ?? 0))
        let allm = UInt64(bitPattern: globalValue(p.allm, results[i + 2]))
        let ncgocall = UInt64(bitPattern: globalValue(p.ncgocall, results[i + 3]))
        let gomaxprocs = globalValue(p.gomaxprocs, results[i + 4])
        let extraM = p.extraM.map { globalValue($0, results[i + 5]) }
        i = fixedCount
        guard allpLen >= 0, allpLen <= Self.maxProcs else {
            throw IntrospectionError("pid \(pid): allp has an implausible length \(allpLen)")
        }
        v = []

        // allp: the speculative copy when the header and the array are unchanged.
        var ps: [UInt64] = []
        var pFree: [Int64] = []
        var specM: [UInt64: (ncgo: UInt64, link: UInt64)] = [:]
        if speculated {
            if cached.allpPtr != 0 && cached.allpLen > 0 {
                let array = results[i]
                let words = (0..<cached.allpLen).map { array.u64(at: $0 * 8) ?? 0 }.filter { $0 != 0 }
                if allpPtr == cached.allpPtr && allpLen == cached.allpLen && words == cached.ps {
                    ps = words
                    pFree = (0..<words.count).map { value(p.pGFree, results[i + 1 + $0]) }
                }
                i += 1 + cached.ps.count
            }
            for m in cached.ms {
                specM[m] = (UInt64(bitPattern: value(p.mNcgocall, results[i])),
                            UInt64(bitPattern: value(p.mAlllink, results[i + 1])))
                i += 2
            }
        }
        if ps.isEmpty && allpLen > 0 {
            guard allpPtr != 0 else { throw IntrospectionError("pid \(pid): allp is nil with length \(allpLen)") }
            let array = try memory.read(allpPtr, count: allpLen * 8)
            ps = (0..<allpLen).map { array.u64(at: $0 * 8) ?? 0 }.filter { $0 != 0 }
            // The Ps' free counts, and the first M if it was not speculated, in one batch.
            var r = ps.map { req(p.pGFree, base: $0) }
            let headMissing = allm != 0 && specM[allm] == nil
            if headMissing { r += [req(p.mNcgocall, base: allm), req(p.mAlllink, base: allm)] }
            let got = try memory.readBatch(r)
            pFree = (0..<ps.count).map { value(p.pGFree, got[$0]) }
            if headMissing {
                specM[allm] = (UInt64(bitPattern: value(p.mNcgocall, got[ps.count])),
                               UInt64(bitPattern: value(p.mAlllink, got[ps.count + 1])))
            }
        }

        // allm: follow alllink, using what was read in the batches above and reading
        // the rest one M per system call.
        var ms: [UInt64] = []
        var seen = Set<UInt64>()
        var cgo = ncgocall
        var cur = allm
        while cur != 0 {
            guard ms.count < Self.maxMs, seen.insert(cur).inserted else {
                throw IntrospectionError("pid \(pid): the allm list does not end (torn or corrupt)")
            }
            let m: (ncgo: UInt64, link: UInt64)
            if let hit = specM[cur] {
                m = hit
            } else {
                let got = try memory.readBatch([req(p.mNcgocall, base: cur), req(p.mAlllink, base: cur)])
                m = (UInt64(bitPattern: value(p.mNcgocall, got[0])), UInt64(bitPattern: value(p.mAlllink, got[1])))
            }
            ms.append(cur)
            cgo &+= m.ncgo
            cur = m.link
        }
        cache.withLock { $0 = Cache(allpPtr: allpPtr, allpLen: allpLen, ps: ps, ms: ms) }

        // runtime.gcount and runtime.mcount, in the runtime's int32 arithmetic.
        let perP = pFree.reduce(Int32(0)) { $0 &+ Int32(truncatingIfNeeded: $1) }
        let g = Int32(truncatingIfNeeded: allglen) &- Int32(truncatingIfNeeded: schedFree)
            &- Int32(truncatingIfNeeded: ngsys) &- perP
        let snapshot = SchedulerSnapshot(
            goroutines: Int(max(g, 1)),
            threads: Int(Int32(truncatingIfNeeded: mnext &- nmfreed)),
            idleThreads: Int(nmidle),
            spinningThreads: Int(nmspinning),
            procs: Int(gomaxprocs),
            idleProcs: Int(npidle),
            globalRunQueue: Int(runqsize),
            cgoCalls: cgo,
            idleExtraThreads: extraM.map { Int($0) } ?? (p.noCgo ? 0 : nil))
        return Reading(snapshot: snapshot, counters: [mnext, nmfreed, ngsys, schedFree, allglen] + pFree, ps: ps)
    }

    /// The counters of a reading, re-read in one batch.
    private func counters(ps: [UInt64]) throws -> [Int64] {
        let p = plan
        let fields = [p.mnext, p.nmfreed, p.ngsys] + p.schedGFree
        var r = fields.map { req($0, base: p.sched) }
        r.append(req(p.allglen))
        r += ps.map { req(p.pGFree, base: $0) }
        let got = try memory.readBatch(r)
        let v = fields.indices.map { value(fields[$0], got[$0]) }
        let allglen = globalValue(p.allglen, got[fields.count])
        let pFree = ps.indices.map { value(p.pGFree, got[fields.count + 1 + $0]) }
        return [v[0], v[1], v[2], v[3...].reduce(0, +), allglen] + pFree
    }
}
