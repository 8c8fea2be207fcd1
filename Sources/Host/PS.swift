import ArgumentParser
import FerretComponents
import FerretCore
import Foundation

struct PS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "Dry-run the rules: each process with its rule, group, collectors and runtime.")

    @OptionGroup var options: ConfigOption

    @Flag(help: "Print JSON (one array of objects).")
    var json = false

    @Flag(name: .long, help: "Only list processes that match a rule.")
    var matched = false

    func run() throws {
        let config: AgentConfig
        do {
            config = try AgentConfig.load(path: options.config, knownPlugins: { PluginRegistry.pluginNames(in: $0.pluginPaths) },
                                          components: FerretComponents.all)
        } catch {
            report(error)
            throw ExitCode(1)
        }
        let matcher = RuleMatcher(rules: config.rules)
        if let root = config.agent.hostProc { HostProc.configure(root) }
        let procfs = ProcFS()
        let resolver = ContainerNameResolver(hostRoot: config.agent.hostRoot)
        var rows: [(ProcessFacts, RuleConfig?, String?, ContainerNames)] = []
        for pid in procfs.pids().sorted() {
            guard let f = procfs.facts(pid: pid) else { continue }
            let rule = matcher.match(f)
            if matched && rule == nil { continue }
            let names = config.agent.containerNames ? resolver.names(for: f.container) : ContainerNames()
            rows.append((f, rule, rule.map { RuleMatcher.groupName($0.group, rule: $0.name, f, names: names) }, names))
        }
        if json {
            var out = "["
            for (i, (f, rule, group, names)) in rows.enumerated() {
                if i > 0 { out += "," }
                out += "\n  {\"pid\":\(f.pid),\"exe\":"
                JSONText.appendString(f.exePath, to: &out)
                out += ",\"comm\":"
                JSONText.appendString(f.comm, to: &out)
                out += ",\"user\":"
                JSONText.appendString(f.user, to: &out)
                out += ",\"runtime\":\"\(f.isGo ? "go" : "native")\""
                out += ",\"go_version\":" + (f.goVersion.map { "\"\($0)\"" } ?? "null")
                out += ",\"linkage\":\"\(f.executable?.isStatic == true ? "static" : "dynamic")\""
                out += ",\"rule\":" + (rule.map { "\"\($0.name)\"" } ?? "null")
                out += ",\"group\":"
                if let g = group { JSONText.appendString(g, to: &out) } else { out += "null" }
                out += ",\"collectors\":[" + (rule?.collectors.map { "\"\($0.plugin)\"" }.joined(separator: ",") ?? "") + "]"
                // Container and pod identity, by OpenTelemetry's names; absent outside containers.
                for (k, v) in (f.container?.attributes ?? []) + names.attributes {
                    out += ","
                    JSONText.appendString(k, to: &out)
                    out += ":"
                    JSONText.appendString(v, to: &out)
                }
                out += "}"
            }
            print(out + "\n]")
            return
        }
        print(pad("PID", 8) + pad("RUNTIME", 14) + pad("CONTAINER", 24) + pad("RULE", 18) + pad("GROUP", 22) + pad("COLLECTORS", 24) + "EXE")
        for (f, rule, group, _) in rows {
            let runtime = f.goVersion ?? "native"
            print(pad(String(f.pid), 8) + pad(runtime, 14) + pad(Self.containerColumn(f.container), 24)
                + pad(rule?.name ?? "-", 18) + pad(group ?? "-", 22)
                + pad(rule.map { $0.collectors.isEmpty ? "(none)" : $0.collectors.map(\.plugin).joined(separator: ",") } ?? "-", 24) + f.exePath)
        }
    }
}

extension PS {
    /// "runtime:short id" (12 characters, as `docker ps` shows ids), "pod:uid
    /// prefix" for a pod process whose container id is unknown, else "-".
    static func containerColumn(_ c: ContainerIdentity?) -> String {
        guard let c else { return "-" }
        if let id = c.containerID { return "\(c.runtime ?? "container"):\(id.prefix(12))" }
        if let uid = c.podUID { return "pod:\(uid.prefix(8))" }
        return "-"
    }
}

func pad(_ s: String, _ n: Int) -> String {
    s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
}
