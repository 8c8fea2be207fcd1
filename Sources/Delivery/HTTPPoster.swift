import AsyncHTTPClient
import FerretCore
import Foundation
import NIOCore
import NIOHTTP1

/// Sends request bodies with one HTTP client shared by every network sink
/// (AsyncHTTPClient's connection pool: keep-alive, one event loop group).
/// Blocking: called from a delivery's own thread, never from an event loop.
public struct HTTPPoster: Sendable {
    public let url: String
    public let method: HTTPMethod
    public let headers: [(String, String)]
    public let timeout: Duration

    public init(url: String, method: HTTPMethod = .POST, headers: [(String, String)], timeout: Duration) throws {
        if let problem = Self.problem(url: url) { throw HTTPPosterError(description: problem) }
        self.url = url
        self.method = method
        self.headers = headers
        self.timeout = timeout
    }

    /// Why `url` cannot be posted to, or nil when it can.
    public static func problem(url: String) -> String? {
        guard let u = URL(string: url), let scheme = u.scheme, ["http", "https"].contains(scheme.lowercased()), u.host != nil else {
            return "'\(url)' is not an http:// or https:// URL"
        }
        return nil
    }

    /// The answer to one request: its status and the start of its body.
    public struct Answer: Sendable {
        public var status: Int
        public var body: String
    }

    /// Sends `body` and tells what became of it: 2xx is delivered; 408, 429 and
    /// 5xx, connection and timeout errors are passing; other 4xx are refusals.
    public func post(_ body: [UInt8], url override: String? = nil, extraHeaders: [(String, String)] = []) -> DeliveryOutcome {
        let target = override ?? url
        switch exchange(body, url: target, extraHeaders: extraHeaders) {
        case .success(let a):
            switch a.status {
            case 200..<300: return .delivered
            case 408, 429, 500...: return .retry("\(target): HTTP \(a.status) \(a.body)")
            default: return .reject("\(target): HTTP \(a.status) \(a.body)")
            }
        case .failure(let e):
            return .retry("\(target): \(e)")
        }
    }

    /// One request and its answer (transport errors as failures).
    /// `maxBody`: how much of the answer's body to keep (as text).
    public func exchange(_ body: [UInt8], url target: String? = nil, extraHeaders: [(String, String)] = [],
                         maxBody: Int = 512) -> Result<Answer, any Error> {
        do {
            var h = HTTPHeaders(headers)
            for (k, v) in extraHeaders { h.replaceOrAdd(name: k, value: v) }
            let request = try HTTPClient.Request(url: target ?? url, method: method, headers: h,
                                                 body: body.isEmpty ? nil : .bytes(body))
            let deadline = NIODeadline.now() + .nanoseconds(timeout.nanoseconds)
            let response = try HTTPClient.shared.execute(request: request, deadline: deadline).wait()
            var text = ""
            if var b = response.body, let s = b.readString(length: min(b.readableBytes, maxBody)) {
                text = s.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            return .success(Answer(status: Int(response.status.code), body: text))
        } catch {
            return .failure(error)
        }
    }
}

public struct HTTPPosterError: Error, CustomStringConvertible {
    public var description: String
}
