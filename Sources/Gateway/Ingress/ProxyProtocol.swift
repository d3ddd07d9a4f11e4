public import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The PROXY protocol header (HAProxy's, versions 1 and 2) that a layer-4 load balancer writes at the start of each
/// connection it opens, before any TLS byte: who the client it connects for is. Read as a value, tested without
/// sockets (`ProxyHeaderReader` feeds it).
///
/// - Version 1 is one text line of at most 107 bytes: `PROXY TCP4 <source> <destination> <source port>
///   <destination port>\r\n` (`TCP6` for IPv6), or `PROXY UNKNOWN…\r\n`. Addresses and ports are checked strictly.
/// - Version 2 is binary: a 12-byte signature, version and command, family, a length (at most 65,535) and the addresses,
///   then TLVs, which are skipped. `LOCAL` (the proxy's own health checks) and families other than TCP over IPv4 or
///   IPv6 carry no client: the connection then counts as the proxy's own, as the specification asks.
enum ProxyProtocolHeader {
    /// What the bytes received so far hold.
    enum Parse: Equatable {
        /// Not a whole header yet.
        case incomplete
        /// Not a PROXY protocol header, or a malformed one: why.
        case invalid(String)
        /// A whole header of `length` bytes, naming the client `source`; nil when it names none (the proxy speaks
        /// for itself).
        case header(length: Int, source: SocketAddress?)
    }

    /// The first twelve bytes of a version 2 header.
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// The longest version 1 header, its CRLF included.
    static let v1MaximumBytes = 107
    /// The longest version 2 header: 16 bytes and a length of at most 65,535.
    static let v2MaximumBytes = 16 + 65_535

    /// Reads the header at the start of `bytes`.
    static func parse(_ bytes: UnsafeRawBufferPointer) -> Parse {
        guard let first = bytes.first else { return .incomplete }
        if first == v2Signature[0] { return parseV2(bytes) }
        if first == UInt8(ascii: "P") { return parseV1(bytes) }
        return .invalid("the connection does not start with a PROXY protocol header")
    }

    private static func parseV1(_ bytes: UnsafeRawBufferPointer) -> Parse {
        let prefix = Array("PROXY ".utf8)
        for (index, byte) in prefix.enumerated() where index < bytes.count {
            guard bytes[index] == byte else { return .invalid("the connection does not start with a PROXY protocol header") }
        }
        let searched = min(bytes.count, v1MaximumBytes)
        guard let lineFeed = (0..<searched).first(where: { bytes[$0] == 0x0A }) else {
            return bytes.count >= v1MaximumBytes ? .invalid("a version 1 header longer than 107 bytes") : .incomplete
        }
        guard lineFeed > 0, bytes[lineFeed - 1] == 0x0D else { return .invalid("a version 1 header not ended by CRLF") }
        let line = Array(bytes[0..<(lineFeed - 1)])
        guard line.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return .invalid("a version 1 header with a control byte") }
        let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        let length = lineFeed + 1
        guard fields.count >= 2 else { return .invalid("a version 1 header without a protocol") }
        // UNKNOWN: the proxy could not tell (the rest of the line is to be ignored).
        if fields[1] == "UNKNOWN" { return .header(length: length, source: nil) }
        guard fields[1] == "TCP4" || fields[1] == "TCP6" else { return .invalid("a version 1 header with protocol '\(fields[1])'") }
        guard fields.count == 6 else { return .invalid("a version 1 header needs two addresses and two ports") }
        let isV4 = fields[1] == "TCP4"
        guard let source = address(fields[2], v4: isV4), address(fields[3], v4: isV4) != nil else {
            return .invalid("a version 1 header with an address that is not \(isV4 ? "IPv4" : "IPv6")")
        }
        guard let sourcePort = port(fields[4]), port(fields[5]) != nil else {
            return .invalid("a version 1 header with a port that is not 0-65535")
        }
        guard let client = try? SocketAddress(ipAddress: source, port: sourcePort) else {
            return .invalid("a version 1 header with an unreadable address")
        }
        return .header(length: length, source: client)
    }

    private static func parseV2(_ bytes: UnsafeRawBufferPointer) -> Parse {
        for (index, byte) in v2Signature.enumerated() where index < bytes.count {
            guard bytes[index] == byte else { return .invalid("the connection does not start with a PROXY protocol header") }
        }
        guard bytes.count >= 16 else { return .incomplete }
        guard bytes[12] >> 4 == 2 else { return .invalid("a binary header of version \(bytes[12] >> 4)") }
        let command = bytes[12] & 0x0F
        guard command <= 1 else { return .invalid("a version 2 header with command \(command)") }
        let family = bytes[13]
        let length = 16 + (Int(bytes[14]) << 8 | Int(bytes[15]))
        guard bytes.count >= length else { return .incomplete }
        // LOCAL: the proxy's own connection (a health check); its address fields, if any, are ignored.
        if command == 0 { return .header(length: length, source: nil) }
        let addresses = UnsafeRawBufferPointer(rebasing: bytes[16..<length])
        switch family {
        case 0x11:  // TCP over IPv4
            guard addresses.count >= 12 else { return .invalid("a version 2 IPv4 header shorter than its addresses") }
            let text = (0..<4).map { String(addresses[$0]) }.joined(separator: ".")
            let port = Int(addresses[8]) << 8 | Int(addresses[9])
            guard let client = try? SocketAddress(ipAddress: text, port: port) else { return .invalid("an unreadable IPv4 address") }
            return .header(length: length, source: client)
        case 0x21:  // TCP over IPv6
            guard addresses.count >= 36 else { return .invalid("a version 2 IPv6 header shorter than its addresses") }
            let text = stride(from: 0, to: 16, by: 2).map { String(Int(addresses[$0]) << 8 | Int(addresses[$0 + 1]), radix: 16) }
                .joined(separator: ":")
            let port = Int(addresses[32]) << 8 | Int(addresses[33])
            guard let client = try? SocketAddress(ipAddress: text, port: port) else { return .invalid("an unreadable IPv6 address") }
            return .header(length: length, source: client)
        case 0x00, 0x12, 0x22, 0x31, 0x32:
            // UNSPEC, UDP, or Unix sockets: no TCP client to name; the connection is the proxy's.
            return .header(length: length, source: nil)
        default:
            return .invalid("a version 2 header with address family 0x\(String(family, radix: 16))")
        }
    }

    /// `text` as an address of the family asked for, in its usual form; nil when it is not one.
    private static func address(_ text: String, v4: Bool) -> String? {
        var storage = in6_addr()
        guard text.utf8.count <= 45, inet_pton(v4 ? AF_INET : AF_INET6, text, &storage) == 1 else { return nil }
        return text
    }

    /// A port written in decimal without leading zeros, 0-65535.
    private static func port(_ text: String) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 5, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            text == "0" || !text.hasPrefix("0"), let value = Int(text), value <= 65_535
        else { return nil }
        return value
    }
}

/// A range of addresses: `10.0.0.0/8`, `2001:db8::/32`, or one address (`127.0.0.1`, `::1`). An IPv4 address seen on an
/// IPv6 socket (`::ffff:a.b.c.d`) is in the IPv4 ranges that hold it.
public struct AddressRange: Sendable, Hashable, CustomStringConvertible {
    /// The network's bytes (4 or 16).
    let network: [UInt8]
    /// How many leading bits an address must share with `network`.
    let prefixLength: Int

    public var description: String { text }
    private let text: String

    /// Why a text is not a range.
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses `text`; a range whose address has bits set past its prefix is refused (`10.1.0.0/8` is most likely a
    /// typing error for `10.1.0.0/16`, or for `10.0.0.0/8`).
    public init(parsing text: String) throws(Invalid) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let address = String(parts[0])
        var bytes: [UInt8]
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, address, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            throw Invalid(description: "'\(text.prefix(100))' is not an IP address or a CIDR range")
        }
        var length = bytes.count * 8
        if parts.count == 2 {
            guard let given = Int(parts[1]), parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), (0...length).contains(given) else {
                throw Invalid(description: "'\(text.prefix(100))' has a prefix length that is not 0-\(length)")
            }
            length = given
        }
        for bit in length..<(bytes.count * 8) where bytes[bit / 8] & (0x80 >> UInt8(bit % 8)) != 0 {
            throw Invalid(description: "'\(text.prefix(100))' has address bits set past its /\(length) prefix")
        }
        // `::ffff:a.b.c.d/(96 + n)` is the IPv4 range `a.b.c.d/n`, as addresses seen on an IPv6 socket are compared
        // (found by review: `::ffff:0:0/96` trusted every IPv4 client and was not counted as wide).
        if bytes.count == 16, length >= 96, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            bytes = Array(bytes[12..<16])
            length -= 96
        }
        network = bytes
        prefixLength = length
        self.text = text
    }

    /// Whether the range is wide: shorter than a /16 (IPv4) or a /48 (IPv6), more than one site's load balancers.
    public var isWide: Bool { prefixLength < (network.count == 4 ? 16 : 48) }

    /// Whether `address` is in the range.
    public func contains(_ address: SocketAddress) -> Bool {
        var bytes: [UInt8]
        switch address {
        case .v4(let v4): bytes = withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6): bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        default: return false
        }
        // An IPv4 client seen on an IPv6 socket is in IPv4 ranges only (found by review: `::/80` took in every one).
        if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            bytes = Array(bytes[12..<16])
        }
        guard bytes.count == network.count else { return false }
        for bit in 0..<prefixLength where (bytes[bit / 8] ^ network[bit / 8]) & (0x80 >> UInt8(bit % 8)) != 0 { return false }
        return true
    }
}

/// Where the listener takes PROXY protocol headers from (`proxy_protocol`): a connection from one of
/// `trustedProxies` must start with one, and counts as the client it names; any other connection is a client's own
/// and is never read for one.
public struct ProxyProtocolSettings: Sendable {
    /// The load balancers' addresses.
    public var trustedProxies: [AddressRange]

    /// Headers taken from `trustedProxies`.
    public init(trustedProxies: [AddressRange]) { self.trustedProxies = trustedProxies }

    /// Whether a connection from `address` is a trusted proxy's.
    func trusts(_ address: SocketAddress?) -> Bool {
        guard let address else { return false }
        return trustedProxies.contains { $0.contains(address) }
    }
}
