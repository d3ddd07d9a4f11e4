import NIOCore

/// What both framings' owners (`MCPConnectionHandler` with `RequestFraming`, `UpstreamConnection` with
/// `UpstreamResponseFraming`) do around their framing: hand a read's parts on in order, then its error; hold a read
/// or the close that arrives while parts are being handled (the handling reading more, or closing, from inside a
/// read) until they have all been handled, so parts never overtake each other and the close never comes between a
/// head and its body. The framing stays with its owner, so nothing holds it while parts are handled.
final class FramedPartsRelay<Part> {
    private var firing = false
    /// Whether the parts of a read are being handed out now.
    var isFiring: Bool { firing }
    private var closedWhileFiring = false
    private var queued: [ByteBuffer] = []
    /// The parts of one read, kept between reads so that framing one allocates nothing.
    private var scratch: [Part] = []
    /// The most parts whose room `scratch` keeps between reads.
    static var keptCapacity: Int { 64 }
    /// The room kept for the parts of the next read.
    var keptPartsCapacity: Int { scratch.capacity }

    /// Frames `bytes` (and any read that arrives meanwhile) with `frame`, passing each part to `fire` and an error
    /// to `fail`; a close that arrived meanwhile runs `close` at the end.
    func read(
        _ bytes: ByteBuffer, frame: (ByteBuffer, (Part) -> Void) -> HTTPFramingError?, fire: (Part) -> Void,
        fail: (HTTPFramingError) -> Void, close: () -> Void
    ) {
        guard !firing else { return queued.append(bytes) }
        firing = true
        var next: ByteBuffer? = bytes
        while let input = next {
            var parts: [Part] = []
            swap(&parts, &scratch)
            let error = frame(input) { parts.append($0) }
            for part in parts { fire(part) }
            // The room of an ordinary read is kept; that of a read of many parts goes back to the kept size (64 KiB of
            // one-byte chunks frame about 11,000 parts, whose room the connection kept as long as it was open: found by
            // review).
            if parts.capacity > Self.keptCapacity {
                parts = []
                parts.reserveCapacity(Self.keptCapacity)
            } else {
                parts.removeAll(keepingCapacity: true)
            }
            if scratch.isEmpty { swap(&parts, &scratch) }
            if let error { fail(error) }
            next = queued.isEmpty ? nil : queued.removeFirst()
        }
        firing = false
        if closedWhileFiring {
            closedWhileFiring = false
            close()
        }
    }

    /// The connection closed: `close` runs now, or after the parts being passed up.
    func closed(_ close: () -> Void) {
        guard !firing else {
            closedWhileFiring = true
            return
        }
        close()
    }

    /// Hands the framing the close (`frame`): the parts it completes go to `fire`, an error for a message it cut
    /// short to `fail` first.
    func close(frame: ((Part) -> Void) -> HTTPFramingError?, fire: (Part) -> Void, fail: (HTTPFramingError) -> Void) {
        var parts: [Part] = []
        if let error = frame({ parts.append($0) }) { fail(error) }
        for part in parts { fire(part) }
    }
}
