import FerretPluginABI
import Foundation

/// A process to attach, as the host hands it to a plugin (ferret_target).
struct TargetSpec: Sendable {
    var pid: Int32
    var flags: UInt32
    var startTicks: UInt64
    var exe: String
    var comm: String
    var group: String
    var rule: String
    var goVersion: String
}

/// How an instance's calls reach its plugin: in the agent's own process, or
/// in a helper process. Every method runs on the instance's thread, one at a
/// time (the ABI's threading contract).
protocol PluginCalls: AnyObject {
    func create(name: String, config: CollectorConfig, context: HostContext) -> PluginCallResult
    func start() -> PluginCallResult
    func attach(_ t: TargetSpec) -> PluginCallResult
    func detach(_ pid: Int32) -> PluginCallResult
    func collect(_ now: UInt64) -> PluginCallResult
    func stop() -> PluginCallResult
    func destroy()
}

extension PluginCallResult {
    static func failed(_ message: String) -> PluginCallResult {
        PluginCallResult(status: Int32(FERRET_E_FAILED.rawValue), message: message, jsonPointer: nil)
    }
    static let success = PluginCallResult(status: Int32(FERRET_OK.rawValue), message: "", jsonPointer: nil)
}

/// Calls `body` with the create arguments of `name` and `config` (strings
/// live for the call): what create and validate are given in the agent.
func withCreateArgs<T>(name: String, config: CollectorConfig, host: OpaquePointer?,
                       _ body: (inout ferret_create_args) -> T) -> T {
    let arena = CStringArena()
    var args = ferret_create_args()
    args.hdr = .current(ferret_create_args.self)
    args.host = host
    args.api = HostServices.table
    args.instance_name = arena.str(name)
    args.config_json = arena.str(config.json)
    args.interval_nano = UInt64(config.interval.nanoseconds)
    return withExtendedLifetime(arena) { body(&args) }
}

/// The plugin's functions called directly (isolation: in_process).
final class InProcessCalls: PluginCalls {
    private let d: ferret_plugin_descriptor
    private var handle: UnsafeMutableRawPointer?

    init(descriptor: UnsafePointer<ferret_plugin_descriptor>) { d = descriptor.pointee }

    private func call(_ body: (inout ferret_msg_buf) -> Int32) -> PluginCallResult {
        let msg = MessageBuffer()
        let st = body(&msg.buf)
        return PluginCallResult(status: st, message: msg.message, jsonPointer: msg.jsonPointer)
    }

    func create(name: String, config: CollectorConfig, context: HostContext) -> PluginCallResult {
        call { err in
            var h: UnsafeMutableRawPointer?
            let st = withCreateArgs(name: name, config: config, host: HostServices.pointer(context)) { d.create!(&$0, &h, &err) }
            if st == Int32(FERRET_OK.rawValue) {
                guard h != nil else {
                    ferretMessage(&err, "create returned FERRET_OK but no instance")
                    return Int32(FERRET_E_FAILED.rawValue)
                }
                handle = h
            }
            return st
        }
    }

    func start() -> PluginCallResult {
        guard let h = handle, let fn = d.start else { return .failed("no instance") }
        return call { fn(h, &$0) }
    }

    func attach(_ t: TargetSpec) -> PluginCallResult {
        guard let h = handle else { return .failed("no instance") }
        guard let fn = d.attach else { return .success }
        return call { err in
            let arena = CStringArena()
            var target = ferret_target()
            target.hdr = .current(ferret_target.self)
            target.pid = t.pid
            target.flags = t.flags
            target.start_time_ticks = t.startTicks
            target.exe_path = arena.str(t.exe)
            target.comm = arena.str(t.comm)
            target.group = arena.str(t.group)
            target.rule = arena.str(t.rule)
            target.go_version = arena.str(t.goVersion)
            return fn(h, &target, &err)
        }
    }

    func detach(_ pid: Int32) -> PluginCallResult {
        guard let h = handle, let fn = d.detach else { return .success }
        return call { fn(h, pid, &$0) }
    }

    func collect(_ now: UInt64) -> PluginCallResult {
        guard let h = handle, let fn = d.collect else { return .failed("no instance") }
        return call { fn(h, now, &$0) }
    }

    func stop() -> PluginCallResult {
        guard let h = handle, let fn = d.stop else { return .success }
        return call { fn(h, &$0) }
    }

    func destroy() {
        if let h = handle { d.destroy?(h) }
        handle = nil
    }
}
