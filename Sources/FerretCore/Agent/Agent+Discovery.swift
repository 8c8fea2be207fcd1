import Foundation
import Logging

// Discovery, on the control queue: the rescan of /proc, the netlink process
// events, matching a process against the rules, attaching and releasing it.
extension Agent {
    // MARK: - discovery (control queue)

    func rescan(initial: Bool = false) {
        let live = Set(procfs.pids())
        for pid in tracked.keys where !live.contains(pid) { release(pid, exited: true, exitCode: nil) }
        for pid in live.sorted() {
            let ticks = procfs.startTicks(pid: pid)
            if let t = tracked[pid] {
                if ticks == t.facts.startTicks { continue }
                // Seen by its fork and exec only (start time not read): the same
                // process when its executable is still the one recorded.
                if t.facts.startTicks == 0, let ticks, let f = procfs.executableFacts(pid: pid, stat: false),
                   f.exePath == t.facts.exePath {
                    tracked[pid]?.facts.startTicks = ticks
                    continue
                }
                // Another process under the pid (its exit was missed), or a new image.
                release(pid, exited: t.facts.startTicks != 0, exitCode: nil)
            }
            if let facts = procfs.executableFacts(pid: pid) { consider(facts, kernelNanos: nil) }
        }
    }

    func handle(_ changes: [ProcessEventWatcher.Change]) {
        for c in changes {
            switch c {
            case .forked(let pid, let parent, let ns):
                // A fork runs its parent's image: when no rule wanted the parent
                // (by anything but its pid), nothing need be read for the child.
                // It is read when it execs, or by the rescan.
                if let p = tracked[parent], p.rule == nil, matcher.pidRulesAllow(pid),
                   tracked[pid] == nil || tracked[pid]?.rule == nil {
                    var facts = p.facts
                    facts.pid = pid
                    facts.ppid = parent
                    facts.startTicks = 0
                    tracked[pid] = TrackedProcess(facts: facts)
                    continue
                }
                handle([.started(pid: pid, kernelNanos: ns)])
            case .started(let pid, let ns):
                // Only the executable first (a readlink and a stat): a process no
                // rule could want (by runtime, executable or pid) costs nothing
                // more. An exec keeps the pid's parent and start time, so when its
                // fork was seen, /proc/PID/stat need not be read either.
                let known = tracked[pid]
                guard var facts = procfs.executableFacts(pid: pid, stat: known == nil) else { continue }
                if let k = known {
                    facts.ppid = k.facts.ppid
                    facts.startTicks = k.facts.startTicks
                }
                if matcher.couldMatch(facts) {
                    if facts.startTicks == 0 && !procfs.readStat(&facts) { continue }
                    if !procfs.complete(&facts) { continue }
                }
                if let t = tracked[pid] {
                    if t.facts.startTicks == facts.startTicks && t.facts.exePath == facts.exePath
                        && t.facts.complete == facts.complete
                        && t.facts.cmdline == facts.cmdline && t.facts.comm == facts.comm { continue }
                    release(pid, exited: false, exitCode: nil)
                }
                consider(facts, kernelNanos: ns)
            case .exited(let pid, let code, _):
                release(pid, exited: true, exitCode: code)
            case .overrun:
                logger.warning("the kernel dropped process events; rescanning /proc")
                rescan()
            }
        }
    }

    /// Matches a process against the rules and attaches its rule's collectors.
    /// Facts of which only the executable is known are completed when a rule
    /// could want the process, and kept as they are (tracked, unmatched) otherwise.
    func consider(_ initial: ProcessFacts, kernelNanos: UInt64?) {
        if initial.pid == getpid() { return }
        var read = initial
        if !read.complete && matcher.couldMatch(read) && !procfs.complete(&read) { return }
        let facts = read
        var t = TrackedProcess(facts: facts)
        guard facts.complete, let rule = matcher.match(facts) else {
            tracked[facts.pid] = t
            return
        }
        let names = config.agent.containerNames ? containerNames.names(for: facts.container) : ContainerNames()
        let group = RuleMatcher.groupName(rule.group, rule: rule.name, facts, names: names)
        let resource = Resource.forProcess(facts, group: group, rule: rule.name, host: hostname, names: names)
        t.rule = rule.name
        t.group = group
        t.resource = resource
        for c in rule.collectors {
            let key = "\(rule.name)/\(c.plugin)"
            guard let inst = instances[key] else { continue }
            t.instances.append(key)
            let latency = attachLatency
            let log = logger
            inst.attach(facts, group: group, resource: resource) { r in
                if r.ok {
                    if let k = kernelNanos {
                        let now = Clock.monotonicNanos()
                        if now > k { latency.record(nanoseconds: now - k) }
                    }
                } else if r.unsupported {
                    log.debug("'\(key)' does not support pid \(facts.pid) (\(facts.exeName)): \(r.message)")
                } else {
                    log.warning("'\(key)': attach to pid \(facts.pid) (\(facts.exeName)) failed: \(r.message)")
                }
            }
        }
        tracked[facts.pid] = t
        checkRoot(facts, resource: resource)
        if !rule.collectors.isEmpty {
            let collectors = rule.collectors.map(\.plugin).joined(separator: ", ")
            pipeline.submit(.event(Event(name: "process.attach", severity: .info,
                                         body: "pid \(facts.pid) (\(facts.exeName)) joined group '\(group)' by rule '\(rule.name)'; collectors: \(collectors)",
                                         timeUnixNano: Clock.unixNanos(), attributes: [Attribute("ferret.collectors", .string(collectors))], resource: resource,
                                         lifecycle: .attached)))
        }
    }

    /// The plugins read a process's files (shared libraries, debug files) through
    /// /proc/PID/root. When that cannot be opened, say so once, naming the pid and
    /// the path: the figures that need no file go on. A process gone meanwhile
    /// (its namespace with it) is only a debug line.
    func checkRoot(_ facts: ProcessFacts, resource: Resource) {
        let path = HostProc.file(facts.pid, "root/")
        guard let dir = opendir(path) else {
            let e = errno
            if e == ENOENT || e == ESRCH {
                logger.debug("pid \(facts.pid) (\(facts.exeName)) exited, or its namespace went away, while it was being attached")
                return
            }
            let why = String(cString: strerror(e))
            logger.warning("pid \(facts.pid) (\(facts.exeName)): \(path) is unreadable (\(why)); files inside its root cannot be read")
            pipeline.submit(.event(Event(name: "ferret.process.root_unreadable", severity: .warn,
                                         body: "pid \(facts.pid) (\(facts.exeName)): \(path) is unreadable (\(why)): its shared libraries and debug files cannot be read through it; its other figures continue",
                                         timeUnixNano: Clock.unixNanos(),
                                         attributes: [Attribute("ferret.path", .string(path)), Attribute("error.type", .string(why))],
                                         resource: resource)))
            return
        }
        closedir(dir)
    }

    /// Detaches a process from its collectors; emits process.exit when it exited.
    func release(_ pid: Int32, exited: Bool, exitCode: Int32?) {
        guard let t = tracked.removeValue(forKey: pid) else { return }
        for key in t.instances { instances[key]?.detach(pid: pid) }
        guard exited, let resource = t.resource, !t.instances.isEmpty else { return }
        var attrs: [Attribute] = []
        var body = "pid \(pid) (\(t.facts.exeName)) exited"
        if let code = exitCode {
            let status = code >> 8 & 0xFF, signal = code & 0x7F
            if signal != 0 {
                attrs.append(Attribute("process.exit.signal", .int(Int64(signal))))
                body += " on signal \(signal)"
            } else {
                attrs.append(Attribute("process.exit.code", .int(Int64(status))))
                body += " with status \(status)"
            }
        }
        pipeline.submit(.event(Event(name: "process.exit", severity: .info, body: body, timeUnixNano: Clock.unixNanos(),
                                     attributes: attrs, resource: resource, lifecycle: .exited)))
    }

    func submitEvent(_ name: String, _ severity: Severity, _ body: String) {
        pipeline?.submit(.event(Event(name: name, severity: severity, body: body, timeUnixNano: Clock.unixNanos(), resource: agentResource)))
    }
}
