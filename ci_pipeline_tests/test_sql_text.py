import sqlite3

import duckdb

from ci_pipeline.sql_text import literal, quoted

AWKWARD = 'he said "hi"; it\'s -- "x"'


def test_a_quoted_name_and_a_literal_round_trip_in_duckdb_and_sqlite():
    query = f"SELECT {literal(AWKWARD)} AS {quoted(AWKWARD)}"
    with duckdb.connect() as con:
        result = con.sql(query)
        assert result.columns == [AWKWARD] and result.fetchall() == [(AWKWARD,)]
    con = sqlite3.connect(":memory:")
    try:
        cursor = con.execute(query)
        assert [d[0] for d in cursor.description] == [AWKWARD] and cursor.fetchall() == [(AWKWARD,)]
    finally:
        con.close()
