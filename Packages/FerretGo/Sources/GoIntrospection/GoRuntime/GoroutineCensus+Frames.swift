import GoBinaryFormat

/// One logical frame of a goroutine's stack (inlined calls are frames of their own).
public struct GoroutineFrame: Sendable, Hashable {
    public var function: String
    public var file: String
    public var line: Int
    /// The run-time PC runtime/pprof lists for this frame (a "return PC": one past
    /// the call): what `runtime.tracebackPCs` records.
    public var pc: UInt64
    /// Entry of the physical function holding the frame (run time).
    public var entry: UInt64
    /// The physical frame's own PC (run time), for traceback's "+0x" offsets; 0 for inlined frames.
    public var framePC: UInt64
    public var inlined: Bool
    public var funcID: UInt8
}

extension GoroutineCensus {
    /// The logical frames of a stack from ``GoroutineRecord/stack``, innermost
    /// first, as runtime.tracebackPCs produces them: each physical frame's PC is
    /// looked up one byte back (the call), inlined calls expand in place, and
    /// compiler-made wrappers are left out unless they called a panic. Runtime
    /// frames and goexit are kept (the formats drop them where Go does).
    public func frames(of stack: [UInt64]) -> [GoroutineFrame] {
        physicalFrames(of: stack).flatMap(\.frames)
    }

    /// ``frames(of:)`` by physical frame: each stack PC (a return address, or
    /// the goroutine's resume PC first) with the logical frames it holds,
    /// innermost first. A frame left out whole (a wrapper) has no entry.
    public func physicalFrames(of stack: [UInt64]) -> [(pc: UInt64, frames: [GoroutineFrame])] {
        var out: [(pc: UInt64, frames: [GoroutineFrame])] = []
        var callee = ""
        for pc in stack {
            let link = pc &- loadBias
            guard let fn = pcln.function(containing: link) else { break }
            let lookup = link > fn.entry ? link - 1 : link
            var here: [GoroutineFrame] = []
            for f in pcln.frames(at: lookup) {
                let isWrapper = f.funcID == tables.funcIDWrapper
                let panicCallee = callee == "runtime.gopanic" || callee == "runtime.sigpanic" || callee == "runtime.panicwrap"
                if !(isWrapper && !panicCallee) {
                    here.append(GoroutineFrame(function: f.function, file: f.file, line: f.line, pc: f.pc &+ 1 &+ loadBias,
                                               entry: fn.entry &+ loadBias, framePC: f.inlined ? 0 : pc, inlined: f.inlined,
                                               funcID: f.funcID))
                }
                callee = f.function
            }
            if !here.isEmpty { out.append((pc, here)) }
        }
        return out
    }

    /// The creation site as the traceback's "created by" line gives it: the
    /// physical function holding `g.gopc` and the file:line of the call (inlined
    /// position); nil for goroutine 1 and for a creator the traceback hides.
    public func createdBy(_ r: GoroutineRecord) -> GoroutineFrame? {
        let link = r.creationPC &- loadBias
        guard r.goid != 1, r.creationPC != 0, let fn = pcln.function(containing: link),
              Self.shownInTraceback(fn.name) else { return nil }
        let lookup = link > fn.entry ? link - 1 : link
        let pos = pcln.position(at: lookup) ?? (file: "?", line: 0)
        return GoroutineFrame(function: fn.name, file: pos.file, line: pos.line, pc: r.creationPC, entry: fn.entry &+ loadBias,
                              framePC: r.creationPC, inlined: false, funcID: pcln.funcID(at: link) ?? 0)
    }

    /// The start function's name (`g.startpc`).
    public func startFunction(_ r: GoroutineRecord) -> String {
        pcln.function(containing: r.startPC &- loadBias)?.name ?? String(format: "0x%llx", r.startPC)
    }

    /// The function the goroutine was started to run, as a reader means it: the
    /// start function, except when that is the closure the compiler makes for
    /// `go f(x)` or `go x.m()` (Go 1.22+ names it `creator.gowrapN` and marks
    /// it a wrapper, earlier versions name it `creator.funcN`): then the function
    /// that closure calls, read from the stack. Before 1.22 the compiler's
    /// closure is told from a closure written by hand by where it calls: at the
    /// `go` statement's own line (the creation site). Without a stack (a running goroutine) it is the start function.
    public func entryFunction(_ r: GoroutineRecord, frames: [GoroutineFrame]? = nil) -> String {
        let start = startFunction(r)
        guard !r.stack.isEmpty, let site = createdBy(r) else { return start }
        let fs = (frames ?? self.frames(of: r.stack)).filter { $0.function != "runtime.goexit" }
        // Go 1.22+ marks the closure a wrapper: tracebacks (and `frames`) leave it
        // out, and the outermost frame left is the function it calls.
        if pcln.funcID(at: r.startPC &- loadBias) == tables.funcIDWrapper, let outer = fs.last, outer.function != start {
            return outer.function
        }
        guard fs.count >= 2, let outer = fs.last, outer.function == start, outer.file == site.file, outer.line == site.line else {
            return start
        }
        return fs[fs.count - 2].function
    }

    /// The creator's name alone (the function holding `g.gopc`), shown or not.
    public func creatorFunction(_ r: GoroutineRecord) -> String? {
        guard r.creationPC != 0 else { return nil }
        return pcln.function(containing: r.creationPC &- loadBias)?.name
    }

    /// runtime.showfuncinfo at the default GOTRACEBACK: a function with a package
    /// and not in the runtime, or an exported runtime function.
    /// Go 1.25+ always shows runtime.runFinalizers and runtime.runCleanups (funcID
    /// rules; the functions have these names only in those versions).
    static func shownInTraceback(_ name: String, firstFrame: Bool = false) -> Bool {
        if name == "runtime.gopanic" && !firstFrame { return true }
        if name == "runtime.runFinalizers" || name == "runtime.runCleanups" { return true }
        guard name.contains(".") else { return false }
        guard name.hasPrefix("runtime.") else { return true }
        var rest = Substring(name.dropFirst("runtime.".count))
        var receiver = Substring("")
        if let dot = rest.lastIndex(of: ".") {
            receiver = rest[..<dot]
            rest = rest[rest.index(after: dot)...]
            if receiver.hasPrefix("(*") && receiver.hasSuffix(")") { receiver = receiver.dropFirst(2).dropLast() }
        }
        let upper = { (s: Substring) in s.first.map { $0 >= "A" && $0 <= "Z" } ?? false }
        return upper(rest) && (receiver.isEmpty || upper(receiver))
    }

    /// runtime.funcNamePiecesForPrint: a generic function's shape arguments print as "[...]".
    public static func printName(_ name: String) -> String {
        guard let i = name.firstIndex(of: "["), let j = name.lastIndex(of: "]"), i < j else { return name }
        return String(name[..<i]) + "[...]" + String(name[name.index(after: j)...])
    }
}
