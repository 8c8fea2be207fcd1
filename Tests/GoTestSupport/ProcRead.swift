import Foundation
import LinuxProcess

/// procfs files read to their end, as text. Foundation's
/// `String(contentsOfFile:)` stops after the first 4 KiB of a procfs file (its
/// size reads as 0), so a long /proc/PID/maps or mountinfo came back cut short;
/// LinuxProcess's `ProcFile.read` reads until end of file.
public enum ProcRead {
    public static func text(_ path: String) -> String? {
        (try? ProcFile.read(path, pid: 0)).map { String(decoding: $0, as: UTF8.self) }
    }
}
