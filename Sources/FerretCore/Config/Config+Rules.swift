import Foundation

// Decoding `rules:`: each rule's match, group template and collectors.
extension AgentConfig {
    static func decodeRules(_ node: YAMLNode, _ d: ConfigDecoder, _ agent: AgentSettings,
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

    static func checkTemplate(_ template: String, at mark: SourceMark, _ d: ConfigDecoder, _ ctx: String) {
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

    static func decodeMatch(_ node: YAMLNode, _ d: ConfigDecoder, _ ctx: String) -> MatchConfig {
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

    static func decodeCollectors(_ node: YAMLNode, _ d: ConfigDecoder, _ ctx: String, _ interval: Duration,
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
                case "isolation": c.isolation = d.isolation(v, "'isolation'", context: cctx)
                case "memory_limit": c.memoryLimit = d.byteSize(v, "'memory_limit'", context: cctx, minimum: 4 << 20)
                case "max_crashes": c.maxCrashes = d.int(v, "'max_crashes'", context: cctx, range: 1...1000) ?? c.maxCrashes
                case "crash_window": c.crashWindow = d.duration(v, "'crash_window'", context: cctx, minimum: .seconds(1)) ?? c.crashWindow
                default: own.append((k, v))
                }
            }
            c.node = YAMLNode(.mapping(own), mark: value.mark)
            c.json = c.node.jsonText(decoder: d)
            out.append(c)
        }
        return out
    }
}
