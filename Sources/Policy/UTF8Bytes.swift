import Foundation

extension String {
    /// Whether the two texts are the same bytes (Swift's `==` is canonical equivalence: a decomposed text equals its
    /// NFC form). Compared with `memcmp` over contiguous UTF-8; a generic `elementsEqual` over `utf8` took a fifth of
    /// the time of canonicalising a large argument.
    func hasSameBytes(as other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        let compared = utf8.withContiguousStorageIfAvailable { mine in
            other.utf8.withContiguousStorageIfAvailable { theirs in
                mine.isEmpty || memcmp(mine.baseAddress!, theirs.baseAddress!, mine.count) == 0
            }
        }
        return (compared ?? nil) ?? utf8.elementsEqual(other.utf8)
    }

    /// Whether the text is exactly `bytes`.
    func hasSameBytes(as bytes: [UInt8]) -> Bool {
        guard utf8.count == bytes.count else { return false }
        let compared = utf8.withContiguousStorageIfAvailable { mine in
            bytes.withUnsafeBufferPointer { theirs in mine.isEmpty || memcmp(mine.baseAddress!, theirs.baseAddress!, mine.count) == 0 }
        }
        return compared ?? utf8.elementsEqual(bytes)
    }
}

extension String {
    /// Whether the text's UTF-8 holds `byte` (`memchr` over contiguous UTF-8).
    func containsByte(_ byte: UInt8) -> Bool {
        utf8.withContiguousStorageIfAvailable { bytes in
            !bytes.isEmpty && memchr(bytes.baseAddress!, Int32(byte), bytes.count) != nil
        } ?? utf8.contains(byte)
    }
}
