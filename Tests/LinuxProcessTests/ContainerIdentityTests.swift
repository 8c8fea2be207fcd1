import Foundation
import LinuxProcess
import XCTest

/// `ContainerIdentity.parse(cgroupFile:)` against recorded /proc/PID/cgroup files,
/// one per runtime layout, cgroup v1 (legacy and hybrid) and v2.
final class ContainerIdentityTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/cgroup")

    private func parse(_ fixture: String) throws -> ContainerIdentity? {
        let text = try String(contentsOf: Self.fixtures.appendingPathComponent(fixture), encoding: .utf8)
        return ContainerIdentity.parse(cgroupFile: text)
    }

    // MARK: Docker

    func testDockerSystemdV1Hybrid() throws {
        let path = "/system.slice/docker-a27ad56ef474e6afea417139cc42e3f70e5840bb20ac3ff5994ab21f3050f15e.scope"
        XCTAssertEqual(try parse("docker-systemd-v1.cgroup"), ContainerIdentity(
            containerID: "a27ad56ef474e6afea417139cc42e3f70e5840bb20ac3ff5994ab21f3050f15e",
            runtime: "docker", podUID: nil, cgroupPath: path))
    }

    /// The v2 line names the shim's service, the v1 lines the container: the
    /// container wins.
    func testDockerCgroupfsV1() throws {
        XCTAssertEqual(try parse("docker-cgroupfs-v1.cgroup"), ContainerIdentity(
            containerID: "6fe0485106d3ffee51d50761a39b7f562971273f96f1deb31b3b4d81c4e15ac8",
            runtime: "docker", podUID: nil,
            cgroupPath: "/docker/6fe0485106d3ffee51d50761a39b7f562971273f96f1deb31b3b4d81c4e15ac8"))
    }

    func testDockerV2() throws {
        XCTAssertEqual(try parse("docker-v2.cgroup"), ContainerIdentity(
            containerID: "de3e0c277e4f1b34abcaf26790ea2b119a5af2010b0f1148fa10aa6205bc5530",
            runtime: "docker", podUID: nil,
            cgroupPath: "/system.slice/docker-de3e0c277e4f1b34abcaf26790ea2b119a5af2010b0f1148fa10aa6205bc5530.scope"))
    }

    func testDockerInDockerGivesInnermost() throws {
        let identity = try parse("docker-in-docker-cgroupfs-v1.cgroup")
        XCTAssertEqual(identity?.containerID, "f83222b65fd92d443663369565f57c77a8b2b5faedcc017be98c12039532ea25")
        XCTAssertEqual(identity?.runtime, "docker")
        XCTAssertNil(identity?.podUID)
    }

    // MARK: Kubernetes

    func testContainerdKubepodsSystemdV2Burstable() throws {
        let identity = try parse("containerd-kubepods-systemd-v2-burstable.cgroup")
        XCTAssertEqual(identity?.containerID, "0b4c20aa103aa51b151cd45e46c93f3d6fbd65c7df52dd275abcfdd63c809447")
        XCTAssertEqual(identity?.runtime, "containerd")
        XCTAssertEqual(identity?.podUID, "428617b2-9440-42bc-8627-b5c3e53d63f4")
    }

    /// Legacy v1 (no `0::` line), guaranteed QoS: the pod slice sits directly
    /// under kubepods.slice.
    func testContainerdKubepodsSystemdV1Guaranteed() throws {
        let identity = try parse("containerd-kubepods-systemd-v1-guaranteed.cgroup")
        XCTAssertEqual(identity?.containerID, "8812b45ba426f4ff0afd4d18f67129fc5359f8061a4005fe9fd1f94e7cf19487")
        XCTAssertEqual(identity?.runtime, "containerd")
        XCTAssertEqual(identity?.podUID, "37d97873-8a31-423e-be3b-79016f3be0ab")
    }

    /// The cgroupfs driver names the container by its bare id: the runtime is
    /// unknown. The hybrid `0::/` line must not hide the v1 lines.
    func testKubepodsCgroupfsV1BestEffort() throws {
        XCTAssertEqual(try parse("kubepods-cgroupfs-v1-besteffort.cgroup"), ContainerIdentity(
            containerID: "44eabf35093846b18412d8a1c7ae7632ddd5c0074ac92407215499958b9d42ea",
            runtime: nil, podUID: "5fb8fc26-590e-4e7a-a0ed-71cd6ab129be",
            cgroupPath: "/kubepods/besteffort/pod5fb8fc26-590e-4e7a-a0ed-71cd6ab129be/44eabf35093846b18412d8a1c7ae7632ddd5c0074ac92407215499958b9d42ea"))
    }

    func testDockershimUnderKubepods() throws {
        let identity = try parse("docker-dockershim-kubepods-v1.cgroup")
        XCTAssertEqual(identity?.containerID, "9c38cfcc15cdf7b5f79d15934242ace12132270b021d99cca2d64e3bfcb82757")
        XCTAssertEqual(identity?.runtime, "docker")
        XCTAssertEqual(identity?.podUID, "b65faab9-74a9-4368-ae58-d5f6393f0461")
    }

    /// A KinD node is a Docker container running a kubelet: the pod's container
    /// inside it is the identity, not the node.
    func testKindNodeGivesThePodContainer() throws {
        let identity = try parse("kind-node-v2.cgroup")
        XCTAssertEqual(identity?.containerID, "a24c4d22e9a4bb44b116174d866c68ead1deb68632ff84dbfa28b56b33502e04")
        XCTAssertEqual(identity?.runtime, "containerd")
        XCTAssertEqual(identity?.podUID, "8cde3b17-0a0a-4ad4-9f96-d2aaa2baedac")
    }

    /// Seen from inside a cgroup namespace: leading `..`, no kubepods.slice.
    func testCgroupNamespaceRelativePath() throws {
        let identity = try parse("cgroupns-relative-v2.cgroup")
        XCTAssertEqual(identity?.containerID, "0b4c20aa103aa51b151cd45e46c93f3d6fbd65c7df52dd275abcfdd63c809447")
        XCTAssertEqual(identity?.runtime, "containerd")
        XCTAssertEqual(identity?.podUID, "428617b2-9440-42bc-8627-b5c3e53d63f4")
    }

    // MARK: CRI-O

    func testCrioV2() throws {
        let identity = try parse("crio-v2.cgroup")
        XCTAssertEqual(identity?.containerID, "03fd987713616e46d309a053b8b9a912dee9ec268037f59d2b86a00e608f4271")
        XCTAssertEqual(identity?.runtime, "cri-o")
        XCTAssertEqual(identity?.podUID, "e055dcf7-b1e2-4937-a654-e71e0c9e6a42")
    }

    /// conmon monitors the container from beside it: no container id, but the pod.
    func testCrioConmonHasNoContainerID() throws {
        let identity = try parse("crio-conmon-v2.cgroup")
        XCTAssertNotNil(identity)
        XCTAssertNil(identity?.containerID)
        XCTAssertEqual(identity?.runtime, "cri-o")
        XCTAssertEqual(identity?.podUID, "e055dcf7-b1e2-4937-a654-e71e0c9e6a42")
    }

    // MARK: Podman

    func testPodmanRootfulV2() throws {
        XCTAssertEqual(try parse("podman-rootful-v2.cgroup"), ContainerIdentity(
            containerID: "80979e46cf9c5441725ae86e5c20de3cf802ade6bacb4357cd47a7409f4b664f",
            runtime: "podman", podUID: nil,
            cgroupPath: "/machine.slice/libpod-80979e46cf9c5441725ae86e5c20de3cf802ade6bacb4357cd47a7409f4b664f.scope/container"))
    }

    func testPodmanRootlessV2() throws {
        let identity = try parse("podman-rootless-v2.cgroup")
        XCTAssertEqual(identity?.containerID, "ec49139f81fa70013318901fd50aee7986d4a66ecab5ba8009df2c9a7d0de0d4")
        XCTAssertEqual(identity?.runtime, "podman")
        XCTAssertNil(identity?.podUID)
    }

    func testPodmanConmonHasNoContainerID() throws {
        let identity = try parse("podman-conmon-v2.cgroup")
        XCTAssertNotNil(identity)
        XCTAssertNil(identity?.containerID)
        XCTAssertEqual(identity?.runtime, "podman")
        XCTAssertNil(identity?.podUID)
    }

    // MARK: Not containers

    func testHostProcessesGiveNil() throws {
        for fixture in [
            "systemd-service-v1.cgroup", "systemd-service-v2.cgroup", "user-session-v2.cgroup",
            "unknown-hex-v2.cgroup", "root-v2.cgroup",
        ] {
            XCTAssertNil(try parse(fixture), fixture)
        }
    }

    // MARK: Variants without a fixture of their own

    func testTrailingComponentsAfterTheScope() {
        let id = "de3e0c277e4f1b34abcaf26790ea2b119a5af2010b0f1148fa10aa6205bc5530"
        let docker = ContainerIdentity.parse(cgroupFile: "0::/system.slice/docker-\(id).scope/init.scope\n")
        XCTAssertEqual(docker?.containerID, id)
        XCTAssertEqual(docker?.runtime, "docker")
        let nested = ContainerIdentity.parse(cgroupFile:
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod5fb8fc26_590e_4e7a_a0ed_71cd6ab129be.slice/cri-containerd-\(id).scope/app")
        XCTAssertEqual(nested?.containerID, id)
        XCTAssertEqual(nested?.runtime, "containerd")
        XCTAssertEqual(nested?.podUID, "5fb8fc26-590e-4e7a-a0ed-71cd6ab129be")
    }

    func testCgroupfsVariants() {
        let id = "44eabf35093846b18412d8a1c7ae7632ddd5c0074ac92407215499958b9d42ea"
        let uid = "5fb8fc26-590e-4e7a-a0ed-71cd6ab129be"
        for (path, runtime) in [
            ("/kubepods/pod\(uid)/\(id)", nil),
            ("/kubepods/burstable/pod\(uid)/\(id)", nil),
            ("/burstable/pod\(uid)/\(id)", nil),
            ("/kubepods/burstable/pod\(uid)/crio-\(id)", "cri-o"),
        ] as [(String, String?)] {
            let identity = ContainerIdentity.parse(cgroupFile: "4:pids:\(path)\n")
            XCTAssertEqual(identity, ContainerIdentity(containerID: id, runtime: runtime, podUID: uid, cgroupPath: path), path)
        }
        let podman = ContainerIdentity.parse(cgroupFile: "0::/libpod_parent/libpod-\(id)\n")
        XCTAssertEqual(podman?.containerID, id)
        XCTAssertEqual(podman?.runtime, "podman")
    }

    /// Static pods' UIDs are the 32-hex hash of their manifest.
    func testStaticPodUID() {
        let identity = ContainerIdentity.parse(cgroupFile:
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5d1e8b2a3c3ff6f7e9d9a1a7b2c4e3d1.slice/cri-containerd-03fd987713616e46d309a053b8b9a912dee9ec268037f59d2b86a00e608f4271.scope\n")
        XCTAssertEqual(identity?.podUID, "5d1e8b2a3c3ff6f7e9d9a1a7b2c4e3d1")
    }

    /// A pod-level cgroup (no container below it) still names the pod.
    func testPodSliceAlone() {
        let identity = ContainerIdentity.parse(cgroupFile:
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod428617b2_9440_42bc_8627_b5c3e53d63f4.slice\n")
        XCTAssertEqual(identity, ContainerIdentity(
            podUID: "428617b2-9440-42bc-8627-b5c3e53d63f4",
            cgroupPath: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod428617b2_9440_42bc_8627_b5c3e53d63f4.slice"))
    }

    func testRemovedCgroupDropsDeletedMarker() {
        let id = "de3e0c277e4f1b34abcaf26790ea2b119a5af2010b0f1148fa10aa6205bc5530"
        let identity = ContainerIdentity.parse(cgroupFile: "0::/system.slice/docker-\(id).scope (deleted)\n")
        XCTAssertEqual(identity?.containerID, id)
        XCTAssertEqual(identity?.cgroupPath, "/system.slice/docker-\(id).scope")
    }

    /// Near misses of each shape are not containers.
    func testStrictShapes() {
        let id = "de3e0c277e4f1b34abcaf26790ea2b119a5af2010b0f1148fa10aa6205bc5530"
        for path in [
            "/system.slice/docker-\(id.uppercased()).scope",
            "/system.slice/docker-\(id.dropLast()).scope",
            "/system.slice/docker-\(id)0.scope",
            "/system.slice/docker-\(id).service",
            "/system.slice/docker-\(id)",
            "/system.slice/cri-containerd-\(id).scope.bak",
            "/system.slice/podman-\(id).scope",
            "/machine.slice/libpod-\(id)",
            "/kubepods/burstable/\(id)",
            "/foo/pod5fb8fc26-590e-4e7a-a0ed-71cd6ab129be/\(id)",
            "/kubepods/burstable/pod5fb8fc26-590e-4e7a-a0ed-71cd6ab129b/\(id)",
            "/kubepods.slice/besteffort-pod5fb8fc26_590e_4e7a_a0ed_71cd6ab129be.slice",
            "/kubepods.slice/kubepods-besteffort-pod5fb8fc26-590e-4e7a-a0ed-71cd6ab129be.slice",
            "/system.slice/docker.service",
        ] {
            XCTAssertNil(ContainerIdentity.parse(cgroupFile: "0::\(path)\n"), path)
        }
    }

    func testAttributes() throws {
        let identity = try XCTUnwrap(try parse("containerd-kubepods-systemd-v2-burstable.cgroup"))
        XCTAssertEqual(identity.attributes.map(\.key), ["container.id", "container.runtime", "k8s.pod.uid"])
        XCTAssertEqual(identity.attributes.map(\.value), [
            "0b4c20aa103aa51b151cd45e46c93f3d6fbd65c7df52dd275abcfdd63c809447", "containerd",
            "428617b2-9440-42bc-8627-b5c3e53d63f4",
        ])
        let bare = try XCTUnwrap(try parse("kubepods-cgroupfs-v1-besteffort.cgroup"))
        XCTAssertEqual(bare.attributes.map(\.key), ["container.id", "k8s.pod.uid"])
        let conmon = try XCTUnwrap(try parse("podman-conmon-v2.cgroup"))
        XCTAssertEqual(conmon.attributes.map(\.key), ["container.runtime"])
    }

    func testGarbageGivesNil() {
        let id = "de3e0c277e4f1b34abcaf26790ea2b119a5af2010b0f1148fa10aa6205bc5530"
        var junk = [UInt8]()
        var state: UInt32 = 0x2545_F491
        for _ in 0..<65536 {
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            junk.append(UInt8(truncatingIfNeeded: state))
        }
        let longLine = "0::/" + String(repeating: "a/", count: 200_000) + "x"
        for text in [
            "", "\n", "\n\n\n", ":", "::", "0::", "0::\n", "garbage", "no colons here at all\nnor here",
            String(decoding: junk, as: UTF8.self),
            longLine,
            String(repeating: "0123456789abcdef", count: 100_000),
            String(repeating: "docker-", count: 50_000),
            "x::/system.slice/docker-\(id).scope",   // hierarchy is not a number
            ":pids:/system.slice/docker-\(id).scope", // no hierarchy
            "0::system.slice/docker-\(id).scope",     // path not absolute
            "/system.slice/docker-\(id).scope",       // a bare path is not a cgroup line
        ] {
            XCTAssertNil(ContainerIdentity.parse(cgroupFile: text), String(text.prefix(60)))
        }
    }

    func testMissingFinalNewline() {
        let id = "de3e0c277e4f1b34abcaf26790ea2b119a5af2010b0f1148fa10aa6205bc5530"
        XCTAssertEqual(ContainerIdentity.parse(cgroupFile: "1:name=systemd:/\n0::/system.slice/docker-\(id).scope")?.containerID, id)
    }
}
