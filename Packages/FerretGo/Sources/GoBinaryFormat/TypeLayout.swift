import ELFSymbols
/// The memory layout of one struct type: its size and its members' offsets.
///
/// Members of anonymous struct members are flattened into the parent's list
/// with dotted names, after the member itself: `runtime.schedt` has `gFree`
/// (type `struct { ... }`) followed by `gFree.lock`, `gFree.stack`, ...,
/// `gFree.n`, each with its offset from the start of the parent. Members whose
/// type is a named struct (`runq runtime.gQueue`) are not expanded; that type
/// has its own layout.
public struct TypeLayout: Sendable, Codable, Equatable {
    public var name: String
    /// Byte size of the whole type.
    public var size: Int
    /// In declaration order (flattened anonymous members follow their parent member).
    public var members: [Member]

    public struct Member: Sendable, Codable, Equatable {
        /// Field name; dotted for members of anonymous struct members ("gFree.n").
        public var name: String
        /// Byte offset from the start of the outermost type.
        public var offset: Int
        /// Byte size of the member's type (pointers: the address size, 8 on amd64).
        public var size: Int
        /// The DWARF name of the member's type as Go writes it: "uint64", "*runtime.g",
        /// "runtime.gQueue", "[]string", "struct { runtime.lock runtime.mutex; ... }".
        public var type: String

        public init(name: String, offset: Int, size: Int, type: String) {
            self.name = name
            self.offset = offset
            self.size = size
            self.type = type
        }
    }

    public init(name: String, size: Int, members: [Member]) {
        self.name = name
        self.size = size
        self.members = members
    }

    public func member(_ name: String) -> Member? { members.first { $0.name == name } }
}
