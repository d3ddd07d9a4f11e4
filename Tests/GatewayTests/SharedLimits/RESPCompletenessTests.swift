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

    /// A header only the parser can judge (out of bounds, not a number, an unknown type) is "whole", so that the
    /// parser reports it rather than the reply waiting for bytes that never make it whole.
    @Test(arguments: ["$2000000\r\n", "*5000\r\n", "!12\r\n", ":12\n", "$x\r\n", "*-2\r\n"])
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
