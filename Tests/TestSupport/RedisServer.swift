import Foundation
import Synchronization

/// A real `redis-server` (Debian's, installed by scripts/install-deps.sh) on a loopback port of its own, with no
/// persistence, for tests. Started and known ready by its own log line, not by waiting.
public final class RedisServer: Sendable {
    /// The port it listens on (127.0.0.1).
    public let port: Int
    private let extra: [String]
    private let process = Mutex<Process?>(nil)

    /// `redis://127.0.0.1:PORT`.
    public var url: String { "redis://127.0.0.1:\(port)" }

    /// Starts a server on a free port, with `arguments` added to its command line (e.g. `--requirepass`).
    public init(arguments: [String] = []) async throws {
        port = try Self.freePort()
        extra = arguments
        try await start()
    }

    /// Starts it (again) on the same port.
    public func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            [
                "redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "notice",
            ] + extra
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let ready = AsyncStream<Bool>.makeStream()
        let seen = Mutex<[UInt8]>([])
        output.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                ready.continuation.yield(false)
                return
            }
            let text = seen.withLock { seen -> String in
                seen += data
                if seen.count > 1 << 16 { seen.removeFirst(seen.count - (1 << 16)) }
                return String(decoding: seen, as: UTF8.self)
            }
            if text.contains("Ready to accept connections") { ready.continuation.yield(true) }
        }
        try process.run()
        self.process.withLock { $0 = process }
        let timeout = Task {
            try await Task.sleep(for: .seconds(15))
            ready.continuation.yield(false)
        }
        var started = false
        for await value in ready.stream {
            started = value
            break
        }
        timeout.cancel()
        guard started else {
            stop()
            throw RedisServerError(log: seen.withLock { String(decoding: $0, as: UTF8.self) })
        }
    }

    /// Kills it at once (SIGKILL: no goodbye to clients), and waits until it is gone.
    public func stop() {
        guard
            let process = process.withLock({ process in
                defer { process = nil }; return process
            })
        else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { stop() }

    /// A port nothing listens on now (the kernel's choice for port 0).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw RedisServerError(log: "no free port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// `redis-server` did not start.
public struct RedisServerError: Error, CustomStringConvertible {
    /// What it printed.
    public let log: String
    public var description: String { "redis-server did not start: \(log)" }
}
