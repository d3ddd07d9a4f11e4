import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Appends to a file (created with mode 0600) or to standard output, with plain `write(2)`.
///
/// The file is followed by its path: before each batch, a file that was deleted or replaced at the path (rotation
/// without a SIGHUP, a mistaken `rm`) is noticed and the path opened again, so that records never go on into a file
/// nobody can read.
final class FileAuditWriter: AuditWriter {
    private let path: String?
    private let descriptor: Mutex<Int32>
    /// Told when the file at the path was found deleted or replaced and opened again.
    private let followed: @Sendable (String) -> Void

    /// Opens `path`, or standard output when nil.
    init(path: String?, followed: @escaping @Sendable (String) -> Void = { _ in }) throws(AuditUnavailable) {
        self.path = path
        self.followed = followed
        descriptor = Mutex(try path.map(Self.open) ?? STDOUT_FILENO)
    }

    /// Why the file open as `fd` is no longer the one at `path` (deleted, or another file there now), or nil.
    private static func lost(_ fd: Int32, _ path: String) -> String? {
        var open = stat()
        guard fstat(fd, &open) == 0 else { return nil }
        if open.st_nlink == 0 { return "deleted" }
        var named = stat()
        guard stat(path, &named) == 0 else { return "gone from its path" }
        return named.st_dev != open.st_dev || named.st_ino != open.st_ino ? "replaced at its path" : nil
    }

    private static func open(_ path: String) throws(AuditUnavailable) -> Int32 {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw AuditUnavailable(reason: "cannot open \(path): \(String(cString: strerror(errno)))") }
        return descriptor
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(AuditWriteError) {
        // The descriptor stays locked while it is written to: `reopen` (on SIGHUP) cannot close it in between, and
        // its number cannot be given to another file or a client's socket while records are on their way to it.
        var notice: String?
        let failure = descriptor.withLock { fd -> AuditWriteError? in
            if let path, let why = Self.lost(fd, path) {
                do throws(AuditUnavailable) {
                    let fresh = try Self.open(path)
                    close(fd)
                    fd = fresh
                    notice = "the audit file was \(why); records go to \(path) again"
                } catch {
                    return AuditWriteError(written: 0, reason: "the audit file was \(why) and \(error.reason)")
                }
            }
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
        if let notice { followed(notice) }
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
