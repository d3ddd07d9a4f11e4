import Foundation
import Identity
import StrictJSON
import Testing

@Suite("RFC 7515 Appendix A vectors")
struct RFC7515VectorTests {
    static let payload = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"

    @Test("A.1: HS256")
    func hs256() throws {
        let key = try JSONParser.parse(
            #"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#)
        let verificationKey = try JWTVerificationKey.jwk(try #require(key.objectValue))
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." + Self.payload + ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        let jws = try CompactJWS(parsing: token, maximumBytes: 8192)
        #expect(verificationKey.verifies(jws))
        #expect(jws.payload["iss"]?.stringValue == "joe")
        #expect(jws.payload["http://example.com/is_root"] == .bool(true))
        // One flipped signature bit fails.
        let tampered = try CompactJWS(
            parsing: token.replacingOccurrences(of: ".dBjftJeZ4CVP", with: ".eBjftJeZ4CVP"), maximumBytes: 8192)
        #expect(tampered.signature != jws.signature)
        #expect(!verificationKey.verifies(tampered))
    }

    @Test("A.2: RS256, key given as a JWK")
    func rs256() throws {
        let jwk = try JSONParser.parse(
            #"{"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"}"#
        )
        let key = try JWTVerificationKey.jwk(try #require(jwk.objectValue))
        #expect(key.algorithm == .rs256)
        let token =
            "eyJhbGciOiJSUzI1NiJ9." + Self.payload + "."
            + "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
        let jws = try CompactJWS(parsing: token, maximumBytes: 8192)
        #expect(key.verifies(jws))
        let otherPayload = try CompactJWS(
            parsing: "eyJhbGciOiJSUzI1NiJ9." + Base64URL.encode(Array(#"{"iss":"eve"}"#.utf8)) + "."
                + token.split(separator: ".")[2], maximumBytes: 8192)
        #expect(!key.verifies(otherPayload))
    }

    @Test("base64url is strict: padding, + and /, and non-canonical trailing bits are refused")
    func base64url() {
        #expect(Base64URL.decode("YQ") == [0x61])
        #expect(Base64URL.decode("YQ==") == nil)
        #expect(Base64URL.decode("YR") == nil)  // trailing bits not zero
        #expect(Base64URL.decode("a+b/") == nil)
        #expect(Base64URL.decode("Y") == nil)
        #expect(Base64URL.encode([0xFB, 0xFF]) == "-_8")
        for length in 0..<40 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255) }
            #expect(Base64URL.decode(Base64URL.encode(bytes)) == bytes)
        }
    }

    @Test(
        "keys anyone can forge signatures for are refused: RSA with e = 1 or an even e, Ed25519 points of small order; and RSA keys that make every check costly"
    )
    func forgeableKeys() throws {
        let n =
            "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
        func rsa(_ e: String) throws -> JSONObject {
            try #require(try JSONParser.parse(#"{"kty":"RSA","n":"\#(n)","e":"\#(e)"}"#).objectValue)
        }
        #expect(try JWTVerificationKey.jwk(rsa("AQAB")).algorithm == .rs256)
        #expect(try JWTVerificationKey.jwk(rsa("Aw")).algorithm == .rs256)  // e = 3 is sound with a strict verifier
        for weak in ["AQ", "Ag", "AQAA"] {  // 1, 2, 65536
            #expect(throws: JWTKeyError.self, "e \(weak)") { try JWTVerificationKey.jwk(try rsa(weak)) }
        }
        // Keys that make every check costly: an exponent of 2^33 + 1, a modulus of 8,208 bits.
        #expect(try JWTVerificationKey.jwk(rsa("_____w")).algorithm == .rs256)  // 2^32 - 1: the largest accepted
        #expect(throws: JWTKeyError.self) { try JWTVerificationKey.jwk(try rsa("AgAAAAE")) }
        let huge = String(repeating: "_", count: 1368)
        let hugeKey = try #require(try JSONParser.parse(#"{"kty":"RSA","n":"\#(huge)","e":"AQAB"}"#).objectValue)
        #expect(throws: JWTKeyError.self) { try JWTVerificationKey.jwk(hugeKey) }
        func okp(_ point: [UInt8]) throws -> JSONObject {
            try #require(try JSONParser.parse(#"{"kty":"OKP","crv":"Ed25519","x":"\#(Base64URL.encode(point))"}"#).objectValue)
        }
        let identity = [0x01] + [UInt8](repeating: 0, count: 31)
        let orderTwo = [0xEC] + [UInt8](repeating: 0xFF, count: 30) + [0x7F]
        var orderEight: [UInt8] = [
            0x26, 0xE8, 0x95, 0x8F, 0xC2, 0xB2, 0x27, 0xB0, 0x45, 0xC3, 0xF4, 0x89, 0xF2, 0xEF, 0x98, 0xF0, 0xD5, 0xDF, 0xAC, 0x05,
            0xD3, 0xC6, 0x33, 0x39, 0xB1, 0x38, 0x02, 0x88, 0x6D, 0x53, 0xFC, 0x05,
        ]
        orderEight[31] |= 0x80  // the other sign of x: the same point of small order
        for point in [identity, orderTwo, orderEight] {
            #expect(throws: JWTKeyError.self, "\(point.prefix(2))") { try JWTVerificationKey.jwk(try okp(point)) }
        }
        // RFC 8037's example key is an ordinary point.
        let rfc8037 = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        let example = try #require(try JSONParser.parse(#"{"kty":"OKP","crv":"Ed25519","x":"\#(rfc8037)"}"#).objectValue)
        #expect(try JWTVerificationKey.jwk(example).algorithm == .edDSA)
    }

    @Test("a fetched key set holds at most 64 usable keys, and at most 4 of one kid")
    func fetchedSetBounds() throws {
        // Every key of a token's kid is tried for it: thousands under one kid made each junk token cost a third of a
        // second on the threads that check every tenant's fresh tokens (found by review).
        let rfc8037 = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        func set(_ kids: [String]) -> [UInt8] {
            let keys = kids.map { #"{"kty":"OKP","crv":"Ed25519","kid":"\#($0)","x":"\#(rfc8037)"}"# }
            return Array(#"{"keys":[\#(keys.joined(separator: ","))]}"#.utf8)
        }
        #expect(try JWTVerificationKey.jwks(set((0..<64).map { "k\($0)" }), skippingUnusable: true).count == 64)
        #expect(throws: JWTKeyError.self) { try JWTVerificationKey.jwks(set((0..<65).map { "k\($0)" }), skippingUnusable: true) }
        #expect(try JWTVerificationKey.jwks(set(Array(repeating: "same", count: 4)), skippingUnusable: true).count == 4)
        #expect(throws: JWTKeyError.self) { try JWTVerificationKey.jwks(set(Array(repeating: "same", count: 5)), skippingUnusable: true) }
        // Unusable entries count toward a bound too, before any key is built.
        let encryption = Array(repeating: #"{"kty":"OKP","crv":"Ed25519","kid":"e","use":"enc","x":"\#(rfc8037)"}"#, count: 257)
        let padded = Array(
            #"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"\#(rfc8037)"},\#(encryption.joined(separator: ","))]}"#.utf8)
        #expect(throws: JWTKeyError.self) { try JWTVerificationKey.jwks(padded, skippingUnusable: true) }
    }
}
