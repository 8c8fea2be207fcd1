import FerretPluginABI
import Foundation
import Logging
import Synchronization

extension PluginRegistry {
    /// The helper program (`ferret-plugin-host`).
    public static var pluginHostExecutable: String { HelperLaunch.executable }

    /// A helper's memory limit when neither the manifest nor the rule sets one.
    public static let defaultMemoryLimit: UInt64 = 512 << 20

    /// Descriptors read through helpers, by library file and helper settings.
    private static let described = Mutex<[String: Result<LoadedPlugin, PluginLoadError>]>([:])

    /// Loads a library in a one-off helper process and reads its descriptor
    /// (checked as an in-process load would be). Cached per file version.
    static func describeLibrary(_ path: String, manifest: PluginRecord?, logger: Logger) -> Result<LoadedPlugin, PluginLoadError> {
        if let problem = FileTrust.problem(with: path, what: "plugin library") { return .failure(PluginLoadError(description: problem)) }
        var st = stat()
        _ = stat(path, &st)
        let m = manifest?.manifest
        let key = "\(path)|\(st.st_dev)|\(st.st_ino)|\(st.st_size)|\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)|\(m?.user ?? "")|\(m?.capabilities ?? [])"
        let result: Result<LoadedPlugin, PluginLoadError>
        if let hit = described.withLock({ $0[key] }) { result = hit } else {
            let launch = HelperLaunch(library: path, instanceName: (path as NSString).lastPathComponent, user: m?.user,
                                      capabilities: m?.capabilities ?? [], memoryLimit: m?.memoryLimit ?? defaultMemoryLimit)
            let (r, desc, _) = HelperCalls.describe(launch: launch, timeout: .seconds(10), logger: logger)
            if let desc, r.ok {
                if let p = LoadedPlugin.problem(name: desc.name, kind: desc.kind, flags: desc.flags, functions: desc.functions) {
                    result = .failure(PluginLoadError(description: "\(path): \(p)"))
                } else if desc.abiMajor != Int(FERRET_ABI_MAJOR) {
                    result = .failure(PluginLoadError(description: "\(path): plugin ABI \(desc.abiMajor).\(desc.abiMinor) is incompatible with host ABI \(FERRET_ABI_MAJOR).\(FERRET_ABI_MINOR)"))
                } else {
                    result = .success(LoadedPlugin(name: desc.name, version: desc.version, summary: desc.summary, abiMajor: desc.abiMajor,
                                                   abiMinor: desc.abiMinor, flags: desc.flags, libraryPath: path, descriptor: nil,
                                                   functions: desc.functions))
                }
            } else {
                let why = r.message.hasPrefix(path) ? r.message : "\(path): \(r.message)"
                result = .failure(PluginLoadError(description: why + " (loaded in a helper process: isolation process)"))
            }
            described.withLock { $0[key] = result }
        }
        return checkName(result, path: path, manifest: manifest)
    }

    /// Where and how an instance of `record`'s plugin runs for collector `c`:
    /// the rule's isolation, else the manifest's; a plugin described by a
    /// helper is loaded into the agent when a rule wants it in_process.
    public static func plan(for record: PluginRecord, collector c: CollectorConfig, instanceName: String)
        -> Result<(LoadedPlugin, IsolationPlan), PluginLoadError> {
        guard let plugin = record.plugin, let lib = record.libraryPath else {
            return .failure(PluginLoadError(description: record.error ?? "not loaded"))
        }
        let m = record.manifest
        switch c.isolation ?? m?.isolation ?? .process {
        case .inProcess:
            if let d = plugin.descriptor { return .success((plugin, .inProcess(d))) }
            switch loadLibrary(lib, manifest: record) {
            case .success(let p): return .success((p, .inProcess(p.descriptor!)))
            case .failure(let e): return .failure(e)
            }
        case .process:
            var policy = RestartPolicy()
            policy.maxCrashes = c.maxCrashes
            policy.window = c.crashWindow
            let launch = HelperLaunch(library: lib, instanceName: instanceName, user: m?.user, capabilities: m?.capabilities ?? [],
                                      memoryLimit: c.memoryLimit ?? m?.memoryLimit ?? defaultMemoryLimit)
            return .success((plugin, .process(launch, policy)))
        }
    }
}
