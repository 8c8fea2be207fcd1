import FerretTestSupport
import Foundation
import XCTest

/// Every plugin's commented sample.yaml, and the default config.yaml, pass
/// `ferret validate` as they are.
final class SampleConfigTests: XCTestCase {
    func testSamplesAndDefaultConfigValidate() throws {
        let plugins = TestSupport.repoRoot + "/Sources/Plugins"
        let samples = try FileManager.default.contentsOfDirectory(atPath: plugins).sorted()
            .map { "\(plugins)/\($0)/sample.yaml" }.filter { FileManager.default.fileExists(atPath: $0) }
        XCTAssertGreaterThanOrEqual(samples.count, 4)
        for f in samples + [TestSupport.repoRoot + "/config.yaml"] {
            let r = try TestSupport.run(TestSupport.ferret, ["validate", "--config", f])
            XCTAssertEqual(r.status, 0, "\(f): \(r.stderr)")
        }
    }

    /// Every pipeline component folder (each sink, each aggregator, the
    /// delivery core) has a README.md and a sample.yaml; the README shows the
    /// sample verbatim, and the sample passes `ferret validate` as it is.
    func testComponentFoldersHaveReadmeAndValidSample() throws {
        let fm = FileManager.default
        func folders(_ relative: String, excluding: Set<String> = []) throws -> [String] {
            let root = TestSupport.repoRoot + "/" + relative
            return try fm.contentsOfDirectory(atPath: root).sorted()
                .filter { !excluding.contains($0) }
                .map { root + "/" + $0 }
                .filter { var isDir: ObjCBool = false; return fm.fileExists(atPath: $0, isDirectory: &isDir) && isDir.boolValue }
        }
        let sinks = try folders("Sources/Sinks")
        let aggregators = try folders("Sources/Aggregators", excluding: ["Shared"])
        // A new component folder must come with its docs: these counts change with it.
        XCTAssertEqual(sinks.count, 9, "sink folders: \(sinks.map { ($0 as NSString).lastPathComponent })")
        XCTAssertEqual(aggregators.count, 6, "aggregator folders: \(aggregators.map { ($0 as NSString).lastPathComponent })")
        for dir in sinks + aggregators + [TestSupport.repoRoot + "/Sources/Delivery"] {
            let readmePath = dir + "/README.md", samplePath = dir + "/sample.yaml"
            guard fm.fileExists(atPath: readmePath) else {
                XCTFail("\(dir) has no README.md")
                continue
            }
            guard fm.fileExists(atPath: samplePath) else {
                XCTFail("\(dir) has no sample.yaml")
                continue
            }
            let readme = try String(contentsOfFile: readmePath, encoding: .utf8)
            let sample = try String(contentsOfFile: samplePath, encoding: .utf8)
            XCTAssertFalse(sample.isEmpty, "\(samplePath) is empty")
            XCTAssertTrue(readme.contains("## Configuration"), "\(readmePath) has no '## Configuration' section")
            XCTAssertTrue(readme.contains(sample), "\(readmePath) does not contain its sample.yaml verbatim")
            let r = try TestSupport.run(TestSupport.ferret, ["validate", "--config", samplePath])
            XCTAssertEqual(r.status, 0, "\(samplePath): \(r.stderr)")
        }
    }
}
