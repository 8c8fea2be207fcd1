import Foundation

/// Decides which rule a process falls under (first match wins) and names
/// its process group.
public struct RuleMatcher: Sendable {
    public let rules: [RuleConfig]

    public init(rules: [RuleConfig]) { self.rules = rules }

    /// The first rule whose every given condition holds, or nil. `p` must be
    /// complete (`ProcFS.complete`).
    public func match(_ p: ProcessFacts) -> RuleConfig? {
        rules.first { Self.matches($0.match, p) }
    }

    /// Whether any rule could match a process of which only the executable is
    /// known (`ProcFS.executableFacts(pid:)`): the conditions on runtime,
    /// executable and pid decide; the others are taken to hold. False means
    /// nothing else need be read.
    public func couldMatch(_ p: ProcessFacts) -> Bool {
        rules.contains { Self.executableConditionsHold($0.match, p) }
    }

    /// False when a rule names `pid` among its exact pids: a fork of an
    /// unmatched parent could then match by its own pid, so it must be read.
    public func pidRulesAllow(_ pid: Int32) -> Bool {
        !rules.contains { $0.match.pids?.contains(pid) == true }
    }

    static func executableConditionsHold(_ m: MatchConfig, _ p: ProcessFacts) -> Bool {
        switch m.runtime {
        case .any: break
        case .go: if !p.isGo { return false }
        case .native: if p.isGo { return false }
        }
        if let ids = m.pids, !ids.contains(p.pid) { return false }
        if let g = m.exe, !glob(g, p.exePath) { return false }
        return true
    }

    public static func matches(_ m: MatchConfig, _ p: ProcessFacts) -> Bool {
        guard executableConditionsHold(m, p) else { return false }
        if let g = m.comm, !glob(g, p.comm) { return false }
        if let g = m.user, !(glob(g, p.user) || glob(g, String(p.uid))) { return false }
        if let g = m.cgroup, !glob(g, p.cgroup) { return false }
        // A short container id (docker ps shows 12 characters) matches as a prefix.
        if let g = m.containerID, !((p.container?.containerID).map { glob(g, $0) || glob(g + "*", $0) } ?? false) { return false }
        if let g = m.containerRuntime, !((p.container?.runtime).map { glob(g, $0) } ?? false) { return false }
        if let g = m.podUID, !((p.container?.podUID).map { glob(g, $0) } ?? false) { return false }
        if let r = m.cmdlineRegex?.regex {
            let s = p.commandLine
            if r.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) == nil { return false }
        }
        return true
    }

    /// Shell-style glob; `*` also matches `/`, so "*/truthsrv" matches any directory.
    public static func glob(_ pattern: String, _ s: String) -> Bool {
        fnmatch(pattern, s, 0) == 0
    }

    /// Expands a group template such as "{exe.name}" or "{rule}-{user}". The
    /// container placeholders expand to "none" outside a container, and the name
    /// placeholders (from `names`, read only when `container_names` is on) to
    /// "unknown" when no file named them.
    public static func groupName(_ template: String, rule: String, _ p: ProcessFacts, names: ContainerNames = .init()) -> String {
        var out = ""
        var rest = template[...]
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            out += rest[..<open]
            let key = rest[rest.index(after: open)..<close]
            switch key {
            case "rule": out += rule
            case "exe.name": out += p.exeName
            case "exe.path": out += p.exePath
            case "comm": out += p.comm
            case "user": out += p.user
            case "pid": out += String(p.pid)
            case "cgroup": out += p.cgroup
            case "go.version": out += p.goVersion ?? "none"
            case "runtime": out += p.isGo ? "go" : "native"
            case "container.id": out += p.container?.containerID ?? "none"
            case "container.runtime": out += p.container?.runtime ?? "none"
            case "k8s.pod.uid": out += p.container?.podUID ?? "none"
            case "container.name", "k8s.namespace.name", "k8s.pod.name", "k8s.container.name":
                out += names.value(String(key)) ?? (p.container == nil ? "none" : "unknown")
            default: out += rest[open...close]
            }
            rest = rest[rest.index(after: close)...]
        }
        out += rest
        return out
    }
}

extension Resource {
    /// The resource attributes the host stamps on everything a process emits.
    public static func forProcess(_ p: ProcessFacts, group: String, rule: String, host: String,
                                  names: ContainerNames = .init()) -> Resource {
        var a: [Attribute] = [
            Attribute("process.pid", .int(Int64(p.pid))),
            Attribute("process.executable.name", .string(p.exeName)),
            Attribute("process.executable.path", .string(p.exePath)),
            Attribute("process.command_line", .string(p.commandLine)),
            Attribute("process.owner", .string(p.user)),
            Attribute("ferret.group", .string(group)),
            Attribute("ferret.rule", .string(rule)),
            Attribute("host.name", .string(host)),
        ]
        if let c = p.container {
            for (k, v) in c.attributes { a.append(Attribute(k, .string(v))) }
        }
        for (k, v) in names.attributes { a.append(Attribute(k, .string(v))) }
        if let v = p.goVersion {
            a.append(Attribute("process.runtime.name", .string("go")))
            a.append(Attribute("process.runtime.version", .string(v)))
        }
        if let e = p.executable {
            let linkage = e.isStatic ? "static" : "dynamic"
            a.append(Attribute("process.linkage", .string(linkage)))
            if e.isGo { a.append(Attribute("go.linkage", .string(linkage))) }
            a.append(Attribute("process.executable.stripped", .bool(e.isStripped)))
            if let info = e.goBuildInfo {
                if let m = info.main, !m.path.isEmpty { a.append(Attribute("go.module.path", .string(m.path))) }
                // One "key=value" per line, in the binary's order (`go version -m`).
                if !info.settings.isEmpty {
                    a.append(Attribute("go.build.settings", .string(info.settings.map { "\($0.key)=\($0.value)" }.joined(separator: "\n"))))
                }
            }
        }
        return Resource(a)
    }

    /// The agent's own resource.
    public static func agent(host: String) -> Resource {
        Resource([
            Attribute("process.pid", .int(Int64(getpid()))),
            Attribute("process.executable.name", .string("ferret")),
            Attribute("ferret.group", .string("ferret")),
            Attribute("service.name", .string("ferret")),
            Attribute("host.name", .string(host)),
        ])
    }
}
