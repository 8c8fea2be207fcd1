import Foundation

extension YAMLNode {
    /// Converts this subtree to JSON text, following YAML 1.2 core-schema
    /// typing for plain scalars (null, booleans, numbers) and keeping quoted
    /// scalars as strings. Environment references are expanded by `decoder`.
    public func jsonText(decoder: ConfigDecoder) -> String {
        var out = ""
        write(into: &out, decoder: decoder)
        return out
    }

    private func write(into out: inout String, decoder: ConfigDecoder) {
        switch kind {
        case .mapping(let pairs):
            out += "{"
            for (i, (k, v)) in pairs.enumerated() {
                if i > 0 { out += "," }
                JSONText.appendString(k.scalar ?? "", to: &out)
                out += ":"
                v.write(into: &out, decoder: decoder)
            }
            out += "}"
        case .sequence(let items):
            out += "["
            for (i, v) in items.enumerated() {
                if i > 0 { out += "," }
                v.write(into: &out, decoder: decoder)
            }
            out += "]"
        case .scalar(let raw, let style):
            let s = decoder.expand(raw, at: mark) ?? raw
            if style == .plain {
                if isNull { out += "null"; return }
                switch s {
                case "true", "True", "TRUE": out += "true"; return
                case "false", "False", "FALSE": out += "false"; return
                default: break
                }
                if let i = Int64(s) { out += String(i); return }
                if let d = Double(s), d.isFinite, s.first != ".", s.last != "." { out += String(d); return }
            }
            JSONText.appendString(s, to: &out)
        }
    }

    /// The node at a JSON pointer ("/a/0/b"), used to map a plugin's error
    /// back to a line of the configuration.
    public func node(atJSONPointer pointer: String) -> YAMLNode? {
        if pointer.isEmpty || pointer == "/" { return self }
        var node = self
        for raw in pointer.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            let token = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            switch node.kind {
            case .mapping(let pairs):
                guard let pair = pairs.first(where: { $0.key.scalar == token }) else { return node }
                node = pair.value
            case .sequence(let items):
                guard let i = Int(token), items.indices.contains(i) else { return node }
                node = items[i]
            case .scalar:
                return node
            }
        }
        return node
    }

    /// The key node at a JSON pointer (its position is where a user looks).
    public func keyMark(atJSONPointer pointer: String) -> SourceMark? {
        var node = self
        var mark: SourceMark?
        for raw in pointer.split(separator: "/", omittingEmptySubsequences: true) {
            let token = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            switch node.kind {
            case .mapping(let pairs):
                guard let pair = pairs.first(where: { $0.key.scalar == token }) else { return mark ?? node.mark }
                mark = pair.key.mark
                node = pair.value
            case .sequence(let items):
                guard let i = Int(token), items.indices.contains(i) else { return mark ?? node.mark }
                node = items[i]
                mark = node.mark
            case .scalar:
                return mark ?? node.mark
            }
        }
        return mark ?? node.mark
    }
}

/// JSON strings for code that builds JSON as a `String` (config to JSON, CLI
/// output); the escaping is JSONWriter's, the one the sinks use.
public enum JSONText {
    public static func appendString(_ s: String, to out: inout String) {
        var w = JSONWriter(capacity: s.utf8.count + 8)
        w.string(s)
        out += String(decoding: w.bytes, as: UTF8.self)
    }
}
