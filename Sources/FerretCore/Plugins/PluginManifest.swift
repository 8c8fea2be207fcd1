import Foundation

/// One plugins.d/*.yaml file: which library provides which plugin.
public struct PluginManifest: Sendable {
    public var path: String
    public var name: String
    public var library: String
    public var kind: String
    public var description: String?

    public static let keys = ["name", "library", "kind", "description"]

    public static func load(path: String) throws -> PluginManifest {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigErrors([ConfigError(mark: SourceMark(file: path, line: 1, column: 1), "cannot read manifest: \(error.localizedDescription)")])
        }
        let root: YAMLNode
        do { root = try YAMLParser.parse(text, file: path) } catch { throw ConfigErrors([error]) }
        let d = ConfigDecoder()
        var m = PluginManifest(path: path, name: "", library: "", kind: "collector")
        for (k, _, v) in d.mapping(root, "a plugin manifest", context: "in the plugin manifest", allowed: keys) ?? [] {
            switch k {
            case "name": m.name = d.string(v, "'name'") ?? ""
            case "library": m.library = d.string(v, "'library'") ?? ""
            case "kind":
                let kind = d.string(v, "'kind'") ?? ""
                if ["collector", "aggregator", "sink"].contains(kind) { m.kind = kind } else {
                    d.fail(v.mark, "unknown plugin kind '\(kind)'; use collector" + Spelling.hint(for: kind, among: ["collector", "aggregator", "sink"]))
                }
            case "description": m.description = d.string(v, "'description'")
            default: break
            }
        }
        if m.name.isEmpty && d.errors.isEmpty { d.fail(root.mark, "the manifest has no 'name'") }
        if m.library.isEmpty && d.errors.isEmpty { d.fail(root.mark, "the manifest has no 'library'") }
        if !d.errors.isEmpty { throw ConfigErrors(d.errors) }
        return m
    }
}

/// Refuses files and folders that someone other than root (or the agent's
/// own user) could have changed: the agent runs as root, so loading them
/// would let anyone run code as root.
public enum FileTrust {
    public static func problem(with path: String, what: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return "\(what) '\(path)': \(String(cString: strerror(errno)))" }
        let mode = st.st_mode & 0o7777
        if mode & 0o002 != 0 {
            return "\(what) '\(path)' is world-writable (mode \(String(mode, radix: 8))); refusing it because anyone could "
                + "make the agent run their code as root (fix: chmod o-w '\(path)')"
        }
        if st.st_uid != 0 && st.st_uid != geteuid() {
            return "\(what) '\(path)' is owned by uid \(st.st_uid), not by root or the agent's user; refusing it because "
                + "that user could make the agent run their code as root (fix: chown root '\(path)')"
        }
        return nil
    }
}
