import ELFSymbols
import Synchronization

/// One runtime global variable of a Go program.
public struct RuntimeGlobal: Sendable, Hashable {
    public var name: String
    /// Link-time address (add the load bias for a running PIE); nil when not found.
    public var address: UInt64?
    public var size: UInt64?
    /// The strategy that found it ("symtab", "code").
    public var source: String?
    /// Why it was not found.
    public var problem: String?
    /// What the strategy found it through ("runtime.mexit#2", "@runtime.allglen-240").
    public var evidence: [String] = []
}

/// A way of finding runtime globals. Strategies are tried in order; the
/// first that finds a global wins. Stripped binaries need a strategy that
/// reads the code of runtime functions (issue #8); it plugs in here.
public protocol GlobalsLocatorStrategy: Sendable {
    var name: String { get }
    /// Finds what it can of `names`; returns name -> (address, size).
    func locate(_ names: [String], in binary: GoBinary) -> [String: (address: UInt64, size: UInt64)]
    /// Like `locate`, with what each global was found through and why the
    /// others were not found.
    func outcomes(_ names: [String], in binary: GoBinary) -> [String: GlobalOutcome]
}

/// One strategy's result for one global.
public struct GlobalOutcome: Sendable {
    public var address: UInt64?
    public var size: UInt64
    public var evidence: [String]
    public var problem: String?
}

extension GlobalsLocatorStrategy {
    public func outcomes(_ names: [String], in binary: GoBinary) -> [String: GlobalOutcome] {
        locate(names, in: binary).mapValues { GlobalOutcome(address: $0.address, size: $0.size, evidence: [], problem: nil) }
    }
}

/// Reads addresses from the ELF symbol table (binaries not built with -s).
public struct SymbolTableStrategy: GlobalsLocatorStrategy {
    public let name = "symtab"
    public init() {}

    public func locate(_ names: [String], in binary: GoBinary) -> [String: (address: UInt64, size: UInt64)] {
        let wanted = Set(names)
        var out: [String: (address: UInt64, size: UInt64)] = [:]
        for s in binary.symbols where !s.isDynamic && wanted.contains(s.name) && s.value != 0 {
            out[s.name] = (s.value, s.size)
        }
        return out
    }
}

public struct RuntimeGlobalsLocator: Sendable {
    public var strategies: [any GlobalsLocatorStrategy]

    public init(strategies: [any GlobalsLocatorStrategy]) { self.strategies = strategies }

    /// The globals the collectors read.
    public static let names = [
        "runtime.sched", "runtime.allgs", "runtime.allglen", "runtime.allp", "runtime.allm", "runtime.memstats",
        "runtime.gcController", "runtime.mheap_", "runtime.ncgocall", "runtime.gomaxprocs", "runtime.work",
    ]

    /// Globals some collectors read when the Go version has them (the idle extra-M
    /// count: extraMCount up to Go 1.20, extraMLength after).
    public static let optionalNames = ["runtime.extraMLength", "runtime.extraMCount"]

    /// The symbol table, else the code of runtime functions (stripped binaries).
    public static let standard = RuntimeGlobalsLocator(strategies: [SymbolTableStrategy(), CodeReferenceStrategy()])

    public func locate(in binary: GoBinary, names: [String] = RuntimeGlobalsLocator.names) -> [RuntimeGlobal] {
        guard binary.isGo else {
            return names.map { RuntimeGlobal(name: $0, problem: "not a Go binary") }
        }
        var found: [String: RuntimeGlobal] = [:]
        var problems: [String: [String]] = [:]
        for s in strategies {
            let missing = names.filter { found[$0] == nil }
            if missing.isEmpty { break }
            let got = s.outcomes(missing, in: binary)
            for n in missing {
                if let o = got[n], let a = o.address {
                    found[n] = RuntimeGlobal(name: n, address: a, size: o.size, source: s.name, evidence: o.evidence)
                } else {
                    problems[n, default: []].append("\(s.name): \(got[n]?.problem ?? "not found")")
                }
            }
        }
        return names.map { found[$0] ?? RuntimeGlobal(name: $0, problem: (problems[$0] ?? []).joined(separator: "; ")) }
    }

    private static let cache = Mutex<[String: [RuntimeGlobal]]>([:])

    /// Every global of ``names`` and ``optionalNames`` in `binary`, located once per
    /// file: by build id and (device, inode), so two builds at one path in two
    /// containers, or a replaced binary that got the old inode back, are located
    /// apart.
    public static func located(in binary: GoBinary) -> [RuntimeGlobal] {
        let e = binary.elf
        let key = "\(binary.buildID ?? "-") \(e.device):\(e.inode):\(e.fileSize):\(e.modified) \(binary.goVersion ?? "")"
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let all = standard.locate(in: binary, names: names + optionalNames)
        cache.withLock { c in
            if c.count >= 256 { c.removeAll() }
            c[key] = all
        }
        return all
    }

    /// Binaries whose globals were located (for tests: the work is done once per binary).
    public static var locatedCount: Int { cache.withLock { $0.count } }
}
