@testable import FerretPluginKit
import Foundation
import XCTest

/// The Kit's bridging: Swift errors become status codes, messages and JSON pointers.
final class KitTests: XCTestCase {
    struct Settings: Decodable { var depth: Int; var name: String? }

    func context(_ json: String) -> PluginContext {
        PluginContext(instanceName: "r/p", configJSON: json, interval: .seconds(1), emit: Emitter(api: dummyAPI, ctx: nil))
    }

    func testDecodeConfigMapsTypeErrorsToPointers() {
        XCTAssertEqual(try context("{\"depth\":3}").decodeConfig(Settings.self).depth, 3)
        do {
            _ = try context("{\"depth\":\"deep\"}").decodeConfig(Settings.self)
            XCTFail("a string is not an Int")
        } catch PluginError.invalidConfig(_, let path) {
            XCTAssertEqual(path, "/depth")
        } catch {
            XCTFail("\(error)")
        }
    }

    func testUnknownKeysAreRejected() {
        XCTAssertNoThrow(try context("{\"depth\":1}").requireKnownKeys(["depth"]))
        do {
            try context("{\"dpth\":1}").requireKnownKeys(["depth"])
            XCTFail("dpth is unknown")
        } catch PluginError.invalidConfig(let m, let path) {
            XCTAssertEqual(path, "/dpth")
            XCTAssertTrue(m.contains("unknown key 'dpth'"))
        } catch {
            XCTFail("\(error)")
        }
    }

    struct Checked: PluginSettings {
        var depth: Int?
        var every: DurationSetting?
        var budget: ByteSizeSetting?
        enum CodingKeys: String, CodingKey, CaseIterable { case depth, every, budget }
        func check() throws {
            if let d = depth, d < 1 { throw PluginError.invalidConfig("depth must be at least 1", path: "/depth") }
        }
    }

    /// PluginSettings: the allowed keys come from CodingKeys, the values are
    /// decoded, then checked; each error names its key's JSON pointer.
    func testSettingsTakeKeysFromCodingKeysAndCheckValues() throws {
        let s = try context("{\"depth\":2,\"every\":\"1m\"}").settings(Checked.self)
        XCTAssertEqual(s.depth, 2)
        XCTAssertEqual(s.every?.nanoseconds, 60_000_000_000)
        XCTAssertEqual(try context("{\"every\":5}").settings(Checked.self).every?.nanoseconds, 5_000_000_000)
        XCTAssertEqual(Checked.keyNames, ["depth", "every", "budget"])
        for (json, bytes) in [("64MiB", 64 << 20), ("512 KiB", 512 << 10), ("1G", 1 << 30), ("10MB", 10_000_000), ("4096", 4096)] {
            XCTAssertEqual(try context("{\"budget\":\"\(json)\"}").settings(Checked.self).budget?.bytes, bytes, json)
        }
        XCTAssertEqual(try context("{\"budget\":2048}").settings(Checked.self).budget?.bytes, 2048)
        let cases: [(String, String, String)] = [
            ("{\"dept\":2}", "/dept", "unknown key 'dept'; allowed: budget, depth, every"),
            ("{\"budget\":\"lots\"}", "/budget", "'lots' is not a size"),
            ("{\"budget\":\"64 parsecs\"}", "/budget", "'64 parsecs' is not a size"),
            ("{\"budget\":\"99999999999999999999G\"}", "/budget", "is not a size"),
            ("{\"depth\":0}", "/depth", "depth must be at least 1"),
            ("{\"depth\":\"two\"}", "/depth", "'depth' must be an integer"),
            ("{\"every\":\"soon\"}", "/every", "'soon' is not a duration"),
        ]
        for (json, pointer, message) in cases {
            do {
                _ = try context(json).settings(Checked.self)
                XCTFail("\(json) is refused")
            } catch PluginError.invalidConfig(let m, let path) {
                XCTAssertEqual(path, pointer, json)
                XCTAssertTrue(m.contains(message), "\(json): \(m)")
            }
        }
        XCTAssertThrowsError(try context("{\"x\":1}").settings(NoSettings.self))
        XCTAssertNoThrow(try context("{}").settings(NoSettings.self))
    }

    func testErrorsBecomeStatusAndMessage() {
        let data = UnsafeMutablePointer<CChar>.allocate(capacity: 64)
        let path = UnsafeMutablePointer<CChar>.allocate(capacity: 16)
        defer { data.deallocate(); path.deallocate() }
        var buf = ferret_msg_buf()
        buf.data = data
        buf.cap = 64
        buf.path = path
        buf.path_cap = 16
        let st = FerretExport.status(PluginError.invalidConfig(String(repeating: "x", count: 100), path: "/a/very/long/pointer"), &buf)
        XCTAssertEqual(st, Int32(FERRET_E_INVALID_CONFIG.rawValue))
        XCTAssertEqual(buf.len, 63, "truncated to the buffer, NUL-terminated")
        XCTAssertEqual(buf.path_len, 15)
        XCTAssertEqual(String(cString: path), "/a/very/long/po")
        XCTAssertEqual(FerretExport.status(PluginError.unsupported("not go"), &buf), Int32(FERRET_E_UNSUPPORTED.rawValue))
        struct Other: Error {}
        XCTAssertEqual(FerretExport.status(Other(), &buf), Int32(FERRET_E_FAILED.rawValue))
    }

    func testEmitterBuildsWellFormedRecords() {
        KitTests.captured = []
        let e = Emitter(api: dummyAPI, ctx: nil)
        let r = e.metrics([
            .gauge("a.b", 1, unit: "By", pid: 5, attributes: [("k", .string("v")), ("n", .int(3))]),
            .histogram("h", bounds: [1, 2], bucketCounts: [1, 2, 3], sum: 4, pid: 5),
        ])
        XCTAssertEqual(r, .ok)
        XCTAssertEqual(KitTests.captured, ["a.b/0/By/5/2", "h/2/-/5/0/count=6"])
    }

    nonisolated(unsafe) static var captured: [String] = []
}

/// A host table whose emit_metrics records what it sees.
nonisolated(unsafe) let dummyAPI: UnsafePointer<ferret_host_api> = {
    let t = UnsafeMutablePointer<ferret_host_api>.allocate(capacity: 1)
    t.initialize(to: ferret_host_api())
    t.pointee.emit_metrics = { _, points, count in
        let stride = Int(points!.pointee.hdr.struct_size)
        for i in 0..<count {
            let p = (UnsafeRawPointer(points!) + i * stride).assumingMemoryBound(to: ferret_metric_point.self).pointee
            let name = String(decoding: UnsafeRawBufferPointer(start: p.name.ptr, count: p.name.len), as: UTF8.self)
            let unit = p.unit.len == 0 ? "-" : String(decoding: UnsafeRawBufferPointer(start: p.unit.ptr, count: p.unit.len), as: UTF8.self)
            var s = "\(name)/\(p.kind)/\(unit)/\(p.pid)/\(p.attr_count)"
            if p.kind == 2 { s += "/count=\(p.count)" }
            KitTests.captured.append(s)
        }
        return 0
    }
    return UnsafePointer(t)
}()
