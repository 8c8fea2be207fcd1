import Foundation

// Decoding `pipeline:`: the queue, the aggregator chain and the sinks, each
// entry checked against the component types the agent is built with.
extension AgentConfig {
    static func decodePipeline(_ node: YAMLNode, _ d: ConfigDecoder, _ components: Components) -> PipelineConfig {
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

    static func decodeComponents(_ node: YAMLNode, _ d: ConfigDecoder, _ what: String,
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
