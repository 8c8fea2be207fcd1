import ELFSymbols
extension PclnTable {
    /// A function of the table.
    public struct Function: Sendable, Hashable {
        public var index: Int
        public var name: String
        /// Link-time entry address (add the load bias for a running PIE).
        public var entry: UInt64
        /// First address past the function (the next function's entry).
        public var end: UInt64
        public var size: UInt64 { end - entry }
        /// Line of the `func` keyword (Go 1.20+), else the first line with code.
        public var startLine: Int
        /// The file holding the function's entry.
        public var file: String
    }

    /// One frame of a symbolized address: innermost (inlined) first.
    public struct Frame: Sendable, Hashable {
        public var function: String
        public var file: String
        public var line: Int
        public var inlined: Bool
        /// Start line of the frame's function (0 when unknown: inlined in 1.18–1.19).
        public var startLine: Int
        /// The runtime's funcID of the frame's function (version-specific values;
        /// GoroutineTables names the wrapper's).
        public var funcID: UInt8 = 0
        /// The PC this frame stands at (link time): the looked-up PC for the
        /// innermost frame, the inlined call's PC in the function for the frames
        /// it was inlined into. What runtime.tracebackPCs records, less 1.
        public var pc: UInt64 = 0
    }
}
