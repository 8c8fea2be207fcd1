import ArgumentParser
import FerretCore
import Foundation
import GoIntrospection

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what Ferret sees in a Go binary or process: version, linkage, symbols, runtime globals, layouts.")

    @Argument(help: "A process id, or the path of an executable.")
    var target: String

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let pid = Int32(target)
        let path = pid.map { HostProc.file($0, "exe") } ?? target
        let binary: GoBinary
        do {
            binary = try GoBinaryCache.binary(path: path)
        } catch {
            FileHandle.standardError.write(Data("ferret inspect: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let report = InspectReport(binary: binary, pid: pid, displayPath: pid.flatMap { try? FileManager.default.destinationOfSymbolicLink(atPath: HostProc.file($0, "exe")) } ?? target)
        print(json ? report.json() : report.text())
    }
}

/// The facts `ferret inspect` prints, gathered once for both formats.
struct InspectReport {
    let binary: GoBinary
    let pid: Int32?
    let displayPath: String
    let pcln: Result<PclnTable, IntrospectionError>?
    let globals: [RuntimeGlobal]
    let layouts: [(type: String, source: String)]
    let bias: Result<UInt64, any Error>?
    let mappings: [MemoryMapping]
    /// The checks of the globals against the live process (with a pid).
    let validation: GlobalsValidation?
    /// The process's PID namespace ids (outermost first) and container (with a pid).
    let nsPIDs: [Int32]
    let container: ContainerIdentity?

    static let layoutTypes = ["runtime.schedt", "runtime.p", "runtime.m", "runtime.g", "runtime.mstats", "runtime.gcControllerState", "net/http.Request"]

    init(binary: GoBinary, pid: Int32?, displayPath: String) {
        self.binary = binary
        self.pid = pid
        self.displayPath = displayPath
        if binary.isGo {
            do throws(IntrospectionError) { pcln = .success(try binary.pclnTable()) } catch { pcln = .failure(error) }
            globals = RuntimeGlobalsLocator.located(in: binary).filter { $0.address != nil || RuntimeGlobalsLocator.names.contains($0.name) }
            let dwarf = binary.dwarf
            let version = binary.goVersion ?? ""
            layouts = Self.layoutTypes.map { t in
                if let found = GoLayoutTable.resolve(binaryDWARF: dwarf, goVersion: version, type: t) { return (t, found.source) }
                if case .unknown(let why) = GoLayoutTable.builtIn.lookup(t, goVersion: version) { return (t, "unavailable: \(why)") }
                return (t, "unavailable")
            }
        } else {
            pcln = nil
            globals = []
            layouts = []
        }
        if let pid {
            do { bias = .success(try ProcessMaps.loadBias(pid: pid, elf: binary.elf)) } catch { bias = .failure(error) }
            mappings = (try? ProcessMaps.read(pid: pid)) ?? []
            nsPIDs = (try? PIDNamespace.ids(pid: pid)) ?? []
            container = (try? ProcFile.read(HostProc.file(pid, "cgroup"), pid: pid))
                .flatMap { ContainerIdentity.parse(cgroupFile: String(decoding: $0, as: UTF8.self)) }
            if case .success(let b)? = bias, binary.isGo {
                validation = RuntimeGlobalsValidator.validate(pid: pid, binary: binary, globals: globals, bias: b)
            } else {
                validation = nil
            }
        } else {
            bias = nil
            mappings = []
            validation = nil
            nsPIDs = []
            container = nil
        }
    }

    func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    func text() -> String {
        var out = displayPath + (pid.map { " (pid \($0))" } ?? "") + "\n"
        func row(_ k: String, _ v: String) { out += "  " + k.padding(toLength: 16, withPad: " ", startingAt: 0) + v + "\n" }
        row("go", binary.goVersion ?? "not a Go binary")
        if let m = binary.buildInfo?.main { row("module", "\(m.path) \(m.version)") }
        if let s = binary.buildInfo?.settings, !s.isEmpty { row("build settings", s.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) }
        if let d = binary.buildInfo?.dependencies, !d.isEmpty { row("dependencies", d.map { "\($0.path)@\($0.version)" }.joined(separator: ", ")) }
        row("linkage", "\(binary.isStatic ? "static" : "dynamic"), \(binary.isPIE ? "PIE" : "not PIE")")
        row("stripped", binary.isStripped ? "yes (no .symtab)" : "no")
        row("DWARF", binary.hasDWARF ? "yes" : "no")
        if let id = binary.buildID { row("build id", id) }
        if nsPIDs.count > 1 { row("PID namespaces", nsPIDs.map(String.init).joined(separator: " → ") + " (host first)") }
        if let c = container {
            for (k, v) in c.attributes { row(k, v) }
        } else if pid != nil {
            row("container", "none (the cgroup names no known container runtime)")
        }
        switch pcln {
        case .success(let t)?: row("functions", "\(t.functionCount) (pclntab \(t.format.rawValue) format at \(hex(t.address)), text \(hex(t.textStart))\(t.hasInlineTree ? ", inline trees" : ""))")
        case .failure(let e)?: row("functions", "unavailable: \(e)")
        case nil: break
        }
        if !globals.isEmpty {
            out += "  runtime globals" + (validation.map { $0.passed ? " (checked against the process: all passed)" : " (checked against the process: FAILED, Go figures unavailable)" } ?? "") + "\n"
            for g in globals {
                let name = g.name.padding(toLength: 22, withPad: " ", startingAt: 0)
                if let a = g.address {
                    let via = g.evidence.isEmpty ? (g.source ?? "?") : "\(g.source ?? "?") (\(g.evidence.joined(separator: ", ")))"
                    out += "    \(name) \(hex(a))  size \(g.size ?? 0)  via \(via)\n"
                    if let checks = validation?.checks(for: g.name) {
                        for c in checks { out += "      \(c.passed ? "passed" : "FAILED") \(c.name): \(c.detail)\n" }
                    }
                } else {
                    out += "    \(name) \(g.problem ?? "not found")\n"
                }
            }
        }
        if !layouts.isEmpty {
            out += "  struct layouts\n"
            for l in layouts { out += "    \(l.type.padding(toLength: 28, withPad: " ", startingAt: 0)) \(l.source)\n" }
        }
        if let bias {
            switch bias {
            case .success(let b): row("load bias", hex(b))
            case .failure(let e): row("load bias", "unavailable: \(e)")
            }
            let files = Array(Set(mappings.map(\.path).filter { $0.hasPrefix("/") })).sorted()
            row("mapped files", files.joined(separator: ", "))
        }
        return out
    }

    func json() -> String {
        var o = "{"
        func key(_ k: String) { if o.count > 1 { o += "," }; o += "\"\(k)\":" }
        func str(_ s: String?) { if let s { JSONText.appendString(s, to: &o) } else { o += "null" } }
        key("path"); str(displayPath)
        if let pid { key("pid"); o += "\(pid)" }
        key("go"); o += binary.isGo ? "true" : "false"
        key("go_version"); str(binary.goVersion)
        key("module_path"); str(binary.buildInfo?.main?.path)
        key("module_version"); str(binary.buildInfo?.main?.version)
        key("build_settings"); o += "{"
        for (i, s) in (binary.buildInfo?.settings ?? []).enumerated() {
            if i > 0 { o += "," }
            JSONText.appendString(s.key, to: &o); o += ":"; JSONText.appendString(s.value, to: &o)
        }
        o += "}"
        key("dependencies"); o += "["
        for (i, d) in (binary.buildInfo?.dependencies ?? []).enumerated() {
            if i > 0 { o += "," }
            o += "{\"path\":"; JSONText.appendString(d.path, to: &o); o += ",\"version\":"; JSONText.appendString(d.version, to: &o); o += "}"
        }
        o += "]"
        key("linkage"); str(binary.isStatic ? "static" : "dynamic")
        key("pie"); o += binary.isPIE ? "true" : "false"
        key("stripped"); o += binary.isStripped ? "true" : "false"
        key("has_dwarf"); o += binary.hasDWARF ? "true" : "false"
        key("build_id"); str(binary.buildID)
        if pid != nil {
            key("ns_pids"); o += "[" + nsPIDs.map(String.init).joined(separator: ",") + "]"
            key("container"); o += "{"
            for (i, (k, v)) in (container?.attributes ?? []).enumerated() {
                if i > 0 { o += "," }
                JSONText.appendString(k, to: &o); o += ":"; JSONText.appendString(v, to: &o)
            }
            o += "}"
        }
        switch pcln {
        case .success(let t)?:
            key("functions"); o += "\(t.functionCount)"
            key("pclntab"); o += "{\"format\":\"\(t.format.rawValue)\",\"address\":\"\(hex(t.address))\",\"text_start\":\"\(hex(t.textStart))\",\"inline_trees\":\(t.hasInlineTree)}"
        case .failure(let e)?:
            key("functions"); o += "null"
            key("pclntab_error"); str("\(e)")
        case nil: break
        }
        key("runtime_globals"); o += "{"
        for (i, g) in globals.enumerated() {
            if i > 0 { o += "," }
            JSONText.appendString(g.name, to: &o)
            o += ":{\"address\":" + (g.address.map { "\"\(hex($0))\"" } ?? "null") + ",\"size\":" + (g.size.map(String.init) ?? "null")
            o += ",\"source\":"; str(g.source); o += ",\"problem\":"; str(g.problem)
            o += ",\"evidence\":["
            for (j, e) in g.evidence.enumerated() { if j > 0 { o += "," }; JSONText.appendString(e, to: &o) }
            o += "]"
            if let checks = validation?.checks(for: g.name) {
                o += ",\"checks\":["
                for (j, c) in checks.enumerated() {
                    if j > 0 { o += "," }
                    o += "{\"name\":"; JSONText.appendString(c.name, to: &o)
                    o += ",\"passed\":\(c.passed),\"detail\":"; JSONText.appendString(c.detail, to: &o); o += "}"
                }
                o += "]"
            }
            o += "}"
        }
        o += "}"
        if let validation {
            key("globals_validated"); o += validation.passed ? "true" : "false"
        }
        key("layouts"); o += "{"
        for (i, l) in layouts.enumerated() {
            if i > 0 { o += "," }
            JSONText.appendString(l.type, to: &o); o += ":"; JSONText.appendString(l.source, to: &o)
        }
        o += "}"
        if let bias {
            key("load_bias")
            if case .success(let b) = bias { o += "\"\(hex(b))\"" } else { o += "null" }
            key("mappings"); o += "["
            for (i, m) in mappings.enumerated() {
                if i > 0 { o += "," }
                o += "{\"start\":\"\(hex(m.start))\",\"end\":\"\(hex(m.end))\",\"perms\":\"\(m.readable ? "r" : "-")\(m.writable ? "w" : "-")\(m.executable ? "x" : "-")\",\"path\":"
                JSONText.appendString(m.path, to: &o)
                o += "}"
            }
            o += "]"
        }
        return o + "}"
    }
}
