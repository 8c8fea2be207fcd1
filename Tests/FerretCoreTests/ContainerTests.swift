import FerretTestSupport
import Foundation
import GoTestSupport
import XCTest

/// Go services in containers (issue #16), on the harness of `TestContainer`: new
/// PID and mount namespaces, the binary only in a tmpfs mounted inside, a cgroup
/// in a Docker, containerd (kubepods) or kubelet-cgroupfs layout, created in
/// whichever hierarchies the machine has. Everything goes through the real agent
/// (`ferret run`, `ferret profile`).
final class ContainerTests: XCTestCase {
    struct Failure: Error, CustomStringConvertible { var description: String }

    static let truthArgs = ["-quiet", "-park", "50", "-heap-mib", "8", "-live-objects", "100000", "-nethttp"]

    static func pid(_ l: [String: Any]) -> Int32 { (l.resource["process.pid"] as? NSNumber)?.int32Value ?? 0 }

    /// The server spans the agent wrote for `pid`.
    static func spans(_ agent: TestSupport.AgentProcess, pid: Int32) -> Int {
        agent.lines().filter { $0.signal == "span" && $0["kind"] as? String == "server" && Self.pid($0) == pid }.count
    }

    /// Makes requests until the tracer's first span for the server shows (its
    /// probes are in), then returns the (requests, spans) baseline to count from.
    static func tracedBaseline(_ srv: TruthServer, agent: TestSupport.AgentProcess, tag: String) throws -> (Int, Int) {
        guard try Wait.until("\(tag): the first span", timeout: 30, poll: 0.15, {
            if spans(agent, pid: srv.pid) > 0 { return true }
            _ = try srv.truth("/truth")
            return false
        }) else { throw Failure(description: "\(tag): no span within 30 s\n\(agent.stderr.suffix(2000))") }
        // The spans of the requests already made (how many were traced is not
        // known) settle: a measurement window, not a wait.
        usleep(300_000)
        return (srv.requests, spans(agent, pid: srv.pid))
    }

    /// Every request after the baseline (the truth comparisons' and a burst of
    /// `burst` more) is exactly one server span.
    static func checkSpans(_ srv: TruthServer, agent: TestSupport.AgentProcess, from base: (Int, Int), tag: String,
                           burst: Int = 100) throws -> String {
        for _ in 0..<burst { _ = try srv.truth("/truth") }
        let want = srv.requests - base.0
        Wait.until("\(tag): \(want) spans", timeout: 10, poll: 0.1) { spans(agent, pid: srv.pid) - base.1 >= want }
        usleep(500_000) // nothing more arrives: a measurement window, not a wait
        let got = spans(agent, pid: srv.pid) - base.1
        XCTAssertEqual(got, want, "\(tag): server spans vs requests made")
        return "\(got)/\(want) spans"
    }

    /// The container attributes on the process's resource equal the cgroup's.
    static func checkIdentity(_ c: TestContainer, pid: Int32, agent: TestSupport.AgentProcess, tag: String) throws {
        let line = try agent.waitFor("\(tag): a point of pid \(pid)") { Self.pid($0) == pid && $0.signal == "metric" }
        let r = line.resource
        XCTAssertEqual(r["container.id"] as? String, c.containerID, "\(tag): container.id")
        XCTAssertEqual(r["container.runtime"] as? String, c.layout.runtime, "\(tag): container.runtime")
        XCTAssertEqual(r["k8s.pod.uid"] as? String, c.podUID, "\(tag): k8s.pod.uid")
        XCTAssertEqual(r["ferret.group"] as? String, "ct-\(c.layout.runtime ?? "none")-\(c.containerID)",
                       "\(tag): group template with {container.runtime} and {container.id}")
    }

    static func agentConfig(_ dir: String, match: String, extraAgent: String = "") -> String {
        """
        agent: { interval: 250ms, self_metrics_interval: 10s, rescan: 1s\(extraAgent) }
        plugins: { paths: [\(TestSupport.repoRoot)/plugins.d] }
        rules:
          - name: ct
            match: \(match)
            group: "ct-{container.runtime}-{container.id}"
            collectors: { scheduler: {}, heap: {}, http_tracer: { metrics_interval: 1s } }
        pipeline:
          sinks: [ { type: jsonl, path: \(dir)/out.jsonl } ]
        """
    }

    // MARK: - 8 toolchains × plain, static, stripped-static, each in a container

    func testEveryBuildInAContainerReadsTracesAndNamesItsContainer() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root: namespaces, cgroups, BPF") }
        let builds = try GoToolchains.buildAll(source: TruthServer.fixtureSource, flavours: [.plain, .staticBuild, .strippedStatic])
        XCTAssertGreaterThanOrEqual(builds.count, 24, "8 toolchains × 3 flavours")
        var running: [(tag: String, c: TestContainer, srv: TruthServer, isStatic: Bool)] = []
        defer { for r in running { r.srv.stop(); r.c.stop() } }
        for (i, b) in builds.enumerated() {
            let layout = TestContainer.Layout.allCases[i % TestContainer.Layout.allCases.count]
            let c = try TestContainer(layout: layout)
            let path = try c.install(b.path, as: URL(fileURLWithPath: b.path).lastPathComponent)
            let srv = try TruthServer(binary: path, arguments: Self.truthArgs, container: c)
            XCTAssertEqual(TestContainer.nsDepth(srv.pid), 1, "\(b.version) \(b.flavour): in its own PID namespace")
            XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the binary exists only inside the container")
            running.append(("\(b.version) \(b.flavour.rawValue) in \(layout.rawValue)", c, srv, b.flavour != .plain))
        }
        let dir = TestSupport.tempDir("containers")
        let agent = try TestSupport.AgentProcess(config: Self.agentConfig(dir, match: "{ runtime: go, comm: \"truthsrv-go1*\" }"), dir: dir)
        defer { agent.stop() }

        var summary: [String] = []
        for r in running {
            do {
                let base = try Self.tracedBaseline(r.srv, agent: agent, tag: r.tag)
                let figures = try GoPluginsTruthTests.compare(r.srv, isStatic: r.isStatic, tag: r.tag, agent: agent)
                let spans = try Self.checkSpans(r.srv, agent: agent, from: base, tag: r.tag)
                try Self.checkIdentity(r.c, pid: r.srv.pid, agent: agent, tag: r.tag)
                summary.append("\(r.tag): \(figures); \(spans)")
            } catch {
                XCTFail("\(r.tag): \(error)")
            }
        }
        let unverified = agent.lines().filter { ($0.name == "go.runtime.unverified" || $0.name == "go.runtime.unknown_layout") }
        XCTAssertEqual(unverified.count, 0, "no reading refused: \(unverified.prefix(3))")
        print("ContainerTests per build:\n" + summary.joined(separator: "\n"))
        XCTAssertEqual(agent.stop(), 0)
    }

    // MARK: - the agent in a container: the host's /proc mounted elsewhere

    /// The agent runs the way a DaemonSet runs it: the host's procfs bind-mounted
    /// at another path (`host_proc`). In the agent's mount namespace the target's
    /// folder in its own /proc is hidden under an empty tmpfs, so any read of the
    /// target that does not go through `host_proc` finds nothing. (All of /proc
    /// cannot be hidden: the Swift runtime reads its arguments from
    /// /proc/self/cmdline.) A stripped static program in a container is still
    /// read, traced and named.
    func testAgentReadsProcessesThroughHostProc() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root: namespaces, mounts, BPF") }
        let latest = try GoToolchains.required().last!.version
        let build = try GoToolchains.build(source: TruthServer.fixtureSource, version: latest, flavour: .strippedStatic)
        let c = try TestContainer(layout: .containerdKubepods)
        defer { c.stop() }
        let srv = try TruthServer(binary: try c.install(build, as: "app"), arguments: Self.truthArgs, container: c)
        defer { srv.stop() }
        let dir = TestSupport.tempDir("host-proc")
        let hostProc = dir + "/host/proc"
        try FileManager.default.createDirectory(atPath: hostProc, withIntermediateDirectories: true)
        let wrapper = ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                       "mount --bind /proc '\(hostProc)' && mount -t tmpfs hidden /proc/\(srv.pid) && exec \"$@\"", "sh"]
        let agent = try TestSupport.AgentProcess(
            config: Self.agentConfig(dir, match: "{ runtime: go, exe: \"*/ferret-ct-*/app\" }", extraAgent: ", host_proc: \(hostProc)"),
            dir: dir, wrapper: wrapper)
        defer { agent.stop() }
        let base = try Self.tracedBaseline(srv, agent: agent, tag: "host_proc")
        let figures = try GoPluginsTruthTests.compare(srv, isStatic: true, tag: "host_proc", agent: agent)
        let spans = try Self.checkSpans(srv, agent: agent, from: base, tag: "host_proc")
        try Self.checkIdentity(c, pid: srv.pid, agent: agent, tag: "host_proc")
        print("ContainerTests host_proc: \(figures); \(spans)")
        XCTAssertEqual(agent.stop(), 0)
    }

    // MARK: - an unreadable /proc/PID/root

    /// A program whose root file system the agent cannot list: chrooted into a
    /// tmpfs owned by nobody, mode 0700, and an agent without CAP_DAC_OVERRIDE
    /// and CAP_DAC_READ_SEARCH (as an agent with least privilege runs). The agent
    /// emits `ferret.process.root_unreadable` naming the pid and the path, once;
    /// the figures that need no file inside the root (the Go runtime through
    /// process_vm_readv and /proc/PID/exe, the spans through uprobes on the
    /// executable) go on, equal to the program's own.
    func testUnreadableRootGetsAnEventAndTheOtherFiguresContinue() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root: namespaces, cgroups, BPF, capsh") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/capsh") else {
            throw Failure(description: "capsh (Debian's libcap2-bin) is needed; scripts/setup.sh installs it")
        }
        let latest = try GoToolchains.required().last!.version
        let build = try GoToolchains.build(source: TruthServer.fixtureSource, version: latest, flavour: .strippedStatic)
        let c = try TestContainer(layout: .dockerSystemd, privateRoot: true)
        defer { c.stop() }
        let srv = try TruthServer(binary: try c.install(build, as: "privroot"), arguments: Self.truthArgs, container: c)
        defer { srv.stop() }
        let dir = TestSupport.tempDir("root-unreadable")
        let wrapper = ["/usr/sbin/capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", "exec \"$@\"", "sh"]
        let agent = try TestSupport.AgentProcess(config: Self.agentConfig(dir, match: "{ runtime: go, comm: privroot }"),
                                                 dir: dir, wrapper: wrapper)
        defer { agent.stop() }
        let path = "/proc/\(srv.pid)/root/"
        let event = try agent.waitFor("the root_unreadable event") { $0.name == "ferret.process.root_unreadable" }
        let body = event["body"] as? String ?? ""
        XCTAssertTrue(body.contains("pid \(srv.pid)") && body.contains(path), "the event names the pid and the path: \(body)")
        XCTAssertEqual(event.attributes["ferret.path"] as? String, path)
        XCTAssertEqual(Self.pid(event), srv.pid, "the event carries the process's resource")
        let base = try Self.tracedBaseline(srv, agent: agent, tag: "root unreadable")
        let figures = try GoPluginsTruthTests.compare(srv, isStatic: true, tag: "root unreadable", agent: agent)
        let spans = try Self.checkSpans(srv, agent: agent, from: base, tag: "root unreadable")
        try Self.checkIdentity(c, pid: srv.pid, agent: agent, tag: "root unreadable")
        XCTAssertEqual(agent.lines().filter { $0.name == "ferret.process.root_unreadable" }.count, 1, "said once")
        print("ContainerTests root unreadable: \(body); then \(figures); \(spans)")
        XCTAssertEqual(agent.stop(), 0)
    }

    // MARK: - ferret profile: the 3:1 split, every build in a container

    func testProfileSplitOfEveryBuildInAContainer() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root: namespaces, cgroups, perf") }
        let builds = try GoToolchains.buildAll(source: CPUProfilerTests.burner, flavours: [.plain, .staticBuild, .strippedStatic])
        XCTAssertGreaterThanOrEqual(builds.count, 24)
        let dir = TestSupport.tempDir("containers-split")
        var lines: [String] = []
        for (i, b) in builds.enumerated() {
            let layout = TestContainer.Layout.allCases[i % TestContainer.Layout.allCases.count]
            let tag = "\(b.version) \(b.flavour.rawValue) in \(layout.rawValue)"
            do {
                let c = try TestContainer(layout: layout)
                defer { c.stop() }
                let path = try c.install(b.path, as: "burner")
                let burner = try c.spawn(path, ["-mode", "split"], ready: "ready")
                defer { c.kill(burner) }
                // Burning: 0.1 s of CPU time since the ready line.
                let cpu0 = TestSupport.cpuSeconds(burner.pid) ?? 0
                Wait.until("\(tag): the burner burning", timeout: 10) { (TestSupport.cpuSeconds(burner.pid) ?? 0) >= cpu0 + 0.1 }
                XCTAssertEqual(TestContainer.nsDepth(burner.pid), 1, "\(tag): in its own PID namespace")
                lines.append(try CPUProfilerTests.checkSplit(pid: burner.pid, tag: tag, out: "\(dir)/\(b.version)-\(b.flavour.rawValue).pb.gz"))
            } catch {
                XCTFail("\(tag): \(error)")
            }
        }
        print("ContainerTests split:\n" + lines.joined(separator: "\n"))
    }

    // MARK: - nested namespaces, two builds at one path, a replaced binary

    func testNestedContainerSamePathBuildsAndReplacedBinary() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root: namespaces, cgroups, BPF") }
        let versions = try GoToolchains.required().map(\.version)
        let (old, new) = (versions[1], versions.last!)
        let oldBuild = try GoToolchains.build(source: TruthServer.fixtureSource, version: old, flavour: .strippedStatic)
        let newBuild = try GoToolchains.build(source: TruthServer.fixtureSource, version: new, flavour: .strippedStatic)
        let dir = TestSupport.tempDir("containers-paths")
        let agent = try TestSupport.AgentProcess(config: Self.agentConfig(dir, match: "{ runtime: go, exe: \"*/ferret-ct-*/app\" }"), dir: dir)
        defer { agent.stop() }

        func check(_ srv: TruthServer, _ c: TestContainer, version: String, tag: String) throws -> String {
            let base = try Self.tracedBaseline(srv, agent: agent, tag: tag)
            let figures = try GoPluginsTruthTests.compare(srv, isStatic: true, tag: tag, agent: agent)
            let spans = try Self.checkSpans(srv, agent: agent, from: base, tag: tag)
            try Self.checkIdentity(c, pid: srv.pid, agent: agent, tag: tag)
            let line = try agent.waitFor("\(tag): a point") { Self.pid($0) == srv.pid && $0.signal == "metric" }
            XCTAssertEqual(line.resource["process.runtime.version"] as? String, version, "\(tag): the build's own Go version")
            return "\(tag): \(figures); \(spans)"
        }
        var summary: [String] = []

        // A container in a container: two PID namespaces below the host's.
        let nested = try TestContainer(layout: .containerdKubepods, nested: true)
        defer { nested.stop() }
        let nestedSrv = try TruthServer(binary: try nested.install(newBuild, as: "app"), arguments: Self.truthArgs, container: nested)
        defer { nestedSrv.stop() }
        XCTAssertEqual(TestContainer.nsDepth(nestedSrv.pid), 2, "two nested PID namespaces")
        summary.append(try check(nestedSrv, nested, version: new, tag: "nested"))

        // Two containers, one in-container path (/…/ferret-ct-shared/app), two builds.
        let shared = NSTemporaryDirectory() + "ferret-ct-shared-\(getpid())"
        let a = try TestContainer(layout: .dockerSystemd, appDir: shared)
        defer { a.stop() }
        let b = try TestContainer(layout: .dockerCgroupfs, appDir: shared)
        defer { b.stop() }
        let pathA = try a.install(oldBuild, as: "app"), pathB = try b.install(newBuild, as: "app")
        XCTAssertEqual(pathA, pathB, "one path in both containers")
        var srvA = try TruthServer(binary: pathA, arguments: Self.truthArgs, container: a)
        defer { srvA.stop() }
        let srvB = try TruthServer(binary: pathB, arguments: Self.truthArgs, container: b)
        defer { srvB.stop() }
        summary.append(try check(srvA, a, version: old, tag: "same path, \(old)"))
        summary.append(try check(srvB, b, version: new, tag: "same path, \(new)"))

        // The binary at that path replaced (removed, the other build copied in: a
        // tmpfs may give the new file the old inode) and the program restarted.
        srvA.stop()
        try a.install(newBuild, as: "app")
        srvA = try TruthServer(binary: pathA, arguments: Self.truthArgs, container: a)
        summary.append(try check(srvA, a, version: new, tag: "replaced by \(new)"))
        print("ContainerTests paths:\n" + summary.joined(separator: "\n"))
        XCTAssertEqual(agent.stop(), 0)
    }
}
