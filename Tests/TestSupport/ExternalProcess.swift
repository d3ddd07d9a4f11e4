import Foundation

/// Runs real command-line peers (`curl`, `openssl s_client`) from tests, with a time limit.
public enum ExternalProcess {
    /// What a finished process left behind.
    public struct Result: Sendable {
        /// Exit status (or the signal number if it was killed).
        public let status: Int32
        /// Everything written to standard output.
        public let stdout: String
        /// Everything written to standard error.
        public let stderr: String
        /// Standard output and standard error together.
        public var output: String { stdout + stderr }
    }

    /// Runs `arguments[0]` (looked up in PATH) with the rest as arguments; kills it after `timeout` seconds.
    public static func run(_ arguments: [String], input: String = "", timeout: Double = 20) async throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        let finished = AsyncStream<Void>.makeStream()
        process.terminationHandler = { _ in finished.continuation.finish() }
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
        // Read both pipes concurrently so that a chatty process cannot block on a full pipe.
        async let out = Task.detached { stdout.fileHandleForReading.readDataToEndOfFile() }.value
        async let err = Task.detached { stderr.fileHandleForReading.readDataToEndOfFile() }.value
        let killer = Task {
            try await Task.sleep(for: .seconds(timeout))
            process.terminate()
        }
        for await _ in finished.stream {}
        killer.cancel()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: await out, as: UTF8.self),
            stderr: String(decoding: await err, as: UTF8.self))
    }

    /// Whether `command` is on PATH.
    public static func isAvailable(_ command: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(command)")
        }
    }
}
