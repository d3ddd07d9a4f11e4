import Foundation
import Synchronization

/// A real `redis-server` (Debian's, installed by scripts/install-deps.sh) on a loopback port of its own, with no
/// persistence, for tests. Started and known ready by its own log line, not by waiting.
public final class RedisServer: Sendable {
    /// The port it listens on (127.0.0.1).
    public var port: Int { chosenPort.withLock { $0 } }
    private let chosenPort: Mutex<Int>
    private let extra: [String]
    private let tls: Bool
    private let process = Mutex<Process?>(nil)

    /// `redis://127.0.0.1:PORT`, or `rediss://localhost:PORT` with TLS (the dev server certificate names localhost).
    public var url: String { tls ? "rediss://localhost:\(port)" : "redis://127.0.0.1:\(port)" }

    /// Starts a server on a free port, with `arguments` added to its command line (e.g. `--requirepass`). With `tls`,
    /// it speaks only TLS, with the dev PKI's server certificate (`certs-dev/server.pem`, from the gateway CA), and
    /// `clientCA`, if given, must have signed the client's certificate.
    ///
    /// A free port can be taken by another socket (a client's ephemeral port, another test's server) before
    /// redis-server binds it; it is then started again on another free port, up to five times in all.
    public init(arguments: [String] = [], tls: Bool = false, clientCA: String? = nil) async throws {
        chosenPort = Mutex(try Self.freePort())
        self.tls = tls
        var arguments = arguments
        if tls {
            arguments += [
                "--tls-cert-file", DevPKI.serverChain, "--tls-key-file", DevPKI.serverKey,
                "--tls-ca-cert-file", clientCA ?? DevPKI.gatewayCA, "--tls-auth-clients", clientCA == nil ? "no" : "yes",
            ]
        }
        extra = arguments
        for attempt in 1... {
            do {
                try await start()
                return
            } catch let error as RedisServerError where attempt < 5 && error.log.contains("Address already in use") {
                let port = try Self.freePort()
                chosenPort.withLock { $0 = port }
            }
        }
    }

    /// Starts it (again) on the same port.
    public func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            [
                "redis-server", "--port", tls ? "0" : String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "notice",
            ] + (tls ? ["--tls-port", String(port)] : []) + extra
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let ready = AsyncStream<Bool>.makeStream()
        let seen = Mutex<[UInt8]>([])
        // Read on a thread of its own with blocking reads (FileHandle's readabilityHandler can crash libdispatch
        // when its handle goes away): until the ready line, then on to the end so that the server never blocks on
        // a full pipe.
        let reading = output.fileHandleForReading
        let reader = Thread {
            var announced = false
            while true {
                let data = reading.availableData
                if data.isEmpty { break }
                guard !announced else { continue }
                let text = seen.withLock { seen -> String in
                    seen += data
                    if seen.count > 1 << 16 { seen.removeFirst(seen.count - (1 << 16)) }
                    return String(decoding: seen, as: UTF8.self)
                }
                if text.contains("Ready to accept connections") {
                    announced = true
                    ready.continuation.yield(true)
                }
            }
            ready.continuation.yield(false)
        }
        try process.run()
        try? output.fileHandleForWriting.close()
        reader.start()
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
        let (fd, port) = try boundSocket()
        close(fd)
        return port
    }

    /// A TCP socket bound to a port of the kernel's choice on 127.0.0.1, not listening: its descriptor and port.
    static func boundSocket() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else {
            close(fd)
            throw RedisServerError(log: "no free port: errno \(errno)")
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }
}

/// A loopback port that refuses connections for as long as this value lives: bound and never listened on, so no other
/// test can take it meanwhile (a port found free and let go can be bound by the next test that asks for one).
public final class ClosedPort: Sendable {
    /// The port (127.0.0.1).
    public let port: Int
    private let fd: Int32

    /// Binds a port of the kernel's choice.
    public init() throws { (fd, port) = try RedisServer.boundSocket() }

    deinit { close(fd) }
}

/// `redis-server` did not start.
public struct RedisServerError: Error, CustomStringConvertible {
    /// What it printed.
    public let log: String
    public var description: String { "redis-server did not start: \(log)" }
}
