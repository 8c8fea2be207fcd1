/// The run-time addresses of a set of Go runtime globals in one process: found
/// through ``RuntimeGlobalsLocator`` (link-time addresses), with the process's load
/// bias applied (PIE). Shared by the readers so every reader refuses a process the
/// same way: "go1.22.10 stripped: runtime globals unavailable: <why>", or the
/// globals that were not found. Globals found in code (stripped binaries) are
/// validated against the process first (``RuntimeGlobalsValidator``); a failed
/// check makes the process's Go figures unavailable, never guessed.
struct RuntimeGlobalAddresses {
    struct Global {
        var name: String
        var address: UInt64
        var size: Int
    }

    let version: String
    let bias: UInt64
    private let byName: [String: RuntimeGlobal]

    /// Given addresses (link-time) and load bias, unchecked: the validator reads
    /// through the addresses it is checking.
    init(version: String, bias: UInt64, globals: [RuntimeGlobal], required: [String]) throws {
        self.version = version
        self.bias = bias
        var byName: [String: RuntimeGlobal] = [:]
        for g in globals { byName[g.name] = g }
        self.byName = byName
        if let m = required.first(where: { byName[$0]?.address == nil }) { throw IntrospectionError("\(version): \(m) not found") }
    }

    /// Locates `required` (all must be found) and `optional` globals of `binary`,
    /// reads the load bias of `pid`, and validates globals found in code.
    init(pid: Int32, binary: GoBinary, required: [String], optional: [String] = []) throws {
        guard binary.isGo, let version = binary.goVersion else {
            throw IntrospectionError("\(binary.path): not a Go program")
        }
        self.version = version
        let all = RuntimeGlobalsLocator.located(in: binary)
        var byName: [String: RuntimeGlobal] = [:]
        for g in all where required.contains(g.name) || optional.contains(g.name) { byName[g.name] = g }
        for n in required + optional where byName[n] == nil {
            byName[n] = RuntimeGlobalsLocator.standard.locate(in: binary, names: [n])[0]
        }
        self.byName = byName
        let missing = required.filter { byName[$0]?.address == nil }
        let what = binary.isStripped ? "\(version) stripped" : version
        if !missing.isEmpty {
            let problem = byName[missing[0]]?.problem ?? ""
            throw IntrospectionError("\(what): runtime globals unavailable: \(missing[0]) not found"
                + (problem.isEmpty ? "" : " (\(problem))") + (missing.count > 1 ? " (and \(missing.count - 1) more)" : ""),
                kind: problem.contains("unknown layout") ? .unknownLayout : .other)
        }
        bias = try ProcessMaps.loadBias(pid: pid, elf: binary.elf)
        if all.contains(where: { $0.source != nil && $0.source != "symtab" }) {
            let v = RuntimeGlobalsValidator.validate(pid: pid, binary: binary, globals: all, bias: bias)
            if let failure = v.failure {
                throw IntrospectionError("\(what): runtime globals unavailable: \(failure)", kind: .failedValidation)
            }
        }
    }

    func has(_ name: String) -> Bool { byName[name]?.address != nil }

    /// The global's run-time address and size; throws when it was not found or its
    /// size is not one of `sizes` (nil: any size of at least `minSize`).
    func global(_ name: String, sizes: Set<Int>? = nil, minSize: Int = 1) throws -> Global {
        guard let g = byName[name], let a = g.address else { throw IntrospectionError("\(version): \(name) not found") }
        let size = Int(g.size ?? 0)
        if let sizes, !sizes.contains(size) {
            throw IntrospectionError("\(version): \(name) has an unexpected size \(size)")
        }
        if sizes == nil && size < minSize {
            throw IntrospectionError("\(version): \(name) has size \(size), smaller than its layout (\(minSize))")
        }
        return Global(name: name, address: a &+ bias, size: size)
    }
}
