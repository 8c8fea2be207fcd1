import Foundation

/// The whole agent configuration (config.yaml), typed and validated.
public struct AgentConfig: Sendable {
    public var file: String
    public var agent: AgentSettings
    public var pluginPaths: [String]        // resolved to absolute paths
    public var rules: [RuleConfig]
    public var pipeline: PipelineConfig
    /// The parsed tree, kept so plugin errors can be mapped back to lines.
    public var root: YAMLNode
}

public struct AgentSettings: Sendable {
    /// Default collection interval.
    public var interval: Duration = .seconds(1)
    /// How often /proc is rescanned as a fallback to the netlink connector.
    public var rescan: Duration = .seconds(10)
    /// How long one plugin call may take before the instance is marked unhealthy.
    public var callTimeout: Duration = .seconds(5)
    /// How often the agent's own metrics are emitted.
    public var selfMetricsInterval: Duration = .seconds(10)
    /// Overrides host.name.
    public var hostname: String?
    /// Log level: debug, info, warning, error.
    public var logLevel: String = "info"
    /// Where the host's procfs is mounted (`host_proc`): "/proc", or e.g.
    /// "/host/proc" for an agent in a container (see docs/containers.md).
    public var hostProc: String?
    /// Read container and pod names from the node's own files (`container_names`):
    /// the kubelet's pod log folders and Docker's container configs, under
    /// `host_root`. Off by default; never a network call.
    public var containerNames = false
    /// Where the host's root filesystem is mounted (`host_root`), for the files
    /// `container_names` reads: "/" or e.g. "/host".
    public var hostRoot = "/"
}

public struct RuleConfig: Sendable {
    public var name: String
    public var mark: SourceMark
    public var match: MatchConfig
    public var group: String              // template, e.g. "{exe.name}"
    public var collectors: [CollectorConfig]
}

public enum RuntimeMatch: String, Sendable { case go, native, any }

public struct MatchConfig: Sendable {
    public var runtime: RuntimeMatch = .any
    public var exe: String?
    public var comm: String?
    public var cmdline: String?           // regular expression, searched
    public var user: String?
    public var cgroup: String?
    /// Globs on the container identity derived from the cgroup (`container_id`,
    /// `container_runtime`, `pod_uid`); a process in no known container has none,
    /// so it matches none of them.
    public var containerID: String?
    public var containerRuntime: String?
    public var podUID: String?
    public var cmdlineRegex: NSRegularExpressionBox?
    /// Exact process ids (`ferret profile` uses it; operators rarely need it).
    public var pids: Set<Int32>?
}

/// NSRegularExpression is immutable once built; the box makes that explicit to Swift 6.
public struct NSRegularExpressionBox: @unchecked Sendable {
    public let regex: NSRegularExpression
}

public struct CollectorConfig: Sendable {
    public var plugin: String
    public var mark: SourceMark
    /// The plugin's own keys (host keys removed), as JSON text.
    public var json: String
    /// The YAML subtree, for mapping plugin errors to lines.
    public var node: YAMLNode
    public var interval: Duration
    public var timeout: Duration
}

public struct PipelineConfig: Sendable {
    public var queueSize: Int = 65_536
    public var aggregators: [ComponentConfig] = []
    public var sinks: [ComponentConfig] = []
}

/// An aggregator or sink entry: its type, a name, and its own keys.
public struct ComponentConfig: Sendable {
    public var type: String
    public var name: String
    public var node: YAMLNode
    public var mark: SourceMark
    /// Canonical JSON of the entry, used to tell whether a reload changed it.
    public var identity: String
}

extension AgentConfig {
    /// Host keys a collector's config may carry besides the plugin's own.
    public static let hostCollectorKeys = ["interval", "timeout"]
    public static let groupPlaceholders = ["rule", "exe.name", "exe.path", "comm", "user", "pid", "cgroup", "go.version", "runtime",
                                           "container.id", "container.runtime", "k8s.pod.uid", "container.name",
                                           "k8s.namespace.name", "k8s.pod.name", "k8s.container.name"]

    /// Loads and validates a configuration file.
    /// - Parameter knownPlugins: plugin names from the manifests; collectors
    ///   naming anything else are errors.
    /// - Parameter sinkKeys: allowed keys per sink type (nil = skip sink checks).
    public static func load(path: String, knownPlugins: ((AgentConfig.Partial) -> Set<String>)? = nil,
                            components: Components,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> AgentConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigErrors([ConfigError(mark: SourceMark(file: path, line: 1, column: 1),
                                            "cannot read configuration: \(error.localizedDescription)")])
        }
        return try parse(text: text, file: path, knownPlugins: knownPlugins, components: components, environment: environment)
    }

    /// What is known before collectors are checked: enough to find plugins.
    public struct Partial: Sendable {
        public var pluginPaths: [String]
    }

    public static func parse(text: String, file: String, knownPlugins: ((Partial) -> Set<String>)? = nil,
                             components: Components,
                             environment: [String: String] = ProcessInfo.processInfo.environment) throws -> AgentConfig {
        let root: YAMLNode
        do {
            root = try YAMLParser.parse(text, file: file)
        } catch {
            throw ConfigErrors([error])
        }
        let d = ConfigDecoder(environment: environment)
        let baseDir = URL(fileURLWithPath: file).deletingLastPathComponent().path
        var config = AgentConfig(file: file, agent: AgentSettings(), pluginPaths: [], rules: [],
                                 pipeline: PipelineConfig(), root: root)
        let top = d.mapping(root, "the configuration", context: "at the top level",
                            allowed: ["agent", "plugins", "rules", "pipeline"]) ?? []

        // agent and plugins first: collectors are checked against the plugins found.
        var pluginPaths = ["plugins.d"]
        for (key, _, value) in top {
            switch key {
            case "agent": config.agent = decodeAgent(value, d)
            case "plugins":
                for (k, _, v) in d.mapping(value, "plugins", context: "in 'plugins'", allowed: ["paths"]) ?? [] where k == "paths" {
                    pluginPaths = d.stringList(v, "'paths'", context: "in 'plugins'") ?? pluginPaths
                }
            default: break
            }
        }
        config.pluginPaths = pluginPaths.map { $0.hasPrefix("/") ? $0 : URL(fileURLWithPath: baseDir).appendingPathComponent($0).standardizedFileURL.path }
        let plugins = knownPlugins?(Partial(pluginPaths: config.pluginPaths))

        for (key, _, value) in top {
            switch key {
            case "rules": config.rules = decodeRules(value, d, config.agent, plugins)
            case "pipeline": config.pipeline = decodePipeline(value, d, components)
            default: break
            }
        }
        if !d.errors.isEmpty { throw ConfigErrors(d.errors) }
        return config
    }

    private static func decodeAgent(_ node: YAMLNode, _ d: ConfigDecoder) -> AgentSettings {
        var a = AgentSettings()
        let ctx = "in 'agent'"
        for (k, _, v) in d.mapping(node, "agent", context: ctx,
                                   allowed: ["interval", "rescan", "call_timeout", "self_metrics_interval", "hostname", "log_level",
                                             "host_proc", "host_root", "container_names"]) ?? [] {
            switch k {
            case "interval": a.interval = d.duration(v, "'interval'", context: ctx, minimum: .milliseconds(100)) ?? a.interval
            case "rescan": a.rescan = d.duration(v, "'rescan'", context: ctx, minimum: .milliseconds(100)) ?? a.rescan
            case "call_timeout": a.callTimeout = d.duration(v, "'call_timeout'", context: ctx, minimum: .milliseconds(10)) ?? a.callTimeout
            case "self_metrics_interval": a.selfMetricsInterval = d.duration(v, "'self_metrics_interval'", context: ctx, minimum: .milliseconds(100)) ?? a.selfMetricsInterval
            case "hostname": a.hostname = d.string(v, "'hostname'", context: ctx)
            case "host_proc", "host_root":
                if let path = d.string(v, "'\(k)'", context: ctx) {
                    var isDir: ObjCBool = false
                    if !path.hasPrefix("/") {
                        d.fail(v.mark, "'\(k)' must be an absolute path \(ctx), got '\(path)'")
                    } else if !FileManager.default.fileExists(atPath: path, isDirectory: &isDir) || !isDir.boolValue {
                        d.fail(v.mark, "'\(k)' \(ctx): \(path) is not a directory")
                    } else if k == "host_proc" && !FileManager.default.fileExists(atPath: path + "/self/stat") {
                        d.fail(v.mark, "'host_proc' \(ctx): \(path) is not a procfs mount (no \(path)/self/stat)")
                    } else if k == "host_proc" {
                        a.hostProc = path
                    } else {
                        a.hostRoot = path
                    }
                }
            case "container_names": a.containerNames = d.bool(v, "'container_names'", context: ctx) ?? a.containerNames
            case "log_level":
                if let s = d.string(v, "'log_level'", context: ctx) {
                    let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
                    if levels.contains(s) { a.logLevel = s } else {
                        d.fail(v.mark, "unknown log level '\(s)' \(ctx); use one of \(levels.joined(separator: ", "))" + Spelling.hint(for: s, among: levels))
                    }
                }
            default: break
            }
        }
        return a
    }

    private static func decodeRules(_ node: YAMLNode, _ d: ConfigDecoder, _ agent: AgentSettings,
                                    _ plugins: Set<String>?) -> [RuleConfig] {
        var rules: [RuleConfig] = []
        var names: [String: SourceMark] = [:]
        for (index, item) in (d.sequence(node, "'rules'") ?? []).enumerated() {
            // Name the rule in messages as soon as possible, even about its other keys.
            let label = item["name"]?.scalar.map { "in rule '\($0)'" } ?? "in rule #\(index + 1)"
            let pairs = d.mapping(item, "a rule", context: label,
                                  allowed: ["name", "match", "group", "interval", "collectors"]) ?? []
            var name = "rule-\(index + 1)"
            if let n = pairs.first(where: { $0.key == "name" }), let s = d.string(n.value, "'name'", context: "in rule #\(index + 1)") {
                if let first = names[s] { d.fail(n.value.mark, "duplicate rule name '\(s)' (first at line \(first.line))") }
                names[s] = n.value.mark
                name = s
            } else if pairs.first(where: { $0.key == "name" }) == nil, case .mapping = item.kind {
                d.fail(item.mark, "rule #\(index + 1) has no 'name'")
            }
            let ctx = "in rule '\(name)'"
            var rule = RuleConfig(name: name, mark: item.mark, match: MatchConfig(), group: "{exe.name}", collectors: [])
            var interval = agent.interval
            if let iv = pairs.first(where: { $0.key == "interval" }) {
                interval = d.duration(iv.value, "'interval'", context: ctx, minimum: .milliseconds(100)) ?? interval
            }
            for (k, _, v) in pairs {
                switch k {
                case "match": rule.match = decodeMatch(v, d, ctx)
                case "group":
                    if let g = d.string(v, "'group'", context: ctx) {
                        rule.group = g
                        checkTemplate(g, at: v.mark, d, ctx)
                    }
                case "collectors": rule.collectors = decodeCollectors(v, d, ctx, interval, agent, plugins)
                default: break
                }
            }
            rules.append(rule)
        }
        return rules
    }

    private static func checkTemplate(_ template: String, at mark: SourceMark, _ d: ConfigDecoder, _ ctx: String) {
        var rest = template[...]
        while let open = rest.firstIndex(of: "{") {
            guard let close = rest[open...].firstIndex(of: "}") else {
                d.fail(mark, "unclosed '{' in group template '\(template)' \(ctx)")
                return
            }
            let name = String(rest[rest.index(after: open)..<close])
            if !groupPlaceholders.contains(name) {
                d.fail(mark, "unknown placeholder '{\(name)}' in group template \(ctx); use one of "
                    + groupPlaceholders.map { "{\($0)}" }.joined(separator: ", ") + Spelling.hint(for: name, among: groupPlaceholders))
            }
            rest = rest[rest.index(after: close)...]
        }
    }

    private static func decodeMatch(_ node: YAMLNode, _ d: ConfigDecoder, _ ctx: String) -> MatchConfig {
        var m = MatchConfig()
        for (k, _, v) in d.mapping(node, "'match'", context: ctx,
                                   allowed: ["runtime", "exe", "comm", "cmdline", "user", "cgroup", "pid",
                                             "container_id", "container_runtime", "pod_uid"]) ?? [] {
            switch k {
            case "runtime":
                if let s = d.string(v, "'runtime'", context: ctx) {
                    if let r = RuntimeMatch(rawValue: s) { m.runtime = r } else {
                        d.fail(v.mark, "unknown runtime '\(s)' \(ctx); use go, native or any" + Spelling.hint(for: s, among: ["go", "native", "any"]))
                    }
                }
            case "exe": m.exe = d.string(v, "'exe'", context: ctx)
            case "comm": m.comm = d.string(v, "'comm'", context: ctx)
            case "user": m.user = d.string(v, "'user'", context: ctx)
            case "cgroup": m.cgroup = d.string(v, "'cgroup'", context: ctx)
            case "container_id": m.containerID = d.string(v, "'container_id'", context: ctx)
            case "container_runtime": m.containerRuntime = d.string(v, "'container_runtime'", context: ctx)
            case "pod_uid": m.podUID = d.string(v, "'pod_uid'", context: ctx)
            case "pid":
                if case .scalar = v.kind {
                    if let one = d.int(v, "'pid'", context: ctx, range: 1...Int(Int32.max)) { m.pids = [Int32(one)] }
                } else if let list = d.stringList(v, "'pid'", context: ctx) {
                    var set = Set<Int32>()
                    for x in list {
                        if let n = Int32(x), n > 0 { set.insert(n) } else { d.fail(v.mark, "'pid' must be a process id or a list of them \(ctx), got '\(x)'") }
                    }
                    m.pids = set
                }
            case "cmdline":
                if let s = d.string(v, "'cmdline'", context: ctx) {
                    m.cmdline = s
                    do {
                        m.cmdlineRegex = NSRegularExpressionBox(regex: try NSRegularExpression(pattern: s))
                    } catch {
                        d.fail(v.mark, "invalid regular expression '\(s)' for 'cmdline' \(ctx): \(RegexDiagnosis.explain(s))")
                    }
                }
            default: break
            }
        }
        return m
    }

    private static func decodeCollectors(_ node: YAMLNode, _ d: ConfigDecoder, _ ctx: String, _ interval: Duration,
                                         _ agent: AgentSettings, _ plugins: Set<String>?) -> [CollectorConfig] {
        var out: [CollectorConfig] = []
        for (name, keyMark, value) in d.mapping(node, "'collectors'", context: ctx) ?? [] {
            if let plugins, !plugins.contains(name) {
                let known = plugins.sorted()
                d.fail(keyMark, "unknown plugin '\(name)' \(ctx)" + Spelling.hint(for: name, among: known)
                    + (known.isEmpty ? "; no plugin manifests were found" : "; known plugins: \(known.joined(separator: ", "))"))
                continue
            }
            var c = CollectorConfig(plugin: name, mark: keyMark, json: "{}", node: value, interval: interval, timeout: agent.callTimeout)
            let cctx = "in collector '\(name)' of rule '\(ctx.dropFirst(9).dropLast())'"
            if value.isNull {
                out.append(c)
                continue
            }
            guard case .mapping(let pairs) = value.kind else {
                d.fail(value.mark, "expected a mapping (the plugin's settings) for collector '\(name)' \(ctx), got \(value.kindDescription)")
                continue
            }
            var own: [(key: YAMLNode, value: YAMLNode)] = []
            for (k, v) in pairs {
                switch k.scalar {
                case "interval": c.interval = d.duration(v, "'interval'", context: cctx, minimum: .milliseconds(100)) ?? c.interval
                case "timeout": c.timeout = d.duration(v, "'timeout'", context: cctx, minimum: .milliseconds(10)) ?? c.timeout
                default: own.append((k, v))
                }
            }
            c.node = YAMLNode(.mapping(own), mark: value.mark)
            c.json = c.node.jsonText(decoder: d)
            out.append(c)
        }
        return out
    }

    private static func decodePipeline(_ node: YAMLNode, _ d: ConfigDecoder, _ components: Components) -> PipelineConfig {
        var p = PipelineConfig()
        for (k, _, v) in d.mapping(node, "'pipeline'", context: "in 'pipeline'", allowed: ["queue_size", "aggregators", "sinks"]) ?? [] {
            switch k {
            case "queue_size": p.queueSize = d.int(v, "'queue_size'", context: "in 'pipeline'", range: 16...16_777_216) ?? p.queueSize
            case "aggregators":
                p.aggregators = decodeComponents(v, d, "aggregator", components.aggregatorKeys,
                                                 required: components.aggregators.mapValues(\.required))
                // Building an aggregator has no side effects: do it now so that bad
                // values (a rule's syntax, a range) fail validation and reloads.
                ComponentCheck.validate(p.aggregators, components.aggregators, what: "aggregator", d)
            case "sinks":
                p.sinks = decodeComponents(v, d, "sink", components.sinkKeys, required: components.sinks.mapValues(\.required))
                // Sinks check their values without starting (no port is bound here).
                ComponentCheck.validate(p.sinks, components.sinks, what: "sink", d)
                for s in p.sinks {
                    if let b = s.node["buffer"] { _ = d.int(b, "'buffer'", context: "in sink '\(s.name)'", range: 16...16_777_216) }
                }
            default: break
            }
        }
        return p
    }

    private static func decodeComponents(_ node: YAMLNode, _ d: ConfigDecoder, _ what: String,
                                         _ types: [String: [String]], required requiredKeys: [String: [String]]) -> [ComponentConfig] {
        var out: [ComponentConfig] = []
        var names = Set<String>()
        for (i, item) in (d.sequence(node, "'\(what)s'", context: "in 'pipeline'") ?? []).enumerated() {
            guard let pairs = d.mapping(item, "a \(what)", context: "in \(what) #\(i + 1)") else { continue }
            guard let t = pairs.first(where: { $0.key == "type" }), let type = d.string(t.value, "'type'", context: "in \(what) #\(i + 1)") else {
                if pairs.first(where: { $0.key == "type" }) == nil { d.fail(item.mark, "\(what) #\(i + 1) has no 'type'") }
                continue
            }
            guard let allowed = types[type] else {
                let known = types.keys.sorted()
                d.fail(t.value.mark, "unknown \(what) type '\(type)'" + Spelling.hint(for: type, among: known)
                    + (known.isEmpty ? "; none are available yet" : "; available: \(known.joined(separator: ", "))"))
                continue
            }
            let ctx = "in \(what) '\(type)'"
            for (k, km, _) in pairs where !(["type", "name"] + allowed).contains(k) {
                d.fail(km, "unknown key '\(k)' \(ctx)" + Spelling.hint(for: k, among: allowed))
            }
            for required in requiredKeys[type] ?? [] where !pairs.contains(where: { $0.key == required }) {
                d.fail(item.mark, "\(what) '\(type)' needs '\(required)'")
            }
            var name = type
            if let n = pairs.first(where: { $0.key == "name" }) { name = d.string(n.value, "'name'", context: ctx) ?? name }
            if names.contains(name) {
                var k = 2
                while names.contains("\(name)#\(k)") { k += 1 }
                name = "\(name)#\(k)"
            }
            names.insert(name)
            out.append(ComponentConfig(type: type, name: name, node: item, mark: item.mark, identity: item.jsonText(decoder: d)))
        }
        return out
    }
}

/// Explains why a pattern failed to compile (NSRegularExpression gives no reason).
enum RegexDiagnosis {
    static func explain(_ pattern: String) -> String {
        var depth = 0, bracket = false, escaped = false
        for c in pattern {
            if escaped { escaped = false; continue }
            switch c {
            case "\\": escaped = true
            case "[" where !bracket: bracket = true
            case "]" where bracket: bracket = false
            case "(" where !bracket: depth += 1
            case ")" where !bracket:
                depth -= 1
                if depth < 0 { return "unmatched ')'" }
            default: break
            }
        }
        if bracket { return "unterminated character class '['" }
        if depth > 0 { return "missing ')'" }
        if escaped { return "trailing backslash" }
        if let f = pattern.first, "*+?{".contains(f) { return "nothing to repeat before '\(f)'" }
        return "the pattern is not valid ICU regular-expression syntax"
    }
}
