/* webhook_header_fuzz.c: libFuzzer harness for the Contiguity-Signature header parser.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I/usr/include/lua5.4 \
 *     fuzz/webhook_header_fuzz.c -o /tmp/whfuzz -llua5.4 -lcurl -lcrypto -lqrencode -lpthread
 *   /tmp/whfuzz -max_total_time=60 fuzz/corpus/webhook_header
 *
 * The parser is static, so the harness includes the module's translation
 * unit (src/contiguity.c), as `make fuzz` builds it. */
#include "../src/contiguity.c"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wh_header h;
    /* A private copy of exactly size bytes: ASan reports any read past it. */
    char *copy = (char *)malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    if (size)
        memcpy(copy, data, size);
    if (wh_parse_header(copy, size, &h)) {
        /* What verification relies on after a successful parse. */
        assert(h.t != NULL && h.t >= copy && h.t + h.t_len <= copy + size);
        assert(h.t_len >= 1 && h.t_len <= WH_MAX_T_DIGITS);
        assert(h.nsig >= 1 && h.nsig <= WH_MAX_SIGS);
        assert(h.t_value >= 0 && h.t_value < 1e15);
    } else {
        assert(h.nsig >= 0 && h.nsig <= WH_MAX_SIGS);
    }
    free(copy);
    return 0;
}
