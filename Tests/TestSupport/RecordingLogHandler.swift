public import Logging
import NIOConcurrencyHelpers

/// A swift-log handler that keeps every message, so tests can check what an operator would read.
public struct RecordingLogHandler: LogHandler {
    /// The messages logged so far, shared by every copy of the handler.
    public final class Store: Sendable {
        private let lines = NIOLockedValueBox<[String]>([])
        /// A new, empty store.
        public init() {}
        /// Every line, as `LEVEL message`.
        public var all: [String] { lines.withLockedValue { $0 } }
        func append(_ line: String) { lines.withLockedValue { $0.append(line) } }
    }

    /// Where messages go.
    public let store: Store
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace

    /// A handler writing to `store`.
    public init(store: Store) { self.store = store }

    /// A logger whose messages land in a new store.
    public static func logger() -> (Logger, Store) {
        let store = Store()
        return (Logger(label: "test") { _ in RecordingLogHandler(store: store) }, store)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        store.append("\(event.level) \(event.message)")
    }
}
