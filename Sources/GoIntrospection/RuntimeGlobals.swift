/// One runtime global variable of a Go program.
public struct RuntimeGlobal: Sendable, Hashable {
    public var name: String
    /// Link-time address (add the load bias for a running PIE); nil when not found.
    public var address: UInt64?
    public var size: UInt64?
    /// The strategy that found it ("symtab", ...).
    public var source: String?
    /// Why it was not found.
    public var problem: String?
}

/// A way of finding runtime globals. Strategies are tried in order; the
/// first that finds a global wins. Stripped binaries need a strategy that
/// reads the code of runtime functions (issue #8); it plugs in here.
public protocol GlobalsLocatorStrategy: Sendable {
    var name: String { get }
    /// Finds what it can of `names`; returns name -> (address, size).
    func locate(_ names: [String], in binary: GoBinary) -> [String: (address: UInt64, size: UInt64)]
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

    public static let standard = RuntimeGlobalsLocator(strategies: [SymbolTableStrategy()])

    public func locate(in binary: GoBinary, names: [String] = RuntimeGlobalsLocator.names) -> [RuntimeGlobal] {
        guard binary.isGo else {
            return names.map { RuntimeGlobal(name: $0, problem: "not a Go binary") }
        }
        var found: [String: RuntimeGlobal] = [:]
        for s in strategies {
            let missing = names.filter { found[$0] == nil }
            if missing.isEmpty { break }
            for (n, v) in s.locate(missing, in: binary) {
                found[n] = RuntimeGlobal(name: n, address: v.address, size: v.size, source: s.name)
            }
        }
        let why = binary.isStripped
            ? "not found: the binary is stripped (no .symtab); locating globals from code is not available yet"
            : "not found in the symbol table"
        return names.map { found[$0] ?? RuntimeGlobal(name: $0, problem: why) }
    }
}
