import Foundation

/// Where a plugin instance runs (issue #18).
public enum Isolation: String, Sendable, Equatable, CaseIterable {
    /// In a helper process (`ferret-plugin-host`): a crash, hang or runaway
    /// allocation ends the helper, which is restarted; the agent keeps running.
    case process
    /// In the agent itself: the fastest path, for plugins shipped with Ferret.
    case inProcess = "in_process"
}

/// Byte sizes in configuration: a number of bytes, or with a unit (KiB, MiB,
/// GiB; K, M, G mean the same; KB, MB, GB are powers of ten).
public enum ByteSize {
    public static func parse(_ text: String) -> UInt64? {
        let s = text.trimmingCharacters(in: .whitespaces)
        let digits = s.prefix { $0.isNumber }
        guard !digits.isEmpty, let n = UInt64(digits) else { return nil }
        let unit = s.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        let factors: [String: UInt64] = ["": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
                                         "kb": 1000, "mb": 1_000_000, "gb": 1_000_000_000]
        guard let f = factors[unit] else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: f)
        return overflow ? nil : v
    }

    public static func format(_ bytes: UInt64) -> String {
        if bytes >= 1 << 30 && bytes % (1 << 30) == 0 { return "\(bytes >> 30) GiB" }
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes >= 1 << 10 && bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) bytes"
    }
}

extension ConfigDecoder {
    public func byteSize(_ node: YAMLNode, _ what: String, context: String = "", minimum: UInt64 = 0) -> UInt64? {
        guard let s = string(node, what, context: context) else { return nil }
        guard let v = ByteSize.parse(s) else {
            fail(node.mark, "invalid size '\(s)' for \(what)\(context.isEmpty ? "" : " \(context)"): use bytes or a unit, like '64MiB' or '1GiB'")
            return nil
        }
        guard v >= minimum else {
            fail(node.mark, "\(what)\(context.isEmpty ? "" : " \(context)") must be at least \(ByteSize.format(minimum)), got '\(s)'")
            return nil
        }
        return v
    }

    public func isolation(_ node: YAMLNode, _ what: String, context: String = "") -> Isolation? {
        guard let s = string(node, what, context: context) else { return nil }
        guard let v = Isolation(rawValue: s) else {
            let names = Isolation.allCases.map(\.rawValue)
            fail(node.mark, "unknown \(what) '\(s)'\(context.isEmpty ? "" : " \(context)"); use \(names.joined(separator: " or "))" + Spelling.hint(for: s, among: names))
            return nil
        }
        return v
    }
}

/// Linux capability names a manifest may list (capabilities(7)).
public enum LinuxCapabilities {
    public static let names = ["cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill", "cap_setgid",
                               "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service", "cap_net_broadcast",
                               "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module", "cap_sys_rawio",
                               "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
                               "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease", "cap_audit_write",
                               "cap_audit_control", "cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog", "cap_wake_alarm",
                               "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore"]
}
