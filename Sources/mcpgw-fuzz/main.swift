import Foundation

// Built two ways.
//
// - With `-DFUZZING` and `--sanitize=fuzzer` (scripts/fuzz.sh): a libFuzzer binary. libFuzzer owns `main`; the target
//   is chosen by the environment variable MCPGW_FUZZ_TARGET.
// - Otherwise (every ordinary build): a replay tool, `mcpgw-fuzz TARGET FILE...`, which runs files (seed corpora,
//   crash cases) through a target, and `mcpgw-fuzz --list`.

#if FUZZING
nonisolated(unsafe) var selected: ((UnsafeRawBufferPointer) -> Void)?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    let name = ProcessInfo.processInfo.environment["MCPGW_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTargets.all[name] else {
        FileHandle.standardError.write(
            Data("MCPGW_FUZZ_TARGET must be one of: \(FuzzTargets.all.keys.sorted().joined(separator: " "))\n".utf8))
        exit(2)
    }
    selected = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected?(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#else
// A global with an initializer runs in order in main.swift, and is only declared (never run) where the file is
// read as a library: the fuzz build reads it so, and there this branch is not compiled anyway.
let replayed: Void = Replay.run(CommandLine.arguments)
#endif
