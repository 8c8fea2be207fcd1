import Foundation
import Glibc
import GoTestSupport
import XCTest

@testable import ELFSymbols
@testable import GoBinaryFormat
@testable import GoIntrospection

extension ProcessMemoryTests {
    /// A child process started with posix_spawn, its stdout (and stderr) on a pipe; it reports
    /// "key value" lines up to "ready". `stop()` kills it with SIGKILL and reaps it.
    final class Child {
        let pid: Int32
        private let fd: Int32
        private(set) var info: [String: String] = [:]
        private var stopped = false

        private init(pid: Int32, fd: Int32) {
            self.pid = pid
            self.fd = fd
        }

        static func start(_ path: String, arguments: [String] = []) throws -> Child {
            let p = try spawn(path, arguments)
            let child = Child(pid: p.pid, fd: p.fd)
            do {
                try child.readUntilReady()
            } catch {
                child.stop()
                throw error
            }
            guard child.info["pid"] == String(p.pid) else {
                child.stop()
                throw ProcessMemoryTests.FixtureError(description: "\(path) reported pid \(child.info["pid"] ?? "nil"), spawned \(p.pid)")
            }
            return child
        }

        static func spawn(_ path: String, _ arguments: [String]) throws -> (pid: Int32, fd: Int32) {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw ProcessMemoryTests.FixtureError(description: "pipe: \(errno)") }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
            posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
            let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
            defer { for a in argv { free(a) } }
            var pid: pid_t = 0
            let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
            close(fds[1])
            guard rc == 0 else {
                close(fds[0])
                throw ProcessMemoryTests.FixtureError(description: "posix_spawn \(path): \(String(cString: strerror(rc)))")
            }
            return (pid, fds[0])
        }

        private func readUntilReady() throws {
            var text = ""
            var buf = [UInt8](repeating: 0, count: 4096)
            // Each check blocks in poll(2) for up to 100 ms: no poll interval of its own.
            let ready = try Wait.until("child \(pid)'s ready line", timeout: 30, poll: 0) {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&pfd, 1, 100) <= 0 { return false }
                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { return false }
                guard n > 0 else { throw ProcessMemoryTests.FixtureError(description: "child \(pid) exited early: \(text)") }
                text += String(decoding: buf[..<n], as: UTF8.self)
                return text.contains("ready\n")
            }
            guard ready else { throw ProcessMemoryTests.FixtureError(description: "child \(pid) not ready: \(text)") }
            for line in text.split(separator: "\n") {
                let kv = line.split(separator: " ", maxSplits: 1)
                if kv.count == 2 { info[String(kv[0])] = String(kv[1]) }
            }
        }

        func address(_ key: String) throws -> UInt64 {
            guard let s = info[key], s.hasPrefix("0x"), let v = UInt64(s.dropFirst(2), radix: 16) else {
                throw ProcessMemoryTests.FixtureError(description: "child \(pid): no address '\(key)' in \(info)")
            }
            return v
        }

        func value(_ key: String) throws -> Int {
            guard let s = info[key], let v = Int(s) else {
                throw ProcessMemoryTests.FixtureError(description: "child \(pid): no value '\(key)' in \(info)")
            }
            return v
        }

        func stop() {
            guard !stopped else { return }
            stopped = true
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            close(fd)
        }

        deinit { stop() }
    }
}
