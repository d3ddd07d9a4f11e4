internal import COpenSSL
import NIOCore

/// A BIO that reads OpenSSL's input from, and writes its output to, `ByteBuffer`s: ciphertext from the network is
/// handed over as the buffer it arrived in, and ciphertext for the network is collected in one buffer that is sent as
/// it is — one copy less each way than memory BIOs (no copy into and out of flat BIO memory).
///
/// Written by hand after swift-nio-ssl's `ByteBufferBIO`: OpenSSL has no BIO over caller-owned buffers. Lives on one
/// event loop inside one `TLSConnection`, which owns it and frees the `SSL` (and so the BIO) before it.
final class ByteBufferBIO {
    /// Ciphertext received and not yet read by OpenSSL.
    private var inbound: ByteBuffer?
    /// Ciphertext written by OpenSSL and not yet taken.
    private var outbound: ByteBuffer
    /// The BIO; OpenSSL's `SSL` owns its reference once `SSL_set_bio` is called.
    let bio: OpaquePointer

    init(allocator: ByteBufferAllocator) throws(TLSError) {
        guard let method = Self.method, let bio = BIO_new(method) else {
            throw .invalidConfiguration("cannot create the ByteBuffer BIO", openSSL: OpenSSLErrorQueue.drain())
        }
        self.bio = bio
        outbound = allocator.buffer(capacity: 0)
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
        BIO_set_init(bio, 1)
    }

    /// Hands received ciphertext to OpenSSL (appended when earlier bytes are still unread).
    func receive(_ buffer: ByteBuffer) {
        if inbound == nil || inbound!.readableBytes == 0 {
            inbound = buffer
        } else {
            var buffer = buffer
            inbound!.writeBuffer(&buffer)
        }
    }

    /// Ciphertext produced since the last call, if any.
    func takeOutbound(allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard outbound.readableBytes > 0 else { return nil }
        let taken = outbound
        outbound = allocator.buffer(capacity: 0)
        return taken
    }

    /// Makes room for about `bytes` more ciphertext, so that encrypting a large piece grows the buffer once.
    func reserveOutbound(_ bytes: Int) {
        outbound.reserveCapacity(minimumWritableBytes: bytes)
    }

    /// Bytes of ciphertext waiting to be read by OpenSSL.
    var pendingInbound: Int { inbound?.readableBytes ?? 0 }

    fileprivate func read(into target: UnsafeMutableRawPointer, count: Int) -> Int32 {
        CMCPGW_BIO_clear_retry_flags(bio)
        guard var buffer = inbound, buffer.readableBytes > 0 else {
            // Nothing yet: OpenSSL must wait for more, not see end of file.
            CMCPGW_BIO_set_retry_read(bio)
            return -1
        }
        let taken = min(count, buffer.readableBytes)
        buffer.withUnsafeReadableBytes { bytes in target.copyMemory(from: bytes.baseAddress!, byteCount: taken) }
        buffer.moveReaderIndex(forwardBy: taken)
        inbound = buffer.readableBytes > 0 ? buffer : nil
        return Int32(taken)
    }

    fileprivate func write(from source: UnsafeRawPointer, count: Int) -> Int32 {
        CMCPGW_BIO_clear_retry_flags(bio)
        outbound.writeBytes(UnsafeRawBufferPointer(start: source, count: count))
        return Int32(count)
    }

    fileprivate func control(_ command: Int32) -> Int {
        switch command {
        case BIO_CTRL_FLUSH: return 1
        case BIO_CTRL_PENDING: return pendingInbound
        case BIO_CTRL_WPENDING: return outbound.readableBytes
        default: return 0
        }
    }

    /// Runs `body` with the BIO's owner, without retaining it: OpenSSL calls back only from inside a call the owning
    /// `TLSConnection` makes, which keeps it alive (a retain and release per call, a dozen calls per request, were
    /// measurable).
    private static func withOwner<Result>(_ bio: OpaquePointer?, _ body: (ByteBufferBIO) -> Result) -> Result? {
        guard let bio, let data = BIO_get_data(bio) else { return nil }
        return Unmanaged<ByteBufferBIO>.fromOpaque(data)._withUnsafeGuaranteedRef(body)
    }

    /// The BIO method, made once per process. `nonisolated(unsafe)`: it is written once (lazily, thread-safely, as
    /// every static) and only read afterwards; OpenSSL reads a `BIO_METHOD` from any thread.
    nonisolated(unsafe) private static let method: OpaquePointer? = {
        guard let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mcpgw ByteBuffer BIO") else { return nil }
        _ = BIO_meth_set_write(method) { bio, data, count in
            guard let data, count >= 0 else { return -1 }
            return ByteBufferBIO.withOwner(bio) { $0.write(from: UnsafeRawPointer(data), count: Int(count)) } ?? -1
        }
        _ = BIO_meth_set_read(method) { bio, data, count in
            guard let data, count >= 0 else { return -1 }
            return ByteBufferBIO.withOwner(bio) { $0.read(into: UnsafeMutableRawPointer(data), count: Int(count)) } ?? -1
        }
        _ = BIO_meth_set_ctrl(method) { bio, command, _, _ in
            ByteBufferBIO.withOwner(bio) { $0.control(command) } ?? 0
        }
        _ = BIO_meth_set_create(method) { bio in
            BIO_set_init(bio, 0)
            return 1
        }
        _ = BIO_meth_set_destroy(method) { bio in
            BIO_set_data(bio, nil)
            BIO_set_init(bio, 0)
            return 1
        }
        return method
    }()
}
