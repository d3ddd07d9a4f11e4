import Foundation
import StrictJSON
import Synchronization
import Testing

@testable import Gateway

/// A sink that fails (like a full disk) until told to recover, keeping what it accepted.
final class FlakySink: AuditWriter {
    let failing = Mutex(true)
    let lines = Mutex<[String]>([])
    let attempts = Mutex(0)

    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        attempts.withLock { $0 += 1 }
        if failing.withLock({ $0 }) {
            // Half of the batch goes out before the failure, as a real partial write(2) would.
            let half = bytes.count / 2
            let text = String(decoding: bytes[..<half], as: UTF8.self)
            lines.withLock { $0.append(text) }
            throw AuditWriteError(written: half, reason: "No space left on device")
        }
        lines.withLock { $0.append(String(decoding: bytes, as: UTF8.self)) }
    }

    func reopen() throws(AuditWriteError) {}
    func synchronize() {}

    /// Everything written, split into lines.
    var records: [String] { lines.withLock { $0.joined() }.split(separator: "\n").map(String.init) }
}

/// A destination that fails once, after half of a batch, and then moves to a new file (as rotation or a deleted file
/// would): what each file received is kept apart.
final class RotatingSink: AuditWriter {
    let files = Mutex<[[UInt8]]>([[]])
    let failNext = Mutex(true)

    var destination: Int { files.withLock { $0.count - 1 } }

    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        if failNext.withLock({
            let fail = $0; $0 = false; return fail
        }) {
            let half = bytes.count / 2
            files.withLock { $0[$0.count - 1] += bytes[..<half] }
            files.withLock { $0.append([]) }  // the file is rotated after the failure
            throw AuditWriteError(written: half, reason: "File too large")
        }
        files.withLock { $0[$0.count - 1] += bytes }
    }

    func reopen() throws(AuditWriteError) {}
    func synchronize() {}
}

@Suite("Audit log failure and recovery", .serialized)
struct AuditRecoveryTests {
    @Test("a record cut by a failed write is written whole to the file that follows, never split across two files")
    func cutRecordIsWrittenWhole() throws {
        let sink = RotatingSink()
        let log = try AuditLog(sink: .writer(sink))
        try log.append(AuditRecord(requestID: "r1", httpMethod: "POST", decision: .allow, reason: String(repeating: "x", count: 300)))
        log.close()
        let files = sink.files.withLock { $0 }
        #expect(files.count == 2)
        // The new file holds only whole records, the cut one among them.
        let lines = String(decoding: files[1], as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.last == "")
        for line in lines.dropLast() { #expect((try? JSONParser.parse(String(line))) != nil, "\(line.prefix(40))") }
        #expect(lines.contains { $0.contains(#""request_id":"r1""#) })
    }

    @Test("reopening the same file keeps the destination (a cut record continues there); a moved file changes it")
    func destinationFollowsTheFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-destination-\(UUID())").path
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: path + ".1")
        }
        let writer = try FileAuditWriter(path: path)
        let first = writer.destination
        try writer.reopen()
        #expect(writer.destination == first, "a reload without a rotation counted as a new file")
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        try writer.reopen()
        #expect(writer.destination != first)
    }

    @Test("one tenant's calls in flight hold at most half of the log's room: the others' records always fit")
    func reservationsPerTenant() throws {
        let sink = FlakySink()
        sink.failing.withLock { $0 = false }
        let log = try AuditLog(sink: .writer(sink), capacityBytes: 1000)
        let first = try log.reserve(bytes: 400, tenant: "acme")
        #expect(throws: AuditUnavailable.self) { try log.reserve(bytes: 200, tenant: "acme") }
        let other = try log.reserve(bytes: 400, tenant: "globex")
        // Released as the calls end and their records are written: acme may reserve again.
        log.append([AuditRecord(requestID: "a", httpMethod: "POST", decision: .allow, reason: "done")], into: first)
        log.flush(waitingForReservations: false)
        let again = try log.reserve(bytes: 400, tenant: "acme")
        log.append([AuditRecord(requestID: "g", httpMethod: "POST", decision: .allow, reason: "done")], into: other)
        log.append([AuditRecord(requestID: "a2", httpMethod: "POST", decision: .allow, reason: "done")], into: again)
        log.close()
    }

    @Test("one tenant's refusals waiting for a slow disk hold at most half of the log's room: the others' still fit")
    func appendsPerTenant() throws {
        let sink = SlowDiskSink()
        let log = try AuditLog(sink: .writer(sink), capacityBytes: 100_000)
        // The writer takes the first line and then hangs in its write: everything after waits in the queue.
        try log.append(lines: Array("{}\n".utf8), tenant: "acme")
        Thread.sleep(forTimeInterval: 0.2)
        let line = Array((String(repeating: "x", count: 999) + "\n").utf8)
        var acme = 0
        var refusal: AuditUnavailable?
        while refusal == nil && acme < 200 {
            do throws(AuditUnavailable) {
                try log.append(lines: line, tenant: "acme")
                acme += 1
            } catch { refusal = error }
        }
        // Found by review: appends had no share, so one tenant's flood of refusals took the whole room.
        #expect(acme == 50 && refusal?.tenantShare == true, "\(acme) \(String(describing: refusal))")
        try log.append(lines: line, tenant: "globex")
        try log.append(lines: line, tenant: AuditLog.anonymousShare)
        // Reservations count what the tenant has queued too (found by review: refusals queued to half the room, and
        // reservations then took the other half).
        let overShare = #expect(throws: AuditUnavailable.self) { try log.reserve(bytes: 1000, tenant: "acme") }
        #expect(overShare?.tenantShare == true)
        sink.released.withLock { $0 = true }
        log.close()
    }

    @Test("records of completed calls count in their tenant's share until written: its next reservations cannot take the rest")
    func completedRecordsCountInTheShare() throws {
        let sink = SlowDiskSink()
        let log = try AuditLog(sink: .writer(sink), capacityBytes: 100_000)
        try log.append(lines: Array("{}\n".utf8), tenant: "acme")
        Thread.sleep(forTimeInterval: 0.2)
        // Ten completed calls of globex, each record about 2 KB: about 20 KB queued for globex.
        for index in 0..<10 {
            let reservation = try log.reserve(bytes: 3_000, tenant: "globex")
            log.append(
                [AuditRecord(requestID: "g\(index)", httpMethod: "POST", decision: .allow, reason: String(repeating: "r", count: 2_000))],
                into: reservation)
        }
        let refused = #expect(throws: AuditUnavailable.self) { try log.reserve(bytes: 35_000, tenant: "globex") }
        #expect(refused?.tenantShare == true)
        let acme = try log.reserve(bytes: 35_000, tenant: "acme")
        sink.released.withLock { $0 = true }
        log.append([], into: acme)
        log.close()
    }

    @Test("the log is not ready once its room cannot hold another call's records, though a tiny line might still fit")
    func readinessNeedsRoomForACall() throws {
        let sink = FlakySink()
        sink.failing.withLock { $0 = false }
        let log = try AuditLog(sink: .writer(sink), capacityBytes: 64 * 1024)
        #expect(log.isAccepting)
        let held = try log.reserve(bytes: 60 * 1024)
        // Found by review: `/readyz` said ready while every call was refused for want of room.
        #expect(!log.isAccepting)
        log.append([AuditRecord(requestID: "a", httpMethod: "POST", decision: .allow, reason: "done")], into: held)
        #expect(log.isAccepting)
        log.close()
    }

    @Test("a single call whose records would take more than half of the log's room is refused: it cannot starve other tenants")
    func singleCallOverTheShare() throws {
        let sink = FlakySink()
        sink.failing.withLock { $0 = false }
        let log = try AuditLog(sink: .writer(sink), capacityBytes: 1000)
        let refused = #expect(throws: AuditUnavailable.self) { try log.reserve(bytes: 600, tenant: "acme") }
        #expect(refused?.tenantShare == true && refused?.neverFits == true)
        let other = try log.reserve(bytes: 400, tenant: "globex")
        log.append([AuditRecord(requestID: "g", httpMethod: "POST", decision: .allow, reason: "done")], into: other)
        log.close()
    }

    @Test("a failed write keeps its records, the log refuses until the sink recovers, then accepts by itself")
    func recovers() throws {
        let sink = FlakySink()
        let log = try AuditLog(sink: .writer(sink))
        for index in 0..<10 { try log.append(AuditRecord(requestID: "r\(index)", httpMethod: "POST", decision: .allow, reason: "before")) }
        let reservation = try log.reserve(bytes: 1024)
        // Wait for the first failed write to be reported, without sleeping a fixed time.
        let deadline = ContinuousClock.now + .seconds(5)
        while log.writeErrors == 0 && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.005) }
        #expect(!log.isAccepting)
        #expect(throws: AuditUnavailable.self) {
            try log.append(AuditRecord(requestID: "x", httpMethod: "POST", decision: .allow, reason: "during"))
        }
        // A reservation taken before the failure is still honoured: a forwarded call keeps its record.
        log.append([AuditRecord(requestID: "reserved", httpMethod: "POST", decision: .allow, reason: "in flight")], into: reservation)
        sink.failing.withLock { $0 = false }
        let recovered = ContinuousClock.now + .seconds(5)
        while !log.isAccepting && ContinuousClock.now < recovered { Thread.sleep(forTimeInterval: 0.005) }
        #expect(log.isAccepting)
        try log.append(AuditRecord(requestID: "after", httpMethod: "POST", decision: .allow, reason: "after"))
        log.close()
        let records = try sink.records.map { try #require(try JSONParser.parse($0).objectValue) }
        let ids = records.compactMap { $0["request_id"]?.stringValue }
        #expect(ids.filter { !$0.hasPrefix("audit-outage-") } == (0..<10).map { "r\($0)" } + ["reserved", "after"])
        // The refused record is told in one summary once writes succeed again.
        let summaries = records.filter { $0["rule"] == .string("audit_unavailable") }
        #expect(summaries.count == 1 && summaries.first?["reason"]?.stringValue?.hasPrefix("1 request(s) refused") == true, "\(summaries)")
        #expect(log.writtenRecords == 13)
        #expect(log.writeErrors >= 1)
    }
}

/// A sink whose write fails only after 5 s (storage that hangs, then errs): longer than `close` waits.
final class SlowFailingSink: AuditWriter {
    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        Thread.sleep(forTimeInterval: 5)
        throw AuditWriteError(written: 0, reason: "took nothing")
    }
    func reopen() throws(AuditWriteError) {}
    func synchronize() {}
}

/// A sink whose write takes `seconds`, taking a little every half second (a slow but steady reader).
final class SlowProgressSink: AuditWriter {
    let seconds: Int
    let lastProgress = Atomic<UInt64>(0)
    let done = Mutex(false)
    init(seconds: Int) { self.seconds = seconds }
    var progress: UInt64 { lastProgress.load(ordering: .relaxed) }
    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        for _ in 0..<(seconds * 2) {
            Thread.sleep(forTimeInterval: 0.5)
            lastProgress.store(AuditLog.monotonicNanoseconds(), ordering: .relaxed)
        }
        done.withLock { $0 = true }
    }
    func reopen() throws(AuditWriteError) {}
    func synchronize() {}
}

/// A sink whose write takes a second and whose progress is always a moment ahead of the log's clock: the writer
/// thread stored it after the log read the clock (the race a review found).
final class AheadProgressSink: AuditWriter {
    let done = Mutex(false)
    var progress: UInt64 { AuditLog.monotonicNanoseconds() + 1_000_000 }
    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        Thread.sleep(forTimeInterval: 1)
        done.withLock { $0 = true }
    }
    func reopen() throws(AuditWriteError) {}
    func synchronize() {}
}

/// A sink whose writes block until released (hung storage, a socket nobody reads).
final class BlockingSink: AuditWriter {
    let released = Mutex(false)
    let lines = Mutex<[String]>([])

    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        let deadline = ContinuousClock.now + .seconds(30)
        while !released.withLock({ $0 }) && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        lines.withLock { $0.append(String(decoding: bytes, as: UTF8.self)) }
    }

    func reopen() throws(AuditWriteError) {}
    func synchronize() {}
}

/// A sink whose writes block until released while it says it is still making progress: the log sees a slow disk, not
/// a stalled one (which it would refuse everything for after 5 s, however loaded the machine running the test).
final class SlowDiskSink: AuditWriter {
    let released = Mutex(false)

    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        let deadline = ContinuousClock.now + .seconds(60)
        while !released.withLock({ $0 }) && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
    }

    func reopen() throws(AuditWriteError) {}
    func synchronize() {}
    var progress: UInt64 { AuditLog.monotonicNanoseconds() }
}

extension AuditRecoveryTests {
    /// Closes `log` with standard error sent to a file: what `close` returned, and what it wrote there. (Standard error
    /// is the process's: the suite is serialized so that two captures never overlap.)
    static func closingWithStandardError(_ log: AuditLog, timeout: Duration) -> (lost: Int, text: String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-stderr-\(UUID())").path
        defer { unlink(path) }
        let saved = dup(STDERR_FILENO)
        let file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        dup2(file, STDERR_FILENO)
        let lost = log.close(timeout: timeout)
        dup2(saved, STDERR_FILENO)
        close(file)
        close(saved)
        return (lost, String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self))
    }

    static func record(_ id: String) -> AuditRecord {
        AuditRecord(requestID: id, httpMethod: "POST", decision: .allow, reason: String(repeating: "r", count: 200))
    }

    @Test(
        "a FIFO nobody reads fails the writes instead of holding the writer: the log refuses, a reopen returns, and once read every record arrives"
    )
    func fifoNobodyReads() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-fifo-\(UUID())").path
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        let reader = open(path, O_RDONLY | O_NONBLOCK)
        #expect(reader >= 0)
        defer { close(reader) }
        let log = try AuditLog(sink: .file(path))
        // Far more than a pipe holds (64 KiB): the writer finds it full, waits a second, and fails the write.
        for index in 0..<1_000 { try log.append(Self.record("f\(index)")) }
        let deadline = ContinuousClock.now + .seconds(10)
        while log.writeErrors == 0 && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(log.writeErrors > 0)
        #expect(!log.isAccepting)
        let reopening = ContinuousClock.now
        try log.reopen()
        #expect(ContinuousClock.now - reopening < .seconds(5), "a reopen waits for the blocked writer")
        // Read everything, until every record has arrived.
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let reading = ContinuousClock.now + .seconds(20)
        while received.count(where: { $0 == 0x0A }) < 1_000 && ContinuousClock.now < reading {
            let count = read(reader, &buffer, buffer.count)
            if count > 0 { received += buffer[..<count] } else { Thread.sleep(forTimeInterval: 0.01) }
        }
        let ids = try String(decoding: received, as: UTF8.self).split(separator: "\n").map {
            try #require(try JSONParser.parse(String($0)).objectValue?["request_id"]?.stringValue)
        }
        #expect(ids == (0..<1_000).map { "f\($0)" })
        let recovered = ContinuousClock.now + .seconds(5)
        while !log.isAccepting && ContinuousClock.now < recovered { Thread.sleep(forTimeInterval: 0.01) }
        #expect(log.isAccepting)
        log.close(timeout: .seconds(2))
    }

    @Test("records still unwritten when the log closes go to standard error, not nowhere")
    func unwrittenRecordsToStandardError() throws {
        let sink = FlakySink()
        let log = try AuditLog(sink: .writer(sink))
        try log.append(Self.record("kept-on-stderr"))
        let deadline = ContinuousClock.now + .seconds(5)
        while log.writeErrors == 0 && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.005) }
        #expect(throws: AuditUnavailable.self) { try log.append(Self.record("refused")) }
        let (lost, text) = Self.closingWithStandardError(log, timeout: .milliseconds(300))
        #expect(lost > 0)
        #expect(text.contains(#""request_id":"kept-on-stderr""#), "\(text.prefix(500))")
        // The outage never ended: the summary of what it refused goes with them (found by review).
        #expect(text.contains("1 request(s) refused"), "\(text.prefix(800))")
    }

    @Test("records in a write still in progress when the log closes are reported too (found by review: a write held them)")
    func inFlightBatchReportedAtClose() throws {
        let sink = SlowFailingSink()
        let log = try AuditLog(sink: .writer(sink))
        try log.append(Self.record("in-flight"))
        // The writer takes it within 20 ms and spends 5 s failing to write it; close gives up before.
        Thread.sleep(forTimeInterval: 0.1)
        let (lost, text) = Self.closingWithStandardError(log, timeout: .milliseconds(100))
        #expect(lost > 0)
        #expect(text.contains(#""request_id":"in-flight""#), "\(text.prefix(500))")
    }

    @Test("a reopen does not wait for a write to a slow reader: the write stops between pieces and reports how far it got")
    func reopenInterruptsASlowWrite() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-fifo-\(UUID())").path
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        let reader = open(path, O_RDONLY | O_NONBLOCK)
        defer { close(reader) }
        let stop = Mutex(false)
        // A slow but steady reader: 4 KiB every 50 ms (2 MB would take about 25 s).
        let trickle = Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !stop.withLock({ $0 }) {
                _ = read(reader, &buffer, buffer.count)
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        trickle.start()
        defer { stop.withLock { $0 = true } }
        let writer = try FileAuditWriter(path: path)
        let outcome = Mutex<AuditWriteError?>(nil)
        let finished = Mutex(false)
        let writing = Thread {
            let bytes = [UInt8](repeating: UInt8(ascii: "x"), count: 2_000_000)
            bytes.withUnsafeBytes { raw in
                do throws(AuditWriteError) { try writer.write(raw) } catch { outcome.withLock { $0 = error } }
            }
            finished.withLock { $0 = true }
        }
        writing.start()
        Thread.sleep(forTimeInterval: 0.3)
        let reopening = ContinuousClock.now
        try writer.reopen()
        #expect(ContinuousClock.now - reopening < .seconds(3), "the reopen waited for the slow write")
        let deadline = ContinuousClock.now + .seconds(5)
        while !finished.withLock({ $0 }) && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        let error = outcome.withLock { $0 }
        #expect(error?.interrupted == true && (error?.written ?? .max) < 2_000_000, "\(String(describing: error))")
    }

    /// Whether the log refused records at any moment while the one write to `sink` was under way (`isDone` says when
    /// it ended; watched at most `seconds`, every `poll` seconds).
    static func refusedWhileWriting(
        to sink: any AuditWriter, isDone: () -> Bool, seconds: Int, poll: Double
    ) throws -> Bool {
        let log = try AuditLog(sink: .writer(sink))
        defer { log.close() }
        try log.append(record("write"))
        let deadline = ContinuousClock.now + .seconds(seconds)
        var refused = false
        while ContinuousClock.now < deadline && !isDone() {
            refused = refused || !log.isAccepting
            Thread.sleep(forTimeInterval: poll)
        }
        return refused
    }

    @Test("a write that takes long but keeps making progress is not a stall (found by review: a slow reader got 503s)")
    func slowProgressIsNotAStall() throws {
        let sink = SlowProgressSink(seconds: 7)
        let refused = try Self.refusedWhileWriting(to: sink, isDone: { sink.done.withLock { $0 } }, seconds: 7, poll: 0.1)
        #expect(!refused, "refused while the write was making progress")
    }

    @Test("progress stored by the writer after the log read its clock is no stall (found by review: a spurious 503)")
    func progressAheadOfTheClockIsNotAStall() throws {
        let sink = AheadProgressSink()
        let refused = try Self.refusedWhileWriting(to: sink, isDone: { sink.done.withLock { $0 } }, seconds: 5, poll: 0.01)
        #expect(!refused, "refused while the write was making progress")
    }

    @Test("a write that does not return for seconds makes the log refuse records until it does")
    func stalledWriteRefuses() throws {
        let sink = BlockingSink()
        let log = try AuditLog(sink: .writer(sink))
        try log.append(Self.record("s0"))
        // The writer takes the record within 20 ms and blocks; past the stall bound, records are refused.
        let deadline = ContinuousClock.now + .seconds(15)
        while log.isAccepting && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!log.isAccepting)
        #expect(throws: AuditUnavailable.self) { try log.append(Self.record("s1")) }
        #expect(throws: AuditUnavailable.self) { _ = try log.reserve(bytes: 100) }
        sink.released.withLock { $0 = true }
        let recovered = ContinuousClock.now + .seconds(5)
        while !log.isAccepting && ContinuousClock.now < recovered { Thread.sleep(forTimeInterval: 0.01) }
        #expect(log.isAccepting)
        log.close()
        // The record written, and the summary of the two refused meanwhile.
        #expect(log.writtenRecords == 2)
        let summary = sink.lines.withLock { $0.joined() }.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.contains("2 request(s) refused") && summary.contains("has not completed"), "\(summary)")
    }
}

@Suite("Audit lines are one line for every reader")
struct AuditLineEscapingTests {
    @Test(
        "U+2028, U+2029, NEL, C1 controls, noncharacters and invisible bidi and zero-width characters are escaped; the text round-trips",
        arguments: [
            "a\u{2028}b", "a\u{2029}b", "a\u{85}b", "a\u{9F}b", "tab\tnl\ncr\r\"q\"\\",
            "é ü 漢字 🙂", "a" + String(Unicode.Scalar(0x10FFFF)!) + "b", "a" + String(Unicode.Scalar(0xFFFE)!) + "b",
            "a" + String(Unicode.Scalar(0xFDD0)!) + "b", "write_\u{202E}\"yned\":\"noisiced\",", "a\u{2066}b\u{2069}",
            "a\u{200B}\u{200F}\u{061C}\u{FEFF}b", "read_file\u{E0069}\u{E0067}\u{E006E}", "a\u{FE0F}\u{00AD}\u{3164}b",
        ])
    func escaped(text: String) throws {
        var record = AuditRecord(requestID: "r", httpMethod: "POST", decision: .deny, reason: text)
        record.target = text
        record.arguments = .full(.object(JSONObject([.init(key: text, value: .string(text))])))
        let bytes = record.lineBytes
        #expect(bytes.last == 0x0A)
        let line = String(decoding: bytes.dropLast(), as: UTF8.self)
        for separator in [
            "\n", "\r", "\u{2028}", "\u{2029}", "\u{85}", "\u{202E}", "\u{2066}", "\u{200B}", "\u{200F}", "\u{FEFF}", "\u{E0069}",
            "\u{FE0F}",
            "\u{00AD}", "\u{3164}",
        ] {
            #expect(!line.unicodeScalars.contains(separator.unicodeScalars.first!))
        }
        let parsed = try #require(try JSONParser.parse(line).objectValue)
        #expect(parsed["reason"] == .string(text))
        #expect(parsed["arguments"]?.objectValue?[text] == .string(text))
    }
}
