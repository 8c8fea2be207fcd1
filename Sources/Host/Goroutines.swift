import ArgumentParser
import FerretCore
import Foundation
import GoIntrospection
import GoroutineProfiling

/// `ferret goroutines PID`: a census of a running Go program's goroutines, read
/// from outside it (process_vm_readv only: no stop, no write), in the formats
/// of Go's own goroutine profile.
struct Goroutines: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a Go process's goroutines from outside it: groups with counts and stacks, like /debug/pprof/goroutine?debug=1.")

    @Argument(help: "The process id.")
    var pid: Int32

    @Flag(help: "Each goroutine with its state, wait time and creator, like ?debug=2.")
    var all = false

    @Flag(help: "Print JSON.")
    var json = false

    @Option(help: "Output format: text (debug=1, or debug=2 with --all), json, or pprof (Go's goroutine profile, gzipped profile.proto, as `go tool pprof` reads it).")
    var format: Format = .text

    @Option(name: [.short, .customLong("output")], help: "Write to this file instead of standard output.")
    var output: String?

    enum Format: String, ExpressibleByArgument, CaseIterable { case text, json, pprof }

    @Flag(help: "Read the G structs only, not the stacks.")
    var noStacks = false

    @Option(help: "Read at most this many goroutines; past it every k-th is read.")
    var max: Int = 200_000

    func run() throws {
        let census: GoroutineCensus
        let result: GoroutineCensusResult
        do {
            let binary = try GoBinaryCache.binary(path: HostProc.file(pid, "exe"))
            census = try GoroutineCensus(pid: pid, binary: binary)
            result = try census.take(.init(stacks: !noStacks, maxGoroutines: max))
        } catch {
            FileHandle.standardError.write(Data("ferret goroutines: pid \(pid): \(error)\n".utf8))
            throw ExitCode(1)
        }
        let dump = GoroutineDump(census: census, result: result)
        if result.sampled {
            FileHandle.standardError.write(Data("ferret goroutines: pid \(pid): \(result.allocatedGs) goroutines allocated; sampled \(result.readGs) (--max \(max))\n".utf8))
        }
        let bytes: [UInt8]
        switch json ? .json : format {
        case .json: bytes = Array((jsonText(dump) + "\n").utf8)
        case .text: bytes = Array((all ? dump.debug2() : dump.debug1()).utf8)
        case .pprof:
            if noStacks {
                FileHandle.standardError.write(Data("ferret goroutines: --format pprof needs the stacks; drop --no-stacks\n".utf8))
                throw ExitCode(2)
            }
            let now = Int64(Date().timeIntervalSince1970 * 1e9)
            bytes = try GoroutineProfile.build(census: census, result: result, timeNanos: now,
                                               mainMapping: GoroutineProfile.executableMapping(pid: pid)).data
        }
        if let output {
            guard FileManager.default.createFile(atPath: output, contents: Data(bytes)) else {
                FileHandle.standardError.write(Data("ferret goroutines: cannot write \(output): \(String(cString: strerror(errno)))\n".utf8))
                throw ExitCode(1)
            }
        } else {
            FileHandle.standardOutput.write(Data(bytes))
        }
    }

    private func jsonText(_ dump: GoroutineDump) -> String {
        let census = dump.census
        func frame(_ f: GoroutineFrame) -> [String: Any] {
            ["function": f.function, "file": f.file, "line": f.line, "pc": String(format: "%#llx", f.pc), "inlined": f.inlined]
        }
        func goroutine(_ r: GoroutineRecord) -> [String: Any] {
            var o: [String: Any] = ["goid": r.goid, "state": r.state, "status": r.statusName, "start": census.startFunction(r),
                                    "stack_state": r.stackState.rawValue, "system": r.isSystem,
                                    "stack": dump.tracebackFrames(r).map(frame)]
            if let p = r.parentGoid { o["parent_goid"] = p }
            if let w = r.waitReason { o["wait_reason"] = w }
            if r.waitSince != 0 { o["waiting_seconds"] = Double(dump.result.nanotime - r.waitSince) / 1e9 }
            if let c = census.createdBy(r) { o["created_by"] = frame(c) }
            if r.lockedToThread { o["locked_to_thread"] = true }
            return o
        }
        var doc: [String: Any] = [
            "pid": pid, "go_version": census.goVersion, "goroutines": dump.userGoroutines.count,
            "system_goroutines": dump.result.goroutines.count - dump.userGoroutines.count,
            "allocated_gs": dump.result.allocatedGs, "sampled": dump.result.sampled, "changed": dump.result.changed,
            "bytes_read": dump.result.bytesRead,
            "groups": dump.groups().map { g -> [String: Any] in
                let r = g.goroutines[0]
                var o: [String: Any] = ["count": g.count, "state": r.state, "start": census.startFunction(r),
                                        "entry": census.entryFunction(r, frames: g.frames),
                                        "stack": g.frames.filter { $0.function != "runtime.goexit" }.map(frame)]
                if let c = census.createdBy(r) { o["created_by"] = frame(c) }
                return o
            },
        ]
        if all { doc["all"] = dump.userGoroutines.sorted { $0.goid < $1.goid }.map(goroutine) }
        let data = (try? JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
