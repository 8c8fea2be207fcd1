import GoBinaryFormat
import Glibc

extension GoroutineCensus {
    /// Takes one census. `ProcessReadError.exited` passes through.
    public func take(_ options: Options = Options()) throws -> GoroutineCensusResult {
        let p = plan
        var bytesRead = 32
        let head = try memory.readBatchContiguous([(p.allgs, 24), (p.allglen, 8)])
        let arrayPtr = head.u64(at: 0) ?? 0
        let sliceLen = Int(clamping: head.u64(at: 8) ?? 0)
        let allglen = Int(clamping: head.u64(at: 24) ?? 0)
        // allglen is published after the slice grows: the smaller is readable.
        let n = max(0, min(sliceLen, allglen, 50_000_000))
        let now = Self.monotonicNow()
        guard n > 0, arrayPtr != 0 else {
            return GoroutineCensusResult(goroutines: [], allocatedGs: n, readGs: 0, sampled: false, changed: 0,
                                         bytesRead: bytesRead, nanotime: now)
        }
        let stride = n > options.maxGoroutines ? (n + options.maxGoroutines - 1) / options.maxGoroutines : 1
        let pointers = try readPointers(arrayPtr, count: n, stride: stride)
        bytesRead += n * 8
        let gs = readStructs(pointers, size: p.gSize)
        bytesRead += gs.count * p.gSize

        var records: [GoroutineRecord] = []
        var wantStacks: [(index: Int, g: UInt64, bytes: [UInt8])] = []
        records.reserveCapacity(gs.count)
        var systemCache: [UInt64: Bool] = [:]
        for (gp, bytes) in gs {
            guard var r = record(bytes, systemCache: &systemCache) else { continue }
            if r.status == p.running {
                r.stackState = .running
            } else if options.stacks {
                wantStacks.append((records.count, gp, bytes))
            }
            records.append(r)
        }
        var changed = 0
        if options.stacks {
            var budget = options.stackBudget
            var i = 0
            while i < wantStacks.count {
                // Up to 512 goroutines a batch: each is one G and one stack iovec.
                let batch = Array(wantStacks[i..<min(i + 512, wantStacks.count)])
                i += batch.count
                let results = readStacks(batch.map { ($0.g, $0.bytes) }, options: options, budget: &budget)
                for (k, item) in batch.enumerated() {
                    let (stack, state, read) = results[k]
                    bytesRead += read
                    if state == .changed { changed += 1 }
                    records[item.index].stack = stack
                    records[item.index].stackState = state
                }
            }
        }
        for i in records.indices where records[i].isSystem && runsUserFinalizer(records[i]) { records[i].isSystem = false }
        return GoroutineCensusResult(goroutines: records, allocatedGs: n, readGs: gs.count, sampled: stride > 1,
                                     changed: changed, bytesRead: bytesRead, nanotime: now)
    }

    /// Whether `r` is the finalizer goroutine (runtime.runfinq; runFinalizers
    /// from Go 1.25) running a user finalizer, which
    /// runtime.isSystemGoroutine counts as a user goroutine (it reads
    /// fingStatus's fingRunningFinalizer bit, fingRunning before Go 1.21). From
    /// outside the same fact is on the stack: above runtime.runfinq runs a
    /// frame outside the runtime (the finalizer, or what it called). Without a
    /// stack (running, or stacks off) it stays a system goroutine.
    func runsUserFinalizer(_ r: GoroutineRecord) -> Bool {
        guard !r.stack.isEmpty, let start = pcln.function(containing: r.startPC &- loadBias)?.name,
              start == "runtime.runfinq" || start == "runtime.runFinalizers" else { return false }
        return r.stack.contains { pc in
            guard let name = pcln.function(containing: pc &- loadBias)?.name else { return false }
            return !name.hasPrefix("runtime.") && !name.hasPrefix("internal/runtime/")
        }
    }

    /// The G pointers of allgs[0..<count] (every `stride`-th).
    private func readPointers(_ base: UInt64, count: Int, stride: Int) throws -> [UInt64] {
        var out: [UInt64] = []
        out.reserveCapacity(count / stride + 1)
        let chunk = 1 << 17  // pointers per read (1 MiB)
        var start = 0
        while start < count {
            let m = min(chunk, count - start)
            let bytes = try memory.read(base &+ UInt64(start * 8), count: m * 8)
            var j = (stride - start % stride) % stride
            while j < m {
                if let v = bytes.u64(at: j * 8), v != 0 { out.append(v) }
                j += stride
            }
            start += m
        }
        return out
    }

    /// The first `size` bytes of each G; a G that cannot be read is left out.
    func readStructs(_ pointers: [UInt64], size: Int) -> [(UInt64, [UInt8])] {
        zip(pointers, readEach(pointers.map { ($0, size) })).compactMap { gp, bytes in bytes.map { (gp, $0) } }
    }

    private func value(_ f: RuntimeField, _ b: [UInt8]) -> Int64 { f.value(in: b) ?? 0 }
    private func word(_ f: RuntimeField, _ b: [UInt8]) -> UInt64 { UInt64(bitPattern: value(f, b)) }

    /// A G's record without its stack (`.skipped`); nil for a dead or idle G.
    func record(_ b: [UInt8], systemCache: inout [UInt64: Bool]) -> GoroutineRecord? {
        let p = plan
        let raw = UInt32(truncatingIfNeeded: value(p.status, b))
        let status = raw & ~p.scanBit
        if status == p.dead || status == p.deadExtra || status == tables.statuses["idle"] { return nil }
        let reason = UInt8(truncatingIfNeeded: value(p.waitreason, b))
        let start = word(p.startpc, b)
        let system: Bool
        if let c = systemCache[start] {
            system = c
        } else {
            system = isSystemStart(start)
            systemCache[start] = system
        }
        var isSystem = system
        // runtime.runCleanups is a user goroutine while it runs user cleanups.
        if let rc = p.runningCleanups, isSystem, value(rc, b) != 0,
           pcln.function(containing: start &- loadBias)?.name == "runtime.runCleanups" { isSystem = false }
        let state = tables.stateText(status: status, waitReason: reason)
        let waiting = status == p.waiting || status == tables.statuses["leaked"]
        let since = value(p.waitsince, b)
        return GoroutineRecord(
            goid: word(p.goid, b), parentGoid: p.parentGoid.map { word($0, b) }, status: status, state: state,
            statusName: tables.statusNames[status] ?? "???",
            waitReason: waiting && reason != 0 ? state : nil,
            waitSince: (waiting || status == p.syscall) ? since : 0,
            startPC: start, creationPC: word(p.gopc, b), isSystem: isSystem, lockedToThread: value(p.lockedm, b) != 0,
            stack: [], stackState: .skipped)
    }

    /// runtime.isSystemGoroutine by the start function: runtime.* except
    /// runtime.main, corostart and handleAsyncEvent. The finalizer and cleanup
    /// goroutines count as system (the runtime counts them as user goroutines
    /// only while they run user code; the cleanup one is told by its G).
    func isSystemStart(_ pc: UInt64) -> Bool {
        guard let f = pcln.function(containing: pc &- loadBias) else { return false }
        switch f.name {
        case "runtime.main", "runtime.corostart", "runtime.handleAsyncEvent": return false
        default: return f.name.hasPrefix("runtime.")
        }
    }

    private struct Regs: Equatable {
        var goid, status, pc, sp, lo, hi: UInt64
    }

    private func regs(_ b: [UInt8]) -> Regs {
        let p = plan
        let sysSP = word(p.syscallSP, b)
        let inSyscall = sysSP != 0
        return Regs(goid: word(p.goid, b), status: word(p.status, b) & 0xffff_ffff,
                    pc: inSyscall ? word(p.syscallPC, b) : word(p.schedPC, b),
                    sp: inSyscall ? sysSP : word(p.schedSP, b),
                    lo: word(p.stackLo, b), hi: word(p.stackHi, b))
    }

    /// Reads and unwinds the stacks of `items` (a G pointer and the G's bytes as
    /// the census read them): one batch for the stacks, one for the Gs again; a
    /// G that changed is read alone once more.
    private func readStacks(_ items: [(g: UInt64, bytes: [UInt8])], options: Options, budget: inout Int)
        -> [(stack: [UInt64], state: GoroutineRecord.StackState, read: Int)]
    {
        var out = [(stack: [UInt64], state: GoroutineRecord.StackState, read: Int)](repeating: ([], .skipped, 0), count: items.count)
        var spans: [(address: UInt64, count: Int)?] = []
        for (k, item) in items.enumerated() {
            let r = regs(item.bytes)
            guard r.sp >= r.lo, r.sp < r.hi, r.pc != 0 else { spans.append(nil); continue }
            guard budget > 0 else { out[k].state = .budget; spans.append(nil); continue }
            let count = Int(min(UInt64(options.maxStackBytes), r.hi - r.sp, UInt64(budget)))
            budget -= count
            spans.append((r.sp, count))
        }
        let stacks = readEach(spans)
        // The Gs again, for the torn-read check: only those whose stack was read.
        let again = readEach(items.indices.map { spans[$0] == nil ? nil : (items[$0].g, plan.gSize) })
        for (k, item) in items.enumerated() {
            guard let span = spans[k] else { continue }
            let before = regs(item.bytes)
            if let stack = stacks[k], let after = again[k], regs(after) == before {
                let (frames, state) = unwind(pc: before.pc, sp: before.sp, stack: stack, maxFrames: options.maxFrames)
                out[k] = (frames, state, span.count + plan.gSize)
                continue
            }
            // Changed (or moved) under the reader: once more, alone.
            var read = span.count + plan.gSize
            guard let g1 = try? memory.read(item.g, count: plan.gSize) else { out[k] = ([], .changed, read); continue }
            let r1 = regs(g1)
            guard r1.sp >= r1.lo, r1.sp < r1.hi, r1.pc != 0 else { out[k] = ([], .changed, read); continue }
            let count = Int(min(UInt64(options.maxStackBytes), r1.hi - r1.sp))
            let stack = try? memory.read(r1.sp, count: count)
            let g2 = try? memory.read(item.g, count: plan.gSize)
            read += 2 * plan.gSize + count
            if let stack, let g2, regs(g2) == r1 {
                let (frames, state) = unwind(pc: r1.pc, sp: r1.sp, stack: stack, maxFrames: options.maxFrames)
                out[k] = (frames, state, read)
            } else {
                out[k] = ([], .changed, read)
            }
        }
        return out
    }

    /// Reads each span (nil stays nil); a batch that faults is read one by one.
    private func readEach(_ spans: [(address: UInt64, count: Int)?]) -> [[UInt8]?] {
        var out = [[UInt8]?](repeating: nil, count: spans.count)
        var i = 0
        while i < spans.count {
            var idx: [Int] = []
            var total = 0
            while i < spans.count, idx.count < ProcessMemory.maxIOVecs {
                if let s = spans[i] {
                    if total + s.count > ProcessMemory.maxReadCount, !idx.isEmpty { break }
                    idx.append(i)
                    total += s.count
                }
                i += 1
            }
            guard !idx.isEmpty else { continue }
            if let packed = try? memory.readBatchContiguous(idx.map { spans[$0]! }) {
                var off = 0
                for j in idx {
                    let c = spans[j]!.count
                    out[j] = Array(packed[off..<(off + c)])
                    off += c
                }
            } else {
                for j in idx { out[j] = try? memory.read(spans[j]!.address, count: spans[j]!.count) }
            }
        }
        return out
    }

    /// Go's unwinder (runtime.unwinder.next) over a copy of the stack from `sp`:
    /// the return address of the frame at `pc` is at SP + the pcsp delta at `pc`.
    /// Stops at the outermost frame (goexit: `.read`), or at anything it cannot
    /// follow (`.truncated`): a PC that is not Go code, a function that sets SP
    /// itself, a slot outside the copy.
    func unwind(pc start: UInt64, sp: UInt64, stack: [UInt8], maxFrames: Int) -> ([UInt64], GoroutineRecord.StackState) {
        var frames = [start]
        var pc = start, cur = sp
        while frames.count < maxFrames {
            guard let info = pcln.unwindInfo(at: pc &- loadBias) else { return (frames, .truncated) }
            if info.isTop { return (frames, .read) }
            if info.writesSP && frames.count > 1 { return (frames, .truncated) }
            let slot = cur &+ UInt64(info.spDelta)
            let offset = slot &- sp
            guard slot >= sp, stack.count >= 8, offset <= UInt64(stack.count - 8) else { return (frames, .truncated) }
            let ra = stack.u64(at: Int(offset)) ?? 0
            guard ra != 0, pcln.function(containing: ra &- loadBias) != nil else { return (frames, .truncated) }
            frames.append(ra)
            cur = slot &+ 8
            pc = ra
        }
        return (frames, .truncated)
    }
}
