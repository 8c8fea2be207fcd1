import Foundation

// What the kernel knows of sinks beyond `Sink`: the health of a network
// sink's deliveries (self-metrics and the shutdown log read it), and the
// sinks that stand ahead of the others. The implementations live in the
// component targets (FerretDelivery, SinkPprofDir).

/// The state a delivery is in, as its health metric reports it.
public enum DeliveryState: String, Sendable {
    /// The last attempt succeeded (or nothing was sent yet).
    case healthy
    /// Attempts are failing; batches are kept and retried.
    case retrying
    /// Failing for longer than a minute.
    case down
}

/// A snapshot of a delivery's counters (all in points, i.e. signals, except bytes).
public struct DeliveryHealth: Sendable {
    public var route: String
    public var state: DeliveryState
    public var accepted: Int
    public var delivered: Int
    public var dropped: Int
    public var rejected: Int
    public var bufferedPoints: Int
    public var bufferedBytes: Int
    public var requests: Int
    public var failures: Int
    public var lastError: String?

    public init(route: String, state: DeliveryState, accepted: Int, delivered: Int, dropped: Int, rejected: Int,
                bufferedPoints: Int, bufferedBytes: Int, requests: Int, failures: Int, lastError: String?) {
        self.route = route
        self.state = state
        self.accepted = accepted
        self.delivered = delivered
        self.dropped = dropped
        self.rejected = rejected
        self.bufferedPoints = bufferedPoints
        self.bufferedBytes = bufferedBytes
        self.requests = requests
        self.failures = failures
        self.lastError = lastError
    }
}

/// A sink that reports the health of its deliveries (the network sinks).
public protocol DeliveryReporting: Sink {
    var deliveryHealth: [DeliveryHealth] { get }
}

/// A sink that sees every batch first, on the pipeline's processor stage
/// (its own thread, `ferret-processors`, after the aggregators), and may
/// annotate it for the sinks after it (pprof_dir records its file paths).
public protocol AheadSink: Sink {
    func annotate(_ batch: inout [Signal]) throws
}

/// An error a sink reports (the runner logs and counts it).
public struct SinkError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
