import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Appends to a file (created with mode 0600) or to standard output, with plain `write(2)`.
///
/// Writes never wait without bound on a reader: the descriptor is non-blocking (for standard output that is a pipe or
/// a terminal, the gateway's own description of it, opened through `/proc/self/fd/1`, so the shared one is left as it
/// is), and a destination that takes nothing for `stallTimeout` (a FIFO or a log collector's pipe nobody reads) fails
/// the write: its records are kept and retried, requests are refused meanwhile, and a reload can reopen the path.
///
/// Records never go into a deleted file: before each batch, a file found deleted (a mistaken `rm`, a rotation that
/// removes instead of moving) is noticed and its path opened again. A file moved away keeps receiving records until
/// `reopen` (SIGHUP), as log rotation expects: they are in the moved file, not lost.
final class FileAuditWriter: AuditWriter {
    private let path: String?
    private let descriptor: Mutex<Int32>
    private let opened = Atomic<Int>(0)
    private let lastProgress = Atomic<UInt64>(0)
    /// Set while a reopen waits for the descriptor, and for good once the log gives up (`abandon`): a write in
    /// progress stops between two pieces and reports how far it got, instead of holding on for a slow reader.
    private let interruptions = Atomic<Int>(0)
    private let abandoned = Atomic<Bool>(false)
    /// Largest piece written at once: progress is seen (and an interruption heard) at least this often.
    static let pieceBytes = 256 * 1024
    /// Told when the file at the path was found deleted or replaced and opened again.
    private let followed: @Sendable (String) -> Void

    /// Opens `path`, or standard output when nil.
    init(path: String?, followed: @escaping @Sendable (String) -> Void = { _ in }) throws(AuditUnavailable) {
        self.path = path
        self.followed = followed
        let fd: Int32
        if let path {
            // Opened blocking (a FIFO waits for its reader here, at start), then written without blocking.
            fd = try Self.open(path)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        } else {
            fd = Self.privateStandardOutput()
        }
        descriptor = Mutex(fd)
    }

    /// How long a destination may take no bytes at all before the write fails (and is retried).
    static let stallTimeout: Int32 = 1000

    /// Standard output as a description of the gateway's own, non-blocking, when it is a pipe or a terminal (setting
    /// `O_NONBLOCK` on the shared description would change it for every process that shares it); otherwise (a regular
    /// file, or a socket, which cannot be opened again by path) standard output itself.
    private static func privateStandardOutput() -> Int32 {
        var status = stat()
        guard fstat(STDOUT_FILENO, &status) == 0 else { return STDOUT_FILENO }
        let type = status.st_mode & S_IFMT
        guard type == S_IFIFO || type == S_IFCHR else { return STDOUT_FILENO }
        let own = Glibc.open("/proc/self/fd/1", O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        return own >= 0 ? own : STDOUT_FILENO
    }

    /// Whether the regular file open as `fd` has been deleted (no name left: nobody can read what goes into it).
    private static func deleted(_ fd: Int32) -> Bool {
        var status = stat()
        guard fstat(fd, &status) == 0 else { return false }
        return status.st_mode & S_IFMT == S_IFREG && status.st_nlink == 0
    }

    /// Whether two descriptors are open on the same file.
    private static func sameFile(_ first: Int32, _ second: Int32) -> Bool {
        var a = stat()
        var b = stat()
        guard fstat(first, &a) == 0, fstat(second, &b) == 0 else { return false }
        return a.st_dev == b.st_dev && a.st_ino == b.st_ino
    }

    private static func open(_ path: String, flags: Int32 = 0) throws(AuditUnavailable) -> Int32 {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | flags, 0o600)
        guard descriptor >= 0 else { throw AuditUnavailable(reason: "cannot open \(path): \(String(cString: strerror(errno)))") }
        return descriptor
    }

    var destination: Int { opened.load(ordering: .relaxed) }

    var progress: UInt64 { lastProgress.load(ordering: .relaxed) }

    func followPath() {
        var notice: String?
        descriptor.withLock { fd in
            guard let path, Self.deleted(fd) else { return }
            do throws(AuditUnavailable) {
                // Non-blocking: whatever is at the path now (a FIFO without a reader) must not hold the writer.
                let fresh = try Self.open(path, flags: O_NONBLOCK)
                close(fd)
                fd = fresh
                opened.wrappingAdd(1, ordering: .relaxed)
                notice = "the audit file was deleted; records go to a new file at \(path)"
            } catch {
                // The next write tries again, and fails into the log's retry.
            }
        }
        if let notice { followed(notice) }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        // The descriptor stays locked while it is written to: `reopen` (on SIGHUP) cannot close it in between, and
        // its number cannot be given to another file or a client's socket while records are on their way to it.
        let failure = descriptor.withLock { fd -> AuditWriteError? in
            if path != nil, Self.deleted(fd) {
                // Found deleted since `followPath`: nothing goes into a file nobody can read; the log retries (and
                // follows the path first).
                return AuditWriteError(written: 0, reason: "the audit file was deleted")
            }
            var offset = 0
            while offset < bytes.count {
                if abandoned.load(ordering: .relaxed) || interruptions.load(ordering: .relaxed) > 0 {
                    return AuditWriteError(written: offset, reason: "interrupted", interrupted: true)
                }
                let result = Glibc.write(fd, bytes.baseAddress! + offset, min(bytes.count - offset, Self.pieceBytes))
                if result < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK {
                        // Full (a pipe whose reader is behind): wait for room, but not without bound.
                        var ready = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                        if poll(&ready, 1, Self.stallTimeout) > 0 { continue }
                        return AuditWriteError(
                            written: offset,
                            reason:
                                "the audit destination took nothing for \(Self.stallTimeout) ms (a pipe or FIFO whose reader stopped reading)"
                        )
                    }
                    return AuditWriteError(written: offset, reason: String(cString: strerror(errno)))
                }
                offset += result
                lastProgress.store(AuditLog.monotonicNanoseconds(), ordering: .relaxed)
            }
            return nil
        }
        if let failure { throw failure }
    }

    func reopen() throws(AuditWriteError) {
        guard let path else { return }
        let fresh: Int32
        do {
            // Non-blocking: a FIFO without a reader at the path (or anything else that would wait) fails the reopen
            // at once instead of holding the reload, and with it every later reload and shutdown; and writes to it
            // wait at most `stallTimeout`.
            fresh = try Self.open(path, flags: O_NONBLOCK)
        } catch {
            throw AuditWriteError(written: 0, reason: error.reason)
        }
        // Swapped and closed under the lock: no write is using the old descriptor, and none will. A write in progress
        // is asked to stop between two pieces (the log writes the rest again, to the new file), so a slow reader does
        // not hold the reload.
        interruptions.wrappingAdd(1, ordering: .relaxed)
        defer { interruptions.wrappingSubtract(1, ordering: .relaxed) }
        descriptor.withLock { current in
            // Another file only if the path now names another one (a rotation moved it): reopening the same file
            // continues where a cut record stopped.
            if !Self.sameFile(current, fresh) { opened.wrappingAdd(1, ordering: .relaxed) }
            fsync(current)
            close(current)
            current = fresh
        }
    }

    func abandon() { abandoned.store(true, ordering: .relaxed) }

    func synchronize() {
        _ = descriptor.withLock { fsync($0) }
    }
}
