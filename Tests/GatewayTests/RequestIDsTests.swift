import NIOCore
import NIOHTTP1
import Testing

@testable import Gateway

@Suite("Request ids and header reading")
struct RequestIDsTests {
    @Test("ids are the process prefix and a hexadecimal counter, each one new")
    func ids() throws {
        let ids = RequestIDs()
        let all = (0..<5000).map { _ in ids.next() }
        let prefix = try #require(all[0].split(separator: "-").first)
        #expect(Set(all).count == all.count)
        for (offset, id) in all.enumerated() {
            #expect(id == "\(prefix)-\(String(offset + 1, radix: 16))")
        }
    }

    @Test("header names compare without regard to ASCII case, and only whole")
    func headerNames() {
        #expect(HeaderText.isName("Authorization", "authorization"))
        #expect(HeaderText.isName("CONTENT-TYPE", "content-type"))
        #expect(!HeaderText.isName("content-typ", "content-type"))
        #expect(!HeaderText.isName("content-typeX", "content-type"))
        #expect(!HeaderText.isName("contentXtype", "content-type"))
        // A list of names: any case, whole names only, names of one length told apart, and no name longer than any.
        let names = HeaderNames(["accept", "allow", "x-aaaa", "content-type"])
        #expect(names.index(of: "ACCEPT") == 0)
        #expect(names.index(of: "X-AaAa") == 2)
        #expect(names.index(of: "Content-Type") == 3)
        #expect(names.index(of: "accep") == nil)
        #expect(names.index(of: "x-aaab") == nil)
        #expect(names.index(of: "content-type-and-more") == nil)
        #expect(names.index(of: "") == nil)
    }

    @Test("a header line is written whole, as one write: name, colon and space, value, CRLF")
    func fieldLines() {
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\n")
        HeaderText.writeField("Content-Type", "application/json", into: &buffer)
        HeaderText.writeField("X-Empty", "", into: &buffer)
        // Small (inline) strings, long ones and non-ASCII text alike.
        let long = String(repeating: "é", count: 3000)
        HeaderText.writeField("a", long, into: &buffer)
        #expect(
            buffer.readString(length: buffer.readableBytes)
                == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Empty: \r\na: \(long)\r\n")
    }

    @Test("header values' prefixes compare without regard to ASCII case")
    func valuePrefixes() {
        #expect(HeaderText.hasPrefix("Application/JSON; charset=utf-8", "application/json"))
        #expect(HeaderText.hasPrefix("text/event-stream", "text/event-stream"))
        #expect(!HeaderText.hasPrefix("application/jso", "application/json"))
        #expect(!HeaderText.hasPrefix("text/html", "application/json"))
    }

    @Test("a repeated single-valued header is found whatever its case, in the list's order")
    func repeatedHeaders() {
        func repeated(_ headers: [(String, String)]) -> String? { RequestHeaderValues(HTTPHeaders(headers)).repeatedSingleValued }
        #expect(repeated([("Accept", "a"), ("Content-Type", "x")]) == nil)
        #expect(repeated([("Accept", "a"), ("ACCEPT", "b")]) == "accept")
        #expect(repeated([("mcp-name", "a"), ("Accept", "x"), ("mcp-name", "b"), ("accept", "y")]) == "mcp-name")  // mcp-name comes before accept
        // Every single-valued name, repeated in another case, is found; other names the gateway reads are not reported.
        let names = RequestHeaderValues.names.names
        #expect(names.count == RequestHeaderValues.Name.allCases.count && names.count <= 32)
        for (index, name) in names.enumerated() {
            let headers = [("x-other", "1"), (name, "a"), ("Mcp-Param-" + name, "b"), (name.uppercased(), "c")]
            #expect(repeated(headers) == (index < RequestHeaderValues.singleValuedCount ? name : nil))
            #expect(repeated([(name, "a"), (name + "x", "b")]) == nil)
        }
    }

    @Test("the first value of each header the gateway reads, whatever its case, as HTTPHeaders.first(name:) gives it")
    func firstValues() {
        for (index, name) in RequestHeaderValues.names.names.enumerated() {
            let raw = HTTPHeaders([("x-other", "0"), (name.uppercased(), "first \(index)"), ("Mcp-Param-X", "p"), (name, "second")])
            let values = RequestHeaderValues(raw)
            let header = RequestHeaderValues.Name(rawValue: index)!
            #expect(values.first(header) == raw.first(name: name))
            #expect(values.contains(header) && values.isRepeated(header))
            for other in RequestHeaderValues.Name.allCases where other != header {
                #expect(values.first(other) == nil && !values.contains(other))
            }
            #expect(values.hasParameterHeaders)
        }
        #expect(!RequestHeaderValues(HTTPHeaders([("Accept", "a")])).hasParameterHeaders)
    }

    @Test("a read or forwarded header whose value holds U+FFFD (bytes that were not UTF-8) is found; other headers are not read")
    func headersNotUTF8() {
        #expect(HeaderText.holdsReplacementCharacter("a\u{FFFD}"))
        #expect(HeaderText.holdsReplacementCharacter("\u{FFFD}b"))
        #expect(!HeaderText.holdsReplacementCharacter("é ü \u{FFFC}\u{FFFE} ab"))
        #expect(!HeaderText.holdsReplacementCharacter(""))
        func notUTF8(_ headers: [(String, String)]) -> String? { RequestHeaderValues(HTTPHeaders(headers)).notUTF8 }
        #expect(notUTF8([("Accept", "a"), ("X-Other", "\u{FFFD}"), ("Authorization", "Bearer \u{FFFD}")]) == nil)
        #expect(notUTF8([("Accept", "a"), ("ACCEPT", "b\u{FFFD}")]) == "ACCEPT")
        #expect(notUTF8([("Mcp-Param-Path", "/tmp/\u{FFFD}")]) == "Mcp-Param-Path")
        #expect(notUTF8([("Mcp-Param-Path", "/tmp/é")]) == nil)
    }
}
