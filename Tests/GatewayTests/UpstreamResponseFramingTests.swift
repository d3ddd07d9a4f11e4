import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Gateway

/// What a decoder made of an upstream's bytes: each response's status, headers, body and end, and whether it refused.
private struct Responses: Equatable, CustomStringConvertible {
    struct Response: Equatable {
        var status: Int
        var headers: [String]
        var body: [UInt8] = []
        var ended = false
    }

    var responses: [Response] = []
    var refused = false

    mutating func take(_ part: HTTPClientResponsePart) {
        switch part {
        case .head(let head):
            responses.append(
                Response(
                    status: Int(head.status.code),
                    headers: head.headers.map { "\($0.name): \(String($0.value.reversed().drop { $0 == " " || $0 == "\t" }.reversed()))" }))
        case .body(let bytes): responses[responses.count - 1].body += bytes.readableBytesView
        case .end: responses[responses.count - 1].ended = true
        }
    }

    var description: String {
        responses.map { "\($0.status) \($0.headers) body=\(String(decoding: $0.body, as: UTF8.self).debugDescription) ended=\($0.ended)" }
            .joined(separator: "; ") + (refused ? " REFUSED" : "")
    }
}

/// The gateway's framing of `pieces`, answering requests with `methods`, then the connection's close if `close`.
private func frame(_ pieces: [[UInt8]], methods: [HTTPMethod], close: Bool) -> Responses {
    var framing = UpstreamResponseFraming(maximumHeadBytes: 1 << 20)
    for method in methods { framing.requestSent(method: method) }
    var framed = Responses()
    for piece in pieces where !framed.refused {
        if framing.feed(ByteBuffer(bytes: piece), { framed.take($0) }) != nil { framed.refused = true }
    }
    if close, !framed.refused, framing.closed({ framed.take($0) }) != nil { framed.refused = true }
    return framed
}

/// NIO's HTTP/1.1 response decoder (llhttp), which the gateway used before: the reference for valid responses.
private func frameWithNIO(_ bytes: [UInt8], methods: [HTTPMethod], close: Bool) -> Responses {
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
    var framed = Responses()
    for method in methods {
        try? channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
    }
    do {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        if close { try channel.close().wait() }
    } catch {
        framed.refused = true
    }
    while let part = try? channel.readInbound(as: HTTPClientResponsePart.self) { framed.take(part) }
    _ = try? channel.finish()
    return framed
}

/// Responses upstream servers send: (what, bytes, the requests' methods, whether the connection then closes).
private let validResponses: [(String, String, [HTTPMethod], Bool)] = [
    ("length", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello", [.POST], false),
    ("empty", "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", [.POST], false),
    (
        "chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
        [.POST], false
    ),
    ("no reason", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", [.GET], false),
    ("204", "HTTP/1.1 204 No Content\r\nServer: s\r\n\r\n", [.DELETE], false),
    ("304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", [.GET], false),
    ("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", [.HEAD], false),
    ("100 then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", [.POST], false),
    ("until close", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n", [.GET], true),
    ("HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", [.POST], true),
    (
        "two in a row", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        [.POST, .POST], false
    ),
    (
        "HEAD then POST", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", [.HEAD, .POST],
        false
    ),
    ("obs-text", "HTTP/1.1 200 D\u{E9}j\u{E0}\r\nX-V: caf\u{E9}\r\nContent-Length: 0\r\n\r\n", [.GET], false),
]

/// Upstream bytes the gateway refuses (its connection is then closed and the client gets a 502).
private let invalidResponses: [(String, String, [HTTPMethod], Bool)] = [
    (
        "Content-Length with Transfer-Encoding", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [.POST], false
    ),
    ("two Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", [.POST], false),
    ("gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", [.POST], true),
    (
        "chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [.POST],
        false
    ),
    ("bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", [.POST], false),
    ("folded header", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n", [.POST], false),
    ("bare CR at a line's start, hiding the length", "HTTP/1.1 200 OK\r\n\rContent-Length: 5\r\n\r\nhello", [.POST], true),
    ("two-digit status", "HTTP/1.1 20 OK\r\n\r\n", [.POST], false),
    ("status out of range", "HTTP/1.1 700 Odd\r\nContent-Length: 0\r\n\r\n", [.POST], false),
    ("HTTP/2", "HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", [.POST], false),
    ("control character in the reason", "HTTP/1.1 200 O\u{1}K\r\nContent-Length: 0\r\n\r\n", [.POST], false),
    ("no request outstanding", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", [], false),
    ("a body after a 204", "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", [.POST], false),
    ("closed inside a length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", [.POST], true),
    ("closed inside chunks", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", [.POST], true),
    ("closed inside a head", "HTTP/1.1 200 OK\r\nContent-Len", [.POST], true),
]

@Suite("Upstream response framing (RFC 9112), against NIO's decoder")
struct UpstreamResponseFramingTests {
    @Test("responses frame as NIO's decoder frames them, whole and cut at every byte")
    func agreesWithNIO() {
        for (name, response, methods, close) in validResponses {
            let whole = Array(response.utf8)
            let reference = frameWithNIO(whole, methods: methods, close: close)
            #expect(!reference.refused, "NIO refused \(name)")
            #expect(frame([whole], methods: methods, close: close) == reference, "\(name)\n  NIO: \(reference)")
            for cut in 1..<whole.count {
                let pieces = frame([Array(whole[..<cut]), Array(whole[cut...])], methods: methods, close: close)
                #expect(pieces == reference, "\(name) cut at \(cut): \(pieces)")
            }
        }
    }

    @Test("smuggling shapes, broken syntax, unasked-for bytes and cut responses are refused")
    func refusesInvalid() {
        for (name, response, methods, close) in invalidResponses {
            let whole = Array(response.utf8)
            #expect(frame([whole], methods: methods, close: close).refused, "\(name)")
            #expect(frame(whole.map { [$0] }, methods: methods, close: close).refused, "\(name), a byte at a time")
        }
    }

    @Test("an upstream head with a value it reads that is not stream-safe text, or with more than 1,024 field lines, is refused")
    func boundedHeads() {
        let marks = String(repeating: "\u{0301}\u{0316}", count: 20_000)
        for name in ["Connection", "Keep-Alive", "Mcp-Session-Id"] {
            let response = Array("HTTP/1.1 200 OK\r\n\(name): x\(marks)\r\nContent-Length: 0\r\n\r\n".utf8)
            #expect(frame([response], methods: [.POST], close: false).refused, "\(name)")
        }
        // A header the gateway's framing drops never becomes a string: it is not held to the bound.
        var keeping = UpstreamResponseFraming(maximumHeadBytes: 1 << 20, keptHeaders: UpstreamConnection.readResponseHeaders)
        keeping.requestSent(method: .POST)
        var parts = 0
        let dropped = ByteBuffer(string: "HTTP/1.1 200 OK\r\nX-Other: x\(marks)\r\nContent-Length: 0\r\n\r\n")
        #expect(keeping.feed(dropped) { _ in parts += 1 } == nil && parts == 2)
        var strict = UpstreamResponseFraming(maximumHeadBytes: 1 << 20, keptHeaders: UpstreamConnection.readResponseHeaders)
        strict.requestSent(method: .POST)
        let kept = ByteBuffer(string: "HTTP/1.1 200 OK\r\nKeep-Alive: x\(marks)\r\nContent-Length: 0\r\n\r\n")
        #expect(strict.feed(kept) { _ in } != nil)
        let lines = { (count: Int) in String(repeating: "Allow:\r\n", count: count) }
        let withinBound = Array("HTTP/1.1 200 OK\r\n\(lines(1_023))Content-Length: 0\r\n\r\n".utf8)
        #expect(!frame([withinBound], methods: [.POST], close: false).refused)
        let beyond = Array("HTTP/1.1 200 OK\r\n\(lines(1_024))Content-Length: 0\r\n\r\n".utf8)
        #expect(frame([beyond], methods: [.POST], close: false).refused)
    }

    @Test("a body without length or chunks is read up to the close, and says so (the connection is not reused)")
    func untilClose() {
        var framing = UpstreamResponseFraming(maximumHeadBytes: 4096)
        framing.requestSent(method: .GET)
        var parts: [String] = []
        _ = framing.feed(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\nabc")) { parts.append("\($0)") }
        #expect(framing.bodyEndsAtClose)
        #expect(framing.closed { parts.append("\($0)") } == nil)
        #expect(parts.count == 3 && parts.last == "end(nil)", "\(parts)")
    }

    @Test("the gateway's framing keeps only the headers it reads, and still checks and frames by the others")
    func keepsReadHeaders() {
        let head =
            "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 05:00:00 GMT\r\nContent-Type: application/json\r\n"
            + "X-Request-Id: 42\r\nKeep-Alive: timeout=5\r\nMcp-Session-Id: s1\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        var framing = UpstreamResponseFraming(maximumHeadBytes: 4096, keptHeaders: UpstreamConnection.readResponseHeaders)
        framing.requestSent(method: .POST)
        var framed = Responses()
        #expect(framing.feed(ByteBuffer(string: head)) { framed.take($0) } == nil)
        #expect(
            framed.responses
                == [
                    .init(
                        status: 200,
                        headers: [
                            "Content-Type: application/json", "Keep-Alive: timeout=5", "Mcp-Session-Id: s1", "Connection: close",
                            "Content-Length: 2",
                        ],
                        body: Array("ok".utf8), ended: true)
                ], "\(framed)")
        // `Connection: close` was read from the bytes (and kept: the headers it names are not relayed).
        #expect(!framing.responseKeepsConnection)
        // Every relayed header and every header the exchange reads is kept.
        for name in ResponseFraming.forwardedResponseHeaders.names + ["content-length", "transfer-encoding", "keep-alive"] {
            #expect(UpstreamConnection.readResponseHeaders.index(of: name.uppercased()) != nil, "\(name)")
        }
        // A header that is not kept is still checked: a control character in it refuses the response.
        var strict = UpstreamResponseFraming(maximumHeadBytes: 4096, keptHeaders: UpstreamConnection.readResponseHeaders)
        strict.requestSent(method: .POST)
        #expect(strict.feed(ByteBuffer(string: "HTTP/1.1 200 OK\r\nServer: a\u{1}b\r\nContent-Length: 0\r\n\r\n")) { _ in } != nil)
    }
}
