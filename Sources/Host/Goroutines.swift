import ArgumentParser
import FerretCore
import Foundation
import GoIntrospection

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
        if json {
            print(jsonText(dump))
        } else {
            print(all ? dump.debug2() : dump.debug1(), terminator: "")
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
