import NIOCore
import Testing

@testable import Redis

@Suite struct RESPCompletenessTests {
    /// Replies arriving a byte at a time: the look for a whole value resumes where it stopped, says "whole" exactly
    /// when the parser can read the value, and the values come out as from one read.
    @Test func wholeExactlyWhenTheParserCanRead() throws {
        let bytes = Array(RESPParserTests.sample.utf8)
        let parser = RESPParser()
        var completeness = RESPCompleteness(parser: parser)
        var received = ByteBuffer()
        var values: [RESPValue] = []
        for byte in bytes {
            received.writeInteger(byte)
            while true {
                var probe = received
                let parsable = try parser.next(&probe) != nil
                let whole = completeness.isWhole(received.readableBytesView)
                #expect(whole == parsable, "after \(values.count) values, \(received.readableBytes) bytes")
                guard whole, let value = try parser.next(&received) else { break }
                completeness.reset()
                values.append(value)
            }
        }
        #expect(values == RESPParserTests.expected)
    }

    /// Bytes the parser refuses (out of bounds, not a number, an unknown type, a bulk string without its CRLF, nesting
    /// past its depth, a line past its length), also inside an array whose other elements have not come, are "whole"
    /// at once, so that the parser reports them rather than the reply waiting for its command's deadline.
    @Test(arguments: [
        "$2000000\r\n", "*5000\r\n", "!12\r\n", ":12\n", "$x\r\n", "*-2\r\n", "*2\r\n:x\r\n", "*3\r\n$1\r\nab\r\n",
        String(repeating: "*1\r\n", count: 9), "*2\r\n+" + String(repeating: "a", count: 5000) + "\r\n", "*2\r\n\r\n",
    ])
    func malformedHeadersAreLeftToTheParser(text: String) {
        var completeness = RESPCompleteness(parser: RESPParser())
        let whole = completeness.isWhole(ByteBuffer(string: text).readableBytesView)
        #expect(whole)
        #expect(throws: RESPProtocolError.self) {
            var buffer = ByteBuffer(string: text)
            _ = try RESPParser().next(&buffer)
        }
    }
}
