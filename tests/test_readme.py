"""The README's example runs as written, and CI runs the README's test command."""

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

import pullbacks

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_readme_example_runs_and_its_claim_holds():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    torch.testing.assert_close(scope["x"].grad, scope["g"])
    assert scope["x5"].shape == scope["x"].shape and not torch.equal(scope["x5"], scope["x"].detach())


@pytest.mark.slow
def test_readme_coverage_example_prints_what_it_says():
    first, second = re.findall(r"```python\n(.*?)```", README, re.S)[:2]
    scope: dict = {}
    exec(compile(first, "README.md", "exec"), scope)
    code = textwrap.dedent(second)
    exec(compile(code.replace("print(mode.coverage)", "printed = str(mode.coverage)"), "README.md", "exec"), scope)
    claim = re.search(r"print\(mode.coverage\)\s+# (.*)", second).group(1)
    assert scope["printed"] == claim


def test_ci_runs_the_readme_test_command():
    """.ci/run's own extraction (its awk program, run here) yields the README's command."""
    command = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```", README).group(1)
    assert "pytest" in command and "pip install" in command
    ci = (ROOT / ".ci" / "run").read_text()
    program = re.search(r"awk '(.*?)' README.md", ci).group(1)
    extracted = subprocess.run(["awk", program, "README.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert extracted.stdout.strip() == command


def test_extending_guide_runs_and_its_check_holds():
    """docs/extending.md: the ELU rule in under 15 lines, and its straight-through check."""
    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    rule, celu, check, module = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(rule.strip().splitlines()) < 15
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(rule + check, "docs/extending.md", "exec"), scope)  # the check asserts the equality
    assert not torch.allclose(
        scope["g"], torch.autograd.grad(scope["net"](scope["x"])[:, 0].sum(), scope["x"])[0]
    )  # and the rule is not the vanilla gradient
    exec(compile(celu, "docs/extending.md", "exec"), scope)  # params: the CELU's alpha read from the call
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.CELU(alpha=0.5), torch.nn.Linear(8, 3)).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    got = pullbacks.excitation_pullback(net, x, 0, rules=[scope["celu"]])
    z = net[0](x)
    s = torch.sigmoid(z / 0.5)
    gate = s + (1 - s) * torch.exp(z.clamp(max=0) / 0.5)  # alpha 0.5 from the call, T 0.5 from the rule
    torch.testing.assert_close(got, (net[2].weight[0] * gate) @ net[0].weight)
    exec(compile(module, "docs/extending.md", "exec"), scope)  # a module rule: layer norm, statistics held
    grad = torch.randn(2, 8)
    (g,) = torch.autograd.grad(scope["y"], scope["x"], grad)
    x = scope["x"].detach()
    rstd = 1 / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5)
    torch.testing.assert_close(g, grad * rstd)  # weight 1: grad_in = grad_out · w / sqrt(var + eps)


@pytest.mark.slow
def test_the_docs_code_blocks_run():
    """Every Python block of the site's pages that can run does: the getting-started page's
    blocks in sequence (its coverage block prints what it says), and the method page's Captum
    block on a small network."""
    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, re.S)]
    assert len(blocks) == 2
    scope: dict = {}
    exec(compile(blocks[0], "docs/index.md", "exec"), scope)
    torch.testing.assert_close(scope["x"].grad, scope["g"])
    claim = re.search(r"print\(mode.coverage\)\s+# (.*)", blocks[1]).group(1)
    exec(
        compile(blocks[1].replace("print(mode.coverage)", "printed = str(mode.coverage)"), "docs/index.md", "exec"),
        scope,
    )
    assert scope["printed"] == claim
    pytest.importorskip("captum", reason="the evaluate extra (captum) is not installed")
    (captum_block,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "method.md").read_text(), re.S)
    from helpers import tiny_cnn

    scope = {"pullbacks": pullbacks, "model": tiny_cnn(), "x": torch.rand(2, 3, 16, 16) * 2 - 1, "t": 1}
    exec(compile(captum_block.replace("nt_samples=50", "nt_samples=4"), "docs/method.md", "exec"), scope)
    assert scope["ip"].shape == scope["sp"].shape == (2, 3, 16, 16)
