import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Gateway

@Suite("Upstream request")
struct UpstreamRequestTests {
    private func request(_ method: HTTPMethod = .POST, headers: [(String, String)], body: String?) throws -> UpstreamRequest {
        var request = try UpstreamRequest(method: method, target: "/mcp", allocator: ByteBufferAllocator())
        for (name, value) in headers { try request.add(name: name, value: value) }
        request.finish(body: body.map { ByteBuffer(string: $0) })
        return request
    }

    @Test("head and body are one buffer, with the headers as given and the body's Content-Length")
    func oneBuffer() throws {
        let body = #"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
        let request = try request(headers: [("Host", "up:80"), ("content-type", "application/json")], body: body)
        #expect(
            String(buffer: request.head)
                == "POST /mcp HTTP/1.1\r\nHost: up:80\r\ncontent-type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        )
        #expect(request.separateBody == nil)
    }

    @Test("a request without a body is its head alone, without framing; a large body is a buffer of its own")
    func shapes() throws {
        let get = try request(.GET, headers: [("Accept", "text/event-stream")], body: nil)
        #expect(String(buffer: get.head) == "GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n")
        let empty = try request(headers: [], body: "")
        #expect(String(buffer: empty.head) == "POST /mcp HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        let large = String(repeating: "x", count: UpstreamRequest.coalescedBodyBytes + 1)
        let post = try request(headers: [], body: large)
        #expect(String(buffer: post.head) == "POST /mcp HTTP/1.1\r\nContent-Length: \(large.utf8.count)\r\n\r\n")
        #expect(post.separateBody.map { String(buffer: $0) } == large)
    }

    @Test(
        "control characters in a header or the target never reach the upstream",
        arguments: [
            ("X-Test", "a\r\nInjected: yes", "/mcp"), ("X-Test", "a\nb", "/mcp"), ("X-Te\rst", "a", "/mcp"),
            ("X-Test", "a\u{0}b", "/mcp"), ("X-Test", "a", "/mcp HTTP/1.1\r\nInjected: yes\r\nX:"),
            ("Last-Event-ID", "e\u{1}v", "/mcp"), ("X-Test", "a\u{7F}", "/mcp"), ("X-Test", "a\u{1B}[2J", "/mcp"),
        ])
    func injection(name: String, value: String, target: String) throws {
        #expect(throws: UpstreamRequest.InvalidHeader.self) {
            var request = try UpstreamRequest(method: .POST, target: target, allocator: ByteBufferAllocator())
            try request.add(name: name, value: value)
        }
    }

    @Test("a horizontal tab and non-ASCII text are field text: they go as they are")
    func fieldText() throws {
        var request = try UpstreamRequest(method: .GET, target: "/mcp", allocator: ByteBufferAllocator())
        try request.add(name: "X-Test", value: "a\tb é")
        request.finish(body: nil)
        #expect(String(buffer: request.head) == "GET /mcp HTTP/1.1\r\nX-Test: a\tb é\r\n\r\n")
    }

    @Test("traceparent is written in pieces as the trace context's own text gives it")
    func traceparent() throws {
        var request = try UpstreamRequest(method: .POST, target: "/mcp", allocator: ByteBufferAllocator())
        let trace = TraceContext(
            traceID: "4bf92f3577b34da6a3ce929d0e0e4736", parentSpanID: "00f067aa0ba902b7", spanID: "a3ce929d0e0e4736", flags: "01",
            state: nil)
        try request.addTraceparent(trace)
        request.finish(body: nil)
        #expect(String(buffer: request.head) == "POST /mcp HTTP/1.1\r\ntraceparent: \(trace.upstreamTraceparent)\r\n\r\n")
        #expect(trace.upstreamTraceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-a3ce929d0e0e4736-01")
    }

    @Test("the response framing is told the method: the answer to HEAD has no body")
    func headResponse() throws {
        var framing = UpstreamResponseFraming(maximumHeadBytes: UpstreamConnection.maximumResponseHeadBytes)
        framing.requestSent(method: .HEAD)
        framing.requestSent(method: .POST)
        var parts: [String] = []
        let error = framing.feed(
            ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        ) { part in
            switch part {
            case .head(let head): parts.append("head \(head.status.code)")
            case .body(let body): parts.append("body \(String(buffer: body))")
            case .end: parts.append("end")
            }
        }
        #expect(error == nil)
        #expect(parts == ["head 200", "end", "head 200", "body hello", "end"])
    }
}
