import Foundation

/// What a helper's crash report says (format in ferret_isolation.h), with its
/// frames symbolized through the maps the helper wrote before it died: the
/// plugin's functions by name (its .symtab, or .dynsym), libc's as well.
struct CrashReport: Sendable {
    enum Reason: String, Sendable {
        case signal, exit, hang
        case memoryLimit = "memory_limit"
    }

    var reason: Reason
    var signal: Int32 = 0
    var signalName = ""
    var signalCode: Int32 = 0
    var faultAddress: UInt64 = 0
    var exitStatus: Int32 = 0
    var threadID: Int32 = 0
    var threadName = ""
    /// True when the crashing thread was the helper's control thread (a call in
    /// progress); false for a push plugin's own thread.
    var inControlThread = true
    /// The control call the helper was in ("none" for a plugin thread).
    var call = "none"
    var callPID: Int32 = 0
    /// Symbolized frames, innermost first: "name (object+0xoffset)".
    var frames: [String] = []

    init(reason: Reason) { self.reason = reason }

    /// Reads the report text of `death`; `hang` and memory limits come from the agent's side.
    init(_ death: HelperDeath, hang: Bool) {
        var reason: Reason = death.memoryLimitHit ? .memoryLimit : hang ? .hang : death.signal != 0 ? .signal : .exit
        var pcs: [UInt64] = []
        var maps = ""
        var r = CrashReport(reason: reason)
        r.signal = death.signal
        r.exitStatus = death.exitStatus
        if death.signal != 0 { r.signalName = Self.signalName(death.signal) }
        let text = death.report
        if let m = text.range(of: "\nmaps\n") {
            maps = String(text[m.upperBound...])
        }
        for line in text.split(separator: "\n") {
            if line == "maps" { break }
            let f = line.split(separator: " ")
            guard let head = f.first else { continue }
            switch head {
            case "crash" where f.count >= 7:
                r.signal = Int32(f[1]) ?? r.signal
                r.signalName = String(f[2])
                r.signalCode = Int32(f[4]) ?? 0
                r.faultAddress = UInt64(f[6].dropFirst(2), radix: 16) ?? 0
                if reason == .exit { reason = .signal }
            case "exit":
                if reason == .signal && death.signal == 0 { reason = .exit }
            case "thread" where f.count >= 3:
                r.threadID = Int32(f[1]) ?? 0
                r.inControlThread = f[2] == "control"
                r.threadName = f.count > 3 ? f[3...].joined(separator: " ") : ""
            case "call" where f.count >= 4:
                r.call = String(f[1])
                r.callPID = Int32(f[3]) ?? 0
            case "frame" where f.count >= 2:
                if let pc = UInt64(f[1].dropFirst(2), radix: 16) { pcs.append(pc) }
            default: break
            }
        }
        r.reason = reason
        if !pcs.isEmpty {
            let symbolizer = ProcessSymbolizer(pid: death.pid, recordedMaps: ProcessMaps.parse(maps))
            r.frames = pcs.enumerated().map { i, pc in
                let loc = symbolizer.symbolize(pc, isReturnAddress: i > 0)
                let name = loc.frames.last?.function ?? "?"
                guard let m = loc.mapping else { return "\(name) (0x\(String(pc, radix: 16)))" }
                let object = (m.path as NSString).lastPathComponent
                return "\(name) (\(object)+0x\(String(pc &- m.start &+ m.offset, radix: 16)))"
            }
        }
        self = r
    }

    /// One line: what happened, where.
    var summary: String {
        var s: String
        switch reason {
        case .signal: s = "\(signalName.isEmpty ? "signal \(signal)" : signalName)"
            if signal == 11 || signal == 7 { s += " at address 0x\(String(faultAddress, radix: 16))" }
        case .exit: s = "the plugin called exit(\(exitStatus))"
        case .hang: s = "no answer within the call timeout; the helper was killed"
        case .memoryLimit: s = "the helper reached its memory limit and the kernel killed it"
        }
        if call != "none" { s += " in \(call)\(callPID != 0 ? "(pid \(callPID))" : "")" }
        else if threadID != 0 && !inControlThread { s += " in the plugin's own thread \(threadID) '\(threadName)'" }
        return s
    }

    var backtrace: String { frames.enumerated().map { "#\($0.offset) \($0.element)" }.joined(separator: "\n") }

    static func signalName(_ s: Int32) -> String {
        let names: [Int32: String] = [4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL",
                                      11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM", 31: "SIGSYS"]
        return names[s] ?? "signal \(s)"
    }
}
