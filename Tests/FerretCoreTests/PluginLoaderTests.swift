@testable import FerretCore
import Foundation
import Logging
import XCTest

/// Each broken plugin fails with a message naming the file and the reason,
/// and the good plugins beside it still load.
final class PluginLoaderTests: XCTestCase {
    let logger = Logger(label: "test")

    func loadDir(_ setup: (String) throws -> Void) throws -> [PluginRecord] {
        let dir = TestSupport.tempDir("plugins.d")
        try setup(dir)
        return PluginRegistry(logger: logger).load(paths: [dir])
    }

    func testGoodAndBadPluginsSideBySide() throws {
        let good = try TestSupport.examplePlugin()
        let wrong = try TestSupport.fixture("wrong_abi")
        let noEntry = try TestSupport.fixture("no_entry")
        let records = try loadDir { dir in
            TestSupport.manifest(in: dir, name: "fdcount", library: good)
            TestSupport.manifest(in: dir, name: "wrong_abi", library: wrong)
            TestSupport.manifest(in: dir, name: "no_entry", library: noEntry)
            // Not an ELF file at all: dlopen fails.
            try "not a library".write(toFile: dir + "/libbroken.so", atomically: true, encoding: .utf8)
            TestSupport.manifest(in: dir, name: "broken", library: "libbroken.so")
        }
        let byName = Dictionary(uniqueKeysWithValues: records.map { ($0.name, $0) })
        XCTAssertNotNil(byName["fdcount"]?.plugin, "the good plugin loads: \(byName["fdcount"]?.error ?? "")")
        XCTAssertEqual(byName["fdcount"]?.plugin?.version, "1.0.0")

        let w = try XCTUnwrap(byName["wrong_abi"]?.error)
        XCTAssertTrue(w.hasPrefix(wrong + ": plugin ABI 99.0 is incompatible with host ABI 1.0"), w)

        let n = try XCTUnwrap(byName["no_entry"]?.error)
        XCTAssertTrue(n.hasPrefix(noEntry + ": no entry symbol 'ferret_plugin_entry'"), n)

        let b = try XCTUnwrap(byName["broken"]?.error)
        XCTAssertTrue(b.contains("libbroken.so: cannot load library: "), b)
        XCTAssertTrue(b.contains("invalid ELF header") || b.contains("file too short"), "carries the dlerror text: \(b)")
    }

    func testMissingLibraryNamesTheManifest() throws {
        let records = try loadDir { dir in TestSupport.manifest(in: dir, name: "ghost", library: "libghost.so") }
        let e = try XCTUnwrap(records.first?.error)
        XCTAssertTrue(e.contains("ghost.yaml: library 'libghost.so' not found next to the manifest, on FERRET_PLUGIN_PATH"), e)
    }

    func testTwoManifestsForOneNameAreReported() throws {
        let lib = try TestSupport.fixture("counter")
        let records = try loadDir { dir in
            TestSupport.manifest(in: dir, name: "counter", library: lib)
            try "name: counter\nlibrary: \(lib)\nkind: collector\n".write(toFile: dir + "/zz-counter-again.yaml", atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(records.count, 2)
        XCTAssertNotNil(records[0].plugin, records[0].error ?? "")
        let e = try XCTUnwrap(records[1].error)
        XCTAssertTrue(e.hasSuffix("zz-counter-again.yaml: plugin 'counter' is already provided by \(records[0].manifestPath)"), e)
    }

    func testWorldWritablePluginsDirIsRefused() throws {
        let good = try TestSupport.examplePlugin()
        let dir = TestSupport.tempDir("plugins.d")
        TestSupport.manifest(in: dir, name: "fdcount", library: good)
        chmod(dir, 0o777)
        let records = PluginRegistry(logger: logger).load(paths: [dir])
        XCTAssertEqual(records.count, 1)
        let e = try XCTUnwrap(records[0].error)
        XCTAssertTrue(e.contains("plugins folder '\(dir)' is world-writable (mode 777); refusing it"), e)
        XCTAssertNil(records[0].plugin)
    }

    func testLibraryOwnedByAnotherUserIsRefused() throws {
        try XCTSkipIf(geteuid() != 0, "needs root to chown a file to another user; CI runs as root")
        let src = try TestSupport.fixture("counter")
        let dir = TestSupport.tempDir("plugins.d")
        let lib = dir + "/libcounter_other.so"
        try FileManager.default.copyItem(atPath: src, toPath: lib)
        XCTAssertEqual(chown(lib, 65534, 65534), 0)
        TestSupport.manifest(in: dir, name: "counter", library: lib)
        let records = PluginRegistry(logger: logger).load(paths: [dir])
        let e = try XCTUnwrap(records.first?.error)
        XCTAssertTrue(e.contains("plugin library '\(lib)' is owned by uid 65534"), e)
    }

    func testManifestNameMustMatchDescriptor() throws {
        let lib = try TestSupport.fixture("counter")
        let records = try loadDir { dir in TestSupport.manifest(in: dir, name: "not_counter", library: lib) }
        let e = try XCTUnwrap(records.first?.error)
        XCTAssertTrue(e.contains("library reports plugin name 'counter' but the manifest"), e)
    }

    func testLookupOrderFindsLibraryNextToManifestFirst() throws {
        let src = try TestSupport.fixture("counter")
        let dir = TestSupport.tempDir("plugins.d")
        try FileManager.default.copyItem(atPath: src, toPath: dir + "/libcounter_local.so")
        XCTAssertEqual(PluginRegistry.locate("libcounter_local.so", manifestDir: dir), dir + "/libcounter_local.so")
        // Next to the ferret executable (how a plain `swift build` works without install):
        // the test runner lives in the same products folder.
        XCTAssertEqual(PluginRegistry.locate("libferret_procio.so", manifestDir: dir), TestSupport.productsDir + "/libferret_procio.so")
    }

    func testConformanceOfExamplePlugins() throws {
        let c = Conformance.run(library: try TestSupport.examplePlugin(), logger: logger)
        XCTAssertTrue(c.passed, c.text)
        XCTAssertTrue(c.text.contains("PASS  unknown config key"), c.text)
        let swiftPlugin = Conformance.run(library: TestSupport.productsDir + "/libferret_procio.so", logger: logger)
        XCTAssertTrue(swiftPlugin.passed, swiftPlugin.text)
        XCTAssertTrue(swiftPlugin.text.contains("metric point(s)"), swiftPlugin.text)
    }

    func testConformanceFailsABrokenPlugin() throws {
        let c = Conformance.run(library: try TestSupport.fixture("wrong_abi"), logger: logger)
        XCTAssertFalse(c.passed)
        let failing = Conformance.run(library: try TestSupport.fixture("create_fails"), logger: logger)
        XCTAssertFalse(failing.passed, failing.text)
        XCTAssertTrue(failing.text.contains("FAIL  create: status 2: create_fails: refusing on purpose"), failing.text)
    }

    /// A detach that arrives while the attach of the same pid is still queued or
    /// running (a process that exits, or execs again, within the attach) goes
    /// behind it: the plugin is told, and a new attach of the pid is not refused
    /// as a duplicate. Found in CI: the tracer said "pid N is already traced".
    func testDetachDuringAttachIsQueuedBehindIt() throws {
        guard case .success(let plugin) = PluginRegistry.loadLibrary(try TestSupport.fixture("counter")) else {
            return XCTFail("the counter fixture loads")
        }
        let sink = MemorySink()
        let runner = SinkRunner(name: "memory", type: "memory", identity: "", sink: sink, buffer: 1 << 16, logger: logger)
        let pipeline = Pipeline(queueSize: 1 << 16, sinks: [runner], logger: logger)
        pipeline.start()
        defer { pipeline.shutdown(timeout: 2) }
        let root = YAMLNode(.mapping([]), mark: SourceMark(file: "<test>", line: 1, column: 1))
        let config = CollectorConfig(plugin: plugin.name, mark: root.mark, json: "{\"attach_sleep_ms\":300}", node: root,
                                     interval: .seconds(60), timeout: .seconds(5))
        let inst = PluginInstance(plugin: plugin, rule: "r", config: config, pipeline: pipeline, fallback: Resource([]), logger: logger)
        XCTAssertTrue(inst.create().ok)
        defer { inst.shutdown() }
        let me = ProcFS().facts(pid: getpid())!
        var other = me
        other.pid = getppid()
        let done = DispatchGroup()
        func attach(_ f: ProcessFacts) {
            done.enter()
            inst.attach(f, group: "g", resource: Resource.forProcess(f, group: "g", rule: "r", host: "localhost")) { r in
                XCTAssertTrue(r.ok, r.message)
                done.leave()
            }
        }
        // Attach, detach at once, attach again (the exec case); and attach then
        // detach at once (the exit case).
        attach(me)
        inst.detach(pid: me.pid)
        attach(me)
        attach(other)
        inst.detach(pid: other.pid)
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        // The detach of `other` is queued after its attach; wait for it to run.
        let deadline = Date().addingTimeInterval(5)
        var events: [(String, Int64?)] = []
        while Date() < deadline {
            events = sink.signals.compactMap { if case .event(let e) = $0 { return (e.name, e.resource.pid) } else { return nil } }
            if events.count >= 5 { break }
            usleep(20_000)
        }
        let mine = events.filter { $0.1 == Int64(me.pid) }.map(\.0), others = events.filter { $0.1 == Int64(other.pid) }.map(\.0)
        XCTAssertEqual(mine, ["counter.attached", "counter.detached", "counter.attached"], "\(events)")
        XCTAssertEqual(others, ["counter.attached", "counter.detached"], "\(events)")
        XCTAssertEqual(inst.attachedPids, [me.pid], "only the pid attached last stays attached")
    }
}
