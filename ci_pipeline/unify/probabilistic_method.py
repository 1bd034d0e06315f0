"""``unify.match.method: probabilistic``: a trained Fellegi-Sunter model scores the pairs of unification.

Training and scoring are apart. :func:`train_model` learns a model from the prepared records of a run (the
``unify/match_model`` asset stores it); :class:`ProbabilisticMatches` is the match method that scores every run
with a stored model, so nightly runs are fast and CustomerIds do not drift with retraining noise. Its pairs follow
the engine's pair contract (:data:`ci_pipeline.unify.engine.PAIR_COLUMNS`), so overrides, the over-merge guard,
attach rules, merge and stable ids work as with rules. The model scores pairs within and across tables alike;
``unify.match.rules``, when given, still accept their pairs outright (the model scores the rest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ci_pipeline.arrays import isin, pair_ids
from ci_pipeline.config.unify import BIRTH_DATE_PARTS, UnifyConfig
from ci_pipeline.errors import UserError
from ci_pipeline.unify.engine import Preparation, override_labels, prepare, rule_matches
from ci_pipeline.unify.incremental import Plan
from ci_pipeline.unify.normalize import Normalizer
from ci_pipeline.unify.probabilistic import (
    TRAINED_KEYS,
    Model,
    Settings,
    SettingsError,
    TrainingError,
    default_columns,
    default_settings,
    default_strata,
    frame_of,
    normalize_records,
    normalized_table,
    option_path,
    placeholder,
    settings_yaml,
    train,
    trainable,
    training_notes,
)
from ci_pipeline.unify.probabilistic import explain_pair as model_waterfall
from ci_pipeline.unify.probabilistic.scoring import Candidates, Scored, score_pairs
from ci_pipeline.unify.probabilistic.table import Column, Table

#: The rule name of the model's pairs in ``match_pairs``.
RULE_NAME = "probabilistic"

#: Pairs below the threshold are kept in ``match_pairs`` (not accepted) while their odds of a match are at least
#: the threshold's over this factor: the near misses a user reviews, and what ``explain`` lists as compared and
#: rejected; weaker candidates are only counted. At the default threshold of 0.5, from a probability of 1/11 on.
REVIEW_ODDS_FACTOR = 10.0


def review_probability(threshold: float) -> float:
    """The probability from which a pair below ``threshold`` is kept for review (:data:`REVIEW_ODDS_FACTOR`)."""
    odds = threshold / (1 - threshold) / REVIEW_ODDS_FACTOR
    return odds / (1 + odds)


#: How to retrain, told with every error about a stored model.
TRAIN_STEP = "`ci-pipeline run --job train_match_model` (or materialize the asset unify/match_model)"
RETRAIN = f"retrain the model: {TRAIN_STEP}"


#: Where the trained model lives in the lake (JSON of :meth:`Model.to_dict`), beside the unify tables.
MODEL_PATH = "ci_pipeline/unify/match_model.json"
#: Beside it, the settings it was trained with as YAML to paste under ``unify.match`` (the model's
#: ``training["settings_yaml"]``), for a user working from the command line rather than the UI's metadata.
SETTINGS_PATH = "ci_pipeline/unify/match_model_settings.yaml"


def model_json(model: Model) -> bytes:
    """The model as stored: JSON, keys sorted, so one model is always the same bytes."""
    return json.dumps(model.to_dict(), sort_keys=True, indent=1).encode("utf-8")


def read_model(data: bytes, where: str) -> Model:
    """A stored model from its JSON; a damaged or outdated one is a clear error naming ``where`` and the fix."""
    try:
        described = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{where}: the stored match model is not readable JSON ({exc}); {RETRAIN}") from None
    try:
        return Model.from_dict(described)
    except (UserError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: the stored match model cannot be read ({exc}); {RETRAIN}") from None


def model_attributes(config: UnifyConfig) -> dict[str, str]:
    """Record attribute -> semantic type over every table (a ``custom`` column is the attribute it is named as).

    Where a full name is mapped and no table maps a first or last name, the first and last name the record frame
    splits from it are attributes too: compared apart, a typo in one leaves the other's evidence and its blocking
    rules (one whole-name column alone found under half of the true pairs of Splink's fake_20000). A year of birth
    alone is no attribute of the model where another table maps a birth date: it is compared as that table's birth
    date known in part (:func:`_years_as_dates`)."""
    found: dict[str, str] = {}
    for t in config.tables:
        joined = bool(t.birth_date_parts())
        for column, kind in t.kinds().items():
            kind = "birth_date" if joined and kind in BIRTH_DATE_PARTS else kind  # the record frame joins them
            found.setdefault(kind if kind == "birth_date" else t.attribute_of(column), kind)
    if "full_name" in found:
        for part in ("first_name", "last_name"):
            found.setdefault(part, part)
    if found.get("birth_year") == "birth_year" and "birth_date" in found:
        del found["birth_year"]  # compared as a birth date known in part: see _years_as_dates
    return found


def _years_as_dates(records: pd.DataFrame, mapped: dict[str, str]) -> pd.DataFrame:
    """The records with the year of birth of a table that holds no birth date written as a birth date known in part
    (``1967-00-00``) where another table maps a birth date (the year is then no attribute of the model, ``mapped``):
    so the model compares one with the other (same year, or a year apart), rather than each only within the tables
    that map it."""
    if "birth_year" in mapped or not {"birth_year", "birth_date"} <= set(records.columns):
        return records
    return records.assign(birth_date=records["birth_date"].fillna(records["birth_year"] + "-00-00"))


def model_records(config: UnifyConfig, records: pd.DataFrame, normalizer: Normalizer) -> pd.DataFrame:
    """The records as the model compares them: the mapped attributes of the record frame normalized per semantic
    type (positions as in the record frame); the configured normalizer's bypass values and aliases apply."""
    mapped = model_attributes(config)
    frame = _years_as_dates(records, mapped)[list(mapped)].reset_index(drop=True)
    return normalize_records(frame, mapped, normalizer)


def model_table(
    config: UnifyConfig,
    records: pd.DataFrame,
    normalizer: Normalizer,
    columns: Iterable[str] | None = None,
    frequent: dict[str, dict[str, int]] | None = None,
) -> Table:
    """:func:`model_records` prepared for comparison (``prepare``), each column normalized on its distinct values;
    only ``columns`` when given (scoring reads only the columns of its settings). The values of the guard's
    ``frequency_fields`` that more records hold than its ``max_value_frequency`` are missing, as for the rules:
    those of these records (:func:`frequent_values`), or ``frequent`` (the run's, for a few of its records)."""
    every = model_attributes(config)
    mapped = every if columns is None else {c: every[c] for c in columns}
    table = normalized_table(_years_as_dates(records, every)[list(mapped)].reset_index(drop=True), mapped, normalizer)
    # Each record's table (its position in unify.tables), for link_type link_only (pairs only across tables).
    table = dataclasses.replace(table, source=records["rank"].to_numpy(np.int64))
    return without_values(table, frequent_values(config, table) if frequent is None else frequent)


def frequent_values(config: UnifyConfig, table: Table) -> dict[str, dict[str, int]]:
    """Per column of the guard's ``frequency_fields`` in ``table``, its normalized values that more records hold
    than ``guard.max_value_frequency`` (value -> records): a placeholder e-mail address, a shop's phone. Taken as
    evidence, such a value blocks and links strangers by the hundred, and the model's e-mail stratum learns from
    them what a shared address means."""
    cap, found = config.guard.max_value_frequency, {}
    for name in config.guard.frequency_fields:
        column = table.columns.get(name)
        over = np.flatnonzero(column.counts > cap) if column is not None else []
        if len(over):
            found[name] = {str(column.values[k]): int(column.counts[k]) for k in over}
    return found


def without_values(table: Table, values: dict[str, dict[str, int]]) -> Table:
    """``table`` with these values of its columns (column -> value -> records) missing (``Table.missing``)."""
    values = {name: v for name, v in values.items() if name in table.columns and v}
    if not values:
        return table
    columns = dict(table.columns)
    for name, dropped in values.items():
        column = columns[name]
        gone = np.append(pd.Series(column.values, dtype=object).isin(list(dropped)).to_numpy(bool), False)
        codes = np.where(gone[column.codes], -1, column.codes)  # a null code (-1) reads the appended False
        columns[name] = Column(name, codes, column.values, np.where(gone[:-1], 0, column.counts))
    return Table(columns, table.n, table.source, values)


def configured_settings(config: UnifyConfig, base: Settings | None = None) -> Settings | None:
    """The settings of ``unify.match.probabilistic`` (None when absent), each key it leaves out taken from ``base``
    (the default's choice, or the stored model's); mistakes name their key path."""
    if config.match.probabilistic is None:
        return None
    try:
        settings = Settings.from_dict(config.match.probabilistic, base)
    except SettingsError as exc:
        raise SettingsError(option_path(str(exc))) from None
    if problem := link_type_problem(config, settings.link_type):
        raise SettingsError(problem)
    return settings


def link_type_problem(config: UnifyConfig, link_type: str) -> str | None:
    """Why ``link_type`` cannot work for the configured tables (None: it can): ``link_only`` pairs only records of
    different tables, so with one table it would compare no pair and link nothing."""
    if link_type == "link_only" and len(config.tables) < 2:
        return (
            "unify.match.probabilistic.link_type: link_only pairs only records of different tables, and "
            f"unify.tables holds one ({config.tables[0].ref if config.tables else 'none'}): no pair would be "
            "compared; use link_type: dedupe (the default) to find the duplicates within it"
        )
    return None


def check_settings(config: UnifyConfig) -> None:
    """Refuse a malformed ``unify.match.probabilistic`` before any data is read (when the definitions load); the
    keys it leaves out are chosen from the data at training.

    Raises:
        SettingsError: naming the key path.
    """
    configured_settings(config, placeholder())


def train_model(config: UnifyConfig, prepared: Preparation, base_dir: Path | None = None) -> tuple[Model, list[str]]:
    """Train the model on a run's prepared records.

    The settings are ``unify.match.probabilistic`` or, when absent, chosen from the semantic types of the mapped
    columns; the chosen settings are stored in the model (``training["settings_yaml"]``: YAML to paste under
    ``unify.match``), so every scoring run uses the same comparisons until the next retraining. The pairs a user
    labelled as one person (``unify.match.always_match`` and its file) seed m: EM starts from the levels they
    reach (``base_dir``: where relative override files are).

    Returns:
        The model and the warnings of training (a left-out default rule, a comparison without evidence, EM that
        did not converge), each also in ``model.training["warnings"]``.

    Raises:
        SettingsError: the settings are malformed or read an unmapped attribute.
        TrainingError: the fit is not sane (see :func:`ci_pipeline.unify.probabilistic.train`).
    """
    model, said, _ = _trained_or_told(config, prepared, base_dir)
    return model, said


def _trained_or_told(config: UnifyConfig, prepared: Preparation, base_dir: Path | None):
    """:func:`_trained`; an error of the settings or the training also tells the values unify could not read,
    whose warnings a failed run would not reach (a birth date whose every year has two digits is no field)."""
    try:
        return _trained(config, prepared, base_dir)
    except (SettingsError, TrainingError) as exc:
        unread = [w for w in prepared.warnings if any(f" {where}: " in w for where in prepared.unreadable)]
        if not unread:
            raise
        raise type(exc)(f"{exc}. Beware: " + "; ".join(w.removeprefix("unify: ") for w in unread)) from None


def _trained(config: UnifyConfig, prepared: Preparation, base_dir: Path | None) -> tuple[Model, list[str], Table]:
    """:func:`train_model`, and the prepared table it trained on."""
    given = config.match.probabilistic
    mapped = model_attributes(config)
    notes: list[str] = []
    if given is not None and {"comparisons", "blocking"} <= given.keys():
        settings = configured_settings(config, placeholder(strata=default_strata(mapped)))
        _check_columns(settings, mapped)
        table = model_table(config, prepared.records, prepared.prep.normalizer, settings.columns)
        records = frame_of(table)
    else:
        # Only the columns the model can read are normalized: those the default may choose from, or (for a block
        # that gives some keys) every mapped column.
        columns = default_columns(mapped) if given is None else None
        table = model_table(config, prepared.records, prepared.prep.normalizer, columns)
        records = frame_of(table)
        # The default counts each rule's pairs as the configured link type forms them (under link_only, a rule on a
        # field one table lacks finds none).
        link_type = (given or {}).get("link_type", Settings.link_type)
        blocking_given = "blocking" in (given or {})
        settings, notes = default_settings(
            records, mapped, link_type=link_type, table=table, blocking_given=blocking_given
        )
        if given is not None:
            settings = configured_settings(config, settings)
            _check_columns(settings, mapped)
            notes = notes_on_the_default(notes, given)
    labels = override_labels(config, prepared.records, base_dir)
    with training_notes() as caught:
        try:
            model = train(records, settings, table=table, labels=labels)
        except TrainingError:
            # Blocking written without training rules, every rule of it reading a compared field: that field is
            # trained on the pairs alike in all else, as the default does (a training that ran stays as it was).
            retried = trainable(settings, table, notes) if given and not {"training_blocking"} & given.keys() else None
            if retried is None or retried is settings:
                raise
            settings = retried
            caught.clear()
            model = train(records, settings, table=table, labels=labels)
    said = notes + caught + _empty_tables(config, prepared.records)
    model.training["labelled_matches"] = 0 if labels is None else int(labels["match"].sum())
    # The default's notes (single-field rules added within the pair budget or left out for it) become comments.
    model.training["settings_yaml"] = settings_yaml(settings, notes)
    model.training["chosen"] = "configured" if given is not None else "default"
    # What scoring must find configured again (a key dropped since means the default's choice: another model).
    model.training["configured_keys"] = sorted(given or {})
    model.training["warnings"] = said
    # The attributes mapped when it trained: one mapped since is not compared until the next training.
    model.training["mapped"] = sorted(mapped)
    model.training["notes"] = notes  # the default's choices among them: information, not warnings
    return model, said, table


def notes_on_the_default(notes: list[str], given: dict) -> list[str]:
    """The default's notes on what a partial block left to it: those on blocking rules go when the block gives its
    own ``blocking``, those on comparisons when it gives its own ``comparisons`` (they describe settings not used)."""
    return [n for n in notes if ("blocking" if n.startswith("blocking rule") else "comparisons") not in given]


def _empty_tables(config: UnifyConfig, records: pd.DataFrame) -> list[str]:
    """A warning when configured tables hold no records: a model trained before their files land knows nothing of
    how they write their values, and is kept until it is retrained."""
    held = set(records["rank"].tolist())
    empty = [t.ref for rank, t in enumerate(config.tables) if rank not in held]
    if not empty:
        return []
    return [
        f"trained while {', '.join(empty)} held no records: what it learnt of how one person's records differ comes "
        f"from the other tables only, and runs score with it until it is retrained; once they hold data, {RETRAIN}"
    ]


def train_from_tables(
    config: UnifyConfig,
    frames: dict[tuple[str, str], pd.DataFrame],
    primary_keys: dict[tuple[str, str], str],
    base_dir: Path | None = None,
) -> tuple[Model, list[str]]:
    """:func:`train_model` on the customer tables (as :func:`ci_pipeline.unify.unify` takes them)."""
    return train_model(config, prepare(config, frames, primary_keys, base_dir), base_dir)


def _check_columns(settings: Settings, columns: Iterable[str]) -> None:
    try:
        settings.check_columns(columns)
    except SettingsError as exc:
        raise SettingsError(f"unify.match.probabilistic: {exc}") from None


def scoring_settings(config: UnifyConfig, model: Model, columns: Iterable[str]) -> Settings:
    """The settings a run scores with: the configured ones (their comparisons must be the model's; blocking and
    threshold may differ), or the model's own. A model that does not fit (or reads a column not among the records'
    ``columns``) is a clear error telling to retrain."""
    settings = configured_settings(config, model.settings) or model.settings
    try:
        _refuse_dropped_keys(config, model)
        model.check_fits(settings)
        settings.check_columns(columns)
    except SettingsError as exc:
        problem = f"unify.match: the stored match model does not fit the configuration ({exc}); {RETRAIN}"
        raise SettingsError(problem) from None
    return settings


#: Settings only training reads: changed since the model trained, they wait for the next training.
TRAINING_ONLY = ("training_blocking", "u_sample_pairs", "em_sample_pairs", "max_iterations", "tolerance", "seed")


def waiting_for_training(config: UnifyConfig, model: Model) -> list[str]:
    """What the configuration says that the stored model does not do until it is retrained: training settings
    changed since it trained, attributes mapped since (the model compares only those it was trained on)."""
    found = []
    given = config.match.probabilistic or {}
    if given:
        now, then = configured_settings(config, model.settings).to_dict(), model.settings.to_dict()
        changed = [k for k in TRAINING_ONLY if k in given and now.get(k) != then.get(k)]
        if changed:
            found.append(
                f"unify.match.probabilistic: {', '.join(changed)} changed since the stored match model was trained; "
                f"the run scores with the model as trained, and the change takes effect when you {RETRAIN}"
            )
    trained_on = model.training.get("mapped")
    if trained_on is not None and (added := sorted(set(model_attributes(config)) - set(trained_on))):
        found.append(
            f"attribute(s) {', '.join(added)} mapped since the stored match model was trained: the model does not "
            f"compare them until you {RETRAIN}"
        )
    return found


def _refuse_dropped_keys(config: UnifyConfig, model: Model) -> None:
    """Refuse scoring when the model was trained with comparisons or strata configured that the configuration now
    leaves out: left out, they are the default's choice, which the model was not trained with."""
    then = model.training.get("configured_keys")
    if then is None:  # a model stored before the keys were recorded: a configured block then gave comparisons
        then = ["comparisons"] if model.training.get("chosen") == "configured" else []
    dropped = [k for k in TRAINED_KEYS if k in then and k not in (config.match.probabilistic or {})]
    if dropped:
        raise SettingsError(
            f"it was trained with the {' and '.join(dropped)} configured then, which unify.match.probabilistic now "
            "leaves to the default"
        )


class ProbabilisticMatches:
    """The match method scoring with a trained model (see the module docstring).

    After a call, ``report`` holds what the statistics show (settings, pairs per blocking rule, links) and
    ``comparable`` marks the records the model can compare (those holding the keys of a blocking rule).
    """

    def __init__(self, model: Model | None):
        self.model = model
        self.report: dict = {}
        self.comparable: np.ndarray | None = None
        #: After a call: every candidate pair with its levels, kept for the next run (:meth:`state_key`).
        self.kept_pairs: pd.DataFrame | None = None
        #: After a call: what the configuration asks that the stored model does only once retrained.
        self.warnings: list[str] = []

    def state_key(self, config: UnifyConfig) -> str | None:
        """What the candidate pairs and their levels depend on besides the records (the model and the settings it
        scores with), so that a run with the same key may reuse the last run's pairs of unchanged records; None
        when the rules accept pairs beside the model (those are scored over every record)."""
        if config.match.rules:
            return None
        settings = scoring_settings(config, self.model, model_attributes(config))
        text = model_json(self.model) + json.dumps(settings.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(text).hexdigest()

    def __call__(self, config: UnifyConfig, prepared: Preparation, how: Plan | None = None) -> pd.DataFrame:
        """The scored pairs; with an incremental ``how`` (see :mod:`ci_pipeline.unify.incremental`), only the pairs
        of new and changed records are blocked and compared, the last run's levels of the others reused."""
        settings = scoring_settings(config, self.model, model_attributes(config))
        self.warnings = waiting_for_training(config, self.model)
        started = time.perf_counter()
        table = self._table(config, prepared, settings)
        prepared_s = round(time.perf_counter() - started, 3)
        scored = score_pairs(self.model, table, settings, *_reusable(how, table, settings))
        self.kept_pairs = None if config.match.rules else state_pairs(scored, settings)
        rules = rule_matches(config, prepared) if config.match.rules else None
        reviewed = np.flatnonzero((scored.probability >= review_probability(settings.threshold)) | scored.link)
        pairs = _pairs(scored, reviewed, len(config.match.rules))
        if rules is not None:
            pairs = _with_rules(rules, pairs, table.n)
        self.comparable = _comparable(table, settings)
        self.report = _report(settings, table, scored, len(reviewed), prepared_s, rules is not None)
        return pairs

    def _table(self, config: UnifyConfig, prepared: Preparation, settings: Settings) -> Table:
        """The records prepared for comparison: the columns the settings read."""
        return model_table(config, prepared.records, prepared.prep.normalizer, settings.columns)


class TrainingMatches(ProbabilisticMatches):
    """The match method of a run that has no stored model: when called, it trains one on the run's own prepared
    records (:func:`train_model`), then scores with it. The records are prepared once and each column normalized
    once for both (training them apart from the run prepared and normalized every record a second time).

    After the call, ``model`` holds the trained model, ``said`` training's warnings and ``train_s`` its seconds.
    """

    def __init__(self, base_dir: Path | None = None):
        super().__init__(None)
        self.base_dir = base_dir
        self.said: list[str] = []
        self.train_s = 0.0
        self._trained_on: Table | None = None

    def state_key(self, config: UnifyConfig) -> str | None:
        """None until trained (a run that trains finds every pair afresh), then that of the trained model, which
        the run's state keeps: the next run, scoring with the stored model, reuses its pairs."""
        return None if self.model is None else super().state_key(config)

    def __call__(self, config: UnifyConfig, prepared: Preparation, how: Plan | None = None) -> pd.DataFrame:
        if self.model is None:
            started = time.perf_counter()
            self.model, self.said, self._trained_on = _trained_or_told(config, prepared, self.base_dir)
            self.train_s = round(time.perf_counter() - started, 3)
        try:
            return super().__call__(config, prepared, how)
        finally:
            self._trained_on = None  # the run's largest arrays besides its pairs: not kept past the call

    def _table(self, config: UnifyConfig, prepared: Preparation, settings: Settings) -> Table:
        """The table training prepared, when it holds every column the settings read (it holds the columns the
        default may choose from): the same records, normalized the same way, with the blocking keys it built."""
        table = self._trained_on
        if table is not None and set(settings.columns) <= set(table.columns):
            return table
        return super()._table(config, prepared, settings)


def _reusable(how: Plan | None, table: Table, settings: Settings) -> tuple[np.ndarray | None, Candidates | None]:
    """The touched records and the last run's candidate pairs scoring may reuse (None, None: score every pair);
    notes this run's masks in ``how.meta`` for the next run, on a full run too."""
    masks = {name: sorted(v) for name, v in table.missing.items()}
    reusable = None, None
    # A value grown too frequent (or back under the cap) since the last run changes its records' pairs: then
    # every pair is found afresh (rare, and a full scoring is exact).
    if how is not None and how.incremental and how.last.meta.get("model_masks", {}) == masks:
        reusable = how.touched, _kept(how, settings)
    if how is not None:
        how.meta["model_masks"] = masks
    return reusable


def _with_rules(rules: pd.DataFrame, pairs: pd.DataFrame, n: int) -> pd.DataFrame:
    """The rules' pairs, then the model's pairs that no rule accepted (``n`` records)."""
    # Hybrid: a pair a rule accepts is a link outright; the model's verdict on it adds nothing.
    accepted = rules[rules["accepted"]]
    by_rule = pair_ids(accepted["left"].to_numpy(np.int64), accepted["right"].to_numpy(np.int64), n)
    taken = isin(pair_ids(pairs["left"].to_numpy(np.int64), pairs["right"].to_numpy(np.int64), n), by_rule)
    return pd.concat([rules, pairs[~taken]], ignore_index=True)


def _comparable(table: Table, settings: Settings) -> np.ndarray:
    """Per record, whether a blocking rule gives it a whole key: only such a record can be in a candidate pair (a
    key function may give nothing for a value that is there: the soundex of digits)."""
    found = np.zeros(table.n, dtype=bool)
    for rule in settings.blocking:
        found |= rule.codes(table) >= 0
    return found


def _report(
    settings: Settings, table: Table, scored: Scored, reviewed: int, prepared_s: float, with_rules: bool
) -> dict:
    """What the statistics show of a scoring (``stats["match_method"]``); ``reviewed``: the links and near misses."""
    links = int(scored.link.sum())
    per_rule = np.bincount(scored.pairs.rule, minlength=len(settings.blocking))
    chance = scored.probability[scored.link]
    return {
        "method": "probabilistic with rules" if with_rules else "probabilistic",
        "rule_name": RULE_NAME,
        "threshold": settings.threshold,
        "candidate_pairs": len(scored.pairs),
        "pairs_per_rule": {str(r): int(c) for r, c in zip(settings.blocking, per_rule, strict=True)},
        "links": links,
        # The model's own estimate of its links' precision (their mean match probability) and of the links it
        # expects to be wrong: no truth needed. On labelled public sets it came within 0.03 of the measured
        # precision, mostly below it (docs/matching-probabilistic.md, "How sure the model is of its links").
        "links_expected_precision": round(float(chance.mean()), 4) if links else None,
        "links_expected_wrong": round(float((1.0 - chance).sum()), 1),
        "near_misses": reviewed - links,
        # Preparing the records, blocking, and comparing and weighing the candidate pairs.
        "seconds": {"prepare": prepared_s, **scored.seconds},
        "settings_yaml": settings_yaml(settings),
        # The guard's too frequent values, missing for the model as for the rules (column -> value -> records).
        "frequent_values_ignored": table.missing,
    }


def state_pairs(scored: Scored, settings: Settings) -> pd.DataFrame:
    """The candidate pairs as the unify state keeps them (:attr:`ci_pipeline.unify.incremental.UnifyState.
    model_pairs`): positions, the first blocking rule's index and the level of each comparison (``gamma_<name>``);
    the arrays themselves, not copies."""
    pairs = scored.pairs
    columns = {"left": pairs.left, "right": pairs.right, "rule": pairs.rule}
    columns |= {f"gamma_{c.name}": pairs.gamma[:, j] for j, c in enumerate(settings.comparisons)}
    return pd.DataFrame(columns, copy=False)


def _kept(how: Plan, settings: Settings) -> Candidates:
    """The last run's candidate pairs of two untouched records, at this run's positions (a pair's ``left`` may now
    come after its ``right``), each column taken once from the stored state."""
    stored = how.last.model_pairs
    left = how.position[stored["left"].to_numpy(np.int64)]
    right = how.position[stored["right"].to_numpy(np.int64)]
    both = (left >= 0) & (right >= 0)
    rows = None if both.all() else np.flatnonzero(both)
    how.counts["model_pairs_reused"] = len(left) if rows is None else len(rows)

    def taken(values: np.ndarray) -> np.ndarray:
        return values if rows is None else values[rows]

    gamma = np.empty((how.counts["model_pairs_reused"], len(settings.comparisons)), dtype=np.int8)
    for j, c in enumerate(settings.comparisons):
        gamma[:, j] = taken(stored[f"gamma_{c.name}"].to_numpy(np.int8))
    return Candidates(taken(left), taken(right), taken(stored["rule"].to_numpy(np.int16)), gamma)


def _pairs(scored: Scored, rows: np.ndarray, rule_index: int) -> pd.DataFrame:
    """The scored pairs at ``rows`` in the engine's pair contract; the match weight orders the links for the
    guard."""
    weight, chance = scored.weight[rows], scored.probability[rows]
    # One f-string per pair (a float formats as str() writes it): a third of the time of building the text column
    # by column through pandas, which also writes each number with str().
    scores = np.array(
        [
            f'{{"match_weight": {w}, "match_probability": {p}}}'
            for w, p in zip(np.round(weight, 3).tolist(), np.round(chance, 6).tolist(), strict=True)
        ],
        dtype=object,
    )
    scores[np.isnan(weight) | np.isnan(chance)] = np.nan  # no number, no text (as a missing value added to text)
    return pd.DataFrame(
        {
            "left": scored.pairs.left[rows].astype(np.int64),
            "right": scored.pairs.right[rows].astype(np.int64),
            "rule": rule_index,
            "scores": scores,
            "strength": weight,
            "accepted": scored.link[rows],
            "stage": "match",
            "rule_name": RULE_NAME,
        }
    )


def waterfall(
    config: UnifyConfig, records: pd.DataFrame, normalizer: Normalizer, model: Model, left: int, right: int
) -> tuple[dict, Settings]:
    """The evidence on the records at positions ``left`` and ``right`` of the record frame: per comparison the two
    normalized values, the level reached and its weight; the prior, the total weight, the probability and whether
    it reaches the threshold. Term frequencies are those of all ``records``, as in the run, and so are the values
    taken for missing as too frequent (``too_frequent``: the pair's, column -> value -> records).

    Returns:
        The waterfall, and the settings the run scores with (:func:`scoring_settings`).
    """
    every = model_table(config, records, normalizer, frequent={})  # nothing masked yet: the pair's own values
    table = without_values(every, frequent_values(config, every))
    too_frequent = {}
    for name, values in table.missing.items():
        column = every.column(name)
        held = [str(column.values[code]) for code in column.codes[[left, right]] if code >= 0]
        if pair := {v: values[v] for v in held if v in values}:
            too_frequent[name] = pair
    settings = scoring_settings(config, model, table.columns)
    rows = model_waterfall(model, frame_of(table), left, right).to_dict("records")
    total = rows[-1]
    info = {
        "prior_weight": rows[0]["weight"],
        "comparisons": [
            {k: (None if pd.isna(v) else v) for k, v in r.items() if k != "probability"} for r in rows[1:-1]
        ],
        "match_weight": total["weight"],
        "match_probability": total["probability"],
        "threshold": settings.threshold,
        "link": total["probability"] >= settings.threshold,
        "too_frequent": too_frequent,
        "max_value_frequency": config.guard.max_value_frequency,
    }
    return info, settings
