import Foundation
import Pprof
import XCTest

final class GzipTests: XCTestCase {
    func testRoundTripAndGunzipReadsIt() throws {
        var rng = SystemRandomNumberGenerator()
        for size in [0, 1, 1000, 300_000] {
            // Half random, half repetitive: both stored and compressed blocks.
            let bytes = (0..<size).map { i in i % 2 == 0 ? UInt8.random(in: 0...255, using: &rng) : UInt8(i % 7) }
            let gz = try Gzip.compress(bytes)
            XCTAssertEqual(Array(gz.prefix(2)), [0x1f, 0x8b])
            XCTAssertEqual(try Gzip.decompress(gz), bytes, "size \(size)")

            // An independent reader: gzip(1).
            let path = try Fixture.write(gz, name: "data-\(size).gz")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/gzip")
            p.arguments = ["-dc", path]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            let out = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
            XCTAssertEqual([UInt8](out), bytes, "gzip -dc, size \(size)")
        }
    }

    func testConcatenatedMembers() throws {
        let gz = try Gzip.compress(Array("abc".utf8)) + Gzip.compress(Array("def".utf8))
        XCTAssertEqual(String(decoding: try Gzip.decompress(gz), as: UTF8.self), "abcdef")
    }

    func testCorruptOrTruncatedInputThrows() throws {
        let gz = try Gzip.compress(Array(repeating: 42, count: 10_000))
        XCTAssertThrowsError(try Gzip.decompress(Array(gz.prefix(gz.count / 2))))
        var corrupt = gz
        corrupt[gz.count - 6] ^= 0xff  // CRC-32
        XCTAssertThrowsError(try Gzip.decompress(corrupt))
        XCTAssertThrowsError(try Gzip.decompress(Array("not gzip".utf8)))
        XCTAssertThrowsError(try Gzip.decompress([]))
    }
}
