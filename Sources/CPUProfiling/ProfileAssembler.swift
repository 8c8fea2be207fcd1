import Foundation
import GoIntrospection
import Pprof

/// Turns one process's raw CPU samples (address stacks) into pprof profiles,
/// one per window: symbolizes every address (Go through pclntab with inlined
/// frames, native code through ELF symbols, kernel code through /proc/kallsyms),
/// keeps unknown addresses with their mapping, and follows Go's CPU profile
/// conventions (samples/count and cpu/nanoseconds, period 1e9/Hz).
///
/// Not thread-safe: one owner at a time feeds it and finishes windows (the
/// plugin serializes them), hence @unchecked Sendable.
public final class ProfileAssembler: @unchecked Sendable {
    public let pid: Int32
    public let frequencyHz: Int
    public private(set) var windowStartUnixNanos: UInt64
    public private(set) var samples = 0
    /// Samples lost by the kernel (ring buffer full) in this window.
    public var lost: UInt64 = 0
    /// Stacks cut at a return address outside executable memory (all windows).
    public private(set) var truncated = 0
    /// Samples whose frame-pointer stack Go's unwind tables changed, by outcome (all windows).
    public private(set) var repaired: [GoStackRepair.Outcome: Int] = [:]
    private let symbolizer: ProcessSymbolizer
    private let kernel: KernelSymbols?
    private var builder: PprofBuilder
    private var mainMapping: PprofMappingInfo?
    private let periodNanos: Int64

    public init(pid: Int32, frequencyHz: Int, includeKernel: Bool, startUnixNanos: UInt64) throws {
        self.pid = pid
        self.frequencyHz = frequencyHz
        windowStartUnixNanos = startUnixNanos
        symbolizer = try ProcessSymbolizer(pid: pid)
        kernel = includeKernel ? KernelSymbols.shared : nil
        periodNanos = Int64(1_000_000_000 / max(frequencyHz, 1))
        builder = PprofBuilder.cpu(frequencyHz: frequencyHz, timeNanos: Int64(startUnixNanos), durationNanos: 0)
        mainMapping = Self.executableMapping(pid: pid)
        if let m = mainMapping { builder.setMainMapping(m) }
    }

    /// The mapping of the process's executable (pprof's mapping 1).
    public static func executableMapping(pid: Int32) -> PprofMappingInfo? {
        guard let exe = try? ProcessMaps.ExecutableIdentity.of(pid: pid),
              let maps = try? ProcessMaps.read(pid: pid) else { return nil }
        let mine = ProcessMaps.mappings(of: exe, in: maps)
        guard let text = mine.first(where: { $0.executable }) else { return nil }
        let symbols = ObjectSymbolsCache.symbols(for: text, pid: pid)
        return PprofMappingInfo(start: text.start, limit: text.end, offset: text.offset, file: text.path,
                                buildID: symbols?.buildID ?? "", hasFunctions: symbols != nil)
    }

    /// Adds one sample: `user` leaf first (the sample IP, then return addresses),
    /// `kernel` leaf first (empty unless kernel frames are on). With the user
    /// registers (`ip`, `sp`, `bp`) and a copy of the user stack from `sp` up,
    /// the frames the frame-pointer walk missed in Go code are recovered first
    /// (`GoStackRepair`).
    public func add(user chain: [UInt64], kernel kstack: [UInt64],
                    registers: (ip: UInt64, sp: UInt64, bp: UInt64)? = nil, stackCopy: [UInt8] = []) {
        var user = chain
        if let r = registers, !stackCopy.isEmpty {
            let (s, outcome) = GoStackRepair.repair(chain: chain, ip: r.ip, sp: r.sp, bp: r.bp, stack: stackCopy,
                                                    symbolizer: symbolizer)
            if outcome != .unchanged {
                user = s
                repaired[outcome, default: 0] += 1
            }
        }
        var stack: [PprofStackElement] = []
        stack.reserveCapacity(user.count + kstack.count)
        if let kernel {
            for (i, a) in kstack.enumerated() {
                let name = kernel.name(of: i == 0 ? a : a &- 1)
                stack.append((a, kernel.mapping, name.map { [PprofFrame(function: $0)] } ?? []))
            }
        }
        for (i, a) in user.enumerated() {
            // Every user frame after the first is a return address unless the
            // sample was taken in the kernel (then the first user address is one too).
            let isReturn = i > 0 || !kstack.isEmpty
            let loc = symbolizer.symbolize(a, isReturnAddress: isReturn) // cached per address
            // A return address outside executable memory ends the stack: the frame
            // pointer chain was broken below it (assembly using RBP for data). An
            // address in a file mapping is code; only the others need the check.
            if isReturn && i > 0 && loc.mapping == nil && !symbolizer.isCode(a) {
                truncated += 1
                break
            }
            let mapping = loc.mapping.map {
                PprofMappingInfo(start: $0.start, limit: $0.limit, offset: $0.offset, file: $0.path,
                                 buildID: $0.buildID, hasFunctions: $0.hasFunctions)
            }
            stack.append((a, mapping, loc.frames.map {
                PprofFrame(function: $0.function, file: $0.file, line: $0.line, startLine: $0.startLine)
            }))
        }
        guard !stack.isEmpty else { return }
        builder.addSample(stack: stack, values: [1, periodNanos])
        samples += 1
    }

    public struct Window: Sendable {
        public var pid: Int32
        public var startUnixNanos: UInt64
        public var durationNanos: UInt64
        public var samples: Int
        public var lost: UInt64
        /// Gzipped profile.proto.
        public var pprof: [UInt8]
        /// Collapsed stacks ("root;...;leaf count" lines), for flame graphs.
        public var collapsed: String
        /// Top functions by self (flat) and by total (cumulative) share, 0…1.
        public var topSelf: [(name: String, share: Double)]
        public var topTotal: [(name: String, share: Double)]
    }

    /// Ends the window at `endUnixNanos` and starts the next one there.
    public func finish(endUnixNanos: UInt64, top: Int = 10) throws -> Window {
        let duration = endUnixNanos > windowStartUnixNanos ? endUnixNanos - windowStartUnixNanos : 0
        builder.durationNanos = Int64(duration)
        let (flat, cum) = builder.topFunctions(limit: top)
        let w = Window(pid: pid, startUnixNanos: windowStartUnixNanos, durationNanos: duration, samples: samples,
                       lost: lost, pprof: try builder.gzippedData(), collapsed: builder.collapsed(),
                       topSelf: flat, topTotal: cum)
        windowStartUnixNanos = endUnixNanos
        samples = 0
        lost = 0
        builder = PprofBuilder.cpu(frequencyHz: frequencyHz, timeNanos: Int64(endUnixNanos), durationNanos: 0)
        if let m = mainMapping { builder.setMainMapping(m) }
        return w
    }

    /// Distinct addresses symbolized so far (the per-address cache).
    public var cachedAddresses: Int { symbolizer.cachedAddresses }
}

/// Kernel symbols from /proc/kallsyms (real addresses need root or
/// kptr_restrict=0; zeros mean hidden and give no names).
public final class KernelSymbols: @unchecked Sendable {
    public static let shared = KernelSymbols()
    private let symbols: [(address: UInt64, name: String)]
    let mapping = PprofMappingInfo(start: 0xffff_8000_0000_0000, limit: UInt64.max, offset: 0,
                                   file: "[kernel.kallsyms]", hasFunctions: true)

    init(path: String = HostProc.path + "/kallsyms") {
        var out: [(UInt64, String)] = []
        // Read to EOF: /proc files report size 0, and a one-shot read of one gets
        // only its first page (kallsyms is megabytes).
        if let h = FileHandle(forReadingAtPath: path), let data = try? h.readToEnd() {
            try? h.close()
            let text = String(decoding: data, as: UTF8.self)
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ", maxSplits: 3)
                guard f.count >= 3, let a = UInt64(f[0], radix: 16), a != 0,
                      ["t", "T", "w", "W"].contains(f[1]) else { continue }
                out.append((a, String(f[2])))
            }
        }
        out.sort { $0.0 < $1.0 }
        symbols = out
    }

    public var isAvailable: Bool { !symbols.isEmpty }

    public func name(of address: UInt64) -> String? {
        var lo = 0, hi = symbols.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if symbols[mid].address <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        // `__pfx_f` is the padding the kernel puts before `f` (function
        // padding for call thunks); an address there, such as an interrupted
        // IP at f's first instruction less one, belongs to the function it pads.
        if symbols[lo - 1].name.hasPrefix("__pfx_"), lo < symbols.count { return symbols[lo].name }
        return symbols[lo - 1].name
    }
}
