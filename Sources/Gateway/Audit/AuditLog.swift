import Foundation
import Synchronization

/// Why an audit record could not be accepted; the request it belongs to is refused (fail closed).
public struct AuditUnavailable: Error, Sendable, CustomStringConvertible {
    /// What is wrong with the log.
    public let reason: String
    public var description: String { "audit log unavailable: \(reason)" }
}

/// The audit log: one JSON line per decision, to a file or standard output.
///
/// `append` never blocks and never drops: records are queued in order, and a dedicated thread writes the queue at
/// least every 20 ms (blocking I/O stays off the event loops). When the queue holds more than `capacityBytes`
/// (the disk is slower than the traffic) or a write has failed, `append` throws and the gateway refuses the request
/// it was about to allow — fail closed, so nothing is ever done without its record. `close()` writes everything
/// still queued; it is called on shutdown.
public final class AuditLog: Sendable {
    /// Where records go.
    public enum Sink: Sendable, Hashable {
        /// Standard output.
        case standardOutput
        /// A file, created if missing, appended to.
        case file(String)
    }

    private struct State {
        var queue: [UInt8] = []
        var failure: String?
        var closed = false
        var written = 0
        var writing = false
        /// Bytes promised to records whose call is being forwarded (counted against the capacity).
        var reserved = 0
    }

    private let state = Mutex(State())
    /// The open sink; replaced by `reopen()` (log rotation). Only the writer thread and `reopen` touch it.
    private let handle: Mutex<FileHandle>
    private let sink: Sink
    private let capacityBytes: Int
    /// A queue this large is written at once rather than at the next 20 ms tick.
    static let earlyWriteBytes = 256 * 1024
    private let wakeUp = NSCondition()
    private let finished = NSCondition()
    private let writerDone = Mutex(false)

    /// Opens the sink and starts the writer thread.
    public init(sink: Sink, capacityBytes: Int = 16 * 1024 * 1024) throws {
        self.sink = sink
        handle = Mutex(try Self.open(sink))
        self.capacityBytes = capacityBytes
        let thread = Thread { [self] in self.writerLoop() }
        thread.name = "mcpgw-audit"
        thread.start()
    }

    private static func open(_ sink: Sink) throws -> FileHandle {
        switch sink {
        case .standardOutput:
            return FileHandle.standardOutput
        case .file(let path):
            if !FileManager.default.fileExists(atPath: path) {
                guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                    throw AuditUnavailable(reason: "cannot create \(path)")
                }
            }
            guard let opened = FileHandle(forWritingAtPath: path) else { throw AuditUnavailable(reason: "cannot open \(path) for writing") }
            _ = try opened.seekToEnd()
            return opened
        }
    }

    /// Reopens the file by its path (after log rotation moved it): what is queued is written to the old file first,
    /// later records go to the new one. A no-op for standard output.
    public func reopen() throws {
        guard case .file = sink else { return }
        flush()
        let fresh = try Self.open(sink)
        let old = handle.withLock { current in
            let old = current
            current = fresh
            return old
        }
        try? old.synchronize()
        try? old.close()
    }

    /// How many records have been written to the sink so far.
    public var writtenRecords: Int { state.withLock { $0.written } }

    /// Queues a record; throws when the log cannot take it (then the request must be refused).
    public func append(_ record: AuditRecord) throws(AuditUnavailable) {
        let line = Array((record.jsonLine + "\n").utf8)
        let (problem, queued): (String?, Int) = state.withLock { state in
            if let failure = state.failure { return (failure, 0) }
            if state.closed { return ("the log is closed", 0) }
            if state.queue.count + line.count > capacityBytes { return ("more than \(capacityBytes) bytes waiting to be written", 0) }
            state.queue += line
            return (nil, state.queue.count)
        }
        if let problem { throw AuditUnavailable(reason: problem) }
        // The writer wakes every 20 ms by itself; waking it per record would cost a thread switch and a write(2)
        // per request. Only a large backlog wakes it early.
        if queued >= Self.earlyWriteBytes {
            wakeUp.lock()
            wakeUp.signal()
            wakeUp.unlock()
        }
    }

    /// Whether a record would be accepted now.
    public var isAccepting: Bool {
        state.withLock { $0.failure == nil && !$0.closed && $0.queue.count + $0.reserved < capacityBytes }
    }

    /// Room promised to records that can only be completed later (after the upstream answered), taken before the
    /// call is forwarded, so that a forwarded call always has its record.
    public struct Reservation: Sendable {
        let bytes: Int
    }

    /// Reserves room for records of about `bytes`; throws when the log cannot promise it (then do not forward).
    public func reserve(bytes: Int) throws(AuditUnavailable) -> Reservation {
        let problem: String? = state.withLock { state in
            if let failure = state.failure { return failure }
            if state.closed { return "the log is closed" }
            if state.queue.count + state.reserved + bytes > capacityBytes { return "more than \(capacityBytes) bytes waiting to be written" }
            state.reserved += bytes
            return nil
        }
        if let problem { throw AuditUnavailable(reason: problem) }
        return Reservation(bytes: bytes)
    }

    /// Queues records into room reserved earlier. Never refused for lack of room (the reservation is released
    /// and the lines queued even if they are longer than estimated); a log that failed in the meantime still takes
    /// them into the queue, where the failure is already reported and new requests are refused.
    public func append(_ records: [AuditRecord], into reservation: Reservation) {
        let lines = records.flatMap { Array(($0.jsonLine + "\n").utf8) }
        state.withLock { state in
            state.reserved -= reservation.bytes
            state.queue += lines
        }
    }

    /// Waits (at most `timeout`) until every record queued so far has been written to the sink.
    public func flush(timeout: Duration = .seconds(5)) {
        let deadline = ContinuousClock.now + timeout
        while state.withLock({ !$0.queue.isEmpty || $0.writing }) && ContinuousClock.now < deadline {
            wakeUp.lock()
            wakeUp.signal()
            wakeUp.unlock()
            Thread.sleep(forTimeInterval: 0.005)
        }
    }

    /// Writes everything queued and stops the writer. Later `append`s throw.
    public func close() {
        state.withLock { $0.closed = true }
        wakeUp.lock()
        wakeUp.signal()
        wakeUp.unlock()
        finished.lock()
        while !writerDone.withLock({ $0 }) { finished.wait(until: Date().addingTimeInterval(0.05)) }
        finished.unlock()
    }

    private func writerLoop() {
        while true {
            wakeUp.lock()
            _ = wakeUp.wait(until: Date().addingTimeInterval(0.02))
            wakeUp.unlock()
            let (batch, closed) = state.withLock { state -> ([UInt8], Bool) in
                let batch = state.queue
                state.queue = []
                state.writing = !batch.isEmpty
                return (batch, state.closed)
            }
            if !batch.isEmpty {
                do {
                    try handle.withLock { try $0.write(contentsOf: batch) }
                    let lines = batch.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
                    state.withLock {
                        $0.written += lines
                        $0.writing = false
                    }
                } catch {
                    state.withLock {
                        $0.failure = "write failed: \(error.localizedDescription)"
                        $0.writing = false
                    }
                    FileHandle.standardError.write(Data("mcpgw: audit log write failed: \(error); refusing requests until restart\n".utf8))
                }
            }
            if closed && state.withLock({ $0.queue.isEmpty }) {
                handle.withLock { try? $0.synchronize() }
                writerDone.withLock { $0 = true }
                finished.lock()
                finished.broadcast()
                finished.unlock()
                return
            }
        }
    }
}
