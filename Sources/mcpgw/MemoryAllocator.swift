#if canImport(Glibc)
import Glibc
#endif

/// The allocator serving this process's `malloc`, as the start-up log reports it: release builds link mimalloc
/// (Package.swift), other builds use the C library's. Found by looking up mimalloc's own `mi_version` among the
/// symbols loaded, so it says what the process runs with, not what it was meant to be built with.
enum MemoryAllocator {
    /// `mimalloc 2.0.9`, or `system` when mimalloc is not loaded.
    static var description: String {
        #if canImport(Glibc)
        // RTLD_DEFAULT (a null handle): every object loaded into the process, in the order malloc is resolved.
        guard let symbol = dlsym(nil, "mi_version") else { return "system" }
        let version = unsafeBitCast(symbol, to: (@convention(c) () -> Int32).self)()
        return "mimalloc \(version / 100).\(version / 10 % 10).\(version % 10)"
        #else
        return "system"
        #endif
    }
}
