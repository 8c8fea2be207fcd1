/// Contiguous bytes that little-endian integers can be decoded from, bounds-checked.
///
/// Offsets are **byte offsets from the first byte of the value**, not collection
/// indices: for an `ArraySlice`, `slice.u32(at: 0)` reads the slice's first four bytes
/// whatever its `startIndex` is. Every accessor returns `nil` when the value would
/// extend past the end (or the offset is negative) instead of trapping, does no
/// allocation, and works at any alignment. They are `@inlinable` so they compile to a
/// bounds check and one unaligned load in the caller.
///
/// ```swift
/// let header = try memory.read(addr, count: 16)
/// guard let magic = header.u32(at: 0), let nfunc = header.u64(at: 8) else { ... }
/// ```
///
/// For sequential decoding with errors instead of optionals, use ``ByteReader``.
public protocol LittleEndianBytes {
    /// Calls `body` with the bytes. `[UInt8]` and `ArraySlice<UInt8>` already provide this.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: LittleEndianBytes where Element == UInt8 {}
extension ArraySlice: LittleEndianBytes where Element == UInt8 {}
extension ContiguousArray: LittleEndianBytes where Element == UInt8 {}

extension UnsafeRawBufferPointer: LittleEndianBytes {
    @inlinable
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try body(self) }
}

extension LittleEndianBytes {
    /// The little-endian integer of type `T` at byte `offset`, or nil if out of bounds.
    @inlinable
    public func integer<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        withUnsafeBytes { raw -> T? in
            guard offset >= 0, offset <= raw.count - MemoryLayout<T>.size else { return nil }
            return T(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
    }

    @inlinable public func u8(at offset: Int) -> UInt8? { integer(UInt8.self, at: offset) }
    @inlinable public func u16(at offset: Int) -> UInt16? { integer(UInt16.self, at: offset) }
    @inlinable public func u32(at offset: Int) -> UInt32? { integer(UInt32.self, at: offset) }
    @inlinable public func u64(at offset: Int) -> UInt64? { integer(UInt64.self, at: offset) }
    @inlinable public func i8(at offset: Int) -> Int8? { integer(Int8.self, at: offset) }
    @inlinable public func i16(at offset: Int) -> Int16? { integer(Int16.self, at: offset) }
    @inlinable public func i32(at offset: Int) -> Int32? { integer(Int32.self, at: offset) }
    @inlinable public func i64(at offset: Int) -> Int64? { integer(Int64.self, at: offset) }

    /// A pointer-sized unsigned value (`size` 4 or 8, the target's pointer size), widened to 64 bits.
    @inlinable
    public func uintptr(at offset: Int, size: Int) -> UInt64? {
        switch size {
        case 8: u64(at: offset)
        case 4: u32(at: offset).map(UInt64.init)
        default: nil
        }
    }

    /// A Go/protobuf unsigned varint (7 bits per byte, low group first, high bit = more)
    /// at `offset`: its value and how many bytes it took. Nil if it runs past the end
    /// or is longer than 10 bytes.
    @inlinable
    public func uvarint(at offset: Int) -> (value: UInt64, length: Int)? {
        withUnsafeBytes { raw -> (value: UInt64, length: Int)? in
            guard offset >= 0 else { return nil }
            var value: UInt64 = 0
            var shift: UInt64 = 0
            var i = offset
            while i < raw.count && i - offset < 10 {
                let b = raw[i]
                value |= UInt64(b & 0x7f) << shift
                i += 1
                if b < 0x80 { return (value, i - offset) }
                shift += 7
            }
            return nil
        }
    }

    /// The bytes from `offset` up to (not including) the first NUL, decoded as UTF-8
    /// (invalid sequences repaired). Nil if there is no NUL within `maxLength` bytes
    /// or before the end.
    public func cString(at offset: Int, maxLength: Int = 4096) -> String? {
        withUnsafeBytes { raw -> String? in
            guard offset >= 0, offset <= raw.count else { return nil }
            let end = Swift.min(raw.count, offset + maxLength)
            guard let nul = raw[offset..<end].firstIndex(of: 0) else { return nil }
            return String(decoding: UnsafeRawBufferPointer(rebasing: raw[offset..<nul]), as: UTF8.self)
        }
    }
}

/// A cursor over ``LittleEndianBytes`` for decoding fields one after another.
/// Reads throw ``ByteReader/OutOfBounds`` (and leave `offset` unchanged) instead of trapping.
///
/// ```swift
/// var r = ByteReader(bytes)
/// let magic = try r.u32(); try r.skip(4); let count = try r.u64()
/// ```
public struct ByteReader<Bytes: LittleEndianBytes> {
    public struct OutOfBounds: Error, Sendable, CustomStringConvertible {
        public var offset: Int
        public var size: Int
        public init(offset: Int, size: Int) { self.offset = offset; self.size = size }
        public var description: String { "read of \(size) bytes at offset \(offset) is out of bounds" }
    }

    public let bytes: Bytes
    /// The byte offset of the next read.
    public var offset: Int

    @inlinable public init(_ bytes: Bytes, offset: Int = 0) { self.bytes = bytes; self.offset = offset }

    @inlinable
    public mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(OutOfBounds) -> T {
        guard let v = bytes.integer(T.self, at: offset) else { throw OutOfBounds(offset: offset, size: MemoryLayout<T>.size) }
        offset += MemoryLayout<T>.size
        return v
    }

    @inlinable public mutating func u8() throws(OutOfBounds) -> UInt8 { try integer(UInt8.self) }
    @inlinable public mutating func u16() throws(OutOfBounds) -> UInt16 { try integer(UInt16.self) }
    @inlinable public mutating func u32() throws(OutOfBounds) -> UInt32 { try integer(UInt32.self) }
    @inlinable public mutating func u64() throws(OutOfBounds) -> UInt64 { try integer(UInt64.self) }
    @inlinable public mutating func i32() throws(OutOfBounds) -> Int32 { try integer(Int32.self) }
    @inlinable public mutating func i64() throws(OutOfBounds) -> Int64 { try integer(Int64.self) }

    /// A pointer-sized value (`size` 4 or 8).
    @inlinable
    public mutating func uintptr(size: Int) throws(OutOfBounds) -> UInt64 {
        guard let v = bytes.uintptr(at: offset, size: size) else { throw OutOfBounds(offset: offset, size: size) }
        offset += size
        return v
    }

    @inlinable
    public mutating func uvarint() throws(OutOfBounds) -> UInt64 {
        guard let (v, n) = bytes.uvarint(at: offset) else { throw OutOfBounds(offset: offset, size: 1) }
        offset += n
        return v
    }

    /// Advances by `count` bytes (it may land exactly at the end).
    @inlinable
    public mutating func skip(_ count: Int) throws(OutOfBounds) {
        let total = bytes.withUnsafeBytes { $0.count }
        guard count >= 0, offset <= total - count else { throw OutOfBounds(offset: offset, size: count) }
        offset += count
    }
}
