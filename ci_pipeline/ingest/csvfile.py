"""CSV parsing that keeps every row accountable: its file, line and raw text, or why it could not be read.

Record boundaries, quoting and column counts are worked out on the raw bytes with numpy (no loop per row); the
rows that are structurally sound are then parsed by pyarrow, so each parsed row maps to exactly one record.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ci_pipeline.config.sources import CsvOptions
from ci_pipeline.errors import UserError

#: Internal columns carried next to the data until quarantine is decided.
FILE, LINE, START, END = "__file", "__line", "__start", "__end"
STRING = pd.StringDtype()


@dataclass
class ParsedCsv:
    """One CSV file: its sound rows as strings (plus position columns) and its structurally broken rows."""

    frame: pd.DataFrame
    broken: pd.DataFrame  # columns: file, line, raw, reason, kind
    columns: list[str]
    text: bytes  # the file as UTF-8, for the raw text of rows quarantined later


#: Byte-order marks that name their encoding, the longer first: UTF-32 LE's begins with UTF-16 LE's.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def bom_encoding(data: bytes) -> str | None:
    """``utf-16`` or ``utf-32`` when the file begins with that byte-order mark (Excel's "Unicode text"), else None."""
    return next((encoding for bom, encoding in BOMS if data.startswith(bom)), None)


@dataclass(frozen=True)
class Utf8Lines:
    """A file read as UTF-8 line by line: lines that are not UTF-8 have their bad bytes written ``\\xf6``."""

    text: bytes  # UTF-8, without a byte-order mark
    bad: dict[int, int]  # line number -> its first byte that is not UTF-8
    accented: int  # lines that are valid UTF-8 and hold a character beyond ASCII

    @property
    def mostly_utf8(self) -> bool:
        """Whether the file is UTF-8 but for a few lines: more of its lines hold UTF-8 accents than bad bytes. Read
        whole in another encoding, those accents would be garbled (``é`` as ``Ã©``)."""
        return 0 < len(self.bad) < self.accented


def utf8_lines(data: bytes) -> Utf8Lines:
    """The file read as UTF-8, each line that is not (a line appended by a Windows-1252 program) kept apart."""
    data = data.removeprefix(codecs.BOM_UTF8)
    buf = np.frombuffer(data, dtype=np.uint8)
    following = np.append(buf[1:], np.uint8(0))
    # Lines end with LF, CRLF or a bare CR, as parse_csv counts them (see _bare_cr_to_lf).
    breaks = np.flatnonzero((buf == 10) | ((buf == 13) & (following != 10)))
    starts = np.concatenate([[0], breaks + 1])
    stops = np.append(breaks, len(buf))
    # Only lines beyond ASCII can hold a bad byte: few, so a loop over them is cheap.
    accented = np.unique(np.searchsorted(breaks, np.flatnonzero(buf >= 0x80)))
    bad: dict[int, int] = {}
    pieces, begin = [], 0
    for i in accented.tolist():
        line = data[starts[i] : stops[i]]
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad[i + 1] = line[exc.start]
            pieces += [data[begin : starts[i]], line.decode("utf-8", "backslashreplace").encode("utf-8")]
            begin = stops[i]
    text = b"".join([*pieces, data[begin:]])
    return Utf8Lines(text, bad, len(accented) - len(bad))


def decode(data: bytes, encoding: str, file: str) -> tuple[bytes, dict[int, int]]:
    """The file as UTF-8 bytes without a byte-order mark, and the lines to quarantine as not in ``encoding`` (line
    number -> the first bad byte; see :attr:`Utf8Lines.mostly_utf8`), or a clear error naming the line of the first
    bad byte."""
    name = codecs.lookup(encoding).name
    try:
        if name == "utf-8":
            data.decode("utf-8")
            return data.removeprefix(codecs.BOM_UTF8), {}
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        lines = utf8_lines(data) if name == "utf-8" else None
        if lines is not None and lines.mostly_utf8:
            return lines.text, lines.bad
        before = data[: exc.start]
        # Lines end with LF, CRLF or a bare CR (see _bare_cr_to_lf).
        line = before.count(b"\n") + before.replace(b"\r\n", b"\n").count(b"\r") + 1
        marked = bom_encoding(data)
        if marked and codecs.lookup(marked).name != name:
            raise UserError(
                f"{file}: the file begins with a {marked.upper()} byte-order mark but is read as {encoding}: set "
                f"csv.encoding: {marked} for this table"
            ) from None
        raise UserError(
            f"{file}: line {line}: byte 0x{data[exc.start]:02x} is not valid {encoding}; the file is in another "
            "encoding: set csv.encoding for this table (for example cp1252, latin-1 or utf-16)"
        ) from None
    return text.lstrip("\ufeff").encode("utf-8"), {}


def parse_csv(data: bytes, options: CsvOptions, file: str, names: list[str] | None = None) -> ParsedCsv:
    """Parse one CSV file.

    Args:
        data: the file's bytes.
        options: delimiter, header, encoding, quoting.
        file: the file's name for messages and the ``__file`` column.
        names: the columns of a headerless file, in order (ignored when the file has a header).

    Raises:
        UserError: undecodable bytes, or a header that is empty or repeats a column name.
    """
    text, undecodable = decode(data, options.encoding, file)
    buf = np.frombuffer(text, dtype=np.uint8)
    size = len(buf)
    quote = ord(options.quotechar)
    delim = ord(options.delimiter)
    is_quote = buf == quote
    is_delim = buf == delim
    if options.escapechar:
        escaped = np.zeros(size, dtype=bool)
        escaped[1:] = buf[:-1] == ord(options.escapechar)
        is_quote &= ~escaped
        is_delim &= ~escaped
    # Quotes are sparse: "how many quotes before byte i" is a binary search in their positions, which is much
    # cheaper than a running sum over every byte.
    quote_positions = np.flatnonzero(is_quote)

    def quotes_before(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(quote_positions, positions)

    text, buf = _bare_cr_to_lf(text, buf, quotes_before, options.multiline)
    starts, stops, ends, lines, blank_bytes = _records(buf, quotes_before, options.multiline, delim)

    columns: list[str]
    if options.header:
        if len(starts) == 0:
            raise UserError(f"{file}: the file is empty but csv.header is true; it needs at least a header row")
        header = text[starts[0] : ends[0]].decode("utf-8")
        if excel_separator_line(header, options, file) and len(starts) > 1:
            starts, stops, ends, lines = starts[1:], stops[1:], ends[1:], lines[1:]
            header = text[starts[0] : ends[0]].decode("utf-8")
        columns = header_names(header, options, file)
        starts, stops, ends, lines = starts[1:], stops[1:], ends[1:], lines[1:]
    else:
        columns = list(names or [])

    quote_count = quotes_before(ends) - quotes_before(starts)
    broken_quoting = quote_count % 2 == 1
    # Fields = delimiters outside quotes + 1; a delimiter is outside quotes when the quotes before it in its
    # record are even.
    delims = np.flatnonzero(is_delim) if len(starts) else np.array([], dtype=np.int64)
    record = np.searchsorted(starts, delims, side="right") - 1
    inside = (record >= 0) & (delims < ends[np.maximum(record, 0)])
    delims, record = delims[inside], record[inside]
    outside = (quotes_before(delims) - quotes_before(starts[record])) % 2 == 0
    fields = np.bincount(record[outside], minlength=len(starts)) + 1
    first_bad, encoding = _not_in_encoding(undecodable, lines)
    broken_quoting &= ~encoding
    trailing = _trailing_delimiters(
        delims[outside], record[outside], fields, ends, len(columns), broken_quoting | encoding
    )
    wrong_count = (fields != len(columns)) & ~broken_quoting & ~encoding & (trailing < 0)
    bad = encoding | broken_quoting | wrong_count
    raw = pd.array(
        [text[s:e].decode("utf-8", "replace") for s, e in zip(starts[bad], ends[bad], strict=True)], dtype=STRING
    )

    broken = pd.DataFrame(
        {
            "file": pd.array([file] * int(bad.sum()), dtype=STRING),
            "line": pd.array(lines[bad], dtype="Int64"),
            "raw": raw,
            "reason": _reasons(bad, encoding, broken_quoting, first_bad, fields, len(columns), options),
            "kind": np.select([encoding[bad], broken_quoting[bad]], ["encoding", "broken_quoting"], "column_count"),
            "first": _first_field(raw, broken_quoting[bad] | encoding[bad], options),
        }
    )

    good = ~bad
    # The parser is given the records it can read as they are: blank lines and the empty fields past the header's
    # become line breaks, which it skips as blank lines; every byte keeps its offset.
    neutral = np.concatenate([blank_bytes, _spans(trailing[trailing >= 0], ends[trailing >= 0])])
    body = text
    if len(neutral):
        readable = buf.copy()
        readable[neutral] = 10
        body = readable.tobytes()
    frame = _parse_records(body, starts[good], stops[bad] + 1, starts[bad], size, columns, options, file)
    frame[FILE] = pd.array([file] * len(frame), dtype=STRING)
    frame[LINE] = pd.array(lines[good], dtype="Int64")
    frame[START] = starts[good]
    frame[END] = ends[good]
    return ParsedCsv(frame=frame, broken=broken, columns=columns, text=text)


#: Line breaks a quoted value may hold and still be one value (an address of six lines); more is an unclosed quote
#: that ran on over later records.
VALUE_LINE_BREAKS = 5
#: How many line numbers a message on broken lines lists.
LINES_LISTED = 5


def quoted_records(data: bytes, options: CsvOptions, file: str, names: list[str] | None = None) -> ParsedCsv | None:
    """The file read with line breaks inside quotes as part of values, or None when that reading is not
    consistent and the odd quotes are unclosed quotes rather than values over several lines.

    Read line by line, a line with an odd number of quotes is one record with an unclosed quote; read with quoted
    line breaks, it is the start of a value that ends at the next quote, however far that is. A value over two
    lines (an address) ends on the next line or soon after, and the record around it has the header's fields. An
    unclosed quote runs on to the next quote in the file, taking whole records with it: so the quoted reading is
    taken only when no record ends in an unclosed quote, no record over several lines has another number of
    fields than the header, and no value with a line break holds more than :data:`VALUE_LINE_BREAKS` of them or
    as many delimiters as a whole record (one fewer than the header's fields, one at least). A wrong choice here
    is silent data loss, while reading line by line only quarantines each unclosed line with a hint to set
    ``csv.multiline``: when in doubt, line by line.
    """
    try:
        quoted = parse_csv(data, options.model_copy(update={"multiline": True}), file, names)
    except UserError:
        return None  # the quote count and the parser disagree: no consistent reading with quoted line breaks
    broken = quoted.broken
    if (broken["kind"] == "broken_quoting").any() or broken["raw"].str.contains(r"[\r\n]").any():
        return None
    values = quoted.frame[quoted.columns]
    record_delimiters = max(len(quoted.columns) - 1, 1)
    for column in values.columns:
        spanning = values[column].dropna()
        spanning = spanning[spanning.str.contains(r"[\r\n]")]
        breaks = spanning.str.count(r"\r\n|\r|\n")
        if (breaks > VALUE_LINE_BREAKS).any() or (
            spanning.str.count(re.escape(options.delimiter)) >= record_delimiters
        ).any():
            return None
    return quoted


def listed_lines(lines: list[int]) -> str:
    """``line 12`` or ``lines 12, 13, 42, 77, 80, ...``: the first :data:`LINES_LISTED` of them, for a message."""
    listed = ", ".join(map(str, lines[:LINES_LISTED])) + (", ..." if len(lines) > LINES_LISTED else "")
    return f"line{'s' if len(lines) > 1 else ''} {listed}"


#: What a row with an unclosed quote is told when the table does not read line breaks inside quotes: the likeliest
#: cause in an export of addresses or notes.
_MULTILINE_HINT = " (if quoted values of this file hold line breaks, set csv.multiline: true for its table)"


def _records(buf: np.ndarray, quotes_before, multiline: bool, delim: int):
    """Each record's start, stop (before its line break), end (before a CR too) and first line number, blank lines
    left out; and the bytes of those blank lines (lines of only spaces and tabs among them)."""
    size = len(buf)
    newlines = np.flatnonzero(buf == 10)
    # With multiline values, a line break inside quotes (odd number of quotes before it) does not end the record.
    breaks = newlines[quotes_before(newlines) % 2 == 0] if multiline else newlines
    starts = np.concatenate([[0], breaks + 1]).astype(np.int64)
    stops = np.concatenate([breaks, [size]]).astype(np.int64)  # exclusive, before the line break
    lines = np.searchsorted(newlines, starts) + 1
    ends = stops.copy()
    has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13) if size else np.zeros(len(ends), dtype=bool)
    ends[has_cr] -= 1
    blank = _blank_records(buf, starts, ends, delim)
    keep = (ends > starts) & ~blank  # blank lines, and lines of only spaces and tabs, are not rows
    return starts[keep], stops[keep], ends[keep], lines[keep], _spans(starts[blank], ends[blank])


def _not_in_encoding(undecodable: dict[int, int], lines: np.ndarray) -> tuple[dict[int, int], np.ndarray]:
    """The records holding a line that is not in the file's encoding (its other lines are): record -> the first
    byte of it not in the encoding, and the mask of those records (``lines``: each record's first line)."""
    first_bad: dict[int, int] = {}
    for line, byte in sorted(undecodable.items()):
        at = int(np.searchsorted(lines, line, side="right")) - 1
        if at >= 0:
            first_bad.setdefault(at, byte)
    encoding = np.zeros(len(lines), dtype=bool)
    encoding[list(first_bad)] = True
    return first_bad, encoding


def _reasons(bad, encoding, broken_quoting, first_bad: dict[int, int], fields, width: int, options: CsvOptions):
    """Why each ``bad`` record is left out: a line in another encoding, an unclosed quote, or its column count."""
    return pd.array(
        np.select(
            [encoding[bad], broken_quoting[bad]],
            [
                _encoding_reasons(first_bad, np.flatnonzero(bad), options.encoding),
                "broken quoting: a quoted value is not closed on this line"
                + ("" if options.multiline else _MULTILINE_HINT),
            ],
            np.char.add(f"expected {width} columns, found ", fields[bad].astype(str)),
        ),
        dtype=STRING,
    )


def _encoding_reasons(first_bad: dict[int, int], records: np.ndarray, encoding: str) -> np.ndarray:
    """The reason of each of ``records`` that holds a byte not in ``encoding`` (``first_bad``), else empty."""
    return np.array(
        [
            f"byte 0x{first_bad[r]:02x} is not valid {encoding}, though the rest of the file is: this line is in "
            "another encoding (the byte is written \\x.. in raw); save it as UTF-8"
            if r in first_bad
            else ""
            for r in records.tolist()
        ],
        dtype=object,
    )


def _blank_records(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, delim: int) -> np.ndarray:
    """Which records hold only spaces and tabs (a tab or space delimiter excepted): blank lines, as the docs say,
    not rows of one field. Only records that begin with such a blank can be one, so only their bytes are looked
    at: judging every byte of a file cost a fifth of a second a read at 200,000 records."""
    blanks = [b for b in (9, 32) if b != delim]
    blank = np.zeros(len(starts), dtype=bool)
    filled = ends > starts
    first = np.full(len(starts), 0, dtype=np.uint8)
    first[filled] = buf[starts[filled]]
    candidates = np.flatnonzero(filled & np.isin(first, blanks))
    if len(candidates) == 0:
        return blank
    lengths = ends[candidates] - starts[candidates]
    written = ~np.isin(buf[_spans(starts[candidates], ends[candidates])], [*blanks, 10, 13])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    blank[candidates] = ~np.logical_or.reduceat(written, offsets)
    return blank


def _trailing_delimiters(
    positions: np.ndarray, record: np.ndarray, fields: np.ndarray, ends: np.ndarray, width: int, broken: np.ndarray
) -> np.ndarray:
    """Per record, where its fields past the header's ``width`` start when they are all empty (a line ending in
    delimiters, as spreadsheets export a sheet with empty columns on its right), else -1. Such a record is a row
    of the header's columns; extra fields holding anything are still a wrong column count.

    ``positions``/``record``: the delimiters outside quotes, in file order, and their records.
    """
    out = np.full(len(fields), -1, dtype=np.int64)
    over = np.flatnonzero((fields > width) & ~broken) if width else np.array([], dtype=np.int64)
    if len(over) == 0:
        return out
    # The delimiter that ends the header's last field; the extra fields are empty when the bytes from it to the
    # record's end are exactly its extra delimiters.
    cut = positions[np.searchsorted(record, over) + width - 1]
    empty = ends[over] - cut == fields[over] - width
    out[over[empty]] = cut[empty]
    return out


def _spans(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Every byte offset in the ranges [start, stop), without a loop over the ranges."""
    lengths = (stops - starts).astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.array([], dtype=np.int64)
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts.astype(np.int64), lengths) + offsets


def _first_field(raw: pd.arrays.StringArray, quoting: np.ndarray, options: CsvOptions) -> pd.arrays.StringArray:
    """The first field of each broken record when it can be read without parsing (no quote or escape in it), so
    that a row with a wrong column count still shows its key when the key is the first column; missing else."""
    first = pd.Series(raw).str.split(options.delimiter, n=1, regex=False).str[0]
    odd = first.str.contains(options.quotechar, regex=False)
    if options.escapechar:
        odd |= first.str.contains(options.escapechar, regex=False)
    return first.mask(odd.fillna(True).to_numpy() | quoting).array


def _bare_cr_to_lf(text: bytes, buf: np.ndarray, quotes_before, multiline: bool) -> tuple[bytes, np.ndarray]:
    """A carriage return not followed by a line feed ends a line, as in Python's csv module (old Mac exports
    end every line so). It becomes a line feed, which keeps every byte offset. With multiline values, one inside
    quotes is part of the value and stays."""
    cr = np.flatnonzero(buf == 13)
    if len(cr) == 0:
        return text, buf
    following = np.append(buf, np.uint8(0))[cr + 1]
    bare = cr[following != 10]
    if multiline:
        bare = bare[quotes_before(bare) % 2 == 0]
    if len(bare) == 0:
        return text, buf
    buf = buf.copy()
    buf[bare] = 10
    return buf.tobytes(), buf


def _cut(text: bytes, starts: np.ndarray, cut_starts: np.ndarray, cut_stops: np.ndarray, size: int) -> bytes:
    """The bytes from the first sound record to the end, without the ranges [cut_start, cut_stop)."""
    begin = int(starts[0])
    pieces = []
    for cut_start, cut_stop in zip(cut_starts.tolist(), cut_stops.tolist(), strict=True):
        if cut_stop <= begin:
            continue
        pieces.append(text[begin:cut_start])
        begin = cut_stop
    pieces.append(text[begin:size])
    body = b"".join(pieces)
    return body if body.endswith(b"\n") else body + b"\n"


def excel_separator_line(line: str, options: CsvOptions, file: str) -> bool:
    """Whether ``line`` is the ``sep=;`` line Excel reads a file's delimiter from (the header follows it); one
    naming another delimiter than the table's is an error saying which to set."""
    found = re.fullmatch(r"\s*sep=(.)\s*", line)
    if found is None:
        return False
    if found[1] != options.delimiter:
        raise UserError(
            f"{file}: line 1 ({line.strip()}) says the values are separated by {found[1]!r}, read with "
            f"{options.delimiter!r}: set csv.delimiter: {found[1]!r} for this table"
        )
    return True


def header_names(line: str, options: CsvOptions, file: str) -> list[str]:
    """The column names of a header line (cut at its first line break: CR, LF or CRLF).

    Raises:
        UserError: the header cannot be parsed, is missing a name, or repeats one.
    """
    line = re.split(r"\r\n?|\n", line, maxsplit=1)[0]
    try:
        fields = next(
            csv.reader([line], delimiter=options.delimiter, quotechar=options.quotechar, escapechar=options.escapechar),
            [],
        )
    except csv.Error as exc:
        raise UserError(
            f"{file}: line 1: the header cannot be read as CSV ({exc}); check csv.delimiter, csv.quotechar and "
            "csv.escapechar for this table"
        ) from None
    names = [f.strip() for f in fields]
    while len(names) > 1 and names[-1] == "":
        # Empty columns on a sheet's right, as spreadsheets export them (a,b,c,,,): no column. Their rows' empty
        # fields are trailing delimiters; a row holding something there is quarantined for its column count.
        names.pop()
    if "" in names:
        at = names.index("")
        after = f" after {names[at - 1]!r}" if at else ""
        raise UserError(
            f"{file}: line 1: column {at + 1} of the header{after} has no name; name every column (is line 1 the "
            "header? A file without one needs csv.header: false and its columns declared in order)"
        )
    seen = pd.Series(names)
    repeated = sorted(set(seen[seen.duplicated()]))
    if repeated:
        raise UserError(f"{file}: line 1: the header repeats column(s) {', '.join(repeated)}; rename them")
    return names


def _parse_records(
    text: bytes,
    starts: np.ndarray,
    cut_stops: np.ndarray,
    cut_starts: np.ndarray,
    size: int,
    columns: list[str],
    options: CsvOptions,
    file: str,
) -> pd.DataFrame:
    if len(starts) == 0:
        return pd.DataFrame({c: pd.array([], dtype=STRING) for c in columns})
    # The body is the file from the first sound record on, with the broken records cut out (there are few, so
    # this is a handful of slices). Blank lines are left in: the parser skips them as we do.
    body = _cut(text, starts, cut_starts, cut_stops, size)
    invalid: list[int] = []

    def _invalid(row) -> str:
        invalid.append(row.number)
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(body),
        read_options=pacsv.ReadOptions(column_names=columns, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(
            delimiter=options.delimiter,
            quote_char=options.quotechar,
            double_quote=True,
            escape_char=options.escapechar or False,
            newlines_in_values=options.multiline,
            ignore_empty_lines=True,
            invalid_row_handler=_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=[""],
        ),
    )
    if invalid or table.num_rows != len(starts):
        raise UserError(
            f"{file}: the CSV parser and the quoting analysis disagree on {max(len(invalid), 1)} row(s); check "
            "csv.quotechar, csv.escapechar and csv.multiline for this table"
        )
    if options.skip_initial_space:
        table = pa.table({name: _without_initial_space(table[name]) for name in table.column_names})
    return table.to_pandas(types_mapper={pa.string(): STRING, pa.large_string(): STRING}.get)


def _without_initial_space(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """The values without the blanks before them; a value of blanks only is missing, as an empty one is."""
    trimmed = pc.utf8_ltrim(values, characters=" ")
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
