import CPluginIsolation
import FerretPluginABI
import Foundation
import Logging
import Synchronization

/// A plugin library that loaded and passed the ABI checks. Never unloaded.
public final class LoadedPlugin: @unchecked Sendable {
    public let name: String
    public let version: String
    public let summary: String
    public let abiMajor: Int
    public let abiMinor: Int
    public let flags: UInt32
    public let libraryPath: String
    /// The descriptor, when the library is loaded into the agent (nil when only
    /// a helper process has loaded it).
    let descriptor: UnsafePointer<ferret_plugin_descriptor>?
    /// Which descriptor functions exist (FI_FN_* bits).
    let functions: UInt32

    init(name: String, version: String, summary: String, abiMajor: Int, abiMinor: Int, flags: UInt32,
         libraryPath: String, descriptor: UnsafePointer<ferret_plugin_descriptor>?, functions: UInt32) {
        self.name = name
        self.version = version
        self.summary = summary
        self.abiMajor = abiMajor
        self.abiMinor = abiMinor
        self.flags = flags
        self.libraryPath = libraryPath
        self.descriptor = descriptor
        self.functions = functions
    }

    var hasAttach: Bool { functions & UInt32(FI_FN_ATTACH) != 0 }
    var hasDetach: Bool { functions & UInt32(FI_FN_DETACH) != 0 }
    var hasCollect: Bool { functions & UInt32(FI_FN_COLLECT) != 0 }
    var hasValidate: Bool { functions & UInt32(FI_FN_VALIDATE) != 0 }

    static let fnCreate: UInt32 = 64
    static let fnDestroy: UInt32 = 128

    /// The FI_FN_* bits of a descriptor.
    static func functions(of d: ferret_plugin_descriptor) -> UInt32 {
        (d.attach != nil ? UInt32(FI_FN_ATTACH) : 0) | (d.detach != nil ? UInt32(FI_FN_DETACH) : 0)
            | (d.collect != nil ? UInt32(FI_FN_COLLECT) : 0) | (d.start != nil ? UInt32(FI_FN_START) : 0)
            | (d.stop != nil ? UInt32(FI_FN_STOP) : 0) | (d.validate != nil ? UInt32(FI_FN_VALIDATE) : 0)
            | (d.create != nil ? fnCreate : 0) | (d.destroy != nil ? fnDestroy : 0)
    }

    /// What makes a descriptor unusable, whichever process loaded it.
    static func problem(name: String, kind: UInt32, flags: UInt32, functions f: UInt32) -> String? {
        if name.isEmpty { return "the descriptor has an empty name" }
        if kind != UInt32(FERRET_KIND_COLLECTOR.rawValue) { return "plugin kind \(kind) is reserved; this host runs collectors only" }
        if flags & (FERRET_COLLECTOR_PULL | FERRET_COLLECTOR_PUSH) == 0 {
            return "the descriptor sets neither FERRET_COLLECTOR_PULL nor FERRET_COLLECTOR_PUSH"
        }
        if f & fnCreate == 0 || f & fnDestroy == 0 { return "the descriptor has no create or destroy function" }
        if flags & FERRET_COLLECTOR_PULL != 0 && f & UInt32(FI_FN_COLLECT) == 0 { return "a pull collector must implement collect" }
        if flags & FERRET_COLLECTOR_PUSH != 0 && f & UInt32(FI_FN_START | FI_FN_STOP) != UInt32(FI_FN_START | FI_FN_STOP) {
            return "a push collector must implement start and stop"
        }
        return nil
    }

    public var isPush: Bool { flags & FERRET_COLLECTOR_PUSH != 0 }
    public var isPull: Bool { flags & FERRET_COLLECTOR_PULL != 0 }
    public var mode: String { isPush && isPull ? "pull+push" : isPush ? "push" : "pull" }
}

/// What the registry knows about one manifest.
public struct PluginRecord: Sendable {
    public enum Status: Sendable {
        /// The manifest is valid and its library was located; not loaded yet.
        case found
        case loaded(LoadedPlugin)
        case failed(String)
    }

    public var name: String
    public var kind: String
    public var manifestPath: String
    public var libraryPath: String?
    public var status: Status
    /// The manifest (nil when it could not be read).
    public var manifest: PluginManifest?

    public var plugin: LoadedPlugin? {
        if case .loaded(let p) = status { return p }
        return nil
    }

    public var error: String? {
        if case .failed(let e) = status { return e }
        return nil
    }
}

/// Finds manifests in plugins.d folders and loads their libraries.
public final class PluginRegistry: Sendable {
    private let logger: Logger
    /// Loaded libraries by real path: a library is loaded once, ever.
    private static let libraries = Mutex<[String: Result<LoadedPlugin, PluginLoadError>]>([:])

    public init(logger: Logger) { self.logger = logger }

    public struct PluginLoadError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Manifests found in `paths` (no library is loaded). Problems with a
    /// folder or a manifest come back as failed records naming the file.
    public static func manifests(in paths: [String]) -> [PluginRecord] {
        var out: [PluginRecord] = []
        for dir in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
                out.append(PluginRecord(name: "", kind: "", manifestPath: dir, libraryPath: nil,
                                        status: .failed("plugins folder '\(dir)' does not exist")))
                continue
            }
            if let problem = FileTrust.problem(with: dir, what: "plugins folder") {
                out.append(PluginRecord(name: "", kind: "", manifestPath: dir, libraryPath: nil, status: .failed(problem)))
                continue
            }
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
                .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
            for f in files {
                let path = (dir as NSString).appendingPathComponent(f)
                if let problem = FileTrust.problem(with: path, what: "plugin manifest") {
                    out.append(PluginRecord(name: (f as NSString).deletingPathExtension, kind: "", manifestPath: path,
                                            libraryPath: nil, status: .failed(problem)))
                    continue
                }
                do {
                    let m = try PluginManifest.load(path: path)
                    if let dup = out.first(where: { $0.name == m.name && $0.error == nil }) {
                        out.append(PluginRecord(name: m.name, kind: m.kind, manifestPath: path, libraryPath: nil,
                                                status: .failed("\(path): plugin '\(m.name)' is already provided by \(dup.manifestPath)")))
                        continue
                    }
                    let lib = locate(m.library, manifestDir: dir)
                    out.append(PluginRecord(name: m.name, kind: m.kind, manifestPath: path, libraryPath: lib,
                                            status: lib == nil ? .failed("\(path): library '\(m.library)' not found next to the manifest, on FERRET_PLUGIN_PATH, or next to the ferret executable") : .found,
                                            manifest: m))
                } catch {
                    out.append(PluginRecord(name: (f as NSString).deletingPathExtension, kind: "", manifestPath: path,
                                            libraryPath: nil, status: .failed("\(error)")))
                }
            }
        }
        return out
    }

    /// Names of plugins declared in manifests (for config validation). A
    /// declared plugin whose library is broken still counts: the agent
    /// reports the library problem when it starts, naming the file.
    public static func pluginNames(in paths: [String]) -> Set<String> {
        Set(manifests(in: paths).map(\.name).filter { !$0.isEmpty })
    }

    /// Library lookup order: next to the manifest, FERRET_PLUGIN_PATH, next to the ferret executable.
    public static func locate(_ library: String, manifestDir: String) -> String? {
        if library.hasPrefix("/") { return FileManager.default.fileExists(atPath: library) ? library : nil }
        var dirs = [manifestDir]
        if let env = ProcessInfo.processInfo.environment["FERRET_PLUGIN_PATH"] {
            dirs += env.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        dirs.append(executableDirectory)
        for d in dirs {
            let p = (d as NSString).appendingPathComponent(library)
            if FileManager.default.fileExists(atPath: p) { return p }
        }
        return nil
    }

    public static var executableDirectory: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }

    /// Finds manifests and loads every library: into the agent when its
    /// manifest says in_process, else into a one-off helper process that
    /// reports the descriptor (the agent never runs its code). Failures are
    /// returned as records; they never stop the others.
    public func load(paths: [String]) -> [PluginRecord] {
        var records = Self.manifests(in: paths)
        for i in records.indices {
            guard let lib = records[i].libraryPath, case .found = records[i].status else { continue }
            let result = records[i].manifest?.isolation == .inProcess
                ? Self.loadLibrary(lib, manifest: records[i]) : Self.describeLibrary(lib, manifest: records[i], logger: logger)
            switch result {
            case .success(let p): records[i].status = .loaded(p)
            case .failure(let e): records[i].status = .failed(e.description)
            }
        }
        return records
    }

    /// Loads one library directly (used by `ferret conformance`).
    public static func loadLibrary(_ path: String, manifest: PluginRecord? = nil) -> Result<LoadedPlugin, PluginLoadError> {
        let real = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)).map {
            $0.hasPrefix("/") ? $0 : ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent($0)
        } ?? path
        let key = URL(fileURLWithPath: real).standardizedFileURL.path
        let result = libraries.withLock { cache in
            if let hit = cache[key] { return hit }
            let r = open(path: key)
            cache[key] = r
            return r
        }
        return checkName(result, path: path, manifest: manifest)
    }

    /// The library's name must be the manifest's. Checked per manifest, never
    /// cached with the library: another manifest may name the same library correctly.
    static func checkName(_ result: Result<LoadedPlugin, PluginLoadError>, path: String,
                          manifest: PluginRecord?) -> Result<LoadedPlugin, PluginLoadError> {
        if case .success(let p) = result, let m = manifest, p.name != m.name {
            return .failure(PluginLoadError(description: "\(path): library reports plugin name '\(p.name)' but the manifest \(m.manifestPath) says '\(m.name)'"))
        }
        return result
    }

    private static func open(path: String) -> Result<LoadedPlugin, PluginLoadError> {
        func fail(_ s: String) -> Result<LoadedPlugin, PluginLoadError> { .failure(PluginLoadError(description: "\(path): \(s)")) }
        if let problem = FileTrust.problem(with: path, what: "plugin library") { return .failure(PluginLoadError(description: problem)) }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            return fail("cannot load library: \(dlerror().map { String(cString: $0) } ?? "unknown dlopen error")")
        }
        // Never dlclose: Swift and Go runtimes cannot unload safely.
        guard let sym = dlsym(handle, FERRET_PLUGIN_ENTRY_SYMBOL) else {
            return fail("no entry symbol '\(FERRET_PLUGIN_ENTRY_SYMBOL)' (is it a Ferret plugin, and is the symbol exported?)")
        }
        typealias Entry = @convention(c) (UInt32, UInt32, UnsafePointer<ferret_host_api>?) -> UnsafePointer<ferret_plugin_descriptor>?
        let entry = unsafeBitCast(sym, to: Entry.self)
        guard let d = entry(UInt32(FERRET_ABI_MAJOR), UInt32(FERRET_ABI_MINOR), HostServices.table) else {
            return fail("the entry function returned no descriptor (the plugin refused host ABI \(FERRET_ABI_MAJOR).\(FERRET_ABI_MINOR); see its log line)")
        }
        let h = UnsafeRawPointer(d).load(as: ferret_header.self)
        guard Int32(h.abi_major) == FERRET_ABI_MAJOR else {
            return fail("plugin ABI \(h.abi_major).\(h.abi_minor) is incompatible with host ABI \(FERRET_ABI_MAJOR).\(FERRET_ABI_MINOR) (major versions differ; rebuild the plugin against this ferret_plugin.h)")
        }
        guard Int(h.struct_size) >= Int(FERRET_SIZE_1_0_ferret_plugin_descriptor) else {
            return fail("descriptor struct_size \(h.struct_size) is smaller than ABI 1.0's \(FERRET_SIZE_1_0_ferret_plugin_descriptor)")
        }
        // The host's own copy: min(struct_size, sizeof) bytes, the rest zero, so
        // a 1.0 descriptor reads as one whose later functions are NULL. Kept for
        // the life of the process, as the library is.
        let copy = UnsafeMutablePointer<ferret_plugin_descriptor>.allocate(capacity: 1)
        ferret_copy(copy, MemoryLayout<ferret_plugin_descriptor>.size, d)
        let desc = copy.pointee
        let name = desc.name.string
        let functions = LoadedPlugin.functions(of: desc)
        if let p = LoadedPlugin.problem(name: name, kind: desc.kind, flags: desc.flags, functions: functions) { return fail(p) }
        return .success(LoadedPlugin(name: name, version: desc.version.string, summary: desc.description.string,
                                     abiMajor: Int(h.abi_major), abiMinor: Int(h.abi_minor), flags: desc.flags,
                                     libraryPath: path, descriptor: UnsafePointer(copy), functions: functions))
    }
}
