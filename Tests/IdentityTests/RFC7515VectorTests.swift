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
}
