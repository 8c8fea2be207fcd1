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
    /// The rule's choice of where the instance runs (nil: the manifest's).
    public var isolation: Isolation?
    /// The helper's memory limit (nil: the manifest's, or 512 MiB).
    public var memoryLimit: UInt64?
    /// Helper crashes within `crashWindow` that quarantine the instance.
    public var maxCrashes: Int = 5
    public var crashWindow: Duration = .seconds(600)

    public init(plugin: String, mark: SourceMark, json: String, node: YAMLNode, interval: Duration, timeout: Duration) {
        self.plugin = plugin
        self.mark = mark
        self.json = json
        self.node = node
        self.interval = interval
        self.timeout = timeout
    }
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
    public static let hostCollectorKeys = ["interval", "timeout", "isolation", "memory_limit", "max_crashes", "crash_window"]
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
