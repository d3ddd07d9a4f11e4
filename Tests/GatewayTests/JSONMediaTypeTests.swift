import Testing

@testable import Gateway

@Suite("The Content-Type of a JSON-RPC body")
struct JSONMediaTypeTests {
    @Test("application/json with no charset or charset utf-8, and well-formed other parameters, is taken")
    func taken() {
        for value in [
            "application/json", "APPLICATION/JSON", "application/json;charset=utf-8", "application/json ; charset=UTF-8",
            #"application/json; charset="utf-8""#, #"application/json; charset="utf\-8""#, "application/json;", "application/json;;",
            "application/json; q=0.5; charset=utf-8", #"application/json; profile="a;charset=utf-7""#, "application/json\t;\tcharset=utf-8",
        ] {
            #expect(JSONMediaType.problem(value) == nil, "\(value)")
        }
    }

    @Test("another charset, a second charset, another type or a malformed parameter is refused, saying which")
    func refused() {
        let cases: [(String, String)] = [
            ("application/json; charset=utf-7", "charset must be utf-8"),
            (#"application/json; charset="utf-16le""#, "charset must be utf-8"),
            ("application/json; charset=utf8", "charset must be utf-8"),
            ("application/json; charset=utf-8; charset=utf-7", "more than once"),
            ("application/json; CHARSET=utf-8; Charset=utf-8", "more than once"),
            ("application/json; charset", "malformed parameter"),
            ("application/json; charset=", "malformed parameter"),
            (#"application/json; x="unclosed"#, "malformed parameter"),
            ("application/json charset=utf-8", "malformed parameter"),
            ("application/json; =x", "malformed parameter"),
            ("application/jsonp", "must be application/json"),
            ("application/json-seq", "must be application/json"),
            ("text/json", "must be application/json"),
            ("application", "must be application/json"),
            ("", "must be application/json"),
        ]
        for (value, reason) in cases {
            #expect(JSONMediaType.problem(value)?.contains(reason) == true, "\(value): \(JSONMediaType.problem(value) ?? "taken")")
        }
    }
}
