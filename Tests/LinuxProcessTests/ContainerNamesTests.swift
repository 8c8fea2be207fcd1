import Foundation
import LinuxProcess
import XCTest

/// Name lookups over temporary trees laid out like a node's /var/log/pods,
/// /var/log/containers and /var/lib/docker/containers.
final class ContainerNamesTests: XCTestCase {
    private var root = ""

    private let podUID = "428617b2-9440-42bc-8627-b5c3e53d63f4"
    private let apiID = "0b4c20aa103aa51b151cd45e46c93f3d6fbd65c7df52dd275abcfdd63c809447"
    private let proxyID = "8812b45ba426f4ff0afd4d18f67129fc5359f8061a4005fe9fd1f94e7cf19487"
    private let initID = "44eabf35093846b18412d8a1c7ae7632ddd5c0074ac92407215499958b9d42ea"
    private var pods: String { root + "/var/log/pods" }
    private var containers: String { root + "/var/log/containers" }
    private var docker: String { root + "/var/lib/docker/containers" }

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "ferret-container-names-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(atPath: root)
    }

    private func makeDirectory(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    private func write(_ text: String, to path: String) throws {
        try makeDirectory((path as NSString).deletingLastPathComponent)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    private func symlink(_ path: String, to target: String) throws {
        try makeDirectory((path as NSString).deletingLastPathComponent)
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: target)
    }

    /// `shop/api-7d9c8b5f4-x2kqz` with an init container, the app and a sidecar,
    /// as the kubelet lays out their logs (containerd: plain files).
    private func makeThreeContainerPod() throws -> String {
        let podDirectory = pods + "/shop_api-7d9c8b5f4-x2kqz_\(podUID)"
        try write("{\"log\":\"migrated\"}\n", to: podDirectory + "/migrate/0.log")
        try write("{\"log\":\"listening\"}\n", to: podDirectory + "/api/0.log")
        try write("{\"log\":\"listening\"}\n", to: podDirectory + "/api/1.log")
        try write("{\"log\":\"envoy ready\"}\n", to: podDirectory + "/istio-proxy/0.log")
        // Other pods on the node.
        try write("x\n", to: pods + "/kube-system_coredns-5d78c9869d-8xkqz_37d97873-8a31-423e-be3b-79016f3be0ab/coredns/0.log")
        try write("x\n", to: pods + "/shop_api-7d9c8b5f4-9vbnm_5fb8fc26-590e-4e7a-a0ed-71cd6ab129be/api/0.log")
        return podDirectory
    }

    // MARK: Kubelet

    func testSingleContainerPod() throws {
        try write("hello\n", to: pods + "/payments_ledger-0_\(podUID)/ledger/0.log")
        let names = KubeletPodNames.lookup(podUID: podUID, containerID: nil, podLogRoot: pods, containerLogRoot: containers)
        XCTAssertEqual(names, KubeletPodNames(
            namespace: "payments", podName: "ledger-0", podUID: podUID, containerName: "ledger"))
        XCTAssertEqual(names?.attributes.map(\.key), ["k8s.namespace.name", "k8s.pod.name", "k8s.container.name"])
        XCTAssertEqual(names?.attributes.map(\.value), ["payments", "ledger-0", "ledger"])
    }

    /// Several containers: /var/log/containers names the one with this id.
    func testMultiContainerPodThroughContainerLogs() throws {
        let podDirectory = try makeThreeContainerPod()
        try symlink(containers + "/api-7d9c8b5f4-x2kqz_shop_api-\(apiID).log", to: podDirectory + "/api/1.log")
        try symlink(containers + "/api-7d9c8b5f4-x2kqz_shop_istio-proxy-\(proxyID).log", to: podDirectory + "/istio-proxy/0.log")
        try symlink(containers + "/api-7d9c8b5f4-x2kqz_shop_migrate-\(initID).log", to: podDirectory + "/migrate/0.log")
        // Same pod and container names in another namespace must not match.
        try symlink(containers + "/api-7d9c8b5f4-x2kqz_staging_api-\(proxyID).log", to: "/nowhere")

        for (id, container) in [(apiID, "api"), (proxyID, "istio-proxy"), (initID, "migrate")] {
            let names = KubeletPodNames.lookup(podUID: podUID, containerID: id, podLogRoot: pods, containerLogRoot: containers)
            XCTAssertEqual(names, KubeletPodNames(
                namespace: "shop", podName: "api-7d9c8b5f4-x2kqz", podUID: podUID, containerName: container), container)
        }
    }

    /// Several containers, no /var/log/containers, Docker runtime: the pod's log
    /// files are symlinks to Docker's json logs, whose path holds the id.
    func testMultiContainerPodThroughSymlinkTargets() throws {
        let podDirectory = pods + "/shop_api-7d9c8b5f4-x2kqz_\(podUID)"
        try symlink(podDirectory + "/api/0.log", to: "/var/lib/docker/containers/\(apiID)/\(apiID)-json.log")
        try symlink(podDirectory + "/istio-proxy/0.log", to: "/var/lib/docker/containers/\(proxyID)/\(proxyID)-json.log")
        let names = KubeletPodNames.lookup(podUID: podUID, containerID: proxyID, podLogRoot: pods, containerLogRoot: containers)
        XCTAssertEqual(names?.containerName, "istio-proxy")
        XCTAssertEqual(names?.namespace, "shop")
    }

    /// Several containers and nothing naming the id: the pod is known, the
    /// container is not.
    func testMultiContainerPodWithoutAnswer() throws {
        _ = try makeThreeContainerPod()
        for id in [nil, apiID] {
            let names = KubeletPodNames.lookup(podUID: podUID, containerID: id, podLogRoot: pods, containerLogRoot: containers)
            XCTAssertEqual(names, KubeletPodNames(namespace: "shop", podName: "api-7d9c8b5f4-x2kqz", podUID: podUID))
            XCTAssertEqual(names?.attributes.map(\.key), ["k8s.namespace.name", "k8s.pod.name"])
        }
    }

    func testKubeletMissingGivesNil() throws {
        XCTAssertNil(KubeletPodNames.lookup(podUID: podUID, containerID: apiID, podLogRoot: pods, containerLogRoot: containers))
        _ = try makeThreeContainerPod()
        XCTAssertNil(KubeletPodNames.lookup(
            podUID: "b65faab9-74a9-4368-ae58-d5f6393f0461", containerID: nil, podLogRoot: pods, containerLogRoot: containers))
        XCTAssertNil(KubeletPodNames.lookup(podUID: "", containerID: nil, podLogRoot: pods, containerLogRoot: containers))
        // A file, not a directory, with the pod's name.
        try write("", to: pods + "/other_web-1_e055dcf7-b1e2-4937-a654-e71e0c9e6a42")
        XCTAssertNil(KubeletPodNames.lookup(
            podUID: "e055dcf7-b1e2-4937-a654-e71e0c9e6a42", containerID: nil, podLogRoot: pods, containerLogRoot: containers))
    }

    // MARK: Docker

    private func writeConfig(_ id: String, name: String, image: String) throws {
        let config = """
            {"StreamConfig":{},"State":{"Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,\
            "RemovalInProgress":false,"Dead":false,"Pid":48213,"ExitCode":0,"Error":"",\
            "StartedAt":"2025-03-14T09:26:53.589793238Z","FinishedAt":"0001-01-01T00:00:00Z","Health":null},\
            "ID":"\(id)","Created":"2025-03-14T09:26:52.914311722Z","Managed":false,\
            "Path":"/app/api","Args":["--listen",":8080"],\
            "Config":{"Hostname":"\(id.prefix(12))","Domainname":"","User":"10001","AttachStdin":false,\
            "AttachStdout":true,"AttachStderr":true,"ExposedPorts":{"8080/tcp":{}},"Tty":false,"OpenStdin":false,\
            "StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],\
            "Cmd":["--listen",":8080"],"Image":"\(image)","Volumes":null,"WorkingDir":"/app",\
            "Entrypoint":["/app/api"],"OnBuild":null,"Labels":{"org.opencontainers.image.version":"1.4.2"}},\
            "Image":"sha256:5d3a1f0c9b8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e",\
            "NetworkSettings":{"Bridge":"","SandboxID":"","HairpinMode":false,"Networks":{}},\
            "LogPath":"/var/lib/docker/containers/\(id)/\(id)-json.log","Name":"\(name)","Driver":"overlay2",\
            "OS":"linux","RestartCount":0,"HasBeenStartedBefore":true,"HasBeenManuallyStopped":false}
            """
        try write(config, to: docker + "/\(id)/config.v2.json")
    }

    func testDockerLookup() throws {
        try writeConfig(apiID, name: "/shop-api-1", image: "registry.example/team/api:1.4.2")
        let names = DockerContainerNames.lookup(containerID: apiID, root: docker)
        XCTAssertEqual(names, DockerContainerNames(name: "shop-api-1", imageName: "registry.example/team/api", imageTag: "1.4.2"))
        XCTAssertEqual(names?.attributes.map(\.key), ["container.name", "container.image.name", "container.image.tags"])
        XCTAssertEqual(names?.attributes.map(\.value), ["shop-api-1", "registry.example/team/api", "1.4.2"])
    }

    func testImageReferences() {
        let digest = "sha256:9b2a3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"
        for (image, name, tag) in [
            ("nginx", "nginx", nil),
            ("nginx:1.27", "nginx", "1.27"),
            ("registry.example:5000/team/api", "registry.example:5000/team/api", nil),
            ("registry.example:5000/team/api:1.4.2", "registry.example:5000/team/api", "1.4.2"),
            ("registry.example/team/api@\(digest)", "registry.example/team/api", nil),
            ("registry.example/team/api:1.4.2@\(digest)", "registry.example/team/api", "1.4.2"),
            (digest, nil, nil),
        ] as [(String, String?, String?)] {
            let json = #"{"Name":"/c","Config":{"Image":"\#(image)"}}"#
            let names = DockerContainerNames.parse(configJSON: Data(json.utf8))
            XCTAssertEqual(names, DockerContainerNames(name: "c", imageName: name, imageTag: tag), image)
        }
    }

    func testDockerMissingOrMalformedGivesNil() throws {
        XCTAssertNil(DockerContainerNames.lookup(containerID: apiID, root: docker))
        try write("{\"Name\":\"/shop-api-1\",\"Config\":{\"Image\":", to: docker + "/\(apiID)/config.v2.json")
        XCTAssertNil(DockerContainerNames.lookup(containerID: apiID, root: docker))
        try write("[\"not\", \"an\", \"object\"]", to: docker + "/\(proxyID)/config.v2.json")
        XCTAssertNil(DockerContainerNames.lookup(containerID: proxyID, root: docker))
        try write("{\"State\":{}}", to: docker + "/\(initID)/config.v2.json")
        XCTAssertNil(DockerContainerNames.lookup(containerID: initID, root: docker))
        XCTAssertNil(DockerContainerNames.parse(configJSON: Data()))
        XCTAssertNil(DockerContainerNames.parse(configJSON: Data([0xff, 0xfe, 0x00, 0x7b])))
    }

    /// The id becomes a path component: anything but a full id is refused.
    func testDockerRejectsIDsThatAreNotIDs() throws {
        try writeConfig(apiID, name: "/shop-api-1", image: "nginx")
        for id in ["", apiID.uppercased(), String(apiID.prefix(12)), "../containers/\(apiID)", "\(apiID)/.."] {
            XCTAssertNil(DockerContainerNames.lookup(containerID: id, root: docker), id)
        }
    }

    func testDockerConfigOverSizeLimitGivesNil() throws {
        let padding = String(repeating: " ", count: DockerContainerNames.configSizeLimit)
        try write("{\"Name\":\"/big\"}" + padding, to: docker + "/\(apiID)/config.v2.json")
        XCTAssertNil(DockerContainerNames.lookup(containerID: apiID, root: docker))
        try write("{\"Name\":\"/big\"}", to: docker + "/\(apiID)/config.v2.json")
        XCTAssertEqual(DockerContainerNames.lookup(containerID: apiID, root: docker), DockerContainerNames(name: "big"))
    }
}
