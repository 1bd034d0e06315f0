"""`ci-pipeline explain` shows the customer's enrichments of the last run."""

from __future__ import annotations

import json

import pandas as pd
import yaml

from ci_pipeline import outputs
from ci_pipeline.cli import main
from ci_pipeline.lake import Lake
from ci_pipeline_tests.unify.test_assets import project, run


def test_explain_lists_the_customers_enrichments(tmp_path, capsys):
    cfg, lake = project(tmp_path)
    assert run(cfg).success
    raw = yaml.safe_load(cfg.path.read_text())
    raw["enrich"] = {"enrichments": {"email": {"provider": "email"}}}
    cfg.path.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(cfg.path), "explain", "crm", "contacts", "c1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # Before the enrich stage has run there is no Enrichment table: nothing to show, no error.
    assert "enrichments" not in info
    customer = info["customer_id"]
    content = pd.DataFrame(
        {
            "CustomerId": [customer, customer, "someone else"],
            "EnrichmentProvider": ["demo", "demo", "demo"],
            "EnrichmentType": ["Email", "BrandAffinity", "Email"],
            "Values": [{"Class": "FreeMail", "Provider": "gmail"}, {"Top": "Voltix"}, {"Class": "Business"}],
        }
    )
    Lake.local(tmp_path / "lake").write_parquet(
        "ci_pipeline/enrich/enrichment.parquet", outputs.build("Enrichment", content)
    )

    assert main(["--config", str(cfg.path), "explain", "crm", "contacts", "c1"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(
        'enrichments:\n  demo/BrandAffinity: {"Top": "Voltix"}\n'
        '  demo/Email: {"Class": "FreeMail", "Provider": "gmail"}'
    )
    assert main(["--config", str(cfg.path), "explain", "crm", "contacts", "c1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["enrichments"]
    assert [e["type"] for e in shown] == ["BrandAffinity", "Email"] and shown[1]["values"]["Class"] == "FreeMail"
