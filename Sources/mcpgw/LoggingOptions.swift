public import ArgumentParser
import Foundation
import Gateway
public import Logging
import StrictJSON

/// `--log-level` and `--log-format`, shared by the commands that run something.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    @Option(help: "Log format on standard error: text (one readable line) or json (one JSON object a line, metadata as fields).")
    var logFormat: LogFormat = .text

    /// How log lines look.
    enum LogFormat: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    /// Sends log lines to standard error at the chosen level and format; returns the command's logger.
    func bootstrap(label: String) -> Logger {
        let level = logLevel
        let format = logFormat
        LoggingSystem.bootstrap { name in
            switch format {
            case .text:
                var handler = OneLineLogHandler(StreamLogHandler.standardError(label: name))
                handler.logLevel = level
                return handler
            case .json:
                var handler = JSONLogHandler(label: name)
                handler.logLevel = level
                return handler
            }
        }
        return Logger(label: label)
    }
}

/// One JSON object per log line on standard error: `time` (RFC 3339, UTC, milliseconds), `level`, `logger` (the
/// label), `message`, `source`, and each metadata key as a field of its own (a field the handler sets is never
/// overwritten by metadata: such metadata goes under `metadata.<key>`).
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static let reserved: Set<String> = ["time", "level", "logger", "message", "source"]

    func log(event: LogEvent) {
        var fields = metadata
        for (key, value) in metadataProvider?.get() ?? [:] { fields[key] = value }
        for (key, value) in event.metadata ?? [:] { fields[key] = value }
        var members: [JSONObject.Member] = [
            .init(key: "time", value: .string(Self.timestamp())), .init(key: "level", value: .string(event.level.rawValue)),
            .init(key: "logger", value: .string(label)), .init(key: "message", value: .string(event.message.description)),
            .init(key: "source", value: .string(event.source)),
        ]
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            members.append(.init(key: Self.reserved.contains(key) ? "metadata.\(key)" : key, value: Self.json(value)))
        }
        var line = JSONValue.object(JSONObject(members)).serializedBytes
        line.append(0x0A)
        // One write(2) per line: lines of concurrent loggers do not interleave.
        line.withUnsafeBytes { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
    }

    static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let values): .array(values.map(json))
        case .dictionary(let dictionary):
            .object(JSONObject(dictionary.sorted { $0.key < $1.key }.map { .init(key: $0.key, value: json($0.value)) }))
        }
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour,
            parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
