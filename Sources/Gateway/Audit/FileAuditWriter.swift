import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Appends to a file (created with mode 0600) or to standard output, with plain `write(2)`.
final class FileAuditWriter: AuditWriter {
    private let path: String?
    private let descriptor: Mutex<Int32>

    /// Opens `path`, or standard output when nil.
    init(path: String?) throws(AuditUnavailable) {
        self.path = path
        descriptor = Mutex(try path.map(Self.open) ?? STDOUT_FILENO)
    }

    private static func open(_ path: String) throws(AuditUnavailable) -> Int32 {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw AuditUnavailable(reason: "cannot open \(path): \(String(cString: strerror(errno)))") }
        return descriptor
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        // The descriptor stays locked while it is written to: `reopen` (on SIGHUP) cannot close it in between, and
        // its number cannot be given to another file or a client's socket while records are on their way to it.
        let failure = descriptor.withLock { fd -> AuditWriteError? in
            var offset = 0
            while offset < bytes.count {
                let result = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if result < 0 {
                    if errno == EINTR { continue }
                    return AuditWriteError(written: offset, reason: String(cString: strerror(errno)))
                }
                offset += result
            }
            return nil
        }
        if let failure { throw failure }
    }

    func reopen() throws(AuditWriteError) {
        guard let path else { return }
        let fresh: Int32
        do {
            fresh = try Self.open(path)
        } catch {
            throw AuditWriteError(written: 0, reason: error.reason)
        }
        // Swapped and closed under the lock: no write is using the old descriptor, and none will.
        descriptor.withLock { current in
            fsync(current)
            close(current)
            current = fresh
        }
    }

    func synchronize() {
        _ = descriptor.withLock { fsync($0) }
    }
}
