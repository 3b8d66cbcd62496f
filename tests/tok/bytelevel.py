"""GPT-2's byte-level alphabet read backwards (character -> byte), written
here from its definition (bytes_to_unicode): the tests that turn byte-level
token strings into the bytes they stand for share it."""


def byte_table():
    """{character: byte} for the 256 characters of the byte-level alphabet."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}
