import NIOCore

/// What an encoder has been given since the last flush and holds back, so that a head and the parts behind it leave
/// as one buffer (one socket write, one TLS record); with the promises of the writes it came from, completed when
/// that buffer has been written. Used by the client response encoder (upstream requests are written as one buffer
/// already: `UpstreamRequest`).
struct PendingWrite {
    private var buffer: ByteBuffer?
    private var promise: EventLoopPromise<Void>?

    /// Whether no bytes are held.
    var isEmpty: Bool { buffer == nil }

    /// Lets `write` add bytes behind what is held, in place; starts from `empty` when nothing is held.
    mutating func write(startingWith empty: @autoclosure () -> ByteBuffer, _ write: (inout ByteBuffer) -> Void) {
        var held = buffer ?? empty()
        // Taken out first, so the buffer is uniquely held and grows in place.
        buffer = nil
        write(&held)
        buffer = held
    }

    /// Adds `bytes` behind what is held (copied), or starts holding them.
    mutating func append(_ bytes: inout ByteBuffer) {
        guard buffer != nil else {
            buffer = bytes
            return
        }
        write(startingWith: ByteBuffer()) { $0.writeBuffer(&bytes) }
    }

    /// Completes `promise` when what is held is written.
    mutating func hold(_ promise: EventLoopPromise<Void>?) {
        guard let promise else { return }
        if let held = self.promise {
            held.futureResult.cascade(to: promise)
        } else {
            self.promise = promise
        }
    }

    /// What is held and the promise for it, handed over; nothing is held afterwards.
    mutating func take() -> (buffer: ByteBuffer?, promise: EventLoopPromise<Void>?) {
        defer { (buffer, promise) = (nil, nil) }
        return (buffer, promise)
    }
}
