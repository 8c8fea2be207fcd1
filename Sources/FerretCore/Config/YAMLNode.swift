import CYAML

/// A position in a source file, 1-based, printed as `file:line:col`.
public struct SourceMark: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// A YAML node that remembers where it came from.
public struct YAMLNode: Sendable {
    public enum ScalarStyle: Sendable { case plain, quoted, block }

    public indirect enum Kind: Sendable {
        case scalar(String, ScalarStyle)
        case mapping([(key: YAMLNode, value: YAMLNode)])
        case sequence([YAMLNode])
    }

    public var kind: Kind
    public var mark: SourceMark

    public init(_ kind: Kind, mark: SourceMark) {
        self.kind = kind
        self.mark = mark
    }

    /// "a mapping", "a sequence", "a string", ... for error messages.
    public var kindDescription: String {
        switch kind {
        case .mapping: return "a mapping"
        case .sequence: return "a sequence"
        case .scalar(let s, let style):
            if style == .plain && (s.isEmpty || s == "~" || s == "null") { return "null" }
            return "'\(s)'"
        }
    }

    public var scalar: String? {
        if case .scalar(let s, _) = kind { return s }
        return nil
    }

    /// True for an explicit or implicit YAML null (`key:`, `~`, `null`).
    public var isNull: Bool {
        if case .scalar(let s, .plain) = kind { return s.isEmpty || s == "~" || s == "null" || s == "Null" || s == "NULL" }
        return false
    }

    /// The mapping value under `key`, if this is a mapping that has it.
    public subscript(key: String) -> YAMLNode? {
        guard case .mapping(let pairs) = kind else { return nil }
        return pairs.first(where: { $0.key.scalar == key })?.value
    }
}

/// Parses YAML text with libyaml into `YAMLNode`s.
public enum YAMLParser {
    /// Parses a single-document stream. An empty document gives an empty mapping.
    public static func parse(_ text: String, file: String) throws(ConfigError) -> YAMLNode {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else {
            throw ConfigError(mark: SourceMark(file: file, line: 1, column: 1), "could not initialise the YAML parser")
        }
        defer { yaml_parser_delete(&parser) }
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { (buf) throws(ConfigError) -> YAMLNode in
            yaml_parser_set_input_string(&parser, buf.baseAddress, buf.count)
            var builder = Builder(file: file)
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else {
                    let mark = SourceMark(file: file, line: Int(parser.problem_mark.line) + 1,
                                          column: Int(parser.problem_mark.column) + 1)
                    let problem = parser.problem.map { String(cString: $0) } ?? "unknown error"
                    var message = "could not parse YAML: \(problem)"
                    if let ctx = parser.context {
                        message += " (\(String(cString: ctx)) at line \(parser.context_mark.line + 1))"
                    }
                    throw ConfigError(mark: mark, message)
                }
                defer { yaml_event_delete(&event) }
                if event.type == YAML_STREAM_END_EVENT { break }
                try builder.handle(&event)
            }
            return builder.root ?? YAMLNode(.mapping([]), mark: SourceMark(file: file, line: 1, column: 1))
        }
    }

    private struct Builder {
        let file: String
        var stack: [(mark: SourceMark, anchor: String?, isMapping: Bool, items: [YAMLNode])] = []
        var anchors: [String: YAMLNode] = [:]
        var root: YAMLNode?
        var documents = 0

        init(file: String) { self.file = file }

        func mark(_ m: yaml_mark_t) -> SourceMark {
            SourceMark(file: file, line: Int(m.line) + 1, column: Int(m.column) + 1)
        }

        static func string(_ p: UnsafeMutablePointer<yaml_char_t>?, _ len: Int? = nil) -> String? {
            guard let p else { return nil }
            if let len {
                return String(decoding: UnsafeBufferPointer(start: p, count: len), as: UTF8.self)
            }
            return String(cString: UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self))
        }

        mutating func add(_ node: YAMLNode, anchor: String?) {
            if let anchor { anchors[anchor] = node }
            if stack.isEmpty { root = node } else { stack[stack.count - 1].items.append(node) }
        }

        mutating func handle(_ event: inout yaml_event_t) throws(ConfigError) {
            let start = mark(event.start_mark)
            switch event.type {
            case YAML_DOCUMENT_START_EVENT:
                documents += 1
                if documents > 1 { throw ConfigError(mark: start, "only one YAML document is allowed per file") }
            case YAML_SCALAR_EVENT:
                let s = event.data.scalar
                let value = Self.string(s.value, Int(s.length)) ?? ""
                let style: YAMLNode.ScalarStyle
                switch s.style {
                case YAML_SINGLE_QUOTED_SCALAR_STYLE, YAML_DOUBLE_QUOTED_SCALAR_STYLE: style = .quoted
                case YAML_LITERAL_SCALAR_STYLE, YAML_FOLDED_SCALAR_STYLE: style = .block
                default: style = .plain
                }
                add(YAMLNode(.scalar(value, style), mark: start), anchor: Self.string(s.anchor))
            case YAML_SEQUENCE_START_EVENT:
                stack.append((start, Self.string(event.data.sequence_start.anchor), false, []))
            case YAML_MAPPING_START_EVENT:
                stack.append((start, Self.string(event.data.mapping_start.anchor), true, []))
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                let frame = stack.removeLast()
                let node: YAMLNode
                if frame.isMapping {
                    var pairs: [(key: YAMLNode, value: YAMLNode)] = []
                    var seen: [String: SourceMark] = [:]
                    var i = 0
                    while i + 1 < frame.items.count {
                        let key = frame.items[i]
                        if let k = key.scalar {
                            if let first = seen[k] {
                                throw ConfigError(mark: key.mark, "duplicate key '\(k)' (first at line \(first.line))")
                            }
                            seen[k] = key.mark
                        } else {
                            throw ConfigError(mark: key.mark, "mapping keys must be strings, got \(key.kindDescription)")
                        }
                        pairs.append((frame.items[i], frame.items[i + 1]))
                        i += 2
                    }
                    node = YAMLNode(.mapping(pairs), mark: frame.mark)
                } else {
                    node = YAMLNode(.sequence(frame.items), mark: frame.mark)
                }
                add(node, anchor: frame.anchor)
            case YAML_ALIAS_EVENT:
                let name = Self.string(event.data.alias.anchor) ?? ""
                guard let target = anchors[name] else {
                    throw ConfigError(mark: start, "unknown alias '*\(name)'")
                }
                add(YAMLNode(target.kind, mark: start), anchor: nil)
            default:
                break
            }
        }
    }
}
