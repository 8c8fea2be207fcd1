import Foundation
import GoIntrospection
import LinuxProcess

/// Names of a process's container and pod, read from the node's own files when
/// `container_names` is on (OpenTelemetry names: `container.name`,
/// `container.image.name`, `container.image.tags`, `k8s.namespace.name`,
/// `k8s.pod.name`, `k8s.container.name`). Empty when off or when no file names
/// them: missing files mean missing attributes, not errors.
public struct ContainerNames: Sendable, Equatable {
    public struct Pair: Sendable, Equatable {
        public var key: String
        public var value: String
    }
    public var pairs: [Pair] = []

    public init() {}

    public init(_ attributes: [(key: String, value: String)]) {
        pairs = attributes.map { Pair(key: $0.key, value: $0.value) }
    }

    public var attributes: [(key: String, value: String)] { pairs.map { ($0.key, $0.value) } }

    public func value(_ key: String) -> String? { pairs.first { $0.key == key }?.value }
}

/// Looks container and pod names up under the host's root (`host_root`): the
/// kubelet's /var/log/pods/<namespace>_<pod>_<uid>/<container> folders and
/// Docker's /var/lib/docker/containers/<id>/config.v2.json. Local files only,
/// never a network call; answers are cached per container (and per pod), with
/// misses retried after `retryAfter` (a pod's log folder appears a moment after
/// its first process).
public final class ContainerNameResolver: @unchecked Sendable {
    private let hostRoot: String
    private let retryAfter: Duration
    private var cache: [String: (names: ContainerNames, complete: Bool, at: ContinuousClock.Instant)] = [:]
    private let lock = NSLock()

    public init(hostRoot: String, retryAfter: Duration = .seconds(30)) {
        self.hostRoot = hostRoot == "/" ? "" : hostRoot
        self.retryAfter = retryAfter
    }

    public func names(for container: ContainerIdentity?) -> ContainerNames {
        guard let c = container, c.containerID != nil || c.podUID != nil else { return ContainerNames() }
        let key = "\(c.containerID ?? "-") \(c.podUID ?? "-")"
        let now = ContinuousClock.now
        lock.lock()
        if let hit = cache[key], hit.complete || now - hit.at < retryAfter {
            lock.unlock()
            return hit.names
        }
        lock.unlock()
        var attributes: [(key: String, value: String)] = []
        var complete = true
        if let uid = c.podUID {
            if let pod = KubeletPodNames.lookup(podUID: uid, containerID: c.containerID,
                                                podLogRoot: hostRoot + "/var/log/pods",
                                                containerLogRoot: hostRoot + "/var/log/containers") {
                attributes += pod.attributes
            } else {
                complete = false
            }
        }
        if let id = c.containerID, c.runtime == "docker" || c.runtime == nil {
            if let docker = DockerContainerNames.lookup(containerID: id, root: hostRoot + "/var/lib/docker/containers") {
                attributes += docker.attributes
            } else if c.runtime == "docker" {
                complete = false
            }
        }
        let names = ContainerNames(attributes)
        lock.lock()
        if cache.count > 4096 { cache.removeAll() }
        cache[key] = (names, complete, now)
        lock.unlock()
        return names
    }
}
