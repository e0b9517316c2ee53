"""The committed fixtures are what the scripts in fixtures/ make: rebuild one and compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS, ROOT

from bnaudit.formats.tensors import decode_tensor
from bnaudit.model import load_model

NAME = "tf1_fused_cond"


@pytest.mark.slow
def test_rebuilt_fixture_matches_committed(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fixtures" / "make_fixtures.py"),
            "--only",
            NAME,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rebuilt = load_model(tmp_path / NAME / "frozen.pb").graph_def
    committed = load_model(MODELS / NAME / "frozen.pb").graph_def
    assert [(n.name, n.op, list(n.input)) for n in rebuilt.node] == [
        (n.name, n.op, list(n.input)) for n in committed.node
    ]
    for new, old in zip(rebuilt.node, committed.node, strict=True):
        if new.op == "Const":
            ours = decode_tensor(new.attr["value"].tensor)
            theirs = decode_tensor(old.attr["value"].tensor)
            assert (ours is None) == (theirs is None), new.name
            if ours is not None and theirs is not None:
                np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6, err_msg=new.name)
    want = json.loads((MODELS / NAME / "expected.json").read_text())
    assert json.loads((tmp_path / NAME / "expected.json").read_text()) == want
    assert sorted(p.name for p in (tmp_path / NAME / "ckpt").iterdir()) == sorted(
        p.name for p in (MODELS / NAME / "ckpt").iterdir()
    )
