import Foundation
import Logging
import Synchronization

enum LogLevelSetting {
    static let level = Mutex<Logger.Level>(.info)
}

/// "2026-11-22T05:00:00.123Z warning message" lines on stderr; the level can
/// change after start (it comes from the config file).
struct AgentLogHandler: LogHandler {
    let label: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level {
        get { LogLevelSetting.level.withLock { $0 } }
        set { LogLevelSetting.level.withLock { $0 = newValue } }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var tm = tm()
        gmtime_r(&t, &tm)
        let stamp = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                           tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1_000_000)
        FileHandle.standardError.write(Data("\(stamp) \(event.level) \(event.message)\n".utf8))
    }
}
