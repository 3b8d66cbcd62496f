/* The test tools' input: bytes written as hex on a line. */
#ifndef PB_TESTS_HEXLINE_H
#define PB_TESTS_HEXLINE_H

static int hex_val(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes the hex in s (up to a newline) into buf; its length, or -1 when malformed. */
static long unhex(const char *s, unsigned char *buf)
{
    long n = 0;
    while (s[0] && s[0] != '\n' && s[0] != '\r') {
        int hi = hex_val((unsigned char)s[0]), lo = s[1] ? hex_val((unsigned char)s[1]) : -1;
        if (hi < 0 || lo < 0)
            return -1;
        buf[n++] = (unsigned char)(hi * 16 + lo);
        s += 2;
    }
    return n;
}

#endif
