import Foundation
import Glibc
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

extension ProcessMemoryTests {
    // MARK: - Little-endian decoding

    func testLittleEndianBytes() throws {
        let b: [UInt8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xff, 0xfe]
        XCTAssertEqual(b.u8(at: 0), 0x01)
        XCTAssertEqual(b.u16(at: 0), 0x0201)
        XCTAssertEqual(b.u32(at: 1), 0x0504_0302)
        XCTAssertEqual(b.u64(at: 0), 0x0807_0605_0403_0201)
        XCTAssertEqual(b.u64(at: 2), 0xfeff_0807_0605_0403)
        XCTAssertEqual(b.i16(at: 8), -257)
        XCTAssertEqual(b.i8(at: 9), -2)
        XCTAssertEqual(b.i64(at: 2), Int64(bitPattern: 0xfeff_0807_0605_0403))
        XCTAssertEqual(b.i32(at: 6), Int32(bitPattern: 0xfeff_0807))
        XCTAssertNil(b.u64(at: 3), "runs past the end")
        XCTAssertNil(b.u16(at: 9))
        XCTAssertNil(b.u8(at: 10))
        XCTAssertNil(b.u8(at: -1))
        XCTAssertNil(b.u64(at: Int.max))
        XCTAssertNil(b.u32(at: Int.min))
        XCTAssertNil([UInt8]().u8(at: 0))
        XCTAssertEqual(b.uintptr(at: 0, size: 4), 0x0403_0201)
        XCTAssertEqual(b.uintptr(at: 0, size: 8), 0x0807_0605_0403_0201)
        XCTAssertNil(b.uintptr(at: 0, size: 2))

        // Slices: offsets count from the slice's first byte, not the base array's indices.
        let s = b[4...]
        XCTAssertEqual(s.startIndex, 4)
        XCTAssertEqual(s.u32(at: 0), 0x0807_0605)
        XCTAssertEqual(s.u16(at: 4), 0xfeff)
        XCTAssertNil(s.u64(at: 0))

        // Go varints: 300 = ac 02; the largest 10-byte one; truncated and overlong ones.
        XCTAssertEqual([0xac, 0x02].uvarint(at: 0)?.value, 300)
        XCTAssertEqual([0x00, 0xac, 0x02].uvarint(at: 1)?.length, 2)
        let maxVarint: [UInt8] = Array(repeating: 0xff, count: 9) + [0x01]
        XCTAssertEqual(maxVarint.uvarint(at: 0)?.value, UInt64.max)
        XCTAssertNil([0x80, 0x80].uvarint(at: 0))
        XCTAssertNil(([UInt8](repeating: 0x80, count: 11) + [0]).uvarint(at: 0))

        XCTAssertEqual(Array("abc\0def\0".utf8).cString(at: 4), "def")
        XCTAssertNil(Array("abc".utf8).cString(at: 0))

        var r = ByteReader(b)
        XCTAssertEqual(try r.u16(), 0x0201)
        try r.skip(2)
        XCTAssertEqual(try r.u32(), 0x0807_0605)
        XCTAssertThrowsError(try r.u32())
        XCTAssertEqual(r.offset, 8, "a failed read does not move the cursor")
        XCTAssertEqual(try r.u16(), 0xfeff)
        XCTAssertThrowsError(try r.u8())
        XCTAssertThrowsError(try r.skip(1))
        try r.skip(0)

        b.withUnsafeBytes { raw in XCTAssertEqual(raw.u32(at: 6), 0xfeff_0807) }
    }
}
