import Foundation

/// Builds the C descriptor for a `FerretCollector` type and bridges every
/// call: Swift errors become status codes and messages, never unwinding.
public enum FerretExport {
    nonisolated(unsafe) static var collectorType: (any FerretCollector.Type)?
    nonisolated(unsafe) static var hostAPI: UnsafePointer<ferret_host_api>?
    nonisolated(unsafe) static var descriptor: UnsafeMutablePointer<ferret_plugin_descriptor>?
    nonisolated(unsafe) static var strings: [UnsafeMutablePointer<CChar>] = []
    /// Decodes and checks a configuration as `T.Settings` (set by `entry`).
    nonisolated(unsafe) static var validator: ((PluginContext) throws -> Void)?
    private static let lock = NSLock()

    /// Call from your `@_cdecl("ferret_plugin_entry")` function. Returns the
    /// descriptor (as a raw pointer so the entry signature needs no C types).
    public static func entry<T: FerretCollector>(_ type: T.Type, _ hostMajor: UInt32, _ hostMinor: UInt32,
                                                  _ host: UnsafePointer<ferret_host_api>?) -> UnsafeRawPointer? {
        lock.lock()
        defer { lock.unlock() }
        guard let host else { return nil }
        if hostMajor != UInt32(FERRET_ABI_MAJOR) {
            let msg = "plugin '\(T.name)' was built for ABI \(FERRET_ABI_MAJOR).x but the host speaks \(hostMajor).\(hostMinor)"
            Emitter(api: host, ctx: nil).log(.error, msg)
            return nil
        }
        if let d = descriptor { return UnsafeRawPointer(d) }
        collectorType = type
        hostAPI = host
        let d = UnsafeMutablePointer<ferret_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: ferret_plugin_descriptor())
        d.pointee.hdr = header(ferret_plugin_descriptor.self)
        d.pointee.name = permanent(T.name)
        d.pointee.version = permanent(T.version)
        d.pointee.description = permanent(T.summary)
        d.pointee.kind = UInt32(FERRET_KIND_COLLECTOR.rawValue)
        d.pointee.flags = T.mode == .pull ? FERRET_COLLECTOR_PULL : FERRET_COLLECTOR_PUSH
        validator = { ctx in _ = try ctx.settings(T.Settings.self) }
        d.pointee.create = { args, out, err in FerretExport.create(args, out, err) }
        d.pointee.validate = { args, err in FerretExport.validate(args, err) }
        d.pointee.attach = { inst, target, err in
            FerretExport.call(inst, err) { c in
                guard let t = FerretExport.copyIn(target) else { throw PluginError.failed("attach: target is NULL") }
                try c.attach(PluginTarget(pid: t.pid, startTimeTicks: t.start_time_ticks, exePath: string(t.exe_path),
                                          comm: string(t.comm), group: string(t.group), rule: string(t.rule),
                                          goVersion: t.flags & FERRET_TARGET_GO != 0 ? string(t.go_version) : nil,
                                          isStatic: t.flags & FERRET_TARGET_STATIC != 0))
            }
        }
        d.pointee.detach = { inst, pid, err in FerretExport.call(inst, err) { try $0.detach(pid: pid) } }
        d.pointee.collect = { inst, now, err in FerretExport.call(inst, err) { try $0.collect(now: now) } }
        d.pointee.start = { inst, err in FerretExport.call(inst, err) { try $0.start() } }
        d.pointee.stop = { inst, err in FerretExport.call(inst, err) { try $0.stop() } }
        d.pointee.destroy = { inst in
            guard let inst else { return }
            Unmanaged<Box>.fromOpaque(inst).release()
        }
        descriptor = d
        return UnsafeRawPointer(d)
    }

    final class Box { let collector: any FerretCollector; init(_ c: any FerretCollector) { collector = c } }

    /// A struct the host wrote, copied as its header says (an older host's
    /// struct has fewer fields: the rest read as zero).
    static func copyIn<T>(_ p: UnsafePointer<T>?) -> T? {
        guard let p else { return nil }
        let out = UnsafeMutablePointer<T>.allocate(capacity: 1)
        defer { out.deallocate() }
        ferret_copy(out, MemoryLayout<T>.size, p)
        return out.pointee
    }

    static func validate(_ args: UnsafePointer<ferret_create_args>?, _ err: UnsafeMutablePointer<ferret_msg_buf>?) -> Int32 {
        guard let a = copyIn(args), let validator, let api = a.api ?? hostAPI else {
            write(err, "validate: missing arguments", nil)
            return Int32(FERRET_E_FAILED.rawValue)
        }
        let ctx = PluginContext(instanceName: string(a.instance_name), configJSON: a.config_json.len == 0 ? "{}" : string(a.config_json),
                                interval: .nanoseconds(Int64(a.interval_nano)), emit: Emitter(api: api, ctx: nil))
        do {
            try validator(ctx)
            return Int32(FERRET_OK.rawValue)
        } catch {
            return status(error, err)
        }
    }

    static func create(_ args: UnsafePointer<ferret_create_args>?, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                       _ err: UnsafeMutablePointer<ferret_msg_buf>?) -> Int32 {
        guard let a = copyIn(args), let type = collectorType, let api = a.api ?? hostAPI else {
            write(err, "create: missing arguments", nil)
            return Int32(FERRET_E_FAILED.rawValue)
        }
        let ctx = PluginContext(instanceName: string(a.instance_name), configJSON: a.config_json.len == 0 ? "{}" : string(a.config_json),
                                interval: .nanoseconds(Int64(a.interval_nano)), emit: Emitter(api: api, ctx: a.host))
        do {
            let c = try type.init(context: ctx)
            out?.pointee = Unmanaged.passRetained(Box(c)).toOpaque()
            return Int32(FERRET_OK.rawValue)
        } catch {
            return status(error, err)
        }
    }

    static func call(_ inst: UnsafeMutableRawPointer?, _ err: UnsafeMutablePointer<ferret_msg_buf>?,
                     _ body: (any FerretCollector) throws -> Void) -> Int32 {
        guard let inst else {
            write(err, "instance is NULL", nil)
            return Int32(FERRET_E_FAILED.rawValue)
        }
        let box = Unmanaged<Box>.fromOpaque(inst).takeUnretainedValue()
        do {
            try body(box.collector)
            return Int32(FERRET_OK.rawValue)
        } catch {
            return status(error, err)
        }
    }

    static func status(_ error: any Error, _ err: UnsafeMutablePointer<ferret_msg_buf>?) -> Int32 {
        switch error {
        case PluginError.invalidConfig(let m, let p):
            write(err, m, p)
            return Int32(FERRET_E_INVALID_CONFIG.rawValue)
        case PluginError.unsupported(let m):
            write(err, m, nil)
            return Int32(FERRET_E_UNSUPPORTED.rawValue)
        case PluginError.failed(let m):
            write(err, m, nil)
            return Int32(FERRET_E_FAILED.rawValue)
        default:
            write(err, "\(error)", nil)
            return Int32(FERRET_E_FAILED.rawValue)
        }
    }

    static func write(_ err: UnsafeMutablePointer<ferret_msg_buf>?, _ message: String, _ path: String?) {
        guard let e = err else { return }
        func put(_ s: String, _ dst: UnsafeMutablePointer<CChar>?, _ cap: Int) -> Int {
            guard let dst, cap > 0 else { return 0 }
            let bytes = Array(s.utf8.prefix(cap - 1))
            for (i, b) in bytes.enumerated() { dst[i] = CChar(bitPattern: b) }
            dst[bytes.count] = 0
            return bytes.count
        }
        e.pointee.len = put(message, e.pointee.data, e.pointee.cap)
        if let path { e.pointee.path_len = put(path, e.pointee.path, e.pointee.path_cap) }
    }

    private static func permanent(_ s: String) -> ferret_str {
        let p = strdup(s)!
        strings.append(p)
        return ferret_str(ptr: p, len: strlen(p))
    }
}

func string(_ s: ferret_str) -> String {
    guard let p = s.ptr, s.len > 0 else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: p, count: s.len), as: UTF8.self)
}
