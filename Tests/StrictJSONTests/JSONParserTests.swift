import StrictJSON
import Testing

@Suite("Strict JSON parsing")
struct JSONParserTests {
    @Test(
        "valid RFC 8259 documents parse and re-serialise to equal values",
        arguments: [
            #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#, #"[]"#, #"{}"#, #""x""#, "0", "-0.5e-7", "1E+2",
            #"{"s":"\u00e9\ud83d\ude00\n\t\"\\\/"}"#, " \r\n\t[1 , 2]\n", #"{"big":123456789012345678901234567890.000000000000000001}"#,
        ])
    func roundTrip(text: String) throws {
        let value = try JSONParser.parse(text)
        #expect(try JSONParser.parse(value.serialized) == value)
    }

    @Test("the lenient reading takes what Python's json.loads takes; the strict one refuses it")
    func lenient() throws {
        let lenient = JSONLimits(lenient: true)
        let text = #"{"a":1,"a":NaN,"b":[Infinity,-Infinity],"c":"x\ud800y\udc00\ud800\u0041"}"#
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
        let value = try JSONParser.parse(text, limits: lenient)
        let members = try #require(value.objectValue?.members)
        #expect(members.map(\.key) == ["a", "a", "b", "c"])
        #expect(members[1].value.serialized == "NaN")
        #expect(members[2].value.arrayValue?.map(\.serialized) == ["Infinity", "-Infinity"])
        #expect(members[3].value == .string("x\u{FFFD}y\u{FFFD}\u{FFFD}A"))
        // What Python refuses stays refused: trailing commas, comments, leading zeros, control characters.
        for refused in ["[1,]", "[1]//", "[01]", "[\"a\u{01}\"]", "[nan]", "[-NaN]"] {
            #expect(throws: JSONParseError.self, "\(refused)") { try JSONParser.parse(refused, limits: lenient) }
        }
    }

    @Test("numbers keep their exact literal text")
    func numberPrecision() throws {
        let value = try JSONParser.parse(#"{"n":9007199254740993,"f":0.1000000000000000055511151231257827}"#)
        #expect(value.serialized == #"{"n":9007199254740993,"f":0.1000000000000000055511151231257827}"#)
        #expect(value.objectValue?["n"]?.numberValue?.int64Value == 9_007_199_254_740_993)
    }

    @Test(
        "invalid or ambiguous input is refused with a reason",
        arguments: [
            (#"{"a":1,"a":2}"#, "duplicate key"), (#"{"a":1,"\u0061":2}"#, "duplicate key"),
            (#"{"a":1,}"#, "expected a string key"), ("[1,]", "unexpected character"), ("01", "leading zeros"),
            ("NaN", "unexpected character"), ("1.", "digit after"), ("-", "invalid number"),
            (#""\ud800""#, "lone high surrogate"), (#""\udc00""#, "lone low surrogate"), (#""\x""#, "invalid escape"),
            ("\"a\u{01}\"", "control character"), (#"{"a":1} x"#, "after the JSON value"), ("", "end of input"),
            ("// c\n1", "unexpected character"), ("tru", "invalid literal"), ("\u{FEFF}{}", "unexpected character"),
            (#""abc"#, "unterminated"),
        ])
    func refused(text: String, reason: String) {
        #expect { try JSONParser.parse(text) } throws: { error in
            "\(error)".contains(reason)
        }
    }

    @Test("a repeated key is found in objects of every size, before and after the parser switches to a key set")
    func repeatedKeysInLargeObjects() throws {
        for count in [2, 11, 12, 13, 14, 40] {
            let keys = (0..<count).map { "k\($0)" }
            let unique = "{" + keys.map { "\"\($0)\":0" }.joined(separator: ",") + "}"
            #expect(try JSONParser.parse(unique).objectValue?.keys == keys)
            for (first, second) in [(0, count - 1), (count - 2, count - 1), (0, 1)] {
                var repeated = keys
                repeated[second] = keys[first]
                let text = "{" + repeated.map { "\"\($0)\":0" }.joined(separator: ",") + "}"
                #expect("\(count) keys, \(first) repeated at \(second)") { try JSONParser.parse(text) } throws: { error in
                    "\(error)".contains("duplicate key")
                }
            }
        }
    }

    /// Found by review: Swift compares and hashes strings by canonical equivalence, sorting a run of marks by insertion
    /// each time, so a key of 20,000 marks out of order cost about 0.2 s per comparison. Strings, keys and values, raw
    /// and escaped, are held to 30 marks in a row (Unicode's stream-safe bound).
    @Test func combiningMarkRunsAreBounded() throws {
        let marks = { (count: Int) in String(repeating: "\u{0301}", count: count) }
        #expect(try JSONParser.parse(#"{"a\#(marks(30))":"b\#(marks(30))"}"#).objectValue?.keys.first == "a" + marks(30))
        // Runs broken by a starter are each counted apart.
        #expect((try? JSONParser.parse(#"["a\#(marks(30))b\#(marks(30))"]"#)) != nil)
        let escaped = "\"x" + String(repeating: "\\u0316", count: 31) + "\""
        for text in [#"{"a\#(marks(31))":1}"#, #"["a\#(marks(31))"]"#, "[" + escaped + "]", "{" + escaped + ":1}"] {
            #expect("\(text.utf8.count) bytes") { try JSONParser.parse(text) } throws: { error in
                guard let error = error as? JSONParseError else { return false }
                return error.isNotStreamSafe && error.reason.contains("more than 30 combining marks") && error.offset == 2
            }
        }
        // The lenient reading (JSON inside a string argument) is held to it as well.
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(("[" + escaped + "]").utf8), limits: JSONLimits(lenient: true)) }
    }

    @Test("invalid UTF-8 is refused")
    func invalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) }
    }

    @Test("invalid UTF-8 next to escapes is refused, at the run it is in; escapes never complete a broken sequence")
    func invalidUTF8AroundEscapes() throws {
        let quote: [UInt8] = [0x22]
        func offset(_ bytes: [UInt8]) -> Int? {
            do {
                _ = try JSONParser.parse(quote + bytes + quote)
                return nil
            } catch {
                return "\(error)".contains("invalid UTF-8") ? error.offset : -1
            }
        }
        let e9 = Array(#"\u00e9"#.utf8), newline = Array(#"\n"#.utf8)
        #expect(offset([0xC3] + e9) == 1)  // a lead byte cut short by an escape
        #expect(offset(e9 + [0xA9]) == 7)  // a continuation byte after one
        #expect(offset(Array("ab".utf8) + newline + Array("cd".utf8) + newline + [0xFF, 0x41]) == 9)
        #expect(offset(Array(#"\ud83d\ude00"#.utf8) + [0x80]) == 13)
        #expect(offset([0xC3, 0xA9] + newline + [0xC3, 0xA9] + e9) == nil)
        #expect(try JSONParser.parse(quote + [0xC3, 0xA9] + newline + [0xC3, 0xA9] + e9 + quote).stringValue == "é\néé")
    }

    @Test("depth and size limits hold")
    func limits() throws {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect { try JSONParser.parse(deep) } throws: { "\($0)".contains("nesting deeper") }
        let fine = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        _ = try JSONParser.parse(fine)
        #expect { try JSONParser.parse("[1,2,3]", limits: JSONLimits(maximumBytes: 3)) } throws: { "\($0)".contains("exceeds") }
    }

    @Test(
        "spans along a key path are the exact bytes of those values, in the text or in each element of a top-level array",
        arguments: [
            (#"{"params" : {"name":"x", "arguments": {"path" : "a\/b"} }, "id":1}"#, [(0, 1), (0, 2)]),
            (#"{"p\u0061rams":{"\u0061rguments":[1, 2 ]}}"#, [(0, 1), (0, 2)]),
            (#"[{"params":{"arguments":{}}}, {"id":2}, {"params":[{"arguments":1}]}]"#, [(0, 1), (0, 2), (2, 1)]),
            (#"{"x":{"params":{"arguments":1}},"arguments":2}"#, []),
            (#"[[{"params":1}]]"#, []),
            (#"{"params":{"other":{"arguments":1}}}"#, [(0, 1)]),
        ])
    func spans(text: String, expected: [(element: Int, depth: Int)]) throws {
        let bytes = Array(text.utf8)
        let (value, spans) = try JSONParser.parse(bytes, spansAlong: ["params", "arguments"])
        let found = spans.map { [$0.element, $0.depth] }.sorted { $0.lexicographicallyPrecedes($1) }
        #expect(found == expected.map { [$0.element, $0.depth] })
        for span in spans {
            var container = value
            if case .array(let elements) = value { container = elements[span.element] }
            let atPath = ["params", "arguments"].prefix(span.depth).reduce(container) { $0.objectValue?[$1] ?? .null }
            #expect(try JSONParser.parse(Array(bytes[span.range])) == atPath, "\(span)")
            // The span is the value's bytes exactly: no surrounding whitespace or separators.
            #expect(![0x20, 0x2C, 0x3A].contains(bytes[span.range.lowerBound]))
            #expect(![0x20, 0x2C].contains(bytes[span.range.upperBound - 1]))
        }
        #expect(try JSONParser.parse(bytes) == value)
    }

    @Test("bytes read in place (a slice, raw memory) and bytes copied first (a lazy collection) parse alike, spans from 0")
    func contiguousAndCopiedInputAgree() throws {
        let text = Array(#"{"id":1,"params":{"name":"caf\u00e9","arguments":{"p":"ü"}}}"#.utf8)
        let expected = try JSONParser.parse(text, spansAlong: ["params", "arguments"])
        let slice = (Array("ignored".utf8) + text)[7...]
        let fromSlice = try JSONParser.parse(slice, spansAlong: ["params", "arguments"])
        let fromRaw = try text.withUnsafeBytes { try JSONParser.parse($0, spansAlong: ["params", "arguments"]) }
        let fromLazy = try JSONParser.parse(text.lazy.map { $0 }, spansAlong: ["params", "arguments"])
        for parsed in [fromSlice, fromRaw, fromLazy] {
            #expect(parsed.value == expected.value)
            #expect(parsed.spans == expected.spans)
        }
        #expect(expected.spans.map(\.range.lowerBound).sorted() == [17, 49])
        let broken = text.dropLast()
        #expect(throws: JSONParseError.self) { try JSONParser.parse(broken.lazy.map { $0 }) }
        #expect(throws: JSONParseError.self) { try broken.withUnsafeBytes { try JSONParser.parse($0) } }
    }

    @Test("random byte strings never crash the parser (bounded fuzz)")
    func fuzz() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]":,\ u0123456789abcdefnrt-+.eE"#.utf8) + [0x00, 0xFF, 0xC3, 0x80]
        for _ in 0..<5_000 {
            let length = Int.random(in: 0..<40, using: &generator)
            let bytes = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            if let value = try? JSONParser.parse(bytes) {
                #expect(try JSONParser.parse(value.serialized) == value)
            }
        }
    }
}

@Suite("Configuration object reader")
struct JSONObjectReaderTests {
    @Test("unknown keys and wrong types name the path")
    func errors() throws {
        let reader = try JSONObjectReader(JSONParser.parse(#"{"tenants":{"acme":{"issuer":1,"typo":true}}}"#))
        let acme = try #require(try reader.object("tenants")?.object("acme"))
        #expect { try acme.requireOnlyKeys(["issuer"]) } throws: { "\($0)".hasPrefix("tenants.acme.typo: unknown key") }
        #expect { try acme.string("issuer") } throws: { "\($0)" == "tenants.acme.issuer: expected a string, found number" }
        #expect { try acme.requiredString("audience") } throws: { "\($0)" == "tenants.acme.audience: is required" }
    }
}
