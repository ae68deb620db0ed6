"""Every Python code block of the README runs as it is written (each block on its own, in a fresh namespace)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    code = compile(BLOCKS[index], f"README.md python block {index + 1}", "exec")
    namespace: dict = {"__name__": "__readme__"}
    exec(code, namespace)
    if "criterion" in namespace and "difficulty" in namespace:  # the CDB loop updated the weights from validation
        weight = namespace["criterion"].weight
        assert weight.sum().item() == pytest.approx(namespace["num_classes"], rel=1e-5)
        assert not bool((weight == 1).all())  # the validation pass set them
