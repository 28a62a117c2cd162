/* GPT-2's reversible byte <-> code point map, for byte-level BPE. */
#include "engine/tok_internal.h"

/* GPT-2 bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order, so every byte has a visible, non-space code point. */
static int printable_byte(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(unsigned char b)
{
    if (printable_byte(b)) return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++)
        if (!printable_byte(i)) n++;
    return 256 + n;
}

int tok_cp_to_byte(uint32_t cp)
{
    if (cp < 256) return printable_byte(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = cp - 256;
    for (unsigned i = 0; i < 256; i++) {
        if (printable_byte(i)) continue;
        if (n == 0) return (int)i;
        n--;
    }
    return -1;
}
