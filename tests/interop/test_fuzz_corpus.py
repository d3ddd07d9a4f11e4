"""The fuzz targets' seed corpora and every fixed crash input (Fuzz/regressions/TARGET) replayed through the
ordinary build of `mcpgw-fuzz` (no fuzzer needed), and the target list of scripts/fuzz.sh kept equal to the
binary's."""
import os
import pathlib
import subprocess

import pytest

from conftest import ROOT, mcpgw_binary

FUZZ = pathlib.Path(mcpgw_binary()).parent / "mcpgw-fuzz"


def targets() -> list[str]:
    return subprocess.run([str(ROOT / "scripts" / "fuzz.sh"), "--list"], capture_output=True, text=True, check=True).stdout.split()


def test_the_script_and_the_binary_name_the_same_targets():
    listed = subprocess.run([str(FUZZ), "--list"], capture_output=True, text=True, check=True).stdout.split()
    assert listed == targets()
    assert len(listed) == 8


@pytest.mark.parametrize("target", targets())
def test_seeds_and_regressions_replay_cleanly(target):
    inputs = [ROOT / "Fuzz" / "corpus" / target]
    regressions = ROOT / "Fuzz" / "regressions" / target
    if regressions.is_dir():
        inputs.append(regressions)
    result = subprocess.run([str(FUZZ), target, *map(str, inputs)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    ran = int(result.stdout.split(":")[1].split()[0])
    assert ran >= len(os.listdir(inputs[0])) > 0
