import Foundation

/// One plugins.d/*.yaml file: which library provides which plugin.
public struct PluginManifest: Sendable {
    public var path: String
    public var name: String
    public var library: String
    public var kind: String
    public var description: String?
    /// Where instances run unless a rule says otherwise. A manifest that does
    /// not say runs its plugin in a helper process; the plugins shipped with
    /// Ferret say in_process.
    public var isolation: Isolation = .process
    /// The user a helper runs as (default: the agent's).
    public var user: String?
    /// The Linux capabilities a helper keeps (default: none).
    public var capabilities: [String] = []
    /// A helper's memory limit (default 512 MiB; a rule may set its own).
    public var memoryLimit: UInt64?

    public static let keys = ["name", "library", "kind", "description", "isolation", "user", "capabilities", "memory_limit"]

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
            case "isolation": m.isolation = d.isolation(v, "'isolation'", context: "in the plugin manifest") ?? m.isolation
            case "user": m.user = d.string(v, "'user'")
            case "memory_limit": m.memoryLimit = d.byteSize(v, "'memory_limit'", context: "in the plugin manifest", minimum: 4 << 20)
            case "capabilities":
                guard case .sequence(let items) = v.kind else {
                    d.fail(v.mark, "expected a list of capability names (like [cap_sys_ptrace]) for 'capabilities', got \(v.kindDescription)")
                    break
                }
                for item in items {
                    guard let name = d.string(item, "a capability")?.lowercased() else { continue }
                    let full = name.hasPrefix("cap_") ? name : "cap_\(name)"
                    if LinuxCapabilities.names.contains(full) { m.capabilities.append(full) } else {
                        d.fail(item.mark, "unknown capability '\(name)'" + Spelling.hint(for: full, among: LinuxCapabilities.names))
                    }
                }
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
