/// The run-time addresses of a set of Go runtime globals in one process: found
/// through ``RuntimeGlobalsLocator`` (link-time addresses), with the process's load
/// bias applied (PIE). Shared by the readers so every reader refuses a process the
/// same way: "go1.22.10 stripped: runtime globals unavailable", or the globals
/// that were not found.
struct RuntimeGlobalAddresses {
    struct Global {
        var name: String
        var address: UInt64
        var size: Int
    }

    let version: String
    let bias: UInt64
    private let byName: [String: RuntimeGlobal]

    /// Locates `required` (all must be found) and `optional` globals of `binary`,
    /// and reads the load bias of `pid`.
    init(pid: Int32, binary: GoBinary, required: [String], optional: [String] = []) throws {
        guard binary.isGo, let version = binary.goVersion else {
            throw IntrospectionError("\(binary.path): not a Go program")
        }
        self.version = version
        var byName: [String: RuntimeGlobal] = [:]
        for g in RuntimeGlobalsLocator.standard.locate(in: binary, names: required + optional) { byName[g.name] = g }
        self.byName = byName
        let missing = required.filter { byName[$0]?.address == nil }
        if !missing.isEmpty {
            if binary.isStripped { throw IntrospectionError("\(version) stripped: runtime globals unavailable") }
            throw IntrospectionError("\(version): runtime globals not found: \(missing.joined(separator: ", "))"
                + (byName[missing[0]]?.problem.map { " (\($0))" } ?? ""))
        }
        bias = try ProcessMaps.loadBias(pid: pid, elf: binary.elf)
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
