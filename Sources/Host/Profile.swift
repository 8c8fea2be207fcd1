import ArgumentParser
import FerretComponents
import FerretCore
import Foundation
import LinuxProcess
import Logging
import Pprof

/// `ferret profile PID`: a one-shot CPU profile taken by the cpu_profiler plugin
/// itself, run by an in-process agent whose only rule matches the pid and whose
/// pprof_dir sink receives the profile. What `perf record` is to perf, but
/// Go-aware and in pprof (or collapsed stacks for flame-graph tools).
struct ProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Take a CPU profile of one running process with the cpu_profiler plugin (no restart, no code change).",
        discussion: """
        Writes gzipped pprof (go tool pprof FILE) or collapsed stacks (flamegraph.pl, speedscope). \
        The plugin library is found like the agent finds it: next to the ferret executable unless --plugins names \
        a folder of manifests.
        """)

    @Argument(help: "The process id.")
    var pid: Int32

    @Option(help: "How long to sample (e.g. 10s, 1m).")
    var duration = "10s"

    @Option(help: "Samples per second per CPU-busy thread, 1 to 1000.")
    var frequency = 99

    @Option(name: [.short, .long], help: "Where to write the profile.")
    var output: String

    @Option(help: "pprof (gzipped profile.proto) or collapsed (one 'root;...;leaf count' line per stack).")
    var format = "pprof"

    @Flag(help: "Include kernel frames (needs root for kernel symbol addresses).")
    var kernelFrames = false

    @Option(help: "Bytes of user stack copied with each sample, for the frames Go's unwind tables recover and frame pointers miss (0 turns it off).")
    var stackCopy = 4096

    @Option(help: "A folder of plugin manifests holding cpu_profiler (default: the plugin next to ferret).")
    var plugins: String?

    @Option(help: "Run the profiler in the agent (in_process) or in a helper process (process).")
    var isolation = "in_process"

    func validate() throws {
        if case .failure(let e) = DurationParser.parse(duration) { throw ValidationError("--duration '\(duration)': \(e)") }
        guard (1...1000).contains(frequency) else { throw ValidationError("--frequency must be 1 to 1000, got \(frequency)") }
        guard (0...32768).contains(stackCopy), stackCopy % 8 == 0 else {
            throw ValidationError("--stack-copy must be a multiple of 8 from 0 to 32768, got \(stackCopy)")
        }
        guard Isolation(rawValue: isolation) != nil else { throw ValidationError("--isolation must be in_process or process, got '\(isolation)'") }
        guard ["pprof", "collapsed"].contains(format) else { throw ValidationError("--format must be pprof or collapsed, got '\(format)'") }
        guard pid > 0, FileManager.default.fileExists(atPath: "\(HostProc.path)/\(pid)") else {
            throw ValidationError("no process \(pid)")
        }
    }

    func run() throws {
        bootstrapLogging(.warning)
        let logger = Logger(label: "ferret")
        guard case .success(let d) = DurationParser.parse(duration) else { throw ExitCode(2) }
        let dir = NSTemporaryDirectory() + "ferret-profile-\(getpid())-\(pid)"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/plugins.d", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pluginDir: String
        if let plugins {
            pluginDir = URL(fileURLWithPath: plugins).standardizedFileURL.path
        } else {
            pluginDir = dir + "/plugins.d"
            try """
            name: cpu_profiler
            library: libferret_cpu_profiler.so
            kind: collector
            isolation: in_process
            capabilities: [cap_sys_ptrace, cap_perfmon, cap_dac_read_search, cap_ipc_lock]
            """.write(toFile: pluginDir + "/cpu_profiler.yaml", atomically: true, encoding: .utf8)
        }
        try """
        agent: { interval: 1s, rescan: 1h, self_metrics_interval: 1h, log_level: warning }
        plugins: { paths: ["\(pluginDir)"] }
        rules:
          - name: profile
            match: { pid: \(pid) }
            group: "profile"
            collectors:
              cpu_profiler: { frequency: \(frequency), window: 24h, kernel_frames: \(kernelFrames), hotspots: false, stack_copy: \(stackCopy), isolation: \(isolation) }
        pipeline:
          sinks:
            - { type: pprof_dir, path: "\(dir)/profiles" }
        """.write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)

        let agent: Agent
        do {
            agent = try Agent(configPath: dir + "/config.yaml", components: FerretComponents.all, logger: logger)
        } catch {
            report(error)
            throw ExitCode(1)
        }
        agent.start()
        Thread.sleep(forTimeInterval: Double(d.nanoseconds) / 1e9)
        agent.shutdown() // detaches: the plugin emits the window, pprof_dir writes it

        let found = (FileManager.default.enumerator(atPath: dir + "/profiles")?.allObjects as? [String] ?? [])
            .filter { $0.hasSuffix(".pb.gz") && $0.split(separator: "/").last?.hasPrefix("\(pid)-") == true }
            .sorted()
        guard let first = found.first, let bytes = FileManager.default.contents(atPath: dir + "/profiles/" + first) else {
            let alive = FileManager.default.fileExists(atPath: "\(HostProc.path)/\(pid)")
            FileHandle.standardError.write(Data(("ferret profile: no CPU samples from pid \(pid) in \(duration)"
                + (alive ? " (it did not run on a CPU, or it could not be sampled: see the messages above)\n" : " (it exited)\n")).utf8))
            throw ExitCode(1)
        }
        let profile = try PprofFile.decode(Array(bytes))
        switch format {
        case "collapsed":
            try PprofFile.collapsed(profile).write(toFile: output, atomically: true, encoding: .utf8)
        default:
            guard FileManager.default.createFile(atPath: output, contents: bytes) else {
                FileHandle.standardError.write(Data("ferret profile: cannot write \(output)\n".utf8))
                throw ExitCode(1)
            }
        }
        let samples = profile.sample.reduce(Int64(0)) { $0 + ($1.value.first ?? 0) }
        FileHandle.standardError.write(Data("ferret profile: pid \(pid): \(samples) samples over \(duration) at \(frequency) Hz -> \(output) (\(format))\n".utf8))
    }
}
