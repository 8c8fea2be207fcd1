import Foundation
import GoBinaryFormat

/// The census written in the text formats of Go's own goroutine profile
/// (`/debug/pprof/goroutine?debug=1` and `?debug=2`), so the tools and eyes
/// used to them read it unchanged. System goroutines are left out, as Go does.
public struct GoroutineDump {
    public let census: GoroutineCensus
    public let result: GoroutineCensusResult

    public init(census: GoroutineCensus, result: GoroutineCensusResult) {
        self.census = census
        self.result = result
    }

    public var userGoroutines: [GoroutineRecord] { result.goroutines.filter { !$0.isSystem } }

    /// One group of goroutines with the same stack (debug=1's records).
    public struct Group {
        public var count: Int
        public var pcs: [UInt64]
        public var frames: [GoroutineFrame]
        public var goroutines: [GoroutineRecord]
    }

    /// Groups by identical stack, largest first, then by the stack's text (runtime/pprof's order).
    /// A running goroutine (no stack) is a group of its own start function.
    public func groups() -> [Group] {
        var byKey: [[UInt64]: Group] = [:]
        var framesOf: [[UInt64]: [GoroutineFrame]] = [:]  // parked together: one lookup
        for r in userGoroutines {
            let frames = r.stack.isEmpty ? [] : framesOf[r.stack] ?? census.frames(of: r.stack)
            framesOf[r.stack] = frames
            let pcs = r.stack.isEmpty ? [r.startPC] : frames.map(\.pc)
            byKey[pcs, default: Group(count: 0, pcs: pcs, frames: frames, goroutines: [])].count += 1
            byKey[pcs]!.goroutines.append(r)
        }
        return byKey.values.sorted {
            $0.count != $1.count ? $0.count > $1.count : key($0.pcs) < key($1.pcs)
        }
    }

    private func key(_ pcs: [UInt64]) -> String { pcs.map { String(format: "%#llx", $0) }.joined(separator: " ") }

    /// Go 1.24 and later also hide leading internal/runtime/ frames in debug=1.
    private var hidesInternalRuntime: Bool {
        guard census.goVersion.hasPrefix("go1."),
              let minor = Int(census.goVersion.dropFirst(4).prefix { $0.isNumber }) else { return true }
        return minor >= 24
    }

    /// `debug=1`: "goroutine profile: total N", then per group its count, PCs
    /// and frames (leading runtime frames and goexit hidden, as runtime/pprof's
    /// printStackRecord does).
    public func debug1() -> String {
        var out = "goroutine profile: total \(userGoroutines.count)\n"
        for g in groups() {
            out += "\(g.count) @" + g.pcs.map { String(format: " %#llx", $0) }.joined() + "\n"
            if g.frames.isEmpty {
                out += "#\t(running: stack not readable from outside; started at \(census.startFunction(g.goroutines[0])))\n\n"
                continue
            }
            out += frameLines(g.frames, all: false) ?? frameLines(g.frames, all: true) ?? ""
            out += "\n"
        }
        return out
    }

    private func frameLines(_ frames: [GoroutineFrame], all: Bool) -> String? {
        var show = all
        var out = ""
        for f in frames {
            let hidden = f.function.hasPrefix("runtime.") || (hidesInternalRuntime && f.function.hasPrefix("internal/runtime/"))
            if f.function != "runtime.goexit" && (show || !hidden) {
                show = true
                let pc = f.pc &- 1
                out += "#\t" + String(format: "%#llx", pc) + "\t\(f.function)+" + String(format: "%#llx", pc &- f.entry)
                    + "\t\(f.file):\(f.line)\n"
            }
        }
        return show ? out : nil
    }

    /// `debug=2`: each goroutine's header ("goroutine 7 [chan receive, 3 minutes]:"),
    /// its frames as a traceback prints them (arguments are not read: "(...)"),
    /// and "created by F in goroutine N" with the creation site.
    public func debug2() -> String {
        var blocks: [String] = []
        for r in userGoroutines.sorted(by: { $0.goid < $1.goid }) {
            var s = "goroutine \(r.goid) [\(header(r))]:\n"
            if r.stackState == .running {
                s += "\t(running: stack not readable from outside; started at \(census.startFunction(r)))\n"
            } else if r.stack.isEmpty {
                s += "\t(stack \(r.stackState.rawValue))\n"
            }
            for f in tracebackFrames(r) {
                s += "\(GoroutineCensus.printName(f.function))(...)\n\t\(f.file):\(f.line)"
                if !f.inlined && f.framePC > f.entry { s += String(format: " +%#llx", f.framePC - f.entry) }
                s += "\n"
            }
            if let c = census.createdBy(r) {
                s += "created by \(GoroutineCensus.printName(c.function))"
                if let parent = r.parentGoid, parent != 0 { s += " in goroutine \(parent)" }
                s += "\n\t\(c.file):\(c.line)"
                if c.pc > c.entry { s += String(format: " +%#llx", c.pc - c.entry) }
                s += "\n"
            }
            blocks.append(s)
        }
        return blocks.joined(separator: "\n")
    }

    /// The frames a traceback at the default GOTRACEBACK shows (runtime.showframe).
    public func tracebackFrames(_ r: GoroutineRecord) -> [GoroutineFrame] {
        let frames = census.frames(of: r.stack)
        return frames.enumerated().filter { i, f in
            f.function != "runtime.goexit" && GoroutineCensus.shownInTraceback(f.function, firstFrame: i == 0)
        }.map(\.element)
    }

    /// The bracketed part of the traceback header: state, minutes waited, locked.
    public func header(_ r: GoroutineRecord) -> String {
        var s = r.state
        if r.waitSince != 0 {
            let minutes = (result.nanotime - r.waitSince) / 60_000_000_000
            if minutes >= 1 { s += ", \(minutes) minutes" }
        }
        if r.lockedToThread { s += ", locked to thread" }
        return s
    }
}
