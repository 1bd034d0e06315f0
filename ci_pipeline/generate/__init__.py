"""Sample data generator: a realistic retail data set with noise, a matching configuration and ground truth.

``ci-pipeline generate --people N --seed S --out DIR`` writes, for N real people (households, look-alikes,
behaviour), the records four systems hold about them. Each person is in one to three of the customer tables
and some are in one table twice:

- ``crm/contacts.csv`` (CSV with header, dates ``%m/%d/%Y``): hand-typed contacts, old addresses and maiden names.
- ``ecommerce/*.parquet``: ``customers`` (accounts, some people with two), ``orders`` (timestamp, double, bool),
  ``order_lines`` (int quantity, double prices), ``web_sessions``.
- ``loyalty/model.json``: a CDM v1 folder, entities ``Members`` and ``Points``, at least two headerless CSV
  partitions each; partition locations are relative to the folder that holds model.json.
- ``support/tickets.csv`` and ``support/surveys.csv``: one ticket per case (free text), surveys with ratings.
- ``ci_pipeline.yaml``: assembled from ``templates/<section>.yaml`` (see :data:`SECTIONS`).
- ``ground_truth/records.parquet`` (source, table, key, person_id for every customer record the pipeline
  accepts), ``ground_truth/people.parquet`` (household, look-alike, segment, churn, preferences) and
  ``ground_truth/faults.parquet`` (source, table, line, key, kind, stage, detail for every injected faulty row);
  no config refers to them.

Faults: a few extra rows a real export always has (duplicate or empty keys, bad dates and ratings, broken CSV
lines, orders and surveys pointing at missing customers, a mistyped year), so quarantine shows end to end; see
:mod:`ci_pipeline.generate.faults`.

Noise: typos, nicknames (Bob/Robert), case and stray blanks, seven phone formats, Street/St, ZIP+4 and lost
leading zeros, missing fields, moved addresses, changed surnames, shared household phones and e-mails, twins and
parent/child with the same name and address. Behaviour: per-person order rates by segment, favourite categories
and brands, churn for good (leavers complain and rate support lower); how web-shop customers buy, browse and return
(one-time buyers, weekly and yearly seasonality, lapses, fading before leaving, drifting rates, baskets growing
with tenure, returns of earlier purchases) is in :mod:`ci_pipeline.generate.behaviour`.
"""

from ci_pipeline.generate.dataset import DEFAULT_AS_OF, SECTIONS, assemble_config, generate, write_config

__all__ = ["DEFAULT_AS_OF", "SECTIONS", "assemble_config", "generate", "write_config"]
