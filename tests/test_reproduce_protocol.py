"""`anomalyclip reproduce` on the paper's protocol: jobs first (reused, resumable), no silent fallback, scorecard."""

from __future__ import annotations

import pytest
import torch
from support import require_shared

from anomalyclip import reproduce as rp
from anomalyclip.errors import AnomalyCLIPError
from anomalyclip.experiments import RunStore
from anomalyclip.experiments.store import RunStore as StoreClass

FAST = {"epochs": 1, "image_size": 112, "methods": ["clip", "anomalyclip"]}
"""Small enough for a CPU test: two methods (one learned, one not), one epoch, 112 px."""


@pytest.mark.slow
def test_smoke_resumes_without_redoing_finished_jobs(tmp_path, monkeypatch):
    store = tmp_path / "runs"
    commit = StoreClass.commit
    calls = []

    def crash_after_first(self, *args, **kwargs):
        result = commit(self, *args, **kwargs)
        calls.append(result.job.id)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the process dies after its first finished job
        return result

    options = {"notebooks": ["06"], "run_store": store, "sets": FAST | {"data_root": None}}
    with monkeypatch.context() as patched:
        patched.setattr(StoreClass, "commit", crash_after_first)
        with pytest.raises(KeyboardInterrupt):
            rp.reproduce("smoke", tmp_path / "reports", **options)
    assert RunStore(store).executions() == calls[:1]
    manifest = rp.reproduce("smoke", tmp_path / "reports", **options)
    executed = RunStore(store).executions()
    assert executed[0] == calls[0] and len(executed) == len(set(executed)) == 3  # clip + 2 anomalyclip transfers
    rp.reproduce("smoke", tmp_path / "reports", **options)
    assert RunStore(store).executions() == executed, "a warm run store computes nothing"
    page = (manifest.parent / "index.md").read_text()
    assert "| **table1**" in page and "RANDOM WEIGHTS" in page and "| ok |" in page


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, clip):
    path = tmp_path_factory.mktemp("weights") / "tiny_openai.pt"
    torch.save(clip.state_dict(), path)
    return path


def test_paper_profile_stops_at_a_missing_dataset(tmp_path, tiny_weights):
    datasets = require_shared("datasets")
    with pytest.raises(AnomalyCLIPError, match=r"visa: .*--allow-missing"):
        rp.reproduce("paper", tmp_path / "reports", data_root=datasets, weights=tiny_weights, device="cpu",
                     notebooks=["06"], run_store=tmp_path / "runs", sets=FAST)  # fmt: skip
    assert not (tmp_path / "runs").exists(), "nothing may run before the plan is complete"


def test_paper_profile_ablations_need_the_datasets(tmp_path, tiny_weights):
    with pytest.raises(AnomalyCLIPError, match=r"02_prompt_design needs \['data_root'\] \(--data-root FOLDER\)"):
        rp.reproduce("paper", tmp_path / "reports", weights=tiny_weights, notebooks=["02"])


@pytest.mark.slow
def test_paper_profile_with_allow_missing_runs_what_is_there(tmp_path, tiny_weights):
    datasets = require_shared("datasets")
    sets = FAST | {"winclip_backbone": "tiny-winclip", "winclip_pretrained": None}
    manifest = rp.reproduce("paper", tmp_path / "reports", data_root=datasets, weights=tiny_weights, device="cpu",
                            notebooks=["06"], run_store=tmp_path / "runs", allow_missing=True, sets=sets)  # fmt: skip
    page = (manifest.parent / "index.md").read_text()
    assert "| protocol | paper |" in page and "visa (" in page
    jobs = {
        (j.method, j.train.name if j.train else None) for j in (r.job for r in RunStore(tmp_path / "runs").results())
    }
    assert jobs == {("clip", None), ("anomalyclip", "mvtec")}, "without VisA only the MVTec AD training runs"
