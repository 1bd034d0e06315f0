"""CSV parsing that keeps every row accountable: its file, line and raw text, or why it could not be read.

Record boundaries, quoting and column counts are worked out on the raw bytes with numpy (no loop per row); the
rows that are structurally sound are then parsed by pyarrow, so each parsed row maps to exactly one record. The few
records holding a quote that pyarrow reads as text (``ab"c``, ``1, "Smith, John"``) are cut from its input and read
one by one with Python's csv module, which reads quotes as it does.
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
    # DOS ended a text file with Ctrl-Z, as some old exports still do: the end of the file, not a row.
    text = text.removesuffix(b"\x1a")
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
    starts, stops, ends, lines, blank_bytes, runaways = _records(buf, quotes_before, options.multiline, delim)

    columns: list[str]
    if options.header:
        if len(starts) == 0:
            raise UserError(empty_file(file))
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
    delims, record, fields = _fields(is_delim, starts, ends, quotes_before)
    first_bad, encoding = _not_in_encoding(undecodable, lines)
    broken_quoting &= ~encoding
    # Records whose quotes the parser reads otherwise than the count above (a quote inside a value, one after a
    # blank, one escaped with a backslash) are read one by one with Python's csv module, which reads quotes as the
    # parser does: there are few, and cut out of the parser's input they cannot shift its records.
    quotes = _odd_quotes(buf, quote_positions, starts, ends, options)
    odd = quotes.odd & ~broken_quoting & ~encoding
    odd_read = _read_odd_records(text, (starts, ends), odd, quotes, fields, len(columns), options)
    trailing = _trailing_delimiters(delims, record, fields, ends, len(columns), broken_quoting | encoding | odd)
    wrong_count = (fields != len(columns)) & ~broken_quoting & ~encoding & ~odd & (trailing < 0)
    broken_quoting |= odd_read.broken_quoting
    wrong_count |= odd_read.wrong_count
    fields[odd] = odd_read.fields[odd]
    bad = encoding | broken_quoting | wrong_count
    raw = pd.array(
        [text[s:e].decode("utf-8", "replace") for s, e in zip(starts[bad], ends[bad], strict=True)], dtype=STRING
    )

    reasons = _reasons(bad, encoding, broken_quoting, first_bad, fields, len(columns), options)
    # What the records read one by one, and those ended at their first line, were told instead.
    hints = odd_read.hints[bad]
    if runaways:
        hints = np.where(hints != "", hints, _runaway_reasons(starts[bad], lines[bad], runaways))
    broken = pd.DataFrame(
        {
            "file": pd.array([file] * int(bad.sum()), dtype=STRING),
            "line": pd.array(lines[bad], dtype="Int64"),
            "raw": raw,
            "reason": pd.array(np.where(hints != "", hints, reasons.astype(object)), dtype=STRING),
            "kind": np.select([encoding[bad], broken_quoting[bad]], ["encoding", "broken_quoting"], "column_count"),
            "first": _first_field(raw, broken_quoting[bad] | encoding[bad], options),
        }
    )

    good = ~bad & ~odd
    neutral = np.concatenate([blank_bytes, _spans(trailing[trailing >= 0], ends[trailing >= 0])])
    body = _readable(text, buf, neutral, quotes.moves, quote)
    cut = bad | odd
    frame = _parse_records(body, starts[good], stops[cut] + 1, starts[cut], size, columns, options, file)
    sound = odd & ~bad
    frame = _in_file_order(frame, good, _text_frame(odd_read.rows, sound, columns, options))
    kept = good | sound
    frame[FILE] = pd.array([file] * len(frame), dtype=STRING)
    frame[LINE] = pd.array(lines[kept], dtype="Int64")
    frame[START] = starts[kept]
    frame[END] = ends[kept]
    return ParsedCsv(frame=frame, broken=broken, columns=columns, text=text)


@dataclass(frozen=True)
class OddQuotes:
    """Per record, whether it holds a quote the parser reads as text though counted as quoting (``odd``), one such
    after a backslash (an escape the table does not read), one such that would open a value after a blank; and
    with ``skip_initial_space``, where the blanks before a quote that opens a value begin and the quote is."""

    odd: np.ndarray
    backslashed: np.ndarray
    blank_before: np.ndarray
    moves: tuple[np.ndarray, np.ndarray]


def _by_record(positions: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of sorted byte ``positions``, those inside a record and the record of each: through each record's first and
    count, found by a search per record, not per position (a file has many more delimiters than records)."""
    first = np.searchsorted(positions, starts)
    counts = np.searchsorted(positions, ends) - first
    total = int(counts.sum())
    if total and total == first[-1] + counts[-1] - first[0]:
        inside = positions[first[0] : first[0] + total]  # the usual case: none between records
    else:
        inside = positions[_spans(first, first + counts)]
    return inside, np.repeat(np.arange(len(starts)), counts)


def _fields(is_delim: np.ndarray, starts: np.ndarray, ends: np.ndarray, quotes_before):
    """The delimiters outside quotes (in file order), their records, and each record's fields: those delimiters +
    1. A delimiter is outside quotes when the quotes before it in its record are even."""
    delims, record = _by_record(np.flatnonzero(is_delim), starts, ends)
    # The quotes before each record's start, looked up once per record rather than once per delimiter.
    outside = (quotes_before(delims) - quotes_before(starts)[record]) % 2 == 0
    return delims[outside], record[outside], np.bincount(record[outside], minlength=len(starts)) + 1


def _odd_quotes(
    buf: np.ndarray, quote_positions: np.ndarray, starts: np.ndarray, ends: np.ndarray, options: CsvOptions
) -> OddQuotes:
    """The records holding a quote that the parser does not read as the opening or closing of a quoted value: a
    quote opens one only at the start of a field (after blanks too with ``skip_initial_space``, as Python's csv
    module reads it) and closes it only before a delimiter, the record's end or a second quote (a doubled one);
    anywhere else it is text (``ab"c``, ``1, "Smith, John"``, ``"say \\"hi\\""``)."""
    none = np.array([], dtype=np.int64)
    odd = np.zeros(len(starts), dtype=bool)
    found = OddQuotes(odd, odd.copy(), odd.copy(), (none, none))
    if len(quote_positions) == 0 or len(starts) == 0:
        return found
    delim, quote = ord(options.delimiter), ord(options.quotechar)
    positions, opening = _quote_parity(quote_positions, starts, ends)
    # A record starts after a line break and ends before one (or a CR): a quote there opens or closes. At the
    # file's first or last byte the neighbour looked at is the quote itself, which also says so.
    before = buf[np.maximum(positions - 1, 0)]
    after = buf[np.minimum(positions + 1, len(buf) - 1)]
    ok = np.where(
        opening,
        (before == delim) | (before == quote) | (before == 10),
        (after == delim) | (after == quote) | (after == 10) | (after == 13),
    )
    if options.skip_initial_space:
        found = _after_blanks(buf, positions, ok, opening & (before == 32), delim, found)
    strange = np.flatnonzero(~ok)
    if len(strange) == 0:
        return found
    # Few quotes are read as text: their records, and why, are looked up for them alone.
    record = np.searchsorted(starts, positions[strange], side="right") - 1
    odd[record] = True
    before, opening = before[strange], opening[strange]
    found.backslashed[record[before == ord("\\")]] = True
    found.blank_before[record[opening & ((before == 9) | (before == 32))]] = True
    return found


def _quote_parity(quote_positions: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """The quotes inside records, and whether each is an even one of its record's (from 0), which opens a value
    when quotes pair. Through each record's first quote and count, found by a search per record, not per quote."""
    first = np.searchsorted(quote_positions, starts)
    counts = np.searchsorted(quote_positions, ends) - first
    total = int(counts.sum())
    if total == first[-1] + counts[-1] - first[0]:
        # The usual case, no quote between records: a slice, and parities as one byte each (a large file has
        # millions of quotes, and int64 arithmetic over them cost a third more than the rest of the parse).
        positions = quote_positions[first[0] : first[0] + total]
        odd_rank = np.zeros(total, dtype=bool)
        odd_rank[1 - int(first[0] & 1) :: 2] = True
    else:
        rank = _spans(first, first + counts)
        positions, odd_rank = quote_positions[rank], (rank & 1).astype(bool)
    return positions, odd_rank == np.repeat((first & 1).astype(bool), counts)


def _after_blanks(
    buf: np.ndarray, positions: np.ndarray, ok: np.ndarray, blank: np.ndarray, delim: int, found: OddQuotes
) -> OddQuotes:
    """With ``skip_initial_space``, the quotes that would open a value after blanks (``blank``) that follow a
    delimiter or a record's start made ``ok`` (in place), and where their blanks begin."""
    at = np.flatnonzero(blank & ~ok)
    if len(at) == 0:
        return found
    # Walk back over the blanks (as many steps as the longest run of them) to what precedes them.
    begin = positions[at] - 1
    while (more := (begin > 0) & (buf[np.maximum(begin - 1, 0)] == 32)).any():
        begin[more] -= 1
    before = buf[np.maximum(begin - 1, 0)]
    starts_value = (begin == 0) | (before == delim) | (before == 10)
    ok[at[starts_value]] = True
    return OddQuotes(
        found.odd, found.backslashed, found.blank_before, (begin[starts_value], positions[at[starts_value]])
    )


@dataclass(frozen=True)
class OddRecords:
    """Records with quotes the parser reads as text (:func:`_odd_quotes`), read one by one: per record of the file,
    its fields as read (the sound ones), whether it is broken, and why (empty for records not read so)."""

    rows: list[list[str]]  # the fields of each sound record, in file order
    fields: np.ndarray
    broken_quoting: np.ndarray
    wrong_count: np.ndarray
    hints: np.ndarray


#: The fix for quotes escaped with a backslash in a table that does not set csv.escapechar.
_BACKSLASH_HINT = (
    'broken quoting: a quote in this line is escaped with a backslash (\\"), which this table reads as a quote '
    'that ends the value: set csv.escapechar: "\\\\" for this table (or write a quote in a quoted value doubled, "")'
)


def _read_odd_records(
    text: bytes,
    spans: tuple[np.ndarray, np.ndarray],
    odd: np.ndarray,
    quotes: OddQuotes,
    quoted_fields: np.ndarray,
    width: int,
    options: CsvOptions,
) -> OddRecords:
    """The records of ``odd`` read as the parser reads them (Python's csv module does so), one by one: only they
    are (a handful in a file), so this costs no loop over the file. A record read as one row of ``width`` fields
    (empty ones past it allowed, as :func:`_trailing_delimiters`) is sound; one with a quote escaped with a
    backslash is broken quoting (its values would keep the backslashes, cut at the quote); else its column count
    is wrong, and the reason says why the quote did not quote when read as quoting it has the header's fields
    (``quoted_fields``: per record, the fields counted with every quote quoting).

    ``spans``: each record's start and end; ``quotes``: what :func:`_odd_quotes` found.
    """
    starts, ends = spans
    count = len(starts)
    out = OddRecords(
        [],
        np.zeros(count, dtype=np.int64),
        *(np.zeros(count, dtype=bool) for _ in range(2)),
        np.full(count, "", dtype=object),
    )
    for i in np.flatnonzero(odd).tolist():
        record = text[starts[i] : ends[i]].decode("utf-8", "replace")
        reader = csv.reader(
            io.StringIO(record, newline=""),
            delimiter=options.delimiter,
            quotechar=options.quotechar,
            escapechar=options.escapechar,
            skipinitialspace=options.skip_initial_space,
            strict=False,
        )
        try:
            rows = list(reader)
        except csv.Error:  # a value past the csv module's field size limit (128 KiB): not one the parser reads
            rows = []
        fields = rows[0] if len(rows) == 1 else []
        while len(fields) > width and fields[-1] == "":
            fields = fields[:-1]
        out.fields[i] = len(rows[0]) if len(rows) == 1 else 0
        if quotes.backslashed[i] and not options.escapechar:
            out.broken_quoting[i] = True
            out.hints[i] = _BACKSLASH_HINT
        elif len(rows) == 1 and len(fields) == width:
            out.rows.append(fields)
        elif len(rows) != 1:
            out.broken_quoting[i] = True
            out.hints[i] = "broken quoting: the quotes of this record do not pair as a quoted value's"
        else:
            out.wrong_count[i] = True
            # Why the quotes did not quote, when quoting would have given the header's fields.
            why = _quote_as_text(bool(quotes.blank_before[i]), options) if quoted_fields[i] == width else ""
            out.hints[i] = f"expected {width} columns, found {out.fields[i]}{why}"
    return out


def _runaway_reasons(starts: np.ndarray, lines: np.ndarray, runaways: dict[int, int]) -> np.ndarray:
    """The reason of each record that :func:`_multiline_breaks` ended at its first line (empty for the others)."""
    return np.array(
        [
            f"broken quoting: a quoted value opened on this line is not closed before the end of the file (line "
            f"{runaways[start]:,}), so it would take in the {runaways[start] - line:,} lines after it; this line is "
            "quarantined and the lines after it are read as records: close the quote in the file"
            if start in runaways
            else ""
            for start, line in zip(starts.tolist(), lines.tolist(), strict=True)
        ],
        dtype=object,
    )


def _quote_as_text(blank_before: bool, options: CsvOptions) -> str:
    """Why a quote of a record did not quote its value, and the fix (``blank_before``: it follows a blank)."""
    q, d = options.quotechar, options.delimiter
    if blank_before and not options.skip_initial_space:
        return (
            f": a quote after a blank ('{d} {q}') does not quote the value, so a delimiter inside it splits the value; "
            "set csv.skip_initial_space: true for this table (or write the file without blanks after delimiters)"
        )
    return (
        f": a quote inside a value (not right after a delimiter) is text, so it does not quote the value and a "
        f"delimiter after it splits the value; quote the whole value in the file ({q}ab{q}{q}c{q}{q}{q} for ab{q}c{q})"
    )


def _readable(
    text: bytes, buf: np.ndarray, neutral: np.ndarray, moves: tuple[np.ndarray, np.ndarray], quote: int
) -> bytes:
    """The text as the parser is given it, every byte at its offset: the ``neutral`` bytes (blank lines, empty
    fields past the header's) line breaks, which it skips as blank lines; a quote after blanks that opens a value
    (``moves``: where the blanks begin, where the quote is) moved before them, where the parser reads it so, the
    blanks it then holds trimmed with the others (skip_initial_space)."""
    blanks, opening = moves
    if not len(neutral) and not len(opening):
        return text
    readable = buf.copy()
    readable[neutral] = 10
    readable[_spans(blanks + 1, opening + 1)] = 32
    readable[blanks] = quote
    return readable.tobytes()


def _in_file_order(parsed: pd.DataFrame, good: np.ndarray, read_alone: pd.DataFrame) -> pd.DataFrame:
    """The parser's rows (of the ``good`` records) and those read one by one, in the file's order."""
    parsed.index = np.flatnonzero(good)
    if len(read_alone):
        parsed = pd.concat([parsed, read_alone]).sort_index()
    return parsed.reset_index(drop=True)


def _text_frame(rows: list[list[str]], sound: np.ndarray, columns: list[str], options: CsvOptions) -> pd.DataFrame:
    """Records read by :func:`_read_odd_records` (``sound``: their mask) as the parser's frame holds them: empty
    values missing."""
    index = np.flatnonzero(sound)
    frame = pd.DataFrame(rows, columns=columns, index=index, dtype=object).astype(STRING)
    if options.skip_initial_space:
        frame = frame.apply(lambda column: column.str.lstrip(" "))
    return frame.mask(frame.eq(""))


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


#: The reason of a record with an odd number of quotes (its hint follows).
UNCLOSED = "broken quoting: a quoted value is not closed on this line"
#: What a row with an unclosed quote is told when the table does not read line breaks inside quotes: the likeliest
#: cause in an export of addresses or notes.
_MULTILINE_HINT = " (if quoted values of this file hold line breaks, set csv.multiline: true for its table)"


def _records(buf: np.ndarray, quotes_before, multiline: bool, delim: int):
    """Each record's start, stop (before its line break), end (before a CR too) and first line number, blank lines
    left out; the bytes of those blank lines (lines of only spaces and tabs among them); and the starts of the
    records whose quote is not closed before the end of the file, with the file's last line
    (:func:`_multiline_breaks`)."""
    size = len(buf)
    newlines = np.flatnonzero(buf == 10)
    runaways: dict[int, int] = {}
    if multiline:
        breaks, runaways = _multiline_breaks(newlines, quotes_before, size)
    else:
        breaks = newlines
    starts = np.concatenate([[0], breaks + 1]).astype(np.int64)
    stops = np.concatenate([breaks, [size]]).astype(np.int64)  # exclusive, before the line break
    lines = np.searchsorted(newlines, starts) + 1
    ends = stops.copy()
    has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13) if size else np.zeros(len(ends), dtype=bool)
    ends[has_cr] -= 1
    blank = _blank_records(buf, starts, ends, delim)
    keep = (ends > starts) & ~blank  # blank lines, and lines of only spaces and tabs, are not rows
    return starts[keep], stops[keep], ends[keep], lines[keep], _spans(starts[blank], ends[blank]), runaways


def _multiline_breaks(newlines: np.ndarray, quotes_before, size: int) -> tuple[np.ndarray, dict[int, int]]:
    """The line breaks that end records when quoted values may hold line breaks: those after an even number of
    quotes. A quote not closed before the end of the file would make one record of every line after it; that
    record ends with its first line instead (quarantined for its quote), and the lines after it are read anew,
    as records of their own. Returns the breaks, and the start of each such record -> the file's last line."""

    def before(position: int) -> int:
        return int(quotes_before(np.array([position]))[0])

    parts, runaways, begin = [], {}, 0
    last_line = len(newlines) + int(size > (newlines[-1] + 1 if len(newlines) else 0))
    while True:
        following = newlines[np.searchsorted(newlines, begin) :]
        breaks = following[(quotes_before(following) - before(begin)) % 2 == 0]
        parts.append(breaks)
        start = int(breaks[-1]) + 1 if len(breaks) else begin
        inner = following[np.searchsorted(following, start) :]
        if len(inner) == 0 or (before(size) - before(start)) % 2 == 0:
            return np.concatenate(parts), runaways
        # The unclosed record runs to the end of the file: it ends with its first line.
        runaways[start] = last_line
        parts.append(inner[:1])
        begin = int(inner[0]) + 1


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
                UNCLOSED + ("" if options.multiline else _MULTILINE_HINT),
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


def empty_file(file: str) -> str:
    """The message for a file with no header (no bytes, or only blank lines) where the table reads one."""
    return (
        f"{file}: the file is empty, without even the header row that csv.header: true reads the columns from; an "
        "empty export usually means a failed one: fix the export. A table that may be empty needs a file holding at "
        "least its header row, and allow_empty: true on the table"
    )


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


#: Delimiters a file may be written with, in the order a header that reads as one column is tried with them.
DELIMITERS = (";", "\t", "|", ",")


def other_delimiter(columns: list[str], delimiter: str) -> str | None:
    """The delimiter a header that reads as one column with ``delimiter`` seems written with (``id;name`` read with
    ``,``), shown as a YAML value writes it (``\\t`` for a tab); None when it reads as more columns or none fits."""
    if len(columns) != 1:
        return None
    found = next((other for other in DELIMITERS if other != delimiter and other in columns[0]), None)
    return "\\t" if found == "\t" else found


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
    invalid: list[str] = []

    def _invalid(row) -> str:
        invalid.append(row.text)
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
        # Records whose quotes the parser reads otherwise were read one by one (_odd_quotes): this is a bug.
        first = f" (the first: {invalid[0][:80]!r})" if invalid else ""
        raise UserError(
            f"{file}: the CSV parser and the quoting analysis disagree on {max(len(invalid), 1)} row(s){first}; "
            "check csv.quotechar, csv.escapechar and csv.multiline for this table"
        )
    if options.skip_initial_space:
        table = pa.table({name: _without_initial_space(table[name]) for name in table.column_names})
    return table.to_pandas(types_mapper={pa.string(): STRING, pa.large_string(): STRING}.get)


def _without_initial_space(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """The values without the blanks before them; a value of blanks only is missing, as an empty one is."""
    trimmed = pc.utf8_ltrim(values, characters=" ")
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
