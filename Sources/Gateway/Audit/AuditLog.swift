import Foundation
public import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Why an audit record could not be accepted; the request it belongs to is refused (fail closed).
public struct AuditUnavailable: Error, Sendable, CustomStringConvertible {
    /// What is wrong with the log.
    public let reason: String
    /// The log is fine: the calling tenant's calls in flight hold their share of its room (`AuditLog.reserve`).
    public var tenantShare = false
    /// The log is fine, but this call's records alone would take more than a tenant's share of its room: it never
    /// fits, however long the caller waits.
    public var neverFits = false
    public var description: String { "audit log unavailable: \(reason)" }

    /// The log cannot take records: `reason`.
    public init(reason: String, tenantShare: Bool = false, neverFits: Bool = false) {
        self.reason = reason
        self.tenantShare = tenantShare
        self.neverFits = neverFits
    }
}

/// Where the audit log's bytes finally go. `FileAuditWriter` is the production one; tests inject failures.
public protocol AuditWriter: Sendable {
    /// Writes all of `bytes` or throws (a partial write must throw after reporting how much went out).
    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) -> Void
    /// Reopens the destination by its name (log rotation).
    func reopen() throws(AuditWriteError)
    /// Makes what was written durable.
    func synchronize()
    /// Counts the destinations written to so far: it moves when a write goes to another file than the one before
    /// (reopened on rotation, or opened again because the file was deleted). A record cut by a failed write is then
    /// written whole to the new file.
    var destination: Int { get }
    /// Moves to a new destination if the current one can no longer be read by anyone (a deleted file).
    func followPath()
    /// When the destination last took bytes (monotonic nanoseconds; 0 when not told): a write in progress that
    /// still makes progress is not stalled.
    var progress: UInt64 { get }
    /// The log has given up (closing while the destination fails): a write in progress should stop soon and report
    /// how far it got (`AuditWriteError.interrupted`).
    func abandon()
}

extension AuditWriter {
    public var destination: Int { 0 }
    public func followPath() {}
    public var progress: UInt64 { 0 }
    public func abandon() {}
}

/// A failed write: how many bytes of the batch did reach the destination, and why the rest did not.
public struct AuditWriteError: Error, Sendable, CustomStringConvertible {
    /// Bytes of the batch that were written before the failure.
    public var written: Int
    /// What failed, in words.
    public var reason: String
    /// Stopped on purpose (a reopen, or the log giving up), not failed: the rest is written again, and the log keeps
    /// accepting records.
    public var interrupted: Bool
    public init(written: Int, reason: String, interrupted: Bool = false) {
        self.written = written
        self.reason = reason
        self.interrupted = interrupted
    }
    public var description: String { reason }
}

/// The audit log: one JSON line per decision, to a file or standard output.
///
/// `append` never blocks and never drops: records are queued in order, and a dedicated thread writes the queue at
/// least every 20 ms (blocking I/O stays off the event loops). When the queue holds more than `capacityBytes`
/// (the disk is slower than the traffic) or the last write failed, `append` throws and the gateway refuses the
/// request it was about to allow — fail closed, so nothing is ever done without its record. A failed write keeps
/// its bytes and is retried (every 20 ms, backing off to 1 s); once it succeeds the log accepts records again by
/// itself. `close()` writes everything still queued; it is called after the last exchange has ended.
public final class AuditLog: Sendable {
    /// Where records go.
    public enum Sink: Sendable {
        /// Standard output.
        case standardOutput
        /// A file, created if missing (mode 0600), appended to.
        case file(String)
        /// Any writer (tests inject failing ones).
        case writer(any AuditWriter)
    }

    private struct State {
        var queue: [UInt8] = []
        /// Bytes of a failed write, written again before anything newer.
        var retry: [UInt8] = []
        /// The beginning of the record a failed write cut, which reached destination `partialDestination`: written
        /// again, before `retry`, if the rest goes to another destination (so that no file holds half a record whose
        /// other half is in another file).
        var partial: [UInt8] = []
        var partialDestination = 0
        var failure: String?
        var closed = false
        var written = 0
        var writing = false
        /// When the write in progress began (monotonic nanoseconds).
        var writingSince: UInt64 = 0
        /// Set by a successful `reopen`: the writer retries at once instead of after its backoff.
        var retryNow = false
        /// The batch of the write in progress (shared storage with the writer's copy: no bytes are copied), and the
        /// beginning of the record it continues, which reached the destination earlier (`partial`, taken for it).
        var inFlight: [UInt8] = []
        var inFlightResumed: [UInt8] = []
        /// Set when `close` gives up waiting: the writer ends after its current attempt, whatever is left.
        var abandoned = false
        /// Records refused (appends and reservations) since the log last could take them, and since when: told in one
        /// summary record once it can again (a refused request has no record of its own: there was nowhere to put it).
        var refused = 0
        var refusedSince: Int64 = 0
        var refusedBecause = ""
        var writeErrors = 0
        /// Bytes promised to records whose call is being forwarded (counted against the capacity).
        var reserved = 0
        /// The same, per tenant: one tenant may hold at most half the capacity, so that its calls held by a slow
        /// upstream never leave the log without room for every other tenant's records.
        var reservedByTenant: [String: Int] = [:]
        /// Bytes each tenant appended to `queue` since the writer last took it (anonymous callers share
        /// `anonymousShare`): with what it reserved, at most half the capacity, so that one tenant's flood of refused
        /// requests never leaves the log without room for the others while the disk is slow.
        var queuedByTenant: [String: Int] = [:]
    }

    /// The share of the log's room that requests without credentials hold together (`append(lines:tenant:)`).
    static let anonymousShare = "\u{0}anonymous"

    private let state = Mutex(State())
    /// A write in progress for longer than this (a destination that blocks: hung storage, a socket nobody reads) makes
    /// the log refuse records, as a failed write does, until it completes.
    static let stallNanoseconds: UInt64 = 5_000_000_000

    static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// Counts a refusal for the summary record (`State.refused`), unless the log is closed; returns `reason`.
    private static func refusing(_ state: inout State, _ reason: String) -> String {
        guard !state.closed else { return reason }
        if state.refused == 0 {
            state.refusedSince = AuditRecord.nowMilliseconds()
            state.refusedBecause = reason
        }
        state.refused += 1
        return reason
    }

    /// The record that tells how many records the log refused, and since when (then forgotten); nil when none.
    private static func refusalSummary(_ state: inout State) -> [UInt8]? {
        guard state.refused > 0 else { return nil }
        defer { state.refused = 0 }
        let since = AuditRecord.timestamp(Date(timeIntervalSince1970: Double(state.refusedSince) / 1000))
        var record = AuditRecord(
            requestID: "audit-outage-\(state.refusedSince)", httpMethod: "-", decision: .unavailable,
            reason:
                "\(state.refused) request(s) refused (or connection events not recorded) from \(since) until now without records of their own: the audit log could not take them (first: \(state.refusedBecause))"
        )
        record.rule = "audit_unavailable"
        return record.lineBytes
    }

    /// Why the log cannot take records now (failed, closed, or stalled in a write: no byte taken for
    /// `stallNanoseconds`, counting from the write's start or the writer's last progress), or nil.
    private static func unavailability(_ state: State, writer: any AuditWriter) -> String? {
        if let failure = state.failure { return failure }
        if state.closed { return "the log is closed" }
        // The clock and the writer's progress are read only while a write is in progress (not on every append). The
        // writer thread stores its progress without the lock: one stored after the clock was read is later than
        // "now", which is no stall (a wrapping difference made it one; found by review: a spurious 503).
        if state.writing, case let last = max(state.writingSince, writer.progress),
            case let now = monotonicNanoseconds(), now > last, now - last > stallNanoseconds
        {
            return "a write to the audit destination has not completed for over \(stallNanoseconds / 1_000_000_000) s"
        }
        return nil
    }
    private let writer: any AuditWriter
    private let capacityBytes: Int
    private let logger: Logger
    /// A queue this large is written at once rather than at the next 20 ms tick.
    static let earlyWriteBytes = 256 * 1024
    private let wakeUp = NSCondition()
    private let writerDone = Mutex(false)
    private let finished = NSCondition()

    /// Opens the sink and starts the writer thread; write failures and recoveries are logged to `logger`.
    public init(sink: Sink, capacityBytes: Int = 16 * 1024 * 1024, logger: Logger = Logger(label: "mcpgw.audit")) throws {
        self.logger = logger
        switch sink {
        case .standardOutput: writer = try FileAuditWriter(path: nil)
        case .file(let path):
            writer = try FileAuditWriter(path: path) { [logger] notice in logger.warning("\(notice)") }
        case .writer(let custom): writer = custom
        }
        self.capacityBytes = capacityBytes
        let thread = Thread { [self] in self.writerLoop() }
        thread.name = "mcpgw-audit"
        thread.start()
    }

    /// Reopens the file by its path (after log rotation moved it): what is queued is written to the old file first,
    /// later records go to the new one. A no-op for standard output.
    public func reopen() throws {
        // Records of calls still in flight (reserved room) go to the new file: waiting for them would hold a reload
        // for as long as the slowest upstream takes.
        flush(waitingForReservations: false)
        do {
            try writer.reopen()
        } catch {
            throw AuditUnavailable(reason: "cannot reopen: \(error.reason)")
        }
        // A log failing until now retries at once on the reopened destination (not after its backoff of up to 1 s).
        state.withLock { $0.retryNow = true }
        wake()
    }

    /// How many records have been written to the sink so far.
    public var writtenRecords: Int { state.withLock { $0.written } }

    /// How many writes have failed since start.
    public var writeErrors: Int { state.withLock { $0.writeErrors } }

    /// Bytes waiting to be written (queued, being retried, or promised).
    public var queuedBytes: Int { state.withLock { $0.queue.count + $0.retry.count + $0.reserved } }

    /// Queues a record; throws when the log cannot take it (then the request must be refused).
    public func append(_ record: AuditRecord) throws(AuditUnavailable) {
        try append(lines: record.lineBytes)
    }

    /// Queues whole lines; throws when the log cannot take them. `counted`: a refusal counts in the outage summary
    /// (false for a second attempt at the same request's record). `tenant`: whose records they are (`anonymousShare`
    /// for requests without credentials); what one tenant has queued and reserved stays within half the room.
    func append(lines: [UInt8], tenant: String? = nil, counted: Bool = true) throws(AuditUnavailable) {
        let (problem, queued): (AuditUnavailable?, Int) = state.withLock { state in
            if let problem = Self.unavailability(state, writer: writer) {
                return (AuditUnavailable(reason: counted ? Self.refusing(&state, problem) : problem), 0)
            }
            if state.queue.count + state.reserved + lines.count > capacityBytes {
                let problem = "more than \(capacityBytes) bytes waiting to be written"
                return (AuditUnavailable(reason: counted ? Self.refusing(&state, problem) : problem), 0)
            }
            if let tenant {
                let held = state.queuedByTenant[tenant, default: 0]
                guard held + state.reservedByTenant[tenant, default: 0] + lines.count <= capacityBytes / 2 else {
                    let problem =
                        "this tenant's records waiting to be written already take half of the log's \(capacityBytes) bytes of room"
                    return (AuditUnavailable(reason: counted ? Self.refusing(&state, problem) : problem, tenantShare: true), 0)
                }
                state.queuedByTenant[tenant] = held + lines.count
            }
            state.queue += lines
            return (nil, state.queue.count)
        }
        if let problem { throw problem }
        // The writer wakes every 20 ms by itself; waking it per record would cost a thread switch and a write(2)
        // per request. Only a large backlog wakes it early.
        if queued >= Self.earlyWriteBytes { wake() }
    }

    /// Whether the log takes records now: it has not failed, and has room for at least a call's records
    /// (`readinessRoomBytes`). A log whose room is all promised or queued is not ready, though a tiny record might
    /// still fit (found by review: `/readyz` said ready while every call was refused for want of room).
    public var isAccepting: Bool {
        state.withLock {
            Self.unavailability($0, writer: writer) == nil
                && $0.queue.count + $0.reserved + min(Self.readinessRoomBytes, capacityBytes) <= capacityBytes
        }
    }

    /// The room a typical call reserves for its records (`AuditRecord.reservationBytes` of a small call, rounded up).
    static let readinessRoomBytes = 16 * 1024

    /// Room promised to records that can only be completed later (after the upstream answered), taken before the
    /// call is forwarded, so that a forwarded call always has its record.
    public struct Reservation: Sendable {
        let bytes: Int
        let tenant: String?
    }

    /// Reserves room for records of about `bytes` for a call of `tenant`; throws when the log cannot promise it (then
    /// do not forward): the log failed or is full, or the calls in flight of `tenant` would hold more than half of its
    /// room.
    public func reserve(bytes: Int, tenant: String? = nil) throws(AuditUnavailable) -> Reservation {
        if tenant != nil, bytes > capacityBytes / 2 {
            throw AuditUnavailable(
                reason: "the call's records would take \(bytes) bytes, more than a tenant's half of the log's \(capacityBytes)",
                tenantShare: true, neverFits: true)
        }
        let problem: AuditUnavailable? = state.withLock { state in
            if let problem = Self.unavailability(state, writer: writer) {
                return AuditUnavailable(reason: Self.refusing(&state, problem))
            }
            if state.queue.count + state.reserved + bytes > capacityBytes {
                return AuditUnavailable(reason: Self.refusing(&state, "more than \(capacityBytes) bytes waiting to be written"))
            }
            if let tenant {
                // Half the room at most, even for a tenant's only call in flight: a call whose records would need more
                // (a huge batch) is refused rather than left to take every other tenant's room.
                // What it reserved and what it queued since the writer last took the queue (found by review: refusals
                // queued up to half the room, then reservations took the other half).
                let held = state.reservedByTenant[tenant, default: 0]
                guard held + state.queuedByTenant[tenant, default: 0] + bytes <= capacityBytes / 2 else {
                    return AuditUnavailable(
                        reason:
                            "this tenant's calls in flight and records waiting to be written already hold half of the log's \(capacityBytes) bytes of room",
                        tenantShare: true)
                }
                state.reservedByTenant[tenant] = held + bytes
            }
            state.reserved += bytes
            return nil
        }
        if let problem { throw problem }
        return Reservation(bytes: bytes, tenant: tenant)
    }

    /// Queues records into room reserved earlier. Never refused: the reservation is released and the lines queued
    /// even if they are longer than estimated, even if the log failed or was closed in the meantime (a closing log
    /// still writes what is queued).
    public func append(_ records: [AuditRecord], into reservation: Reservation) {
        func queue(_ line: UnsafeRawBufferPointer) {
            state.withLock { state in
                state.reserved -= reservation.bytes
                if let tenant = reservation.tenant {
                    let held = state.reservedByTenant[tenant, default: 0] - reservation.bytes
                    state.reservedByTenant[tenant] = held > 0 ? held : nil
                    // Queued now, and counted as the tenant's until the writer takes it (a completed call's records
                    // must not free room that one tenant's next calls then take past its half).
                    state.queuedByTenant[tenant, default: 0] += line.count
                }
                state.queue.append(contentsOf: line)
            }
        }
        // One record (nearly every request): its line goes from the scratch it is written in straight into the queue.
        if records.count == 1 { return records[0].withLine(queue) }
        var lines: [UInt8] = []
        for record in records { record.withLine { lines.append(contentsOf: $0) } }
        lines.withUnsafeBytes(queue)
    }

    /// Waits (at most `timeout`) until every record queued so far has been written to the sink, or a write failed;
    /// with `waitingForReservations`, also the records of calls in flight that reserved room.
    public func flush(timeout: Duration = .seconds(5), waitingForReservations: Bool = true) {
        let deadline = ContinuousClock.now + timeout
        while state.withLock({ state in
            state.failure == nil
                && (!state.queue.isEmpty || !state.retry.isEmpty || state.writing || (waitingForReservations && state.reserved > 0))
        })
            && ContinuousClock.now < deadline
        {
            wake()
            Thread.sleep(forTimeInterval: 0.005)
        }
    }

    /// Writes everything queued (retrying failed writes for up to `timeout`) and stops the writer. Later `append`s
    /// throw.
    /// Returns how many bytes could not be written (0 when every record reached the sink).
    @discardableResult
    public func close(timeout: Duration = .seconds(10)) -> Int {
        state.withLock { $0.closed = true }
        let deadline = ContinuousClock.now + timeout
        wake()
        waitForWriter(until: deadline)
        if !writerDone.withLock({ $0 }) {
            // Still failing: the writer stops after its current attempt (a pipe's ends within a second), so that
            // what it holds is back in the queue to be reported.
            state.withLock { $0.abandoned = true }
            writer.abandon()
            wake()
            waitForWriter(until: ContinuousClock.now + .seconds(3))
        }
        let (unwritten, cut, summary) = state.withLock { state in
            // A write that never returned (storage that hangs) still holds its batch: reported too, though part of it
            // may have reached the file.
            (
                (state.writing ? state.inFlight : []) + state.retry + state.queue,
                state.writing ? state.inFlightResumed : state.partial, Self.refusalSummary(&state) ?? []
            )
        }
        if !unwritten.isEmpty || !summary.isEmpty {
            logger.critical(
                "audit log closed with records unwritten; they follow on standard error",
                metadata: ["audit.unwritten_bytes": "\(unwritten.count)"])
            // Not lost without a trace: the lines go to standard error (the gateway's own log), where an operator can
            // take them back: a record cut by the failed write whole (its beginning reached the destination), and the
            // summary of requests refused meanwhile.
            (cut + unwritten + summary).withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let result = Glibc.write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                    if result < 0 && errno == EINTR { continue }
                    guard result > 0 else { break }
                    offset += result
                }
            }
        }
        return unwritten.count + summary.count
    }

    private func waitForWriter(until deadline: ContinuousClock.Instant) {
        finished.lock()
        while !writerDone.withLock({ $0 }) && ContinuousClock.now < deadline {
            _ = finished.wait(until: Date().addingTimeInterval(0.05))
        }
        finished.unlock()
    }

    private func wake() {
        wakeUp.lock()
        wakeUp.signal()
        wakeUp.unlock()
    }

    private func writerLoop() {
        var backoff = 0.02
        while true {
            wakeUp.lock()
            _ = wakeUp.wait(until: Date().addingTimeInterval(backoff))
            wakeUp.unlock()
            if state.withLock({ state in
                defer { state.retryNow = false }; return state.retryNow
            }) {
                backoff = 0.02
            }
            if state.withLock({ $0.abandoned }) {
                // `close` gave up waiting: what is left stays queued, for it to report.
                writerDone.withLock { $0 = true }
                finished.lock()
                finished.broadcast()
                finished.unlock()
                return
            }
            writer.followPath()
            let destination = writer.destination
            let (batch, resumed, closed) = state.withLock { state -> ([UInt8], [UInt8], Bool) in
                // A record cut in another destination starts again from its beginning here.
                var batch = !state.partial.isEmpty && state.partialDestination != destination ? state.partial : []
                let resumed = batch.isEmpty ? state.partial : []
                batch += state.retry
                batch += state.queue
                state.retry = []
                state.queue = []
                state.queuedByTenant = [:]
                state.partial = []
                state.writing = !batch.isEmpty
                state.writingSince = Self.monotonicNanoseconds()
                state.inFlight = batch
                state.inFlightResumed = resumed
                return (batch, resumed, state.closed && state.reserved == 0)
            }
            if !batch.isEmpty {
                do throws(AuditWriteError) {
                    var failure: AuditWriteError?
                    batch.withUnsafeBytes { bytes in
                        do throws(AuditWriteError) { try writer.write(bytes) } catch { failure = error }
                    }
                    if let failure { throw failure }
                    let lines = Self.countLines(batch[...])
                    let recovered = state.withLock { state -> Bool in
                        state.written += lines
                        state.writing = false
                        state.inFlight = []
                        // Writes succeed: what was refused meanwhile is told (written with the next batch).
                        if let summary = Self.refusalSummary(&state) { state.queue += summary }
                        defer { state.failure = nil }
                        return state.failure != nil
                    }
                    if recovered { logger.notice("audit log writes succeed again; accepting requests") }
                    backoff = 0.02
                } catch {
                    let cut = min(error.written, batch.count)
                    let rest = Array(batch[cut...])
                    // What of the cut record reached the destination: from the last line end written (or, with none,
                    // what an earlier cut had written of the same record, plus this).
                    let partial: [UInt8]
                    if let lastEnd = batch[..<cut].lastIndex(of: 0x0A) {
                        partial = Array(batch[(lastEnd + 1)..<cut])
                    } else {
                        partial = resumed + batch[..<cut]
                    }
                    let firstFailure = state.withLock { state -> Bool in
                        state.written += Self.countLines(batch[..<cut])
                        state.retry = rest
                        state.partial = partial
                        state.partialDestination = destination
                        state.writing = false
                        state.inFlight = []
                        // Stopped on purpose (a reopen, or close giving up): not a failure; the rest goes again.
                        if error.interrupted { return false }
                        state.writeErrors += 1
                        defer { state.failure = "write failed: \(error.reason)" }
                        return state.failure == nil
                    }
                    if error.interrupted {
                        backoff = 0.02
                        continue
                    }
                    // Logged once per outage (the transition), not per retry or per refused request.
                    if firstFailure {
                        logger.error("audit log write failed; refusing requests and retrying", metadata: ["error": "\(error.reason)"])
                    }
                    backoff = min(1.0, backoff * 2)
                    continue
                }
            }
            if closed && state.withLock({ $0.queue.isEmpty && $0.retry.isEmpty }) {
                writer.synchronize()
                writerDone.withLock { $0 = true }
                finished.lock()
                finished.broadcast()
                finished.unlock()
                return
            }
        }
    }

    private static func countLines(_ bytes: ArraySlice<UInt8>) -> Int {
        bytes.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
    }

}
