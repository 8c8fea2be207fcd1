import FerretCore
import FerretHTTPServer
extension PrometheusStore {
    /// The whole exposition of every live series, in family name order.
    public func render(_ format: PrometheusFormat, now: UInt64 = Clock.monotonicNanos()) -> [UInt8] {
        let cursor = self.cursor(format, now: now)
        var out: [UInt8] = []
        while let chunk = cursor.next(targetBytes: 1 << 20) { out.append(contentsOf: chunk) }
        return out
    }

    /// A scrape that reads the exposition in chunks.
    public func cursor(_ format: PrometheusFormat, now: UInt64 = Clock.monotonicNanos()) -> ExpositionCursor {
        lock.withLock { ExpositionCursor(store: self, format: format, families: sortedFamilies(), cutoff: cutoff(now: now)) }
    }
}

/// A scrape in progress: the exposition in chunks of whole series, each chunk
/// rendered under the store's lock. A scrape of any size then needs about one
/// chunk of memory, and writers wait for one chunk at most. Used by one task.
///
/// Series added during the scrape may or may not be in it. When a family is
/// compacted during the scrape (more than half its series removed), the scrape
/// finds its place again by creation order: no series is sent twice or skipped.
public final class ExpositionCursor: @unchecked Sendable {
    private let store: PrometheusStore
    private let format: PrometheusFormat
    private let families: [PrometheusStore.Family]
    private let cutoff: UInt64
    private var familyIndex = 0
    private var inFamily = false
    private var seriesIndex = 0
    private var generation = 0
    /// The `seq` of the last series rendered in the current family.
    private var lastSeq = -1
    private var ended = false

    init(store: PrometheusStore, format: PrometheusFormat, families: [PrometheusStore.Family], cutoff: UInt64) {
        self.store = store
        self.format = format
        self.families = families
        self.cutoff = cutoff
    }

    /// The next chunk of about `targetBytes` (whole series), or nil after the last.
    public func next(targetBytes: Int = 256 * 1024) -> [UInt8]? {
        if ended { return nil }
        return store.lock.withLock {
            var w = ExpositionWriter(capacity: targetBytes + 4096)
            while familyIndex < families.count && w.bytes.count < targetBytes {
                let f = families[familyIndex]
                if !inFamily {
                    guard !f.series.isEmpty else { familyIndex += 1; continue }
                    w.append(format == .openMetrics ? f.headerOpenMetrics : f.headerText)
                    inFamily = true
                    seriesIndex = 0
                    generation = f.generation
                    lastSeq = -1
                } else if f.generation != generation {
                    // Compacted: the first series created after the last one sent.
                    generation = f.generation
                    var lo = 0, hi = f.order.count
                    while lo < hi {
                        let mid = (lo + hi) / 2
                        if f.order[mid].seq <= lastSeq { lo = mid + 1 } else { hi = mid }
                    }
                    seriesIndex = lo
                }
                while seriesIndex < f.order.count && w.bytes.count < targetBytes {
                    let s = f.order[seriesIndex]
                    seriesIndex += 1
                    guard !s.removed && s.updated >= cutoff else { continue }
                    if f.kind == .histogram {
                        Self.appendHistogram(s, f, &w)
                    } else {
                        w.append(f.sampleName)
                        w.append(s.labels)
                        w.append(byte: 0x20)
                        w.append(value: s.value)
                        w.append(byte: 0x0A)
                    }
                    lastSeq = s.seq
                }
                if seriesIndex >= f.order.count {
                    familyIndex += 1
                    inFamily = false
                }
            }
            if familyIndex >= families.count {
                if format == .openMetrics { w.append("# EOF\n") }
                ended = true
            }
            return w.bytes.isEmpty && ended ? nil : w.bytes
        }
    }

    /// `_bucket{…,le="b"}` (cumulative), `_sum`, `_count`.
    private static func appendHistogram(_ s: PrometheusStore.Series, _ family: PrometheusStore.Family, _ w: inout ExpositionWriter) {
        let h = s.histogram ?? HistogramData(count: 0, sum: 0, bounds: [], bucketCounts: [0])
        var cumulative: UInt64 = 0
        for i in 0...h.bounds.count {
            cumulative &+= i < h.bucketCounts.count ? h.bucketCounts[i] : 0
            w.append(family.sampleName)
            w.append("_bucket{")
            if !s.labels.isEmpty {
                // The labels without their braces, then le.
                var l = s.labels
                l.withUTF8 { w.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: $0.dropFirst().dropLast())) }
                w.append(byte: 0x2C)
            }
            w.append("le=\"")
            if i < h.bounds.count { w.append(bound: h.bounds[i]) } else { w.append("+Inf") }
            w.append("\"} ")
            w.append(unsigned: i == h.bounds.count ? max(cumulative, h.count) : cumulative)
            w.append(byte: 0x0A)
        }
        w.append(family.sampleName)
        w.append("_sum")
        w.append(s.labels)
        w.append(byte: 0x20)
        w.append(value: h.sum)
        w.append(byte: 0x0A)
        w.append(family.sampleName)
        w.append("_count")
        w.append(s.labels)
        w.append(byte: 0x20)
        w.append(unsigned: max(cumulative, h.count))
        w.append(byte: 0x0A)
    }
}
