import Foundation
import Identity
import NIOConcurrencyHelpers
import StrictJSON
import Testing

@testable import Gateway

@Suite("Audit records")
struct AuditRecordTests {
    @Test("timestamps are UTC ISO 8601 with milliseconds, the same as Foundation's formatter")
    func timestamp() {
        for seconds in [0.0, 1_795_566_449.777, 951_782_400.5, 1_800_000_000.999] {
            let date = Date(timeIntervalSince1970: seconds)
            let foundation = date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
            #expect(AuditRecord.timestamp(date) == foundation + "Z", "\(seconds)")
        }
    }

    @Test("fields the caller chooses are cut to a bound, with their length and digest: a record stays one readable line")
    func fieldsCapped() throws {
        let name = String(repeating: "é", count: 1_500_000)  // 3 MB
        var record = AuditRecord(requestID: "r1", httpMethod: "POST", decision: .deny, reason: "no rule matches tools/call \(name)")
        record.method = "tools/call"
        record.target = name
        record.jsonrpcID = .string(String(repeating: "i", count: 40_000))
        let keys = (0..<200).map { "k\($0)" } + [String(repeating: "K", count: 40_000)]
        record.arguments = .redacted(keys: keys, sha256: SHA256Digest(of: Array("{}".utf8)))
        let line = record.lineBytes
        #expect(line.count < 16 * 1024, "\(line.count) bytes")
        let parsed = try #require(try JSONParser.parse(line.dropLast()).objectValue)
        let target = try #require(parsed["target"]?.stringValue)
        #expect(target.hasPrefix("éé") && target.contains("[cut: 3000000 bytes, sha256 "), "\(target.suffix(120))")
        #expect(target.hasSuffix(SHA256Digest.hex(Array(name.utf8)) + "]"))
        #expect(parsed["jsonrpc_id"]?.stringValue?.contains("[cut: 40000 bytes") == true)
        #expect(parsed["reason"]?.stringValue?.utf8.count ?? .max < 2 * AuditRecord.fieldBytes + 200)
        let listed = try #require(parsed["arguments"]?.objectValue?["keys"]?.arrayValue)
        #expect(listed.count == AuditRecord.listedKeys + 1 && listed.last == .string("…[137 more keys]"), "\(listed.suffix(2))")
        // Short fields are kept as they are.
        var short = AuditRecord(requestID: "r2", httpMethod: "POST", decision: .allow, reason: "ok")
        short.target = "read_file"
        short.jsonrpcID = .number(JSONNumber(7))
        let kept = try #require(try JSONParser.parse(short.lineBytes.dropLast()).objectValue)
        #expect(kept["target"] == .string("read_file") && kept["jsonrpc_id"] == .number(JSONNumber(7)))
    }

    @Test("lines as long as the scratch they are written in, one byte shorter or longer, come out whole")
    func scratchBoundary() throws {
        // The length comes from a field the early estimate does not count (the session id), so that the scratch is
        // tried and its bound is what decides.
        func record(_ session: String) -> AuditRecord {
            var record = AuditRecord(requestID: "r1", httpMethod: "POST", decision: .allow, reason: "ok")
            record.sessionID = session
            return record
        }
        var lengths: [Int] = []
        let around = AuditRecord.scratchBytes - record("").lineBytes.count
        for extra in (around - 3)...(around + 3) {
            // An escaped character near the end too: its six bytes straddle the boundary for some of the lengths.
            let session = String(repeating: "s", count: extra - 6) + "\u{1}"
            let line = record(session).lineBytes
            #expect(line.last == UInt8(ascii: "\n"))
            let parsed = try #require(try JSONParser.parse(line.dropLast()).objectValue)
            #expect(parsed["session_id"] == .string(session))
            lengths.append(line.count)
        }
        #expect(lengths.first! < AuditRecord.scratchBytes && lengths.last! > AuditRecord.scratchBytes)
        #expect(zip(lengths, lengths.dropFirst()).allSatisfy { $1 == $0 + 1 }, "\(lengths)")
    }

    @Test("a line written in scratch is the line written into an array, escapes and all")
    func scratchAndArrayAgree() throws {
        var record = AuditRecord(requestID: "r1", httpMethod: "POST", decision: .deny, reason: "a \"b\" \\ c\n\u{7F}")
        record.target = "t\u{85}\u{2028}\u{2029}\u{FFFE}\u{1FFFE}é"
        record.sessionID = String(repeating: "s", count: 500) + "\u{1}\u{1}\u{1FFFF}"
        record.jsonrpcID = .string("\u{0}\u{1F}")
        record.arguments = .redacted(keys: ["k\u{2028}", "x"], sha256: SHA256Digest(of: Array("{}".utf8)))
        record.latencyMicroseconds = -5
        record.upstreamStatus = 200
        var array = JSONLineWriter(into: [UInt8]())
        record.write(into: &array)
        let line = record.lineBytes
        #expect(line == array.sink)
        #expect(line.count < AuditRecord.scratchBytes)  // written in the scratch, not in an array
        #expect(try JSONParser.parse(line.dropLast()).objectValue?["target"] == .string(record.target!))
    }

    @Test("a record is one line of JSON; arguments are redacted to keys and a digest")
    func line() throws {
        var record = AuditRecord(requestID: "r1", httpMethod: "POST", decision: .deny, reason: "line\nbreak \"quoted\"")
        let sent = Array(#"{"path" : "secret", "n":1}"#.utf8)
        record.arguments = AuditRecord.redacted(try JSONParser.parse(sent), digest: SHA256Digest(of: sent))
        let line = record.jsonLine
        #expect(!line.contains("\n"))
        let parsed = try #require(try JSONParser.parse(line).objectValue)
        #expect(parsed["reason"] == .string("line\nbreak \"quoted\""))
        #expect(parsed["arguments"]?.objectValue?["keys"] == .array([.string("path"), .string("n")]))
        #expect(!line.contains("secret"))
        // The digest is over the bytes as sent (`printf '{"path" : "secret", "n":1}' | sha256sum`).
        #expect(
            parsed["arguments"]?.objectValue?["sha256"]?.stringValue
                == "e6a3e17ea2ee73ff081099fbff4265d953d4211b33f59f86828af63034e383aa")
    }

    @Test("the room a forwarded call reserves covers its record as written, and follows what the record keeps, not the body")
    func reservation() throws {
        let large = String(repeating: "x", count: 100_000)
        let sent = Array(#"{"path":"a.txt","pad":"\#(large)"}"#.utf8)
        let arguments = try JSONParser.parse(sent)
        var record = AuditRecord(requestID: "0123456789ab-42", httpMethod: "POST", decision: .allow, reason: "rule R1 allows read_file")
        (record.tenant, record.agent, record.authMethod, record.clientAddress) = ("acme", "bot1", "mtls", "127.0.0.1:50000")
        (record.method, record.target, record.rule) = ("tools/call", "read_file", "R1")
        // A client's id can be all control characters: each is written as six bytes (\u0001).
        record.jsonrpcID = .string("é-" + String(repeating: "\u{1}", count: 5_000) + "-\u{85}\u{2028}-id")
        record.arguments = AuditRecord.redacted(arguments, digest: SHA256Digest(of: sent))
        let redactedRoom = record.reservationBytes
        // The id's 5,000 control characters count; the 100 kB the arguments take in the body do not.
        #expect(redactedRoom < 40_000, "a redacted record reserved \(redactedRoom) bytes for a 100 kB body")
        for logged in [
            record,
            {
                var full = record; full.arguments = .full(arguments); return full
            }(),
        ] {
            var written = logged
            written.upstreamStatus = 200
            written.latencyMicroseconds = 123_456_789
            written.reason += "; not completed: the client closed the connection"
            #expect(logged.reservationBytes >= written.lineBytes.count, "\(logged.reservationBytes) < \(written.lineBytes.count)")
        }
    }

    @Test("the room reserved for fields the record cuts is bounded by their cut form, and still covers the line as written")
    func reservationOfCutFields() throws {
        // Names as long as a body allows, in characters that escape to the most bytes each: a record's room follows
        // what its line can hold, not what the caller sent (one tenant's batch once reserved the whole log).
        for filler in ["€", "\u{1}", "\u{2028}", "\u{E0069}", "x"] {
            let name = String(repeating: filler, count: 1_000_000)
            var record = AuditRecord(requestID: "r1", httpMethod: "POST", decision: .deny, reason: "no rule matches tools/call \(name)")
            (record.tenant, record.agent, record.method, record.target, record.rule) = ("acme", "bot1", "tools/call", name, "R1")
            (record.sessionID, record.traceID) = (name, name)
            record.jsonrpcID = .string(name)
            let keys = (0..<200).map { "k\($0)" + name.prefix(2000) }
            record.arguments = .redacted(keys: keys, sha256: SHA256Digest(of: Array("{}".utf8)))
            let room = record.reservationBytes
            // At most: 64 listed keys and six other cut fields at six bytes a byte, whatever their length as sent.
            #expect(room <= 512 * 1024, "\(filler): \(room) bytes reserved")
            var written = record
            written.upstreamStatus = 200
            written.latencyMicroseconds = 123_456_789
            written.reason += "; " + String(repeating: filler, count: AuditRecord.noteBytes)
            #expect(room >= written.lineBytes.count, "\(filler): \(room) < \(written.lineBytes.count)")
        }
    }

    @Test("each message of a body knows where its params and arguments lie in the bytes")
    func argumentRanges() throws {
        let text =
            #"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments": {"x" : 1}}},"#
            + #" {"jsonrpc":"2.0","method":"notifications/x"}, {"jsonrpc":"2.0","id":2,"method":"ping","params":{ }}]"#
        let bytes = Array(text.utf8)
        let body = try MCPBody.parse(bytes, limits: JSONLimits())
        let ranges = body.messages.map { ($0.paramsBytes, $0.argumentsBytes) }
        #expect(ranges.count == 3)
        let (params, arguments) = (try #require(ranges[0].0), try #require(ranges[0].1))
        #expect(String(decoding: bytes[arguments], as: UTF8.self) == #"{"x" : 1}"#)
        #expect(try JSONParser.parse(Array(bytes[params])) == body.messages[0].params)
        #expect(ranges[1].0 == nil && ranges[1].1 == nil)
        #expect(String(decoding: bytes[try #require(ranges[2].0)], as: UTF8.self) == "{ }")
        #expect(ranges[2].1 == nil)
        let (_, _, argumentBytes) = try MCPMethod.target(of: body.messages[0])
        #expect(argumentBytes == arguments)
    }

    @Test("time and latency are written in place: ISO 8601 UTC, and milliseconds with three decimals")
    func timeAndLatency() throws {
        for (microseconds, text) in [
            (0, "0.000"), (5, "0.005"), (1234, "1.234"), (60_000_001, "60000.001"), (-5, "-0.005"), (-1500, "-1.500"),
        ] {
            var record = AuditRecord(requestID: "r1", httpMethod: "POST", decision: .allow, reason: "ok")
            record.unixMilliseconds = 1_795_566_449_777
            record.latencyMicroseconds = microseconds
            let line = record.jsonLine
            #expect(line.hasPrefix(#"{"time":"2026-11-25T00:27:29.777Z","request_id":"r1""#), "\(line)")
            #expect(line.hasSuffix(#","latency_ms":\#(text)}"#), "\(line)")
        }
    }
}

@Suite("Audit log rotation")
struct AuditRotationTests {
    /// A fresh directory for one test's audit file (the caller removes it).
    static func temporaryDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-audit-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test("reopen after the file was moved: old records stay in the moved file, new ones go to a new file")
    func reopen() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/audit.log"
        let log = try AuditLog(sink: .file(path))
        try log.append(AuditRecord(requestID: "before", httpMethod: "POST", decision: .allow, reason: "r"))
        log.flush()
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        try log.reopen()
        try log.append(AuditRecord(requestID: "after", httpMethod: "POST", decision: .deny, reason: "r"))
        log.close()
        let rotated = try String(contentsOfFile: path + ".1", encoding: .utf8)
        let fresh = try String(contentsOfFile: path, encoding: .utf8)
        #expect(rotated.contains(#""request_id":"before""#) && !rotated.contains(#""request_id":"after""#))
        #expect(fresh.contains(#""request_id":"after""#) && !fresh.contains(#""request_id":"before""#))
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test("a reopen that finds a FIFO without a reader at the path fails at once, and records keep their file")
    func reopenDoesNotWaitForAFIFO() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/audit.log"
        let log = try AuditLog(sink: .file(path))
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        #expect(mkfifo(path, 0o600) == 0)
        // On a thread of its own: a reopen that waits for a reader would never return.
        let finished = DispatchSemaphore(value: 0)
        let outcome = NIOLockedValueBox<Bool?>(nil)
        Thread.detachNewThread {
            outcome.withLockedValue { $0 = (try? log.reopen()) != nil }
            finished.signal()
        }
        let waited = finished.wait(timeout: .now() + 5)
        // A reader lets a blocked open go (so that a failing run ends instead of hanging).
        let reader = open(path, O_RDONLY | O_NONBLOCK)
        defer { if reader >= 0 { close(reader) } }
        if waited != .success { _ = finished.wait(timeout: .now() + 5) }
        #expect(waited == .success, "the reopen waited for a reader of the FIFO")
        #expect(outcome.withLockedValue { $0 } == false, "the reopen should fail, naming the path")
        try log.append(AuditRecord(requestID: "after", httpMethod: "POST", decision: .allow, reason: "r"))
        log.flush()
        #expect(try String(contentsOfFile: path + ".1", encoding: .utf8).contains(#""request_id":"after""#))
        log.close()
    }

    @Test("a file deleted without a reopen is noticed before the next write: records go to its path again; a moved one keeps them")
    func followsThePath() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/audit.log"
        let log = try AuditLog(sink: .file(path))
        try log.append(AuditRecord(requestID: "first", httpMethod: "POST", decision: .allow, reason: "r"))
        log.flush()
        try FileManager.default.removeItem(atPath: path)
        try log.append(AuditRecord(requestID: "after-rm", httpMethod: "POST", decision: .allow, reason: "r"))
        log.flush()
        #expect(try String(contentsOfFile: path, encoding: .utf8).contains(#""request_id":"after-rm""#))
        // Moved away (log rotation before its SIGHUP): records go on into the moved file, where they are kept.
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        try log.append(AuditRecord(requestID: "after-mv", httpMethod: "POST", decision: .allow, reason: "r"))
        log.close()
        #expect(try String(contentsOfFile: path + ".1", encoding: .utf8).contains(#""request_id":"after-mv""#))
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(log.writtenRecords == 3)
    }

    @Test("reopen does not wait for calls in flight: their records, reserved, go to the new file when they end")
    func reopenWithCallInFlight() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/audit.log"
        let log = try AuditLog(sink: .file(path))
        let reservation = try log.reserve(bytes: 1024)
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        // The flush before a reopen waits up to 5 s for what it waits for; a call in flight is not part of it.
        let started = ContinuousClock.now
        try log.reopen()
        #expect(ContinuousClock.now - started < .seconds(3), "reopen waited for a call in flight")
        log.append([AuditRecord(requestID: "in-flight", httpMethod: "POST", decision: .allow, reason: "r")], into: reservation)
        log.close()
        #expect(try String(contentsOfFile: path, encoding: .utf8).contains(#""request_id":"in-flight""#))
    }
}
