import Foundation

/// A plugin's settings: its configuration keys decoded by `Decodable`, the
/// allowed keys taken from `CodingKeys` (declare it `String, CodingKey,
/// CaseIterable`), and value checks beyond the types in `check()`.
///
/// ```swift
/// struct Settings: PluginSettings {
///     var frequency: Int?
///     enum CodingKeys: String, CodingKey, CaseIterable { case frequency }
///     func check() throws {
///         if let f = frequency, !(1...1000).contains(f) {
///             throw PluginError.invalidConfig("frequency must be 1 to 1000", path: "/frequency")
///         }
///     }
/// }
/// ```
///
/// `PluginContext.settings(_:)` decodes and checks them in `init`, and the
/// plugin's ABI 1.1 `validate` does the same without making an instance, so
/// `ferret validate` reports a wrong setting with its file:line:col.
public protocol PluginSettings: Decodable {
    associatedtype CodingKeys: CodingKey, CaseIterable, RawRepresentable where CodingKeys.RawValue == String
    /// The keys the configuration may hold (default: every `CodingKeys` case).
    static var keyNames: [String] { get }
    /// Checks values beyond their types (ranges, formats, combinations).
    /// Throw `PluginError.invalidConfig` with the key's JSON pointer.
    func check() throws
}

extension PluginSettings {
    public static var keyNames: [String] { CodingKeys.allCases.map(\.rawValue) }
    public func check() throws {}
}

/// The settings of a plugin that takes none: any key is an error.
public struct NoSettings: PluginSettings {
    public enum CodingKeys: String, CodingKey, CaseIterable { case unused = "" }
    public static var keyNames: [String] { [] }
    public init(from decoder: any Decoder) throws {}
}

/// A duration setting: "10s", "500ms", "250us", "1m", "2h", or a number of
/// seconds. Decoding fails (with the key's path) on anything else.
public struct DurationSetting: Decodable, Sendable, Equatable {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let raw: Any
        if let i = try? c.decode(Int.self) { raw = i } else if let d = try? c.decode(Double.self) { raw = d } else if let s = try? c.decode(String.self) {
            raw = s
        } else {
            raw = "?"
        }
        guard let n = ConfigValues.durationNanos(raw) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "'\(raw)' is not a duration (use e.g. 500ms, 10s, 1m)"))
        }
        nanoseconds = n
    }
}

/// A size setting: a number of bytes or "64MiB", "512KiB", "1GiB", "10MB".
/// Decoding fails (with the key's path) on anything else.
public struct ByteSizeSetting: Decodable, Sendable, Equatable {
    public var bytes: Int

    public init(bytes: Int) { self.bytes = bytes }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let raw: Any = (try? c.decode(Int.self)) ?? (try? c.decode(String.self)) ?? "?"
        guard let n = ConfigValues.bytes(raw) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "'\(raw)' is not a size (use bytes or a unit, like 64MiB or 1GiB)"))
        }
        bytes = n
    }
}

extension PluginContext {
    /// Decodes the settings: unknown keys are refused (naming the allowed
    /// ones), then the values are decoded and checked. Errors carry the key's
    /// JSON pointer, which the host turns into the YAML file:line:col.
    public func settings<S: PluginSettings>(_ type: S.Type) throws -> S {
        try requireKnownKeys(Set(S.keyNames))
        let s = try decodeConfig(S.self)
        try s.check()
        return s
    }
}
