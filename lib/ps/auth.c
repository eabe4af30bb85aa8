/* The handshake's cryptography, all from OpenSSL's libcrypto: random nonces
 * and HMAC-SHA256. No home-made crypto. */
#include "ps_int.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void ps_nonce(uint8_t nonce[PS_NONCE])
{
    if (RAND_bytes(nonce, PS_NONCE) != 1) {
        /* Never expected; still never a constant nonce. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(nonce, &ts, sizeof(ts) < PS_NONCE ? sizeof(ts) : PS_NONCE);
    }
}

static void put_hello(uint8_t out[32], const ps_hello_t *h)
{
    efps__put_le32(out, h->magic);
    out[4] = (uint8_t)h->version;
    out[5] = (uint8_t)(h->version >> 8);
    out[6] = (uint8_t)h->role;
    out[7] = (uint8_t)(h->role >> 8);
    efps__put_le32(out + 8, h->rank);
    efps__put_le32(out + 12, h->num_workers);
    memcpy(out + 16, h->nonce, PS_NONCE);
}

void ps_mac(const char *secret, const char *label, const ps_hello_t *first,
            const ps_hello_t *second, uint8_t mac[PS_MAC])
{
    uint8_t msg[96];
    size_t len = strlen(label) < 32 ? strlen(label) : 32;
    memset(msg, 0, sizeof(msg));
    memcpy(msg, label, len);
    put_hello(msg + 32, first);
    put_hello(msg + 64, second);
    unsigned mac_len = PS_MAC;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, sizeof(msg), mac, &mac_len);
}

bool ps_mac_equal(const uint8_t a[PS_MAC], const uint8_t b[PS_MAC])
{
    return CRYPTO_memcmp(a, b, PS_MAC) == 0;
}

void ps_send_refuse(efps_tp_ep_t *ep, const char *fmt, ...)
{
    uint8_t buf[1024];
    efps__put_le32(buf, PS_MSG_REFUSE);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf((char *)buf + 4, sizeof(buf) - 4, fmt, ap);
    va_end(ap);
    size_t len = 4 + (n < 0 ? 0 : (size_t)n >= sizeof(buf) - 4 ? sizeof(buf) - 5 : (size_t)n) + 1;
    efps_tp_msg_send(ep, buf, len);
}
