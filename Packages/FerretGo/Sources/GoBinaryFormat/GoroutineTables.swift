import Foundation

/// The runtime's own names for goroutine states and wait reasons, and the
/// funcID of compiler-made wrappers, per Go minor version. Generated from each
/// toolchain's runtime sources by tools/goroutinegen/generate.py into
/// Layouts/goroutines.json (waitReasonStrings, gStatusStrings, abi.FuncIDWrapper).
public struct GoroutineTables: Sendable {
    /// Wait reason texts by value (`waitReasonStrings`); index 0 is "".
    public let waitReasons: [String]
    /// `gStatusStrings` by status value (the scan bit dropped).
    public let statusNames: [UInt32: String]
    /// The `_G*` constants by name without the prefix ("waiting": 4, "scan": 0x1000).
    public let statuses: [String: UInt32]
    public let funcIDWrapper: UInt8
    /// The toolchain the row was generated from ("go1.27.3").
    public let generatedFrom: String
    /// False when the binary's minor version has no row and the newest older one is used.
    public let exact: Bool

    /// The row for `goVersion` ("go1.22.10", "go1.27rc1"): its minor version's, else
    /// the newest row of an older minor version (marked not exact); nil before Go 1.19.
    public static func forVersion(_ goVersion: String) -> GoroutineTables? {
        guard let want = minor(goVersion) else { return nil }
        let rows = all
        if let r = rows[want.text] { return r.with(exact: true) }
        let older = rows.values.filter { (minor($0.generatedFrom)?.number ?? 0) < want.number }
        return older.max { (minor($0.generatedFrom)?.number ?? 0) < (minor($1.generatedFrom)?.number ?? 0) }?.with(exact: false)
    }

    /// The text `goroutineheader` prints for a status and wait reason, without the
    /// minutes and flags: the wait reason for a waiting (or leaked) goroutine that
    /// has one, else the status name ("???" for an unknown status).
    public func stateText(status: UInt32, waitReason: UInt8) -> String {
        let s = status & ~(statuses["scan"] ?? 0x1000)
        if (s == statuses["waiting"] || s == statuses["leaked"]) && waitReason != 0 {
            return Int(waitReason) < waitReasons.count ? waitReasons[Int(waitReason)] : "unknown wait reason"
        }
        return statusNames[s] ?? "???"
    }

    // MARK: - loading

    static let all: [String: GoroutineTables] = (try? load(PackageResources.goroutines_json)) ?? [:]

    static func load(_ bytes: [UInt8]) throws -> [String: GoroutineTables] {
        struct Doc: Decodable {
            struct Row: Decodable {
                var waitReasons: [String]
                var statusNames: [String: String]
                var statuses: [String: UInt32]
                var funcIDWrapper: UInt8
                var from: String
            }
            var versions: [String: Row]
        }
        let doc = try JSONDecoder().decode(Doc.self, from: Data(bytes))
        return doc.versions.mapValues { r in
            GoroutineTables(waitReasons: r.waitReasons,
                            statusNames: Dictionary(uniqueKeysWithValues: r.statusNames.compactMap { k, v in UInt32(k).map { ($0, v) } }),
                            statuses: r.statuses, funcIDWrapper: r.funcIDWrapper, generatedFrom: r.from, exact: true)
        }
    }

    private func with(exact: Bool) -> GoroutineTables {
        GoroutineTables(waitReasons: waitReasons, statusNames: statusNames, statuses: statuses, funcIDWrapper: funcIDWrapper,
                        generatedFrom: generatedFrom, exact: exact)
    }

    /// "go1.22.10" -> ("go1.22", 1022).
    private static func minor(_ v: String) -> (text: String, number: Int)? {
        guard v.hasPrefix("go1.") else { return nil }
        let digits = v.dropFirst(4).prefix { $0.isNumber }
        guard let m = Int(digits) else { return nil }
        return ("go1.\(m)", 1000 + m)
    }
}
