import NIOCore
import Redis
import Testing

@Suite struct RESPParserTests {
    static let sample = "+OK\r\n-ERR wrong\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n"
    static let expected: [RESPValue] = [
        .simpleString("OK"), .error("ERR wrong"), .integer(-42), .bulkString(Array("he\r\no".utf8)), .bulkString(nil),
        .array([.integer(1), .array([.bulkString([])])]), .array(nil),
    ]

    @Test func readsEveryTypeInOrder() throws {
        var buffer = ByteBuffer(string: Self.sample)
        var values: [RESPValue] = []
        while let value = try RESPParser().next(&buffer) { values.append(value) }
        #expect(values == Self.expected)
        #expect(buffer.readableBytes == 0)
    }

    /// Replies arrive in arbitrary pieces: split at every byte, the parser waits (consuming nothing) and then
    /// reads the same values.
    @Test func incompleteInputConsumesNothing() throws {
        let bytes = Array(Self.sample.utf8)
        for split in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<split])
            var values: [RESPValue] = []
            while let value = try RESPParser().next(&buffer) { values.append(value) }
            buffer.writeBytes(bytes[split...])
            while let value = try RESPParser().next(&buffer) { values.append(value) }
            #expect(values == Self.expected, "split at \(split)")
        }
    }

    @Test(arguments: [
        ("$2000000\r\n", "bulk string length"),
        ("*5000\r\n", "array of 5000"),
        (String(repeating: "*1\r\n", count: 20) + ":1\r\n", "nested deeper"),
        ("!12\r\n", "unknown type byte"),
        (":12\n", "not ended by CRLF"),
        (":12x\r\n", "is not an integer"),
        ("$3\r\nabcde\r\n", "not followed by CRLF"),
        ("+" + String(repeating: "a", count: 5000), "longer than"),
    ])
    func refusesWhatIsNotRESPOrTooLarge(input: String, reason: String) {
        var buffer = ByteBuffer(string: input)
        #expect {
            _ = try RESPParser().next(&buffer)
        } throws: { error in
            (error as? RESPProtocolError)?.reason.contains(reason) ?? false
        }
    }

    @Test func writesCommandsAsArraysOfBulkStrings() {
        var buffer = ByteBuffer()
        RESPValue.writeCommand([Array("SET".utf8), Array("k".utf8), Array("a\r\nb".utf8)], into: &buffer)
        #expect(String(buffer: buffer) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n")
    }

    @Test func urls() throws {
        let plain = try RedisSettings(url: "redis://cache.internal")
        #expect(plain.host == "cache.internal" && plain.port == 6379 && plain.database == 0 && !plain.wantsTLS)
        let full = try RedisSettings(url: "rediss://mcpgw@[::1]:6380/3")
        #expect(full.host == "::1" && full.port == 6380 && full.database == 3 && full.wantsTLS && full.username == "mcpgw")
        #expect(full.address == "[::1]:6380")
        for bad in ["http://x", "redis://", "redis://h:0", "redis://h:70000", "redis://h/x", "redis://[::1"] {
            #expect(throws: RedisURLError.self, "\(bad)") { try RedisSettings(url: bad) }
        }
        // A password in the URL is refused, and not repeated in the error (also one with a `/` in it).
        for (url, secret) in [("redis://user:hunter2@h:6379", "hunter2"), ("redis://user:ab/cd@h:6379/0", "cd")] {
            do {
                _ = try RedisSettings(url: url)
                Issue.record("a password in the URL was accepted")
            } catch {
                #expect(error.reason.contains("password_file"))
                #expect(!"\(error)".contains(secret), "\(error)")
            }
        }
    }
}
