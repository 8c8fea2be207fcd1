/// One source-level frame of a sampled address.
///
/// A location (one address) has several frames when code was inlined there:
/// the stack element lists them innermost first, the function they were all
/// inlined into last — pprof's order for `Location.line`.
public struct PprofFrame: Hashable, Sendable {
    /// The function's name as its language spells it (`main.work`, `memcpy`).
    public var function: String
    /// The source file; empty when unknown.
    public var file: String
    /// The line in `file` executing at the address; 0 when unknown.
    public var line: Int
    /// The line where the function starts; 0 when unknown.
    public var startLine: Int

    public init(function: String, file: String = "", line: Int = 0, startLine: Int = 0) {
        self.function = function
        self.file = file
        self.line = line
        self.startLine = startLine
    }
}

/// The executable or library mapped at an address range (a `/proc/PID/maps` line).
public struct PprofMappingInfo: Hashable, Sendable {
    /// First address of the range.
    public var start: UInt64
    /// First address past the range.
    public var limit: UInt64
    /// File offset mapped at `start`.
    public var offset: UInt64
    /// The file's path, or a pseudo name such as `[vdso]`.
    public var file: String
    /// The GNU (or Go) build id; empty when unknown.
    public var buildID: String
    /// Whether the profile resolves this mapping's addresses to functions: pprof
    /// then leaves the mapping alone instead of looking for the file to symbolize it.
    public var hasFunctions: Bool

    public init(start: UInt64, limit: UInt64, offset: UInt64 = 0, file: String, buildID: String = "", hasFunctions: Bool) {
        self.start = start
        self.limit = limit
        self.offset = offset
        self.file = file
        self.buildID = buildID
        self.hasFunctions = hasFunctions
    }
}

/// One element of a sampled stack: an address, the mapping it lies in (if known),
/// and its frames (innermost first; empty when the address is not symbolized).
public typealias PprofStackElement = (address: UInt64, mapping: PprofMappingInfo?, frames: [PprofFrame])
