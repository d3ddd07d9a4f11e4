import NIOCore
import NIOHTTP1

/// A request for the upstream, written as HTTP/1.1 bytes while it is built: the request line, each header once, then
/// the framing and a body small enough to follow the head in the same buffer. The connection writes it as it is (one
/// socket write, one TLS record to an `https` upstream). No header table or request head is built for it and no encoder
/// handler reads it again: this runs for every forwarded request.
///
/// A target, header name or value with a control byte (CR, LF, NUL or any other but HTAB) is refused (`InvalidHeader`),
/// so nothing the gateway forwards can end a header line early, add a header of its own or split the request.
struct UpstreamRequest {
    /// A part of the request that cannot go on a header line.
    struct InvalidHeader: Error, Equatable, CustomStringConvertible {
        /// Which part: `request target`, `header name`, or `value of header <name>`.
        let what: String
        var description: String { "\(what) contains a control character (CR, LF, NUL or another)" }
    }

    /// Bodies up to this size are copied behind the head; larger ones are written as a buffer of their own.
    static let coalescedBodyBytes = 16 * 1024

    /// The request's method (the response decoder reads answers to `HEAD` as bodiless).
    let method: HTTPMethod
    /// The head (and, once finished, a small body behind it).
    private(set) var head: ByteBuffer
    /// A body larger than `coalescedBodyBytes`, written after the head.
    private(set) var separateBody: ByteBuffer?

    /// Starts `METHOD target HTTP/1.1`.
    init(method: HTTPMethod, target: String, allocator: ByteBufferAllocator) throws(InvalidHeader) {
        guard HeaderText.fitsOnOneLine(target) else { throw InvalidHeader(what: "request target") }
        self.method = method
        head = allocator.buffer(capacity: 512)
        head.writeString(method.rawValue)
        head.writeInteger(UInt8(ascii: " "))
        head.writeString(target)
        head.writeStaticString(" HTTP/1.1\r\n")
    }

    /// Adds the header line `name: value`.
    mutating func add(name: String, value: String) throws(InvalidHeader) {
        guard HeaderText.fitsOnOneLine(name) else { throw InvalidHeader(what: "header name") }
        guard HeaderText.fitsOnOneLine(value) else { throw InvalidHeader(what: "value of header \(name)") }
        HeaderText.writeField(name, value, into: &head)
    }

    /// Adds `traceparent: 00-<trace id>-<span id>-<flags>` for `trace` (the gateway's span as the parent), written in
    /// pieces rather than built as a string first: this runs for every forwarded request.
    mutating func addTraceparent(_ trace: TraceContext) throws(InvalidHeader) {
        guard HeaderText.fitsOnOneLine(trace.traceID), HeaderText.fitsOnOneLine(trace.spanID), HeaderText.fitsOnOneLine(trace.flags)
        else { throw InvalidHeader(what: "value of header traceparent") }
        head.writeStaticString("traceparent: 00-")
        head.writeString(trace.traceID)
        head.writeInteger(UInt8(ascii: "-"))
        head.writeString(trace.spanID)
        head.writeInteger(UInt8(ascii: "-"))
        head.writeString(trace.flags)
        head.writeStaticString("\r\n")
    }

    /// Ends the head: with `body`, its `Content-Length` and the body itself (behind the head when it is small); without
    /// one, nothing (a request without framing headers has no body).
    mutating func finish(body: ByteBuffer?) {
        guard let body else {
            head.writeStaticString("\r\n")
            return
        }
        head.writeStaticString("Content-Length: ")
        head.writeString(String(body.readableBytes))
        head.writeStaticString("\r\n\r\n")
        if body.readableBytes <= Self.coalescedBodyBytes {
            head.writeImmutableBuffer(body)
        } else {
            separateBody = body
        }
    }
}
