// One-line wrappers for OpenSSL macros that the Swift importer cannot see.
// Every wrapper is `static inline` and prefixed `CMCPGW_`; nothing else lives here.
#ifndef CMCPGW_OPENSSL_SHIMS_H
#define CMCPGW_OPENSSL_SHIMS_H

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/x509_vfy.h>

static inline long CMCPGW_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int v) { return SSL_CTX_set_min_proto_version(ctx, v); }
static inline long CMCPGW_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int v) { return SSL_CTX_set_max_proto_version(ctx, v); }
static inline long CMCPGW_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
static inline long CMCPGW_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long m) { return SSL_CTX_set_session_cache_mode(ctx, m); }
static inline long CMCPGW_SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *list) { return SSL_CTX_set1_groups_list(ctx, list); }
static inline long CMCPGW_SSL_set_tlsext_host_name(SSL *ssl, const char *name) { return SSL_set_tlsext_host_name(ssl, name); }
static inline long CMCPGW_BIO_set_mem_eof_return(BIO *bio, int v) { return BIO_set_mem_eof_return(bio, v); }
static inline void CMCPGW_OPENSSL_free(void *p) { OPENSSL_free(p); }
static inline void CMCPGW_BIO_set_retry_read(BIO *b) { BIO_set_retry_read(b); }
static inline void CMCPGW_BIO_clear_retry_flags(BIO *b) { BIO_clear_retry_flags(b); }

static inline uint64_t CMCPGW_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t CMCPGW_SSL_OP_NO_COMPRESSION(void) { return SSL_OP_NO_COMPRESSION; }
static inline uint64_t CMCPGW_SSL_OP_ALL(void) { return SSL_OP_ALL; }
static inline uint64_t CMCPGW_SSL_OP_NO_TICKET(void) { return SSL_OP_NO_TICKET; }
static inline long CMCPGW_SSL_SESS_CACHE_OFF(void) { return SSL_SESS_CACHE_OFF; }
static inline unsigned long CMCPGW_XN_FLAG_RFC2253(void) { return XN_FLAG_RFC2253; }
static inline long CMCPGW_SSL_MODE_RELEASE_BUFFERS(void) { return SSL_MODE_RELEASE_BUFFERS; }

static inline int CMCPGW_sk_X509_num(const STACK_OF(X509) *s) { return sk_X509_num(s); }
static inline X509 *CMCPGW_sk_X509_value(const STACK_OF(X509) *s, int i) { return sk_X509_value(s, i); }
static inline int CMCPGW_sk_GENERAL_NAME_num(const STACK_OF(GENERAL_NAME) *s) { return sk_GENERAL_NAME_num(s); }
static inline GENERAL_NAME *CMCPGW_sk_GENERAL_NAME_value(const STACK_OF(GENERAL_NAME) *s, int i) { return sk_GENERAL_NAME_value(s, i); }
static inline void CMCPGW_GENERAL_NAMES_free(STACK_OF(GENERAL_NAME) *s) { GENERAL_NAMES_free(s); }
static inline void CMCPGW_sk_X509_pop_free(STACK_OF(X509) *s) { sk_X509_pop_free(s, X509_free); }
static inline STACK_OF(X509) *CMCPGW_sk_X509_new_null(void) { return sk_X509_new_null(); }
static inline int CMCPGW_sk_X509_push(STACK_OF(X509) *s, X509 *x) { return sk_X509_push(s, x); }
static inline int CMCPGW_sk_X509_CRL_num(const STACK_OF(X509_CRL) *s) { return sk_X509_CRL_num(s); }
static inline X509_CRL *CMCPGW_sk_X509_CRL_value(const STACK_OF(X509_CRL) *s, int i) { return sk_X509_CRL_value(s, i); }
static inline X509_CRL *CMCPGW_sk_X509_CRL_delete(STACK_OF(X509_CRL) *s, int i) { return sk_X509_CRL_delete(s, i); }

static inline int CMCPGW_EVP_PKEY_PUBLIC_KEY(void) { return EVP_PKEY_PUBLIC_KEY; }
static inline int CMCPGW_EVP_PKEY_RSA(void) { return EVP_PKEY_RSA; }
static inline int CMCPGW_EVP_PKEY_EC(void) { return EVP_PKEY_EC; }
static inline int CMCPGW_EVP_PKEY_ED25519(void) { return EVP_PKEY_ED25519; }

/// The GENERAL_NAME's type (GEN_URI, GEN_DNS, GEN_EMAIL, GEN_IPADD, ...).
static inline int CMCPGW_GENERAL_NAME_type(const GENERAL_NAME *n) { return n->type; }
/// The string payload of a GENERAL_NAME of type GEN_URI, GEN_DNS, GEN_EMAIL or GEN_IPADD.
static inline const ASN1_STRING *CMCPGW_GENERAL_NAME_string(const GENERAL_NAME *n) {
    switch (n->type) {
    case GEN_URI: return n->d.uniformResourceIdentifier;
    case GEN_DNS: return n->d.dNSName;
    case GEN_EMAIL: return n->d.rfc822Name;
    case GEN_IPADD: return n->d.iPAddress;
    default: return NULL;
    }
}

#endif
