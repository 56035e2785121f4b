"""Reading a mapping file's JSON safely: the byte stream handed to ijson, watched for nesting
and entry sizes no Stripe mapping ever has, so a small hostile file fails at once."""

from __future__ import annotations

import io
import re
from array import array
from itertools import accumulate
from typing import BinaryIO

from cardbridge.imports.files import ImportFileError

# -- JSON ---------------------------------------------------------------------------------------
# The mapping is {old customer id: {"id", "cards": {old card id: {fields}}}}: depth 4. A parser
# holds every open level (and ijson a prefix per level), so a small file nested 200,000 deep
# would take gigabytes; the reader refuses such a file while streaming, before ijson sees it.
MAX_JSON_DEPTH = 16
MAX_ENTRY_BYTES = 4 * 1024 * 1024  # one customer: thousands of cards fit in far less
# A whole JSON string (written as the regex engine runs fastest: no alternation per byte).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class MappingTooDeep(ImportFileError):
    """Nested deeper, or one entry longer, than a Stripe mapping ever is."""


class CountingReader(io.RawIOBase):
    """Counts the bytes ijson has pulled, keeps the last chunk to place a parse error, and
    tracks the nesting depth of what passes through, refusing what no mapping looks like."""

    def __init__(self, fh: BinaryIO, start: int):
        self.fh = fh
        self.offset = start
        self.chunk_start = start
        self.chunk = b""
        self.depth = 0
        self.carry = b""  # the start of a string the previous chunk left unfinished
        self.entry_start = start  # where the entry being parsed began (about: chunk-wise)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.chunk_start, self.chunk = self.offset, data
        self.offset += len(data)
        self._check(data)
        return data

    def _check(self, data: bytes) -> None:
        if self.offset - self.entry_start > MAX_ENTRY_BYTES:
            raise MappingTooDeep(f"one entry near byte {self.entry_start} is longer than "
                                 f"{MAX_ENTRY_BYTES // (1024 * 1024)} MB: not a Stripe mapping")
        # Whole strings go (brackets inside them are text); what is left of a string the
        # chunk ends inside is carried as "inside a string" (and a pending escape) only, so
        # a long value is scanned once, not again with every chunk. All of it in C.
        text = self.carry + data
        self.carry = b""
        if b'\\"' not in text:
            # No quote is escaped: every quote opens or closes a string, so what lies outside
            # the strings is every other piece between quotes (a split, not a regex: the
            # regex below reads about 40 MB a second, this about ten times that).
            pieces = text.split(b'"')
            if len(pieces) % 2 == 0:  # an odd number of quotes: the chunk ends in a string
                pending = len(pieces[-1]) - len(pieces[-1].rstrip(b"\\"))
                self.carry = b'"\\' if pending % 2 else b'"'
                pieces.pop()
            outside = b"".join(pieces[0::2])
        else:
            outside = _STRING.sub(b"", text)
            quote = outside.find(b'"')
            if quote != -1:
                unfinished = outside[quote:]
                pending = len(unfinished) - len(unfinished.rstrip(b"\\"))
                self.carry = b'"\\' if pending % 2 else b'"'
                outside = outside[:quote]
        brackets = outside.translate(None, _NOT_BRACKETS)
        if not brackets:
            return
        steps = array("b", brackets.translate(_STEPS))
        deepest = max(accumulate(steps, initial=self.depth))
        if deepest > MAX_JSON_DEPTH:
            raise MappingTooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels near byte "
                                 f"{self.chunk_start}: a Stripe mapping needs 4")
        self.depth += sum(steps)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
